"""What ``kexlab decrypt`` reports: sessions, records and why, as objects and as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol.keyschedule import HandshakeSecrets

from .mqtt import LeakedPsk
from .streams import Address


@dataclass
class Record:
    """One record (or plaintext ALERT frame) of a session, decrypted when a key was at hand."""

    time: float
    sender: str
    """"client" or "server"."""
    epoch: int | None
    """Traffic key epoch (0, then +1 per key_update); None for a plaintext ALERT frame."""
    seq: int | None
    """The record's seq; None for a plaintext ALERT frame."""
    content_type: str
    """"application_data", "key_update", "alert", or "encrypted" when not decrypted."""
    plaintext: bytes | None
    """The content (for alerts the ALERT payload); None when not decrypted."""
    note: str = ""
    """What went wrong with this record, or the alert's name and reason."""

    @property
    def direction(self) -> str:
        """ "client->server" or "server->client"."""
        return "client->server" if self.sender == "client" else "server->client"


@dataclass
class SeenFrame:
    """One whole frame of a session as the capture holds it (for the session page)."""

    time: float
    sender: str
    """"client" or "server"."""
    data: bytes
    record: Record | None = None
    """Its entry in ``Session.records`` (RECORD and plaintext ALERT frames)."""


@dataclass
class SessionKeys:
    """The keys that opened a session's records (the session page shows them on request)."""

    client_secret: bytes | None
    """c_ap_0, when known."""
    server_secret: bytes | None
    """s_ap_0, when known."""
    handshake: HandshakeSecrets | None = None
    """Every §5 secret, when the shared secret itself was recovered (RSA key, PSK)."""


@dataclass
class Session:
    """One KXP connection found in the capture and what could be done with it."""

    client: Address
    server: Address
    start_time: float
    kex: str = "?"
    cipher_suite: str = "?"
    group: str = "none"
    client_random: bytes = b""
    server_random: bytes = b""
    psk_identity: str = ""
    server_key_sha256: str = ""
    signature_scheme: str = ""
    handshake_complete: bool = False
    """Both FINISHED frames are in the capture."""
    decrypted: bool = False
    """Keys were found for at least one direction and they open its records."""
    method: str = ""
    """How the keys were obtained, when ``decrypted``."""
    reason: str = ""
    """Why the session was not decrypted (or a part of it was not)."""
    handshake_failed: bool = False
    """An alert ended the handshake: no keys were agreed, no records exist (``reason`` says which)."""
    forward_secret: bool = False
    """dhe: no long-term secret, leaked or not, recovers the session keys."""
    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    frames: list[SeenFrame] = field(default_factory=list, repr=False)
    """Every frame of both directions in capture order (handshake, alerts, records)."""
    keys: SessionKeys | None = field(default=None, repr=False)
    """Set when ``decrypted``."""


@dataclass
class DecryptReport:
    """Everything ``decrypt_capture`` found."""

    capture: str
    packets: int
    sessions: list[Session]
    psks_found: list[LeakedPsk]
    warnings: list[str]


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def report_to_json(report: DecryptReport) -> dict[str, Any]:
    """A JSON-ready view of a report (bytes as hex, plaintext also as UTF-8 text when it is)."""
    return {
        "capture": report.capture,
        "packets": report.packets,
        "warnings": report.warnings,
        "psks_found": [
            {
                "identity": leak.identity,
                "key": leak.key.hex(),
                "topic": leak.topic,
                "server_id": leak.server_id,
                "time": leak.time,
                "expires_at": leak.expires_at,
                "from": f"{leak.src[0]}:{leak.src[1]}",
                "to": f"{leak.dst[0]}:{leak.dst[1]}",
            }
            for leak in report.psks_found
        ],
        "sessions": [
            {
                "client": f"{s.client[0]}:{s.client[1]}",
                "server": f"{s.server[0]}:{s.server[1]}",
                "start_time": s.start_time,
                "kex": s.kex,
                "cipher_suite": s.cipher_suite,
                "group": s.group,
                "client_random": s.client_random.hex(),
                "server_random": s.server_random.hex(),
                "psk_identity": s.psk_identity,
                "server_key_sha256": s.server_key_sha256,
                "signature_scheme": s.signature_scheme,
                "handshake_complete": s.handshake_complete,
                "decrypted": s.decrypted,
                "method": s.method,
                "reason": s.reason,
                "handshake_failed": s.handshake_failed,
                "forward_secret": s.forward_secret,
                "notes": s.notes,
                "records": [
                    {
                        "time": r.time,
                        "direction": r.direction,
                        "epoch": r.epoch,
                        "seq": r.seq,
                        "content_type": r.content_type,
                        "plaintext_hex": None if r.plaintext is None else r.plaintext.hex(),
                        "plaintext": _text(r.plaintext),
                        "note": r.note,
                    }
                    for r in s.records
                ],
            }
            for s in report.sessions
        ],
    }
