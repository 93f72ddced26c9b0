"""Listen for KXP connections: each accepted socket is a ``KxpStream`` handed to a coroutine.

The shape of ``asyncio.start_server``, with the pump as the protocol: the handler's
task starts when the socket is connected and owns the connection from then on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from protocol import Connection

from .stream import Handler, KxpStream


async def start_server(
    handler: Handler,
    host: str | None,
    port: int,
    make_conn: Callable[[], Connection],
    **server_kw: Any,
) -> asyncio.Server:
    """Listen on ``host:port``; each connection runs ``handler(stream)`` in a task of its own.

    ``make_conn`` makes each connection's core (``ServerConnection(config)``); the other
    keywords go to ``loop.create_server`` (``backlog``, ``reuse_address``, ...).
    """
    loop = asyncio.get_running_loop()

    def accept() -> KxpStream:
        return KxpStream(make_conn(), handler=handler)

    return await loop.create_server(accept, host, port, **server_kw)
