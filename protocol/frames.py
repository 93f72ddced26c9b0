"""Frames (docs/protocol.md §1): encoding and an incremental decoder with the header checks in order."""

from __future__ import annotations

import struct
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
from .wire import Reader


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


_HEADER = struct.Struct(">2sBBI")
_TYPES: dict[int, FrameType] = {int(t): t for t in FrameType}
_LIMITS: dict[FrameType, int] = {t: max_payload(t) for t in FrameType}


def frame_header(frame_type: int, length: int) -> bytes:
    """'K' 'X' ver type length(u32)."""
    return _HEADER.pack(MAGIC, VERSION, frame_type, length)


def encode_frame(frame_type: FrameType, payload: bytes) -> bytes:
    """A whole frame; a payload over the type's limit is a local bug."""
    if len(payload) > max_payload(frame_type):
        raise ValueError(f"{frame_type.name} payload of {len(payload)} bytes exceeds the limit")
    return frame_header(frame_type, len(payload)) + payload


# §1 checks 1-4, one function per header field, in the order the spec applies them; the
# decoder's fast path below and ``read_header`` (field by field, for dissection) share them.


def check_magic(magic: bytes) -> None:
    """§1 check 1: 'K' 'X', else decode_error."""
    if magic != MAGIC:
        raise RemoteProtocolError(AlertCode.DECODE_ERROR, f"bad magic {magic.hex()}")


def check_version(version: int) -> None:
    """§1 check 2: version 1, else protocol_version."""
    if version != VERSION:
        raise RemoteProtocolError(AlertCode.PROTOCOL_VERSION, f"unsupported version {version}")


def check_type(type_code: int) -> FrameType:
    """§1 check 3: a type of §1, else unexpected_message."""
    frame_type = _TYPES.get(type_code)
    if frame_type is None:
        raise RemoteProtocolError(
            AlertCode.UNEXPECTED_MESSAGE, f"unknown frame type 0x{type_code:02x}"
        )
    return frame_type


def check_length(frame_type: FrameType, length: int) -> None:
    """§1 check 4: the type's size limit, else record_overflow."""
    if length > _LIMITS[frame_type]:
        raise RemoteProtocolError(
            AlertCode.RECORD_OVERFLOW,
            f"{frame_type.name} length {length} exceeds {_LIMITS[frame_type]}",
        )


def check_expected(frame_type: FrameType, expected: Container[FrameType] | None) -> None:
    """§1 check 5: a type the receiver's state allows, else unexpected_message."""
    if expected is not None and frame_type not in expected:
        raise RemoteProtocolError(
            AlertCode.UNEXPECTED_MESSAGE, f"{frame_type.name} not expected now"
        )


def check_header(
    header: bytes, expected: Container[FrameType] | None = None
) -> tuple[FrameType, int]:
    """Apply §1 checks 1-5 in order to an 8-byte header; return (type, length)."""
    return _check_header_at(header, 0, expected)


def read_header(reader: Reader) -> tuple[FrameType, int]:
    """The header field by field, each checked as it is read (checks 1-3); for dissection.

    The length is returned unchecked: a dissector shows what an oversized frame holds
    (``check_length`` says what a receiver does with it).
    """
    check_magic(reader.fixed(2, "magic"))
    check_version(reader.u8("ver"))
    frame_type = check_type(reader.u8("type"))
    return frame_type, reader.u32("length")


def _check_header_at(
    data: bytes | bytearray, pos: int, expected: Container[FrameType] | None
) -> tuple[FrameType, int]:
    magic, version, type_code, length = _HEADER.unpack_from(data, pos)
    frame_type = _TYPES.get(type_code)
    if (
        magic == MAGIC
        and version == VERSION
        and frame_type is not None
        and length <= _LIMITS[frame_type]
        and (expected is None or frame_type in expected)
    ):
        return frame_type, length
    # Something is wrong: find the first check that fails, in the spec's order.
    check_magic(magic)
    check_version(version)
    frame_type = check_type(type_code)
    check_length(frame_type, length)
    check_expected(frame_type, expected)
    raise AssertionError("unreachable: a check above fails")  # pragma: no cover


class FrameDecoder:
    """Buffers received bytes and yields complete frames in bounded memory.

    The header is checked (``check_header``) as soon as its 8 bytes are in, before
    any payload byte is looked at, so a hostile length never makes us buffer more
    than one maximum-size frame.

    Frames are cut straight out of the chunk they arrived in (no copy into a
    buffer, no delete from its front); only a frame that straddles two chunks is
    assembled in ``_carry``, and only up to its own end.
    """

    __slots__ = ("_carry", "_data", "_eof", "_pending", "_pos")

    def __init__(self) -> None:
        self._data: bytes = b""
        self._pos = 0
        self._carry = bytearray()
        self._pending: tuple[FrameType, int] | None = None
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        if not data:
            return
        if self._pos < len(self._data):
            # The unread tail is the start of a frame: it waits in _carry.
            self._carry += memoryview(self._data)[self._pos :]
        # Kept by reference, so it must be immutable: a caller may reuse its buffer.
        self._data = data if type(data) is bytes else bytes(data)
        self._pos = 0

    def feed_eof(self) -> None:
        """The peer closed its side of the stream."""
        self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes held and not yet returned as a frame."""
        return len(self._carry) + len(self._data) - self._pos

    def next_frame(self, expected: Container[FrameType] | None = None) -> Frame | None:
        """The next complete frame, or None for "need more data".

        ``expected`` is the set of types the caller's state allows (§1 check 5);
        None allows every type (a passive observer).
        """
        got = self.next_view(expected)
        if got is None:
            return None
        frame_type, view = got
        with view:
            return Frame(frame_type, bytes(view[HEADER_LEN:]))

    def next_view(
        self, expected: Container[FrameType] | None = None
    ) -> tuple[FrameType, memoryview] | None:
        """Like ``next_frame``, but the whole frame (header included) as a read-only view.

        The view is over bytes the decoder never writes again: it stays valid, and the
        caller copies only what it keeps (the record path decrypts straight from it).
        """
        if self._carry:
            return self._next_from_carry(expected)
        data, pos = self._data, self._pos
        if self._pending is None:
            if len(data) - pos < HEADER_LEN:
                if self._eof:
                    self._check_eof()
                return None
            self._pending = _check_header_at(data, pos, expected)
        frame_type, length = self._pending
        end = pos + HEADER_LEN + length
        if end > len(data):
            if self._eof:
                self._check_eof()
            return None
        if end == len(data):  # drop a spent chunk: an idle connection keeps no read buffer
            self._data, self._pos = b"", 0
        else:
            self._pos = end
        self._pending = None
        return frame_type, memoryview(data)[pos:end]

    def _next_from_carry(
        self, expected: Container[FrameType] | None
    ) -> tuple[FrameType, memoryview] | None:
        carry = self._carry
        if self._pending is None:
            self._take(HEADER_LEN - len(carry))
            if len(carry) < HEADER_LEN:
                self._check_eof()
                return None
            self._pending = _check_header_at(carry, 0, expected)
        frame_type, length = self._pending
        end = HEADER_LEN + length
        self._take(end - len(carry))
        if len(carry) < end:
            self._check_eof()
            return None
        # Several feeds before a drain leave more than this frame in _carry: the rest
        # (the next frames' bytes, in order) stays there, ahead of the current chunk.
        self._carry = carry[end:]  # a fresh one: the old one is never written again
        del carry[end:]
        self._pending = None
        return frame_type, memoryview(carry).toreadonly()

    def _take(self, n: int) -> None:
        """Move up to ``n`` bytes of the current chunk into ``_carry``."""
        if n > 0 and self._pos < len(self._data):
            end = min(self._pos + n, len(self._data))
            self._carry += memoryview(self._data)[self._pos : end]
            self._pos = end

    def _check_eof(self) -> None:
        # §1: end of stream inside a frame is decode_error.
        if self._eof and self.buffered:
            raise RemoteProtocolError(
                AlertCode.DECODE_ERROR, f"connection closed inside a frame ({self.buffered} bytes)"
            )
