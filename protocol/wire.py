"""Strict big-endian parsing and building of §3 fields: short input or trailing bytes is decode_error.

A ``Reader`` can also keep a ``FieldLog``: every field it reads, with its offset in the
frame and its bytes, and where and why it stopped. That log is the one dissection of
the wire format: ``--explain``, the session page and the Wireshark field names all
come from the decoders the connections themselves run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .alerts import AlertCode, RemoteProtocolError


@dataclass(frozen=True, slots=True)
class Span:
    """One field as it stood on the wire: offset in the frame, spec name, bytes."""

    offset: int
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A field that did not fit: it needed ``needed`` bytes at ``offset``, ``left`` were there."""

    offset: int
    name: str
    needed: int
    left: int


@dataclass
class FieldLog:
    """What a ``Reader`` read, field by field, and where it stopped."""

    spans: list[Span] = field(default_factory=list)
    shortfall: Shortfall | None = None
    trailing: int | None = None
    """Offset of bytes left over after the last field (decode_error), if any."""


class Reader:
    """Reads §3 fields from one payload; every shortfall raises decode_error."""

    __slots__ = ("_base", "_data", "_log", "_pos", "_what")

    def __init__(self, data: bytes, what: str, log: FieldLog | None = None, base: int = 0) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what
        self._log = log
        self._base = base
        """Offset of ``data`` in its frame, for the log (the header is 8 bytes)."""

    @property
    def left(self) -> int:
        """Bytes not read yet."""
        return len(self._data) - self._pos

    def _take(self, n: int, name: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            if self._log is not None:
                self._log.shortfall = Shortfall(self._base + self._pos, name, n, self.left)
            raise RemoteProtocolError(AlertCode.DECODE_ERROR, f"{self._what}: {name} is cut short")
        chunk = self._data[self._pos : end]
        if self._log is not None:
            self._log.spans.append(Span(self._base + self._pos, name, chunk))
        self._pos = end
        return chunk

    def fixed(self, n: int, name: str) -> bytes:
        """``opaque name[n]``."""
        return self._take(n, name)

    def u8(self, name: str) -> int:
        """``u8 name``."""
        return self._take(1, name)[0]

    def u16(self, name: str) -> int:
        """``u16 name``."""
        return int.from_bytes(self._take(2, name), "big")

    def u32(self, name: str) -> int:
        """``u32 name``."""
        return int.from_bytes(self._take(4, name), "big")

    def u64(self, name: str) -> int:
        """``u64 name``."""
        return int.from_bytes(self._take(8, name), "big")

    def vec8(self, name: str) -> bytes:
        """``opaque name<0..255>``: a ``name.length`` u8, then the bytes."""
        return self._take(self.u8(name + ".length"), name)

    def vec16(self, name: str) -> bytes:
        """``opaque name<0..65535>``: a ``name.length`` u16, then the bytes."""
        return self._take(self.u16(name + ".length"), name)

    def finish(self) -> None:
        """A payload must be consumed exactly (§1: trailing bytes are decode_error)."""
        if self._pos != len(self._data):
            extra = len(self._data) - self._pos
            if self._log is not None:
                self._log.trailing = self._base + self._pos
            raise RemoteProtocolError(
                AlertCode.DECODE_ERROR, f"{self._what}: {extra} trailing byte(s)"
            )


def u8(value: int) -> bytes:
    """Encode a u8."""
    return value.to_bytes(1, "big")


def u16(value: int) -> bytes:
    """Encode a u16."""
    return value.to_bytes(2, "big")


def vec8(data: bytes) -> bytes:
    """Encode ``opaque <0..255>``; longer data is a local error."""
    if len(data) > 0xFF:
        raise ValueError(f"vector of {len(data)} bytes exceeds 255")
    return u8(len(data)) + data


def vec16(data: bytes) -> bytes:
    """Encode ``opaque <0..65535>``."""
    if len(data) > 0xFFFF:
        raise ValueError(f"vector of {len(data)} bytes exceeds 65535")
    return u16(len(data)) + data
