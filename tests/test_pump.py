"""KxpStream's flow: ordering, backpressure both ways, the key_update flood, timeouts, fairness, close.

The far side is a bare sans-I/O client over asyncio streams (``RawClient``), so each test
controls exactly what reaches the pump and when, and sees exactly what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from external_tools import require_module
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    home_fixture,
    home_key,
)

from protocol import (
    AlertCode,
    AlertReceived,
    ClientConfig,
    ClientConnection,
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    Kex,
    KeyUpdateReceived,
    LocalProtocolError,
    ProtocolError,
    ServerConfig,
    ServerConnection,
    TrustVerdict,
)
from transport import ConnectionLost, KxpStream, start_server
from transport.stream import READ_LIMIT

PSK = bytes(range(32))
HIGH_WATER = 64 * 1024  # asyncio's default write high-water mark

Handler = Callable[[KxpStream], Awaitable[None]]


@pytest.fixture
def key(home: Path) -> rsa.RSAPrivateKey:
    return home_key(home)


class Server:
    """``transport.start_server`` with one handler; keeps each stream and what its task raised."""

    def __init__(self, key: rsa.RSAPrivateKey, handler: Handler, **config: object) -> None:
        self.config = ServerConfig(rsa_key=key, sign_key=key, psk_lookup={"lab": PSK}.get)
        for k, v in config.items():
            setattr(self.config, k, v)
        self.handler = handler
        self.streams: list[KxpStream] = []
        self.errors: list[BaseException] = []
        self.done = asyncio.Event()

    async def __aenter__(self) -> Server:
        self.server = await start_server(
            self._run, "127.0.0.1", 0, lambda: ServerConnection(self.config)
        )
        self.port: int = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _run(self, stream: KxpStream) -> None:
        self.streams.append(stream)
        try:
            await self.handler(stream)
        except Exception as exc:  # for the test to assert on
            self.errors.append(exc)
        finally:
            await stream.wait_closed()
            self.done.set()

    async def stream(self) -> KxpStream:
        async with asyncio.timeout(5):
            while not self.streams:
                await asyncio.sleep(0.005)
        return self.streams[-1]


async def echo(stream: KxpStream) -> None:
    await stream.do_handshake(5)
    while (data := await stream.recv()) is not None:
        await stream.send(data)


class RawClient:
    """A psk client core over asyncio streams: the test writes and reads by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.conn = ClientConnection(
            ClientConfig(
                kex=Kex.PSK, psk_identity="lab", psk=PSK, trust=lambda i: TrustVerdict(True)
            )
        )
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None) -> RawClient:
        sock = socket.socket()
        if rcvbuf is not None:  # before connect, so the window is small from the start
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # asyncio's default limit: the StreamReader stops reading at 128 KiB unread.
        reader, writer = await asyncio.open_connection(sock=sock)
        client = cls(reader, writer)
        client.conn.start()
        client.flush()
        await client.events_until(HandshakeComplete)
        client.flush()  # our FINISHED
        return client

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def events(self) -> list[Event]:
        """Read once; the events those bytes complete (ProtocolError propagates)."""
        assert not self.reader.at_eof(), "read past the end of the stream"
        data = await self.reader.read(1 << 20)
        if data:
            self.conn.receive_data(data)
        else:
            self.conn.receive_eof()
        out = []
        while (ev := self.conn.next_event()) is not None:
            out.append(ev)
        return out

    async def events_until(self, kind: type, timeout: float = 5) -> list[Event]:
        got: list[Event] = []
        async with asyncio.timeout(timeout):
            while not any(isinstance(e, kind) for e in got):
                got += await self.events()
        return got

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def data_of(events: list[Event]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, DataReceived)]


async def until(check: Callable[[], bool], timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- ordering


async def test_records_before_a_fault_are_answered_before_its_alert(key: rsa.RSAPrivateKey) -> None:
    """Frames are taken one at a time: what came before a bad record is echoed, then the alert."""
    async with Server(key, echo) as srv:
        client = await RawClient.open(srv.port)
        for i in range(3):
            client.conn.send_data(b"before %d" % i)
        good = client.conn.data_to_send()
        client.conn.send_data(b"spoiled")
        bad = bytearray(client.conn.data_to_send())
        bad[-1] ^= 1  # the tag no longer verifies
        client.writer.write(good + bytes(bad))
        got = await client.events_until(ConnectionClosed)
        assert data_of(got) == [b"before 0", b"before 1", b"before 2"]
        alerts = [e.code for e in got if isinstance(e, AlertReceived)]
        assert alerts == [AlertCode.BAD_RECORD_MAC]  # after the echoes, on the wire too
        await asyncio.wait_for(srv.done.wait(), 5)
        await client.close()
    [err] = srv.errors
    assert isinstance(err, ProtocolError) and err.alert is AlertCode.BAD_RECORD_MAC


async def test_records_before_close_notify_are_answered_before_ours(key: rsa.RSAPrivateKey) -> None:
    """A client that pipelines messages and its close_notify gets every echo, then close_notify."""
    async with Server(key, echo) as srv:
        client = await RawClient.open(srv.port)
        for i in range(5):
            client.conn.send_data(b"m%d" % i)
        client.conn.close()
        client.flush()
        got = await client.events_until(ConnectionClosed)
        assert data_of(got) == [b"m%d" % i for i in range(5)]
        closed = [e for e in got if isinstance(e, ConnectionClosed)]
        assert closed == [ConnectionClosed(True)]
        await asyncio.wait_for(srv.done.wait(), 5)
        await client.close()
    assert srv.errors == []


# --------------------------------------------------------------------------- backpressure


async def test_a_stream_nobody_reads_stops_reading_the_socket(key: rsa.RSAPrivateKey) -> None:
    """Unread records stay in the core up to READ_LIMIT (plus one read), then the socket waits;
    once the task reads again, every record arrives, in order."""
    go = asyncio.Event()
    received: list[bytes] = []

    async def slow(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        await go.wait()
        while (data := await stream.recv()) is not None:
            received.append(data)

    async with Server(key, slow) as srv:
        client = await RawClient.open(srv.port)
        stream = await srv.stream()
        blobs = [bytes([i % 251]) * 60000 for i in range(60)]  # 3.6 MB
        for blob in blobs:
            client.conn.send_data(blob)
        client.flush()
        await until(lambda: not stream.transport.is_reading())  # type: ignore[union-attr]
        held = stream.conn.buffered
        assert READ_LIMIT <= held <= READ_LIMIT + 262144, held
        await asyncio.sleep(0.2)
        assert stream.conn.buffered == held  # not read further while nobody takes records
        assert received == []
        go.set()
        await until(lambda: len(received) == len(blobs), timeout=10)
        assert received == blobs
        client.conn.close()
        client.flush()
        await client.events_until(ConnectionClosed)
        await client.close()
    assert srv.errors == []


async def test_send_waits_while_the_peer_does_not_read(key: rsa.RSAPrivateKey) -> None:
    """``send`` returns only while the socket's buffer is under its high-water mark."""
    sent: list[int] = []

    async def push(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        for i in range(200):
            await stream.send(bytes([i]) * 50000)  # 10 MB
            sent.append(i)
            assert stream.write_buffer_size <= HIGH_WATER + 50100

    async with Server(key, push) as srv:
        client = await RawClient.open(srv.port, rcvbuf=8192)
        stream = await srv.stream()
        await until(lambda: len(sent) > 0)
        await asyncio.sleep(0.2)
        stuck = len(sent)
        await asyncio.sleep(0.2)
        assert len(sent) == stuck < 200  # blocked in send, not buffering
        got: list[bytes] = []
        async with asyncio.timeout(20):
            while len(got) < 200:
                got += data_of(await client.events())
        assert got == [bytes([i]) * 50000 for i in range(200)]
        await asyncio.wait_for(srv.done.wait(), 5)  # the handler ended; the stream closed
        assert stream.closed or stream.transport.is_closing()  # type: ignore[union-attr]
        await client.close()
    assert srv.errors == []


async def test_key_update_flood_stops_reading_until_answers_drain(key: rsa.RSAPrivateKey) -> None:
    """Issue 13, item 5: a peer asking for key updates without reading its answers is not read
    while the answers wait, so the server's buffers stay bounded; once it reads, every request
    has its answer and the connection goes on."""
    requests = 40000  # 1.36 MB of requests, as many bytes of answers
    async with Server(key, echo) as srv:
        client = await RawClient.open(srv.port, rcvbuf=4096)
        stream = await srv.stream()
        sock = stream.extra("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for _ in range(requests):
            client.conn.send_key_update(request_update=True)
        client.flush()
        # Wait for the server to settle: nothing it holds changes for 0.2 s.
        seen: list[tuple[int, int]] = []
        async with asyncio.timeout(10):
            while len(seen) < 2 or seen[-1] != seen[-2]:
                await asyncio.sleep(0.2)
                seen.append((stream.conn.buffered, stream.write_buffer_size))
        held, unsent = seen[-1]
        assert unsent <= HIGH_WATER + 1024, seen  # answers never pile up past the mark
        assert held <= READ_LIMIT + 262144, seen  # nor requests in the core
        assert not stream.transport.is_reading()  # type: ignore[union-attr]
        answers = 0
        async with asyncio.timeout(20):
            while answers < requests:
                for ev in await client.events():
                    assert isinstance(ev, KeyUpdateReceived) and not ev.request_update
                    answers += 1
        assert answers == requests
        client.conn.send_data(b"still here")
        client.flush()
        assert data_of(await client.events_until(DataReceived)) == [b"still here"]
        client.conn.close()
        client.flush()
        await client.events_until(ConnectionClosed)
        await client.close()
    assert srv.errors == []


async def test_a_reader_is_not_stopped_by_its_own_sends(key: rsa.RSAPrivateKey) -> None:
    """Records the program sends (not answers) never stop the reader: with the socket's buffer
    full of them, records from the peer are still taken."""
    got: list[bytes] = []

    async def stuffed(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        for _ in range(100):
            stream.send_nowait(b"z" * 60000)  # 6 MB the peer does not read yet
        while (data := await stream.recv()) is not None:
            got.append(data)

    async with Server(key, stuffed) as srv:
        client = await RawClient.open(srv.port, rcvbuf=4096)
        stream = await srv.stream()
        await until(lambda: stream.write_buffer_size > HIGH_WATER)
        for i in range(50):
            client.conn.send_data(b"in %d" % i)
        client.flush()
        await until(lambda: len(got) == 50)
        assert got == [b"in %d" % i for i in range(50)]
        assert stream.write_buffer_size > HIGH_WATER  # still full: nothing was read out
        await client.close()


# --------------------------------------------------------------------------- timeouts


async def test_handshake_timeout_cuts_a_psk_wait(key: rsa.RSAPrivateKey) -> None:
    """The deadline covers the wait for an out-of-band key: handshake_failure, not unknown_psk."""

    async def forever(identity: str) -> bytes | None:
        await asyncio.sleep(30)
        return None  # pragma: no cover

    async def handshake(stream: KxpStream) -> None:
        stream.psk_provider = forever
        await stream.do_handshake(0.3)

    async with Server(key, handshake, psk_lookup=lambda i: None) as srv:
        conn = ClientConnection(
            ClientConfig(
                kex=Kex.PSK, psk_identity="lab", psk=PSK, trust=lambda i: TrustVerdict(True)
            )
        )
        stream = await KxpStream.connect("127.0.0.1", srv.port, conn)
        start = time.monotonic()
        with pytest.raises(ProtocolError) as info:
            await stream.do_handshake(5)
        assert time.monotonic() - start < 2.0
        assert (info.value.alert, info.value.reason) == (
            AlertCode.HANDSHAKE_FAILURE,
            "handshake timeout",
        )
        await stream.wait_closed()
        await asyncio.wait_for(srv.done.wait(), 5)
    [err] = srv.errors
    assert isinstance(err, LocalProtocolError) and err.reason == "handshake timeout"


async def test_close_returns_after_timeout_without_an_answer(key: rsa.RSAPrivateKey) -> None:
    """A reader's close() against a peer that never answers takes ``timeout``, no longer."""
    ready = asyncio.Event()
    took: list[float] = []

    async def closer(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        await ready.wait()
        start = time.monotonic()
        await stream.close(timeout=0.3)
        took.append(time.monotonic() - start)

    async with Server(key, closer) as srv:
        client = await RawClient.open(srv.port)
        ready.set()
        got = await client.events_until(AlertReceived)
        assert [e.code for e in got if isinstance(e, AlertReceived)] == [AlertCode.CLOSE_NOTIFY]
        await asyncio.wait_for(srv.done.wait(), 5)
        assert await client.reader.read() == b""  # then the socket closed
        await client.close()
    assert srv.errors == []
    assert 0.25 <= took[0] < 2.0, took


async def test_wait_closed_drops_a_socket_that_never_drains(key: rsa.RSAPrivateKey) -> None:
    """Bytes a peer never reads cannot hold wait_closed past its timeout: the socket is aborted."""
    took: list[float] = []

    async def stuff_then_close(stream: KxpStream) -> None:
        stream.extra("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await stream.do_handshake(5)
        for _ in range(100):
            stream.send_nowait(b"w" * 60000)
        stream.abort(AlertCode.INTERNAL_ERROR, "bye")
        start = time.monotonic()
        await stream.wait_closed(timeout=0.3)
        took.append(time.monotonic() - start)
        assert stream.write_buffer_size == 0

    async with Server(key, stuff_then_close) as srv:
        client = await RawClient.open(srv.port, rcvbuf=4096)
        await asyncio.wait_for(srv.done.wait(), 5)
        await client.close()
    assert srv.errors == []
    assert 0.25 <= took[0] < 2.0, took


# --------------------------------------------------------------------------- fairness, errors


async def test_a_flooding_connection_does_not_starve_another(key: rsa.RSAPrivateKey) -> None:
    """While one connection's 20,000 pipelined records are answered, another's echo comes back
    after a few bursts, not after the flood."""
    flood = 20000
    echoed = [0]

    async def counting_echo(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        while (data := await stream.recv()) is not None:
            if data.startswith(b"f"):
                echoed[0] += 1
            await stream.send(data)

    async with Server(key, counting_echo) as srv:
        flooder = await RawClient.open(srv.port)
        bystander = await RawClient.open(srv.port)
        for _ in range(flood):
            flooder.conn.send_data(b"f")
        flooder.flush()
        await until(lambda: echoed[0] > 0)
        bystander.conn.send_data(b"ping")
        bystander.flush()
        assert data_of(await bystander.events_until(DataReceived)) == [b"ping"]
        assert echoed[0] < flood / 2, echoed
        got = 0
        async with asyncio.timeout(20):
            while got < flood:
                got += len(data_of(await flooder.events()))
        for client in (flooder, bystander):
            await client.close()


async def test_a_reset_is_connection_lost_once(key: rsa.RSAPrivateKey) -> None:
    """A socket error reaches the reader as ConnectionLost once; the stream is then over."""
    outcome: list[object] = []

    async def reader(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        try:
            await stream.recv()
        except ConnectionLost as exc:
            outcome.append(str(exc))
        outcome.append(await stream.next_event())
        outcome.append(await stream.recv())

    async with Server(key, reader) as srv:
        client = await RawClient.open(srv.port)
        stream = await srv.stream()
        await until(lambda: stream.handshake is not None)
        sock = client.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        client.writer.transport.abort()  # RST
        await asyncio.wait_for(srv.done.wait(), 5)
    assert srv.errors == []
    assert outcome[0] == f"connection to {stream.peer} lost: connection reset by peer"
    # The core then sees the end of the stream: the connection is over, not waiting.
    assert isinstance(outcome[1], ConnectionClosed) and not outcome[1].clean
    assert outcome[2] is None


async def test_a_handler_that_raises_costs_its_connection_only(
    key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """start_server: a handler's exception is reported to the loop and its socket dropped."""

    async def buggy(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        raise KeyError("a bug")

    server = await start_server(
        buggy,
        "127.0.0.1",
        0,
        lambda: ServerConnection(
            ServerConfig(psk_lookup={"lab": PSK}.get, kex_methods=frozenset({Kex.PSK}))
        ),
    )
    port = server.sockets[0].getsockname()[1]
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            client = await RawClient.open(port)
            assert await asyncio.wait_for(client.reader.read(), 5) == b""
            await client.close()
            await asyncio.sleep(0.05)
        [record] = [r for r in caplog.records if r.name == "asyncio"]
        assert "KXP connection handler failed" in record.getMessage()
    finally:
        server.close()
        await server.wait_closed()


def test_the_pump_runs_on_uvloop(home: Path) -> None:
    """The same pump on uvloop (an optional loop the bench measures): handshake, echo of a
    message larger than a record, a key update both ways, close_notify both ways."""
    uvloop = require_module("uvloop", "the pump on uvloop")
    key = home_key(home)

    async def main() -> list[bytes | None]:
        async with Server(key, echo) as srv:
            conn = ClientConnection(ClientConfig(kex=Kex.DHE, trust=lambda i: TrustVerdict(True)))
            stream = await KxpStream.connect("127.0.0.1", srv.port, conn, timeout=5)
            await stream.do_handshake(5)
            await stream.send(b"u" * 70000)
            got = [await stream.recv(), await stream.recv()]
            await stream.key_update(request_update=True)
            await stream.send(b"after")
            got.append(await stream.recv())
            await stream.close()
            await asyncio.wait_for(srv.done.wait(), 5)
            assert srv.errors == []
            return got

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        got = runner.run(main())
    assert got == [b"u" * 65536, b"u" * 4464, b"after"]
