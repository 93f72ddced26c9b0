"""The bench's kexlab peers: ``transport.KxpStream``, the pump ``kexlab server`` and ``kexlab client`` run.

The client connects and runs the handshake as ``ClientSession.open`` does
(``KxpStream.connect``, ``do_handshake``, both with a timeout) and closes with
close_notify both ways (``KxpStream.close``). The server serves each connection as
the echo app does: ``recv`` a record, ``send`` the answer.
"""

from __future__ import annotations

from protocol import ClientConnection, KexlabError, ProtocolError
from transport import KxpStream, TransportError

from .scenarios import END_MARK, MODE_BULK, MODE_PING

HANDSHAKE_TIMEOUT = 10.0


class BenchError(KexlabError):
    """A peer misbehaved during a measurement; ``str()`` is one line."""


class KxpPeer:
    """A kexlab connection as the bench client's jobs use it."""

    __slots__ = ("stream",)

    def __init__(self, stream: KxpStream) -> None:
        self.stream = stream

    def send(self, data: bytes) -> None:
        """``send_nowait``: sealed now, written with the rest of this loop turn's records."""
        self.stream.send_nowait(data)

    async def drain(self) -> None:
        """``KxpStream.drain``."""
        await self.stream.drain()

    async def receive_exact(self, n: int) -> bytes:
        """Messages (``recv``) until ``n`` bytes have come, joined."""
        recv = self.stream.recv
        data = await recv()
        if data is None:
            raise BenchError("connection closed")
        if len(data) >= n:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            data = await recv()
            if data is None:
                raise BenchError("connection closed")
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    async def request(self, data: bytes, n: int) -> bytes:
        """``send`` then ``recv``, as ``ClientSession.request`` does."""
        await self.stream.send(data)
        return await self.receive_exact(n)

    async def close(self) -> None:
        """``KxpStream.close``: close_notify both ways."""
        await self.stream.close()


async def connect(host: str, port: int, conn: ClientConnection) -> KxpPeer:
    """``KxpStream.connect`` and ``do_handshake``."""
    stream = await KxpStream.connect(host, port, conn, timeout=HANDSHAKE_TIMEOUT)
    try:
        await stream.do_handshake(HANDSHAKE_TIMEOUT)
    except (TransportError, ProtocolError) as exc:
        await stream.wait_closed()
        raise BenchError(f"handshake failed: {exc}") from None
    return KxpPeer(stream)


async def serve(stream: KxpStream) -> None:
    """One connection of the bench server: echo or count as the first message says."""
    mode = b""
    count = 0
    try:
        await stream.do_handshake(HANDSHAKE_TIMEOUT)
        recv, send = stream.recv, stream.send
        while (data := await recv()) is not None:
            if not mode:
                mode = data[:1]
            elif mode == MODE_PING:
                await send(data)
            elif mode == MODE_BULK:
                count += len(data)
                if data and data[-1] == END_MARK:
                    await send(count.to_bytes(8, "big"))
                    count = 0
    except (TransportError, ProtocolError):
        pass
    finally:
        await stream.wait_closed()
