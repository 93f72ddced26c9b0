"""Frames become ladder steps: the annotator's rows, the record's nonce, a bounded log.

The rows come from ``explain`` (the ``--explain`` annotator), never from a parser of our
own: a step only names the frame by its ``type`` row and reads the record fields the
rows carry. ``StepLog`` keeps the first and last frames of a session whole and folds the
records in between into groups, so a 20 MiB transfer (or a peer that never stops
talking to a server writing pages) costs a bounded amount of memory and page.
"""

from __future__ import annotations

from collections import deque

from explain.annotate import frame_title
from explain.rows import RecordInfo, Row
from explain.words import describe_content, enum_value, preview
from protocol.alerts import AlertCode, ProtocolError
from protocol.constants import HEADER_LEN, ContentType, FrameType
from protocol.events import FrameTraced
from protocol.keyschedule import TrafficKeys
from protocol.messages import Alert

from .model import SHOWN_PLAINTEXT, Compact, FieldView, RecordView, Step, StepGroup, clip

HEAD = 32
"""Frames at the start of a session shown whole."""
TAIL = 8
"""Frames at the end of a session shown whole."""
COMPACT_LINES = 4000
"""Records of a folded run listed one line each; the rest are counted."""
SEEDED_FIELDS = frozenset(
    {"random", "key_share", "encrypted_secret", "signature", "verify_data", "ciphertext", "tag"}
)
"""Fields whose bytes follow from the randomness (the ``--deterministic`` seed, if any)."""


def frame_type_of(rows: list[Row]) -> FrameType | None:
    """The frame's type, from its annotated ``type`` row (None: unknown or not read)."""
    row = next((r for r in rows if r.field == "type"), None)
    return enum_value(FrameType, row.data[0]) if row is not None and row.data else None


def _alert_kind(payload: bytes | None) -> tuple[str, str]:
    """("close" or "alert", what it says) for an ALERT payload."""
    text = describe_content(ContentType.ALERT, payload or b"")
    try:
        code = Alert.decode(payload or b"").code
    except ProtocolError:
        return "alert", text
    return ("close" if code == AlertCode.CLOSE_NOTIFY else "alert"), text


def make_step(
    number: int,
    event: FrameTraced,
    rows: list[Row],
    sender: str,
    receiver: str,
    *,
    keys: TrafficKeys | None = None,
    seeded: bool = False,
    diagnosis: str = "",
    leg: int = 0,
    time: float | None = None,
) -> Step:
    """One frame as a ladder step; ``keys`` (the sender's, for a page with secrets) work the nonce."""
    ft = frame_type_of(rows)
    name = ft.name if ft is not None else "unknown frame"
    fields = [
        FieldView(
            r.offset,
            r.field,
            clip(r.data),
            len(r.data),
            r.meaning,
            seeded and r.field in SEEDED_FIELDS,
        )
        for r in rows
    ]
    title = frame_title(event.frame, "", RecordInfo.from_trace(event))
    step = Step(number, sender, receiver, name, title, len(event.frame), "handshake", fields)
    step.seeded, step.leg, step.time, step.note = seeded, leg, time, diagnosis
    if ft is FrameType.ALERT:
        payload = event.frame[HEADER_LEN:]
        step.kind, said = _alert_kind(payload)
        step.note = step.note or said
    elif ft is FrameType.RECORD:
        step.record = _record(event, rows, keys, diagnosis)
        step.kind = {"key_update": "key_update", "alert": "alert"}.get(
            step.record.content_type, "record"
        )
        if step.record.content_type == "alert":
            step.kind, said = _alert_kind(event.content)
            step.note = step.note or said
        elif step.record.content_type == "key_update":
            step.note = step.note or describe_content(ContentType.KEY_UPDATE, event.content)
    elif ft is None:
        step.kind = "unknown"
    return step


def _record(
    event: FrameTraced, rows: list[Row], keys: TrafficKeys | None, diagnosis: str
) -> RecordView:
    by_name = {r.field: r.data for r in rows}
    seq = event.seq
    if seq is None and len(by_name.get("seq", b"")) == 8:
        seq = int.from_bytes(by_name["seq"], "big")
    content_type = "encrypted"
    if event.content_type is not None:
        known = enum_value(ContentType, int(event.content_type))
        content_type = known.name.lower() if known is not None else f"0x{event.content_type:02x}"
    content = event.content
    return RecordView(
        epoch=event.epoch,
        seq=seq,
        content_type=content_type,
        ciphertext_size=len(by_name.get("ciphertext", b"")),
        tag=by_name.get("tag", b""),
        plaintext=None if content is None else clip(content, SHOWN_PLAINTEXT),
        plaintext_size=0 if content is None else len(content),
        iv=keys.iv if keys is not None else None,
        key=keys.key if keys is not None else None,
        diagnosis=diagnosis,
    )


def compact(step: Step) -> Compact:
    """One line for a folded record."""
    record = step.record
    if record is None:
        return Compact(
            step.number, step.sender, step.receiver, None, None, step.kind, step.size, ""
        )
    shown = step.note or (
        preview(record.plaintext, 40) if record.plaintext is not None else record.diagnosis
    )
    return Compact(
        step.number,
        step.sender,
        step.receiver,
        record.epoch,
        record.seq,
        record.content_type,
        step.size,
        shown,
    )


class StepLog:
    """The steps of one page in order: the first ``head`` and last ``tail`` whole, the rest folded.

    Alerts are never folded: they say how the session ended.
    """

    def __init__(self, head: int = HEAD, tail: int = TAIL) -> None:
        self.head = head
        self.tail = tail
        self.items: list[Step | StepGroup] = []
        self._recent: deque[Step] = deque()
        self.count = 0

    def add(self, step: Step) -> None:
        """The next frame's step (numbered by the caller, in order)."""
        self.count += 1
        if self.count <= self.head:
            self.items.append(step)
            return
        self._recent.append(step)
        if len(self._recent) > self.tail:
            self._fold(self._recent.popleft())

    def _fold(self, step: Step) -> None:
        if step.kind in ("alert", "handshake"):
            self.items.append(step)
            return
        group = self.items[-1] if self.items else None
        if not isinstance(group, StepGroup):
            group = StepGroup(step.number)
            self.items.append(group)
        group.count += 1
        group.size += step.size
        if step.record is not None and step.record.plaintext is not None:
            group.plaintext += step.record.plaintext_size
        flow = (step.sender, step.receiver)
        group.flows[flow] = group.flows.get(flow, 0) + 1
        kind = step.record.content_type if step.record is not None else step.kind
        group.types[kind] = group.types.get(kind, 0) + 1
        if len(group.lines) < COMPACT_LINES:
            group.lines.append(compact(step))

    def steps(self) -> list[Step | StepGroup]:
        """Every item so far, the recent whole steps last."""
        return [*self.items, *self._recent]

    def whole(self) -> list[Step]:
        """The steps kept whole."""
        return [s for s in self.steps() if isinstance(s, Step)]
