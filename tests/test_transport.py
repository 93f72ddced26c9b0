"""transport.KxpStream over real loopback sockets: the pump, timeouts, alerts, close, hooks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    free_port,
    home_fixture,
    home_key,
)

from protocol import (
    AlertCode,
    ClientConfig,
    ClientConnection,
    Group,
    Kex,
    LocalProtocolError,
    PeerAlert,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
    TrustVerdict,
)
from protocol.frames import FrameDecoder
from protocol.messages import Alert
from transport import ConnectionLost, KxpStream, start_server

PSK = bytes(range(32))

Handler = Callable[[KxpStream], Awaitable[None]]


def trust_all(identity: object) -> TrustVerdict:
    return TrustVerdict(True)


@pytest.fixture
def key(home: Path) -> rsa.RSAPrivateKey:
    return home_key(home)


def server_config(key: rsa.RSAPrivateKey, **kw: object) -> ServerConfig:
    cfg = ServerConfig(rsa_key=key, sign_key=key, psk_lookup={"lab": PSK}.get)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def client_conn(kex: Kex, **kw: object) -> ClientConnection:
    cfg = ClientConfig(
        kex=kex,
        group=Group.X25519 if kex is Kex.DHE else Group.NONE,
        psk_identity="lab" if kex is Kex.PSK else "",
        psk=PSK if kex is Kex.PSK else b"",
        trust=trust_all,
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return ClientConnection(cfg)


# Every OneServer of the running test: its handlers' exceptions are checked at teardown.
SERVERS: list[OneServer] = []


@pytest.fixture(autouse=True)
def _handler_errors_fail_the_test() -> Iterator[None]:
    """A server handler's exception that the test did not take (``take_errors``) fails it."""
    SERVERS.clear()
    yield
    left = [(srv.port, exc) for srv in SERVERS for exc in srv.errors]
    SERVERS.clear()
    assert not left, f"server handlers raised, unchecked by the test: {left!r}"


class OneServer:
    """asyncio.start_server whose connections are KxpStreams handed to ``handler``."""

    def __init__(self, config: ServerConfig, handler: Handler, **stream_kw: object) -> None:
        self.config = config
        self.handler = handler
        self.stream_kw = stream_kw
        self.errors: list[BaseException] = []
        self.streams: list[KxpStream] = []
        self.done = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        SERVERS.append(self)

    def take_errors(self) -> list[BaseException]:
        """The handlers' exceptions so far, now checked by the caller (see the teardown)."""
        errors, self.errors = self.errors, []
        return errors

    async def __aenter__(self) -> OneServer:
        self.server = await start_server(
            self._accept, "127.0.0.1", 0, lambda: ServerConnection(self.config)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()
        # Python 3.11's wait_closed does not wait for handlers: a late exception would be lost.
        if self._handlers:
            _, pending = await asyncio.wait(self._handlers, timeout=5)
            for task in pending:
                task.cancel()
                self.errors.append(RuntimeError("handler still running 5 s after the test"))

    async def _accept(self, stream: KxpStream) -> None:
        for name, value in self.stream_kw.items():
            setattr(stream, name, value)
        self.streams.append(stream)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self.handler(stream)
        except Exception as exc:  # collected for the test to assert on
            self.errors.append(exc)
        finally:
            await stream.wait_closed()
            self._handlers.discard(task)
            self.done.set()


async def echo(stream: KxpStream) -> None:
    await stream.do_handshake(5)
    while (data := await stream.recv()) is not None:
        await stream.send(data)


@pytest.mark.parametrize("kex", [Kex.RSA, Kex.DHE, Kex.PSK])
async def test_handshake_echo_and_clean_close(key: rsa.RSAPrivateKey, kex: Kex) -> None:
    sent: list[bytes] = []
    received: list[bytes] = []
    async with OneServer(server_config(key), echo) as srv:
        stream = await KxpStream.connect(
            "127.0.0.1",
            srv.port,
            client_conn(kex),
            timeout=5,
            on_bytes=lambda d, b: (sent if d == "sent" else received).append(b),
        )
        hc = await stream.do_handshake(5)
        assert hc.kex is kex
        assert stream.handshake is hc and stream.handshake_ms is not None
        await stream.send(b"one")
        assert await stream.recv() == b"one"
        await stream.send(b"")  # an empty record is a message too
        assert await stream.recv() == b""
        await stream.send(b"x" * 70000)  # two records (65536 + 4464), echoed one by one
        assert await stream.recv() == b"x" * 65536
        assert await stream.recv() == b"x" * 4464
        await stream.close()
        await asyncio.wait_for(srv.done.wait(), 5)
    assert srv.errors == []
    assert stream.closed and stream.conn.error is None
    # The byte hook saw exactly the frames: the server got every byte the client sent.
    server_stream = srv.streams[0]
    assert server_stream.handshake is not None
    assert server_stream.handshake.sas == hc.sas
    assert sum(map(len, sent)) > 70000 and sum(map(len, received)) > 70000


async def test_byte_hook_sees_exactly_what_the_peer_reads(key: rsa.RSAPrivateKey) -> None:
    client_out: list[bytes] = []
    server_in: list[bytes] = []
    async with OneServer(
        server_config(key),
        echo,
        on_bytes=lambda d, b: server_in.append(b) if d == "received" else None,
    ) as srv:
        stream = await KxpStream.connect(
            "127.0.0.1",
            srv.port,
            client_conn(Kex.DHE),
            on_bytes=lambda d, b: client_out.append(b) if d == "sent" else None,
        )
        await stream.do_handshake(5)
        await stream.send(b"hello")
        assert await stream.recv() == b"hello"
        await stream.close()
        await asyncio.wait_for(srv.done.wait(), 5)
    assert b"".join(client_out) == b"".join(server_in)
    assert b"".join(client_out).startswith(b"KX\x01\x01")


async def test_handshake_timeout_sends_alert_and_raises(key: rsa.RSAPrivateKey) -> None:
    async def stall(stream: KxpStream) -> None:
        await stream.do_handshake(0.3)

    async with OneServer(server_config(key), stall) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"KX\x01\x01\x00\x00")  # half a header, then silence
        loop = asyncio.get_running_loop()
        start = loop.time()
        data = await asyncio.wait_for(reader.read(), 5)  # until EOF
        elapsed = loop.time() - start
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(srv.done.wait(), 5)
    decoder = FrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None and frame.type == 0x15
    alert = Alert.decode(frame.payload)
    assert (alert.code, alert.reason) == (AlertCode.HANDSHAKE_FAILURE, "handshake timeout")
    assert elapsed > 0.25  # not before the 0.3 s timeout; the upper bound is wait_for's 5 s
    [err] = srv.take_errors()
    assert isinstance(err, LocalProtocolError) and err.alert is AlertCode.HANDSHAKE_FAILURE


async def test_trust_refusal_is_local_error_here_and_peer_alert_there(
    key: rsa.RSAPrivateKey,
) -> None:
    async def handshake(stream: KxpStream) -> None:
        await stream.do_handshake(5)

    async with OneServer(server_config(key), handshake) as srv:
        conn = client_conn(Kex.DHE, trust=lambda i: TrustVerdict(False, "not my server"))
        stream = await KxpStream.connect("127.0.0.1", srv.port, conn)
        with pytest.raises(LocalProtocolError) as info:
            await stream.do_handshake(5)
        assert info.value.alert is AlertCode.BAD_CERTIFICATE
        await stream.wait_closed()
        await asyncio.wait_for(srv.done.wait(), 5)
    [err] = srv.take_errors()
    assert isinstance(err, PeerAlert)
    assert (err.code, err.name, err.reason) == (42, "bad_certificate", "not my server")
    assert str(err) == "peer sent alert bad_certificate (42): not my server"


async def test_garbage_gets_decode_error_on_the_wire(key: rsa.RSAPrivateKey) -> None:
    async def handshake(stream: KxpStream) -> None:
        await stream.do_handshake(5)

    async with OneServer(server_config(key), handshake) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(srv.done.wait(), 5)
    decoder = FrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert Alert.decode(frame.payload).code == AlertCode.DECODE_ERROR
    [err] = srv.take_errors()
    assert isinstance(err, RemoteProtocolError) and err.alert is AlertCode.DECODE_ERROR


@pytest.mark.parametrize("known", [True, False])
async def test_psk_provider_is_asked_for_unknown_identities(
    key: rsa.RSAPrivateKey, known: bool
) -> None:
    asked: list[str] = []

    async def provider(identity: str) -> bytes | None:
        asked.append(identity)
        await asyncio.sleep(0.01)
        return PSK if known else None

    async def handshake(stream: KxpStream) -> None:
        await stream.do_handshake(5)

    cfg = server_config(key, psk_lookup=lambda i: None)
    async with OneServer(cfg, handshake, psk_provider=provider) as srv:
        stream = await KxpStream.connect("127.0.0.1", srv.port, client_conn(Kex.PSK))
        if known:
            hc = await stream.do_handshake(5)
            assert hc.psk_identity == "lab"
            await stream.close()
        else:
            with pytest.raises(PeerAlert) as info:
                await stream.do_handshake(5)
            assert info.value.name == "unknown_psk_identity"
            await stream.wait_closed()
        await asyncio.wait_for(srv.done.wait(), 5)
    assert asked == ["lab"]
    if not known:
        [err] = srv.take_errors()
        assert isinstance(err, RemoteProtocolError)
        assert err.alert is AlertCode.UNKNOWN_PSK_IDENTITY


async def test_key_update_both_ways_then_data(key: rsa.RSAPrivateKey) -> None:
    async with OneServer(server_config(key), echo) as srv:
        stream = await KxpStream.connect("127.0.0.1", srv.port, client_conn(Kex.DHE))
        await stream.do_handshake(5)
        events = []
        stream.on_event = events.append
        await stream.key_update(request_update=True)
        await stream.send(b"after update")
        assert await stream.recv() == b"after update"
        assert any(type(e).__name__ == "KeyUpdateReceived" for e in events)
        await stream.close()
        await asyncio.wait_for(srv.done.wait(), 5)
    assert srv.errors == []


async def test_peer_vanishing_after_handshake_is_connection_lost(key: rsa.RSAPrivateKey) -> None:
    async def recv_once(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        await stream.recv()

    async with OneServer(server_config(key), recv_once) as srv:
        stream = await KxpStream.connect("127.0.0.1", srv.port, client_conn(Kex.PSK))
        await stream.do_handshake(5)
        stream.transport.close()  # no close_notify
        await stream.wait_closed()
        await asyncio.wait_for(srv.done.wait(), 5)
    [err] = srv.take_errors()
    assert isinstance(err, ConnectionLost)
    assert "without close_notify" in str(err)


async def test_send_close_from_another_task_ends_the_reader_cleanly(key: rsa.RSAPrivateKey) -> None:
    results: list[object] = []

    async def reader_task(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        results.append(await stream.recv())

    async with OneServer(server_config(key), reader_task) as srv:
        stream = await KxpStream.connect("127.0.0.1", srv.port, client_conn(Kex.DHE))
        await stream.do_handshake(5)
        receiving = asyncio.create_task(stream.recv())
        await asyncio.sleep(0.05)
        stream.send_close()  # the task blocked in recv() reads the server's answer
        assert await asyncio.wait_for(receiving, 5) is None
        await asyncio.wait_for(srv.done.wait(), 5)
        await stream.wait_closed()
    assert results == [None]
    assert srv.errors == []


async def test_connect_refused_is_one_line() -> None:
    port = free_port()
    with pytest.raises(ConnectionLost) as info:
        await KxpStream.connect("127.0.0.1", port, client_conn(Kex.DHE), timeout=5)
    assert str(info.value) == f"cannot connect to 127.0.0.1:{port}: connection refused"


async def test_hard_abort_drops_the_connection(key: rsa.RSAPrivateKey) -> None:
    async def abort_after_handshake(stream: KxpStream) -> None:
        await stream.do_handshake(5)
        stream.abort(AlertCode.INTERNAL_ERROR, "bye", hard=True)

    async with OneServer(server_config(key), abort_after_handshake) as srv:
        stream = await KxpStream.connect("127.0.0.1", srv.port, client_conn(Kex.PSK))
        await stream.do_handshake(5)
        with pytest.raises((PeerAlert, ConnectionLost)):
            await stream.recv()
        await stream.wait_closed()
        await asyncio.wait_for(srv.done.wait(), 5)
    assert srv.errors == []


async def test_events_reach_the_hook_in_order(key: rsa.RSAPrivateKey) -> None:
    async with OneServer(server_config(key), echo) as srv:
        seen: list[str] = []
        conn = client_conn(Kex.DHE, trace=True)
        stream = await KxpStream.connect(
            "127.0.0.1", srv.port, conn, on_event=lambda e: seen.append(type(e).__name__)
        )
        await stream.do_handshake(5)
        await stream.send(b"hi")
        assert await stream.recv() == b"hi"
        await stream.close()
        await asyncio.wait_for(srv.done.wait(), 5)
    # sent CH; received SH, SIG, FIN; sent FIN; complete; then records and the close.
    assert seen[:6] == ["FrameTraced"] * 5 + ["HandshakeComplete"]
    assert "DataReceived" in seen and seen[-1] == "ConnectionClosed"


async def test_send_nowait_in_one_turn_leaves_in_one_write(key: rsa.RSAPrivateKey) -> None:
    """Messages queued with send_nowait in one event-loop turn go out as one socket write,
    in order, and all of them arrive (the batching the bench measured)."""
    writes: list[bytes] = []
    async with OneServer(server_config(key), echo) as srv:
        stream = await KxpStream.connect(
            "127.0.0.1",
            srv.port,
            client_conn(Kex.DHE),
            on_bytes=lambda d, b: writes.append(b) if d == "sent" else None,
        )
        await stream.do_handshake(5)
        before = len(writes)
        messages = [f"message {i}".encode() for i in range(10)]
        for m in messages:
            stream.send_nowait(m)
        assert stream.write_buffer_size >= sum(map(len, messages))  # queued, not yet written
        await stream.drain()
        assert len(writes) == before + 1  # ten records, one write
        assert [await stream.recv() for _ in messages] == messages
        await stream.close()
        await asyncio.wait_for(srv.done.wait(), 5)
    assert srv.errors == []
