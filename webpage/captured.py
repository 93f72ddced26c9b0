"""The pages of a capture, from ``kexlab decrypt``'s sessions (``kexlab decrypt --html DIR``).

Each session's frames go through the ``--explain`` annotator as if the client had traced
them; the records carry what the decryptor found (plaintext, or why not). Two sessions
with the same client_random are the two legs of a man in the middle (``kexlab mitm``
reuses the client's random upstream): they share one page with the attacker's column
between the client's and the server's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capture.report import DecryptReport, SeenFrame, Session, SessionKeys
from explain.annotator import Annotator
from explain.rows import RecordInfo
from explain.secrets import epoch_keys
from protocol.constants import HEADER_LEN, ContentType, FrameType, Kex
from protocol.dissect import dissect_frame
from protocol.events import FrameTraced
from protocol.keyschedule import TrafficKeys, sas_display
from protocol.messages import ClientHello
from protocol.methods import METHODS
from transport.address import host_port

from .claims import claims
from .model import Leg, Party, Step, Story
from .schedule import Known, ScheduleBuilder, Transcript
from .steps import StepLog, make_step

_CONTENT = {c.name.lower(): c for c in ContentType}


class CaptureAnnotator(Annotator):
    """The ``--explain`` annotator, with the record keys a key log or a leaked key gave."""

    def __init__(self, keys: SessionKeys | None) -> None:
        super().__init__("client", show_secrets=keys is not None)
        self.keys = keys
        self._cache: dict[tuple[str, int], TrafficKeys] = {}

    def sender_keys(self, sender: str, epoch: int | None) -> TrafficKeys | None:
        """Key and iv of ``sender``'s records in ``epoch``, when the capture's keys give them."""
        if self.keys is None or epoch is None or self.cipher_suite is None:
            return None
        secret = self.keys.client_secret if sender == "client" else self.keys.server_secret
        if secret is None:
            return None
        found = self._cache.get((sender, epoch))
        if found is None:
            found = self._cache[(sender, epoch)] = epoch_keys(self.cipher_suite, secret, epoch)
        return found

    def record_info(self, event: FrameTraced) -> RecordInfo | None:
        """RecordInfo with the sender's keys (the base class asks a HandshakeComplete)."""
        sender = "client" if event.direction == "sent" else "server"
        return RecordInfo.from_trace(event, self.sender_keys(sender, event.epoch))


def _traced(seen: SeenFrame) -> tuple[FrameTraced, str]:
    """The frame as the client's connection would have traced it, and what went wrong with it."""
    direction = "sent" if seen.sender == "client" else "received"
    record = seen.record
    is_record = dissect_frame(seen.data[:HEADER_LEN]).frame_type is FrameType.RECORD
    if record is None or not is_record:
        return FrameTraced(direction, seen.data), ""
    content_type = _CONTENT.get(record.content_type)
    if record.plaintext is None or content_type is None:
        return FrameTraced(direction, seen.data, record.epoch, record.seq), record.note
    event = FrameTraced(
        direction, seen.data, record.epoch, record.seq, content_type, record.plaintext
    )
    # An opened key_update or alert explains itself; an opened message's only note is a
    # hole in the capture before it.
    return event, record.note if content_type is ContentType.APPLICATION_DATA else ""


@dataclass
class _Leg:
    """One session of the capture on its way onto a page."""

    number: int
    session: Session
    client: str
    server: str
    annotator: CaptureAnnotator = field(init=False)
    transcript: list[tuple[FrameType, bytes, str]] = field(default_factory=list)
    hello: ClientHello | None = None
    epochs: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0})

    def __post_init__(self) -> None:
        self.annotator = CaptureAnnotator(self.session.keys)

    def step(self, number: int, seen: SeenFrame, start: float) -> Step:
        """One frame of this leg as a step."""
        event, diagnosis = _traced(seen)
        rows = self.annotator.rows(event)
        sender, receiver = (
            (self.client, self.server) if seen.sender == "client" else (self.server, self.client)
        )
        step = make_step(
            number,
            event,
            rows,
            sender,
            receiver,
            keys=self.annotator.sender_keys(seen.sender, event.epoch),
            diagnosis=diagnosis,
            leg=self.number if self.client == "attacker" or self.server == "attacker" else 0,
            time=seen.time - start,
        )
        if step.kind == "handshake" and step.frame_type in FrameType.__members__:
            if len(self.transcript) < 8:
                self.transcript.append((FrameType[step.frame_type], seen.data, seen.sender))
            message = dissect_frame(seen.data).message
            if isinstance(message, ClientHello) and self.hello is None:
                self.hello = message
        if step.record is not None and step.record.epoch is not None:
            bump = 1 if step.kind == "key_update" else 0
            self.epochs[seen.sender] = max(self.epochs[seen.sender], step.record.epoch + bump)
        return step

    def leg(self, steps: list[Step]) -> Leg:
        """What the page says about this session."""
        s = self.session
        leg = Leg(self.number, self.client, self.server)
        method_text = "/".join(p for p in (s.kex, s.group, s.cipher_suite) if p != "none")
        leg.facts.append(("method", method_text))
        if s.signature_scheme:
            leg.facts.append(("signature", s.signature_scheme))
        leg.facts.append(("client_random", s.client_random.hex() or "not in the capture"))
        leg.facts.append(("server_random", s.server_random.hex() or "not in the capture"))
        if s.server_key_sha256:
            leg.facts.append(("server key SHA-256", s.server_key_sha256))
        if s.psk_identity:
            leg.facts.append(("PSK identity", s.psk_identity))
        leg.facts.append(("handshake", "complete" if s.handshake_complete else "not complete"))
        leg.facts.append(("opened with", s.method if s.decrypted else "nothing: sealed"))
        leg.opened = s.decrypted
        leg.sealed_reason = s.reason
        kex = self._kex()
        if kex is not None and self.annotator.cipher_suite is not None:
            method = METHODS[kex]
            group = s.group if s.group != "none" else ""
            leg.claims = claims(method, bool(s.server_key_sha256), group)
            known = Known(
                s.keys.handshake if s.keys else None,
                s.keys.client_secret if s.keys else None,
                s.keys.server_secret if s.keys else None,
            )
            leg.schedule = ScheduleBuilder(
                self.annotator.cipher_suite,
                method,
                Transcript(self.transcript),
                known,
                show=s.keys is not None,
                group=group,
                psk_identity=s.psk_identity,
            ).build(self.epochs)
            sas = next((d for d in leg.schedule if d.name == "sas"), None)
            if sas is not None and sas.value is not None:
                leg.sas = sas_display(sas.value)
                leg.sas_from = "computed from the master secret and the transcript"
            else:
                leg.sas_from = (
                    "not computable from this capture: the SAS needs the master secret"
                    " (a key log holds only the traffic secrets)"
                )
        leg.outcome = _outcome(steps)
        return leg

    def _kex(self) -> Kex | None:
        if self.hello is None:
            return None
        try:
            return Kex(self.hello.kex)
        except ValueError:
            return None


def _outcome(steps: list[Step]) -> str:
    alerts = [s for s in steps if s.kind == "alert"]
    if alerts:
        return f"ended by the {alerts[0].sender}'s alert: {alerts[0].note}"
    closes = {s.sender for s in steps if s.kind == "close"}
    if len(closes) >= 2:
        return "closed cleanly: both sides sent close_notify"
    if closes:
        return f"only the {next(iter(closes))} sent close_notify in this capture"
    return "the capture ends before the connection closed"


def _story(legs: list[_Leg], parties: list[Party], title: str, source: str) -> Story:
    frames = sorted(
        (seen.time, leg.number, i, seen)
        for leg in legs
        for i, seen in enumerate(leg.session.frames)
    )
    start = frames[0][0] if frames else 0.0
    log = StepLog()
    endings: dict[int, list[Step]] = {leg.number: [] for leg in legs}
    for _, number, _, seen in frames:
        leg = legs[number - 1]
        step = leg.step(log.count + 1, seen, start)
        if step.kind in ("alert", "close"):
            endings[number].append(step)
        log.add(step)
    return Story(
        title=title,
        source=source,
        parties=parties,
        legs=[leg.leg(endings[leg.number]) for leg in legs],
        steps=log.steps(),
        with_secrets=any(leg.session.keys is not None for leg in legs),
        frames=log.count,
    )


def session_story(session: Session, source: str) -> Story:
    """The page of one session."""
    leg = _Leg(1, session, "client", "server")
    parties = [
        Party("client", f"client {host_port(*session.client)}"),
        Party("server", f"server {host_port(*session.server)}"),
    ]
    method = "/".join(p for p in (session.kex, session.group, session.cipher_suite) if p != "none")
    return _story([leg], parties, f"kexlab {method} session, from a capture", source)


def mitm_story(first: Session, second: Session, source: str) -> Story:
    """The page of a man in the middle: ``first`` faces the client, ``second`` the server."""
    legs = [_Leg(1, first, "client", "attacker"), _Leg(2, second, "attacker", "server")]
    parties = [
        Party("client", f"client {host_port(*first.client)}"),
        Party(
            "attacker",
            f"attacker {host_port(*first.server)} · {host_port(*second.client)}",
        ),
        Party("server", f"server {host_port(*second.server)}"),
    ]
    story = _story(legs, parties, "kexlab session through a man in the middle", source)
    story.notes.append(_mitm_verdict(first, second))
    return story


def _mitm_verdict(first: Session, second: Session) -> str:
    same = f"Both connections carry the same client_random ({first.client_random.hex()[:16]}…)"
    if first.server_random == second.server_random:
        return (
            f"{same} and the same server_random: the party in the middle passed the"
            " handshake through unchanged (a relay without keys). It can still drop, replay,"
            " reorder or change records: the frames below show what each side received."
        )
    keys = ""
    if first.server_key_sha256 != second.server_key_sha256:
        shown = first.server_key_sha256[:16] or "none"
        real = second.server_key_sha256[:16] or "none"
        keys = f" The client was shown server key {shown}…, the server's own is {real}…."
    return (
        f"{same} but different server randoms: one party ran a handshake of its own with each"
        f" side, a man in the middle (kexlab mitm reuses the client's random upstream).{keys}"
        " The two legs have different keys and different SAS values: people who compare the"
        " SAS out of band see the difference."
    )


def capture_stories(report: DecryptReport) -> list[tuple[str, Story]]:
    """(file name, page) for each session of a capture; a MITM's two legs share one page."""
    source = f"capture {report.capture}"
    by_random: dict[bytes, list[Session]] = {}
    for session in report.sessions:
        if session.client_random:
            by_random.setdefault(session.client_random, []).append(session)
    pages: list[tuple[str, Story]] = []
    done: set[int] = set()
    for index, session in enumerate(report.sessions, 1):
        if id(session) in done:
            continue
        pair = by_random.get(session.client_random, [])
        if len(pair) == 2 and session.client_random:
            first, second = sorted(pair, key=lambda s: s.start_time)
            done.update({id(first), id(second)})
            pages.append((f"mitm-{index:03d}.html", mitm_story(first, second, source)))
            continue
        pages.append((f"session-{index:03d}.html", session_story(session, source)))
    return pages
