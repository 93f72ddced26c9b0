"""The bench's kexlab peers: the sans-I/O core pumped over asyncio streams, nothing else in between.

One read -> ``receive_data`` -> every event it completes -> one write of whatever the
core queued. That is the least an asyncio program can do with the core, so the
figures are the record path's own (``transport.KxpStream`` adds its hooks on top).

Writes are batched: records sealed in one turn of the event loop leave in one
``write`` (at the end of the turn, when the peer awaits, or once COALESCE bytes are
waiting), so 64-byte messages do not cost a system call each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from protocol import (
    ClientConnection,
    Connection,
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    KexlabError,
    ProtocolError,
    ServerConfig,
    ServerConnection,
    State,
)
from transport import KxpStream, TransportError

from .scenarios import END_MARK, MODE_BULK, MODE_PING, READ_SIZE

_OVER = (State.CLOSED, State.ERROR)
COALESCE = 16384
"""Bytes of sealed records that may wait for the end of the loop turn; more go out at once."""


class BenchError(KexlabError):
    """A peer misbehaved during a measurement; ``str()`` is one line."""


class KxpPeer:
    """One KXP connection over an asyncio stream pair."""

    __slots__ = (
        "_inbox",
        "_loop",
        "_pending",
        "_queued",
        "_scheduled",
        "conn",
        "reader",
        "writer",
    )

    def __init__(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self._inbox: deque[bytes] = deque()
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []  # taken from the core, not yet written
        self._queued = 0
        self._scheduled = False

    def flush(self) -> None:
        """Write what the core queued."""
        self._queued = 0
        out = self.conn.data_to_send()
        if self._pending:
            self._pending.append(out)
            out = b"".join(self._pending)
            self._pending.clear()
        if out:
            self.writer.write(out)

    def _flush_at_end_of_turn(self) -> None:
        self._scheduled = False
        if not self.writer.transport.is_closing():
            self.flush()

    def _flush_soon(self) -> None:
        """Let the core's bytes wait for the end of this loop turn (or go now if many)."""
        if self._queued >= COALESCE:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_at_end_of_turn)

    async def read_events(self) -> list[Event]:
        """Read once and return every event those bytes complete (replies leave this turn)."""
        return self.process(await self.reader.read(READ_SIZE))

    def process(self, data: bytes) -> list[Event]:
        """Feed one read (b"" for end of stream); every event it completes."""
        conn = self.conn
        if data:
            conn.receive_data(data)
        else:
            conn.receive_eof()
        events: list[Event] = []
        try:
            while (event := conn.next_event()) is not None:
                events.append(event)
        finally:
            out = conn.data_to_send()  # replies the core queued (close_notify, key_update)
            if out:
                self._pending.append(out)
                self._queued += len(out)
                self._flush_soon()
        return events

    def send(self, data: bytes) -> None:
        """Seal ``data``; it reaches the socket by the end of this turn of the event loop."""
        self.conn.send_data(data)
        self._queued += len(data)
        self._flush_soon()

    async def drain(self) -> None:
        """Write what is queued, then wait while the socket's buffer is over its high-water mark."""
        self.flush()
        await self.writer.drain()

    async def receive(self) -> bytes:
        """The next application message (BenchError if the connection ends first)."""
        self.flush()  # a request must leave before we wait for its answer
        inbox, read = self._inbox, self.reader.read
        while not inbox:
            for event in self.process(await read(READ_SIZE)):
                if type(event) is DataReceived:
                    inbox.append(event.data)
                elif isinstance(event, ConnectionClosed):
                    raise BenchError(f"connection closed: {event.reason}")
        return inbox.popleft()

    async def request(self, data: bytes, n: int) -> bytes:
        """Send ``data`` now and wait for ``n`` bytes of answer (no end-of-turn batching)."""
        self.conn.send_data(data)
        return await self.receive_exact(n)

    async def receive_exact(self, n: int) -> bytes:
        """Messages until ``n`` bytes have come, joined."""
        data = await self.receive()
        if len(data) >= n:
            return data
        parts = [data]
        got = len(data)
        while got < n:
            data = await self.receive()
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    async def close(self) -> None:
        """close_notify, wait for the peer's (as asyncio's TLS does), then close the socket."""
        with contextlib.suppress(ProtocolError, OSError, BenchError):
            if self.conn.state not in _OVER:
                self.conn.close()
                self.flush()
            while self.conn.state not in _OVER:
                await self.read_events()
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def connect(host: str, port: int, conn: ClientConnection) -> KxpPeer:
    """TCP connect and run the handshake to HandshakeComplete."""
    reader, writer = await asyncio.open_connection(host, port)
    peer = KxpPeer(conn, reader, writer)
    conn.start()
    peer.flush()
    while True:
        for event in await peer.read_events():
            if isinstance(event, HandshakeComplete):
                return peer
            if isinstance(event, ConnectionClosed):
                raise BenchError(f"handshake failed: {event.reason}")


async def serve(
    config: ServerConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """The bench server for one connection: handshake, then echo or count as the first message says."""
    conn = ServerConnection(config)
    peer = KxpPeer(conn, reader, writer)
    mode = b""
    count = 0
    read = reader.read
    try:
        while conn.state not in _OVER:
            for event in peer.process(await read(READ_SIZE)):
                if type(event) is not DataReceived:
                    continue
                data = event.data
                if not mode:
                    mode = data[:1]
                elif mode == MODE_PING:
                    conn.send_data(data)
                elif mode == MODE_BULK:
                    count += len(data)
                    if data and data[-1] == END_MARK:
                        conn.send_data(count.to_bytes(8, "big"))
                        count = 0
            peer.flush()
    except (ProtocolError, OSError):
        pass
    finally:
        writer.close()


# ---------------------------------------------------------------------- transport.KxpStream

HANDSHAKE_TIMEOUT = 10.0


class StreamKxpPeer:
    """A kexlab connection through ``transport.KxpStream``: the pump ``server``/``client`` use."""

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
        parts: list[bytes] = []
        got = 0
        while got < n:
            data = await self.stream.recv()
            if data is None:
                raise BenchError("connection closed")
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def request(self, data: bytes, n: int) -> bytes:
        """``send`` then ``recv``, as ``ClientSession.request`` does."""
        await self.stream.send(data)
        return await self.receive_exact(n)

    async def close(self) -> None:
        """``KxpStream.close``: close_notify both ways."""
        await self.stream.close()


async def stream_connect(host: str, port: int, conn: ClientConnection) -> StreamKxpPeer:
    """``KxpStream.connect`` and ``do_handshake``."""
    stream = await KxpStream.connect(host, port, conn)
    try:
        await stream.do_handshake(HANDSHAKE_TIMEOUT)
    except (TransportError, ProtocolError) as exc:
        await stream.wait_closed()
        raise BenchError(f"handshake failed: {exc}") from None
    return StreamKxpPeer(stream)


async def stream_serve(
    config: ServerConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """The bench server over ``KxpStream``: ``recv`` and ``send`` as the echo app does."""
    stream = KxpStream(ServerConnection(config), reader, writer)
    mode = b""
    count = 0
    try:
        await stream.do_handshake(HANDSHAKE_TIMEOUT)
        while (data := await stream.recv()) is not None:
            if not mode:
                mode = data[:1]
            elif mode == MODE_PING:
                await stream.send(data)
            elif mode == MODE_BULK:
                count += len(data)
                if data and data[-1] == END_MARK:
                    await stream.send(count.to_bytes(8, "big"))
                    count = 0
    except (TransportError, ProtocolError):
        pass
    finally:
        await stream.wait_closed()
