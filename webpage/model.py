"""What a session page shows, as plain data: parties, frames, records, key schedule, verdicts.

``live`` (a connection's own events) and ``captured`` (``kexlab decrypt``'s sessions) fill
it; ``html`` renders it. Every byte string here is already cut to what the page shows
(``clip``), so a long session costs a bounded amount of memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHOWN_BYTES = 256
"""Bytes of one field shown in hex on the page; longer fields say how long they are."""
SHOWN_PLAINTEXT = 2048
"""Bytes of one record's plaintext kept for the page."""


def clip(data: bytes, limit: int = SHOWN_BYTES) -> bytes:
    """The first ``limit`` bytes (the page says how many there were in all)."""
    return bytes(data[:limit])


@dataclass(frozen=True)
class Party:
    """One column of the ladder."""

    key: str
    """"client", "attacker" or "server"."""
    title: str
    """What the column header says ("client 127.0.0.1", "server 127.0.0.1:9700")."""


@dataclass(frozen=True)
class FieldView:
    """One annotated field (``explain.rows.Row``) as the page shows it."""

    offset: int
    """Offset in the frame; ``explain.rows.SECRET_OFFSET`` for a derived value."""
    name: str
    shown: bytes
    size: int
    meaning: str
    seeded: bool = False
    """Its bytes follow from the ``--deterministic`` seed."""


@dataclass(frozen=True)
class RecordView:
    """One RECORD as the page shows it: seq, nonce worked out, ciphertext, tag, plaintext."""

    epoch: int | None
    seq: int | None
    content_type: str
    """"application_data", "key_update", "alert", or "encrypted" when not opened."""
    ciphertext_size: int
    tag: bytes
    plaintext: bytes | None = None
    """Clipped to ``SHOWN_PLAINTEXT``; None when the record could not be opened."""
    plaintext_size: int = 0
    iv: bytes | None = None
    """The sender's iv for ``epoch``: only on a page made with secrets."""
    key: bytes | None = None
    """The sender's AES-GCM key for ``epoch``: only on a page made with secrets."""
    diagnosis: str = ""
    """Why it did not open (replayed, lost, tampered), or what it says (alert, key_update)."""

    @property
    def nonce(self) -> bytes | None:
        """iv XOR (0^4 || u64 seq), when the iv is known (docs/protocol.md §6)."""
        if self.iv is None or self.seq is None:
            return None
        return (int.from_bytes(self.iv, "big") ^ self.seq).to_bytes(12, "big")


@dataclass
class Step:
    """One frame on the ladder, with its annotated bytes."""

    number: int
    sender: str
    receiver: str
    frame_type: str
    """The frame type's spec name ("CLIENT_HELLO", "RECORD", ...), or "type 0x.."."""
    title: str
    """``explain.annotate.frame_title``: "RECORD (application_data), 56 bytes"."""
    size: int
    kind: str
    """"handshake", "record", "key_update", "alert" (fatal) or "close" (close_notify)."""
    fields: list[FieldView] = field(default_factory=list)
    record: RecordView | None = None
    note: str = ""
    """What the frame says or what went wrong with it, in one line."""
    seeded: bool = False
    leg: int = 0
    """Which connection of a man-in-the-middle capture (1: facing the client, 2: the server)."""
    time: float | None = None
    """Seconds since the first frame (captures only)."""


@dataclass(frozen=True)
class Compact:
    """One record of a long run, in one line."""

    number: int
    sender: str
    receiver: str
    epoch: int | None
    seq: int | None
    content_type: str
    size: int
    preview: str


@dataclass
class StepGroup:
    """A run of records summarised as one arrow (a long transfer), expandable to one line each."""

    first: int
    count: int = 0
    size: int = 0
    """Bytes of every frame of the run."""
    plaintext: int = 0
    """Plaintext bytes of the records that opened."""
    lines: list[Compact] = field(default_factory=list)
    """The first ``COMPACT_LINES`` of the run; the rest are only counted."""
    flows: dict[tuple[str, str], int] = field(default_factory=dict)
    """(sender, receiver) -> how many of the run went that way."""
    types: dict[str, int] = field(default_factory=dict)
    """How many of each content type."""

    @property
    def last(self) -> int:
        """The number of its last frame."""
        return self.first + self.count - 1


@dataclass(frozen=True)
class Derivation:
    """One line of the §5 key schedule: what it derives, from what, with which label and context."""

    name: str
    formula: str
    label: str = ""
    """The HKDF-Expand-Label label ("c ap traffic"), empty for Extract and the sources."""
    context: str = ""
    """What the context is, in the spec's words ("TH_keys = TH(CH, SH)")."""
    context_value: bytes | None = None
    """The context's bytes (public: a transcript hash)."""
    hkdf_label: bytes | None = None
    """The whole HkdfLabel info string, when there is one."""
    value: bytes | None = None
    """Only on a page made with secrets."""
    secret: bool = True
    why_hidden: str = ""
    seeded: bool = False


@dataclass(frozen=True)
class Claim:
    """What the method proves or does not, in one sentence (a heading and the sentence)."""

    topic: str
    holds: str
    """"yes", "no" or "partly": said in words too, never by colour alone."""
    sentence: str


@dataclass
class Leg:
    """One connection's handshake: who spoke, what was agreed, what it proves."""

    number: int
    client: str
    """The party key of this connection's client ("client", or "attacker" on leg 2)."""
    server: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    """(name, value) lines: method, suite, group, randoms, server key, PSK identity."""
    sas: str | None = None
    """The SAS as people read it (§5), when known."""
    sas_from: str = ""
    """Who displayed or computed it, or why it is unknown."""
    claims: list[Claim] = field(default_factory=list)
    schedule: list[Derivation] = field(default_factory=list)
    schedule_note: str = ""
    outcome: str = ""
    """How the connection ended."""
    opened: bool = False
    """Its records could be read (a live page always; a capture with keys)."""
    sealed_reason: str = ""
    """Why it could not be opened: the lesson of a forward-secret session."""


@dataclass
class Story:
    """A whole page."""

    title: str
    source: str
    """Where it comes from: "live, as the client saw it", "capture lab.pcap"."""
    parties: list[Party]
    legs: list[Leg]
    steps: list[Step | StepGroup] = field(default_factory=list)
    with_secrets: bool = False
    seed: str | None = None
    """The ``--deterministic`` seed the session drew its randomness from."""
    notes: list[str] = field(default_factory=list)
    """Anything else the reader should know (capture warnings, a man in the middle)."""
    frames: int = 0
    """Frames in all, summarised ones included."""
