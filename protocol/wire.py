"""Strict big-endian parsing and building of §3 fields: short input or trailing bytes is decode_error."""

from __future__ import annotations

from .alerts import AlertCode, RemoteProtocolError


class Reader:
    """Reads §3 fields from one payload; every shortfall raises decode_error."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int, field: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise RemoteProtocolError(AlertCode.DECODE_ERROR, f"{self._what}: {field} is cut short")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def fixed(self, n: int, field: str) -> bytes:
        """``opaque field[n]``."""
        return self._take(n, field)

    def u8(self, field: str) -> int:
        """``u8 field``."""
        return self._take(1, field)[0]

    def u16(self, field: str) -> int:
        """``u16 field``."""
        return int.from_bytes(self._take(2, field), "big")

    def vec8(self, field: str) -> bytes:
        """``opaque field<0..255>``."""
        return self._take(self.u8(field + " length"), field)

    def vec16(self, field: str) -> bytes:
        """``opaque field<0..65535>``."""
        return self._take(self.u16(field + " length"), field)

    def finish(self) -> None:
        """A payload must be consumed exactly (§1: trailing bytes are decode_error)."""
        if self._pos != len(self._data):
            extra = len(self._data) - self._pos
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
