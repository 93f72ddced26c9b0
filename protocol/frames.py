"""Frames (PROTOCOL.md §1): encoding and an incremental decoder with the header checks in order."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

from .alerts import AlertCode, RemoteProtocolError
from .constants import (
    HEADER_LEN,
    MAGIC,
    MAX_HANDSHAKE_PAYLOAD,
    MAX_RECORD_PAYLOAD,
    VERSION,
    FrameType,
)


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame: its type, payload and the 8-byte header it arrived with."""

    type: FrameType
    payload: bytes

    @property
    def header(self) -> bytes:
        """The 8-byte header (also the record AAD prefix, §6)."""
        return frame_header(self.type, len(self.payload))

    def encode(self) -> bytes:
        """Header || payload."""
        return self.header + self.payload


def max_payload(frame_type: FrameType) -> int:
    """§1 check 4: the size limit of a frame type."""
    return MAX_RECORD_PAYLOAD if frame_type is FrameType.RECORD else MAX_HANDSHAKE_PAYLOAD


def frame_header(frame_type: int, length: int) -> bytes:
    """'K' 'X' ver type length(u32)."""
    return MAGIC + bytes((VERSION, frame_type)) + length.to_bytes(4, "big")


def encode_frame(frame_type: FrameType, payload: bytes) -> bytes:
    """A whole frame; a payload over the type's limit is a local bug."""
    if len(payload) > max_payload(frame_type):
        raise ValueError(f"{frame_type.name} payload of {len(payload)} bytes exceeds the limit")
    return frame_header(frame_type, len(payload)) + payload


def check_header(
    header: bytes, expected: Container[FrameType] | None = None
) -> tuple[FrameType, int]:
    """Apply §1 checks 1-5 in order to an 8-byte header; return (type, length)."""
    if header[0:2] != MAGIC:
        raise RemoteProtocolError(AlertCode.DECODE_ERROR, f"bad magic {header[0:2].hex()}")
    if header[2] != VERSION:
        raise RemoteProtocolError(AlertCode.PROTOCOL_VERSION, f"unsupported version {header[2]}")
    try:
        frame_type = FrameType(header[3])
    except ValueError:
        raise RemoteProtocolError(
            AlertCode.UNEXPECTED_MESSAGE, f"unknown frame type 0x{header[3]:02x}"
        ) from None
    length = int.from_bytes(header[4:8], "big")
    if length > max_payload(frame_type):
        raise RemoteProtocolError(
            AlertCode.RECORD_OVERFLOW,
            f"{frame_type.name} length {length} exceeds {max_payload(frame_type)}",
        )
    if expected is not None and frame_type not in expected:
        raise RemoteProtocolError(
            AlertCode.UNEXPECTED_MESSAGE, f"{frame_type.name} not expected now"
        )
    return frame_type, length


class FrameDecoder:
    """Buffers received bytes and yields complete frames in bounded memory.

    The header is checked (``check_header``) as soon as its 8 bytes are in, before
    any payload byte is looked at, so a hostile length never makes us buffer more
    than one maximum-size frame.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pending: tuple[FrameType, int] | None = None
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self._buf += data

    def feed_eof(self) -> None:
        """The peer closed its side of the stream."""
        self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes held and not yet returned as a frame."""
        return len(self._buf)

    def next_frame(self, expected: Container[FrameType] | None = None) -> Frame | None:
        """The next complete frame, or None for "need more data".

        ``expected`` is the set of types the caller's state allows (§1 check 5);
        None allows every type (a passive observer).
        """
        if self._pending is None:
            if len(self._buf) < HEADER_LEN:
                self._check_eof()
                return None
            self._pending = check_header(bytes(self._buf[:HEADER_LEN]), expected)
        frame_type, length = self._pending
        end = HEADER_LEN + length
        if len(self._buf) < end:
            self._check_eof()
            return None
        payload = bytes(self._buf[HEADER_LEN:end])
        del self._buf[:end]
        self._pending = None
        return Frame(frame_type, payload)

    def _check_eof(self) -> None:
        # §1: end of stream inside a frame is decode_error.
        if self._eof and self._buf:
            raise RemoteProtocolError(
                AlertCode.DECODE_ERROR, f"connection closed inside a frame ({len(self._buf)} bytes)"
            )
