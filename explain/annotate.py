"""Annotated frames: every byte of a frame named and explained (docs/protocol.md §1, §3, §6).

``annotate_frame`` turns the core's dissection of one frame (``protocol.dissect``: the
offsets and bytes the connection's own decoders read) into rows — offset, field,
bytes, meaning — whose bytes tile the frame exactly, so a reader can follow a handshake
byte by byte. It is what ``--explain`` prints, and it never raises: bytes the decoders
could not read become an ``undecodable`` row that says why. Field names are the spec's
(``FIELDS``), so a Wireshark dissector can use the same ones (``kxp.<field>``).
"""

from __future__ import annotations

from protocol.constants import (
    HEADER_LEN,
    ContentType,
    FrameType,
)
from protocol.dissect import Dissection, dissect_frame

from .rows import UNDECODABLE, RecordInfo, Row
from .words import FieldMeanings, enum_value

_HEADER_STOPS = {
    "magic": "not a KXP frame (bad magic: decode_error)",
    "ver": "unsupported version: payload not parsed (protocol_version)",
    "type": "unknown frame type: payload not parsed (unexpected_message)",
}


def _why_undecodable(d: Dissection) -> tuple[int, int, str] | None:
    """(start, end, why) of the bytes the decoders could not read, if any."""
    log = d.log
    if log.shortfall is not None:
        short = log.shortfall
        end = d.payload_end if d.frame_type is not None else len(d.frame)
        why = f"{short.name} cut short: needs {short.needed} byte(s), {short.left} left"
        return short.offset, end, f"{why} (decode_error)"
    if d.frame_type is None and d.header_error is not None:
        last = log.spans[-1]
        return last.offset + len(last.data), len(d.frame), _HEADER_STOPS[last.name]
    if log.trailing is not None:
        assert d.frame_type is not None
        extra = d.payload_end - log.trailing
        why = f"{extra} trailing byte(s) in the {d.frame_type.name} payload (decode_error)"
        return log.trailing, d.payload_end, why
    if d.payload_error is not None and d.frame_type is FrameType.RECORD and d.seq is None:
        return HEADER_LEN, d.payload_end, f"{d.payload_error.reason} (decode_error)"
    return None


# --------------------------------------------------------------------------- public API


def annotate_frame(
    frame: bytes,
    *,
    hash_len: int | None = None,
    record_info: RecordInfo | None = None,
    show_secrets: bool = False,
) -> list[Row]:
    """Rows naming every byte of ``frame``; their bytes tile it exactly. Never raises."""
    return annotate_dissection(
        dissect_frame(frame, hash_len), record_info=record_info, show_secrets=show_secrets
    )


def annotate_dissection(
    d: Dissection, *, record_info: RecordInfo | None = None, show_secrets: bool = False
) -> list[Row]:
    """``annotate_frame`` for a frame the caller has dissected already."""
    frame = d.frame
    if not frame:
        return [Row(0, UNDECODABLE, b"", "undecodable: empty, no frame header")]
    meaning = FieldMeanings(d, d.hash_len, record_info, show_secrets)
    rows = [Row(span.offset, span.name, span.data, meaning(span)) for span in d.log.spans]
    stop = _why_undecodable(d)
    if stop is not None:
        start, end, why = stop
        rows.append(Row(start, UNDECODABLE, frame[start:end], f"undecodable: {why}"))
    if d.frame_type is not None and len(frame) > d.payload_end:
        extra = len(frame) - d.payload_end
        rows.append(
            Row(
                d.payload_end,
                UNDECODABLE,
                frame[d.payload_end :],
                f"undecodable: {extra} byte(s) beyond the declared length",
            )
        )
    return rows


def frame_title(frame: bytes, direction: str = "", record_info: RecordInfo | None = None) -> str:
    """A table title such as ``C → S  CLIENT_HELLO, 80 bytes``."""
    name = "?"
    type_span = next((s for s in dissect_frame(frame).log.spans if s.name == "type"), None)
    if type_span is not None:
        code = type_span.data[0]
        ft = enum_value(FrameType, code)
        name = ft.name if ft is not None else f"type 0x{code:02x}"
        if ft is FrameType.RECORD and record_info is not None:
            ct = record_info.content_type
            if ct is not None:
                known = enum_value(ContentType, ct)
                name += f" ({known.name.lower() if known is not None else f'0x{ct:02x}'})"
    prefix = f"{direction}  " if direction else ""
    return f"{prefix}{name}, {len(frame)} bytes"
