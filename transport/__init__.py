"""asyncio glue: drive a sans-I/O KXP connection over TCP (no terminal, no files)."""

from .errors import ConnectionLost, TransportError
from .server import start_server
from .stream import ByteHook, EventHook, Handler, KxpStream, PskProvider

__all__ = [
    "ByteHook",
    "ConnectionLost",
    "EventHook",
    "Handler",
    "KxpStream",
    "PskProvider",
    "TransportError",
    "start_server",
]
