"""asyncio glue: drive a sans-I/O KXP connection over TCP streams (no terminal, no files)."""

from .stream import (
    ByteHook,
    ConnectionLost,
    EventHook,
    KxpStream,
    PskProvider,
    TransportError,
)

__all__ = [
    "ByteHook",
    "ConnectionLost",
    "EventHook",
    "KxpStream",
    "PskProvider",
    "TransportError",
]
