"""One frame, field by field, as the core's own decoders read it (docs/protocol.md §1, §3, §6).

``dissect_frame`` runs the header checks of ``frames`` and the payload decoders of
``messages`` and ``records`` with a ``FieldLog``, so every offset and byte it reports
is exactly what a connection parsed; it never raises. The words that explain each
field to a person live above the core (``explain.annotate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .alerts import ProtocolError
from .constants import HEADER_LEN, FrameType
from .frames import check_length, read_header
from .messages import MESSAGES, Alert, Finished, HandshakeMessage
from .records import read_record
from .wire import FieldLog, Reader


@dataclass
class Dissection:
    """What ``dissect_frame`` found: the fields read, the message, and why it stopped."""

    frame: bytes
    hash_len: int | None = None
    """The HashLen FINISHED was read with (None: all of its payload)."""
    log: FieldLog = field(default_factory=FieldLog)
    frame_type: FrameType | None = None
    """None when the header did not get as far as a known type."""
    length: int | None = None
    """The declared payload length."""
    message: HandshakeMessage | Alert | None = None
    """The decoded payload (handshake frames and ALERT), when it decoded."""
    seq: int | None = None
    """RECORD: the sequence number, when it was there."""
    header_error: ProtocolError | None = None
    """A header check that failed (the payload is then not read, except over-length)."""
    payload_error: ProtocolError | None = None
    """Why the payload did not decode."""

    @property
    def payload_end(self) -> int:
        """Where the payload ends in ``frame`` (the declared end, or the frame's)."""
        if self.length is None:
            return len(self.frame)
        return min(HEADER_LEN + self.length, len(self.frame))


def dissect_frame(frame: bytes, hash_len: int | None = None) -> Dissection:
    """Every field of ``frame``; ``hash_len`` sizes FINISHED (None: all its payload)."""
    out = Dissection(bytes(frame), hash_len)
    try:
        out.frame_type, out.length = read_header(Reader(out.frame, "frame header", out.log))
    except ProtocolError as exc:
        out.header_error = exc
        return out
    try:
        check_length(out.frame_type, out.length)
    except ProtocolError as exc:
        out.header_error = exc  # recorded; the payload is still shown
    payload = out.frame[HEADER_LEN : out.payload_end]
    try:
        out.message, out.seq = _payload(out.frame_type, out.length, payload, hash_len, out.log)
    except ProtocolError as exc:
        out.payload_error = exc
    return out


def _payload(
    frame_type: FrameType, length: int, payload: bytes, hash_len: int | None, log: FieldLog
) -> tuple[HandshakeMessage | Alert | None, int | None]:
    if frame_type is FrameType.RECORD:
        reader = Reader(payload, "RECORD", log, HEADER_LEN)
        seq = read_record(reader, length)
        reader.finish()
        return None, seq
    if frame_type is FrameType.FINISHED:
        return Finished.decode(payload, hash_len, log), None
    return MESSAGES[frame_type].decode(payload, log), None
