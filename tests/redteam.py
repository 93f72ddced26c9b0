"""The red team's tools (issue 13), bounded, loopback only: for the regression tests and
for tests/hold_under_attack.py, which measures the same attacks for longer.

Each attack speaks to a server over real sockets (or to a broker), with the sans-I/O core
where it needs to speak KXP: a man in the middle is two core connections back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519

from oob import MqttSettings
from oob.settings import cancel_and_wait, connect
from protocol import (
    CipherSuite,
    ClientConfig,
    ClientConnection,
    Group,
    HandshakeComplete,
    Kex,
    ServerConfig,
    ServerConnection,
    TrustVerdict,
)
from transport import KxpStream, start_server

HOST = "127.0.0.1"


def trust_any(_identity: object) -> TrustVerdict:
    """What a client with --trust none does: accept any key."""
    return TrustVerdict(True)


def hello_bytes(kex: Kex = Kex.DHE) -> bytes:
    """A fresh CLIENT_HELLO (dhe x25519): the server signs its answer to each one."""
    conn = ClientConnection(ClientConfig(kex=kex, group=Group.X25519, trust=trust_any))
    conn.start()
    return conn.data_to_send()


async def open_from(
    port: int, source: str = HOST, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to HOST:port from ``source`` (another loopback address is another host).

    Cancelled at any point (the attack stops), it leaves no socket behind for the garbage
    collector to warn about in some later test.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    if rcvbuf is not None:  # before connecting, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.bind((source, 0))
        await loop.sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    opening = asyncio.ensure_future(asyncio.open_connection(sock=sock))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            (await opening)[1].close()
        raise


# --------------------------------------------------------------------------- slots


@dataclass
class Holder:
    """Keeps ``count`` idle connections open, reconnecting those the server drops (a storm)."""

    port: int
    count: int
    source: str = HOST
    reconnect_delay: float = 0.02
    opened: int = 0
    dropped: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _hold(self) -> None:
        while True:
            try:
                reader, writer = await open_from(self.port, self.source)
            except OSError:
                await asyncio.sleep(self.reconnect_delay)
                continue
            self.opened += 1
            try:
                await reader.read()  # nothing is sent; wait for the server to let go
            except OSError:
                pass
            finally:
                writer.close()
            self.dropped += 1
            await asyncio.sleep(self.reconnect_delay)

    def start(self) -> None:
        """Open the connections in the background."""
        self._tasks = [asyncio.create_task(self._hold()) for _ in range(self.count)]

    async def stop(self) -> None:
        """Close them all."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class HelloFlood:
    """``rate`` dhe CLIENT_HELLOs a second, each on a new connection (no secret needed)."""

    port: int
    rate: float
    source: str = HOST
    sent: int = 0
    answered: int = 0
    """Connections on which the server sent something back (a flight, or a refusal)."""
    _task: asyncio.Task[None] | None = None
    _inflight: set[asyncio.Task[None]] = field(default_factory=set)

    async def _one(self, hello: bytes) -> None:
        try:
            reader, writer = await open_from(self.port, self.source)
        except OSError:
            return
        try:
            writer.write(hello)
            self.sent += 1
            async with asyncio.timeout(5):
                if await reader.read(4096):
                    self.answered += 1
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _run(self) -> None:
        hello = hello_bytes()  # one hello over and over: the server still signs each answer
        interval = 1.0 / self.rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if len(self._inflight) < 2000:  # bounded, whatever the server does
                task = asyncio.create_task(self._one(hello))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def start(self) -> None:
        """Flood in the background."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop, and close what is in flight."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)


async def open_stream(
    port: int, conn: ClientConnection, source: str = HOST, rcvbuf: int | None = None
) -> KxpStream:
    """``open_from``, with the client connection's own pump on the socket."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.bind((source, 0))
        await loop.sock_connect(sock, (HOST, port))
        stream = KxpStream(conn)
        await loop.create_connection(lambda: stream, sock=sock)
    except BaseException:
        sock.close()
        raise
    return stream


async def honest_round(port: int, source: str, deadline: float) -> float:
    """One honest client (dhe): handshake and an echo within ``deadline``; seconds taken."""
    started = time.monotonic()
    async with asyncio.timeout(deadline):
        conn = ClientConnection(ClientConfig(kex=Kex.DHE, trust=trust_any))
        stream = await open_stream(port, conn, source)
        try:
            await stream.do_handshake(deadline)
            await stream.send(b"honest")
            assert await stream.recv() == b"honest"
            await stream.close(1.0)
        finally:
            await stream.wait_closed(0.5)
    return time.monotonic() - started


# --------------------------------------------------------------------------- after a handshake


async def handshaken(port: int, kex: Kex = Kex.DHE, rcvbuf: int | None = None) -> KxpStream:
    """A client stream with its handshake done (dhe: no secret needed)."""
    conn = ClientConnection(ClientConfig(kex=kex, trust=trust_any))
    stream = await open_stream(port, conn, rcvbuf=rcvbuf)
    await stream.do_handshake(10)
    return stream


async def key_update_flood(stream: KxpStream, count: int, batch: int = 1000) -> int:
    """Ask for ``count`` key updates (request_update=1) and never read an answer; how many went.

    Writes stop counting once the socket no longer takes them (the server stopped reading):
    that is the backpressure the fix asks for.
    """
    conn, transport = stream.conn, stream.transport
    assert transport is not None
    sent = 0
    while sent < count:
        for _ in range(min(batch, count - sent)):
            conn.send_key_update(True)
        transport.write(conn.data_to_send())
        sent += min(batch, count - sent)
        await asyncio.sleep(0)
        if transport.get_write_buffer_size() > 8 << 20:
            break  # the server is not reading any more: more would only fill our own memory
    return sent


# --------------------------------------------------------------------------- the middle


@dataclass
class MitmLeg:
    """What a man in the middle holds of one connection it relays."""

    down: HandshakeComplete
    """Its handshake with the client (its own key; the client took it with --trust none)."""
    up: HandshakeComplete | None = None
    """Its handshake with the real server (as an ordinary client)."""
    plaintext: list[bytes] = field(default_factory=list)
    """Every record it relayed, read in the clear."""


@contextlib.asynccontextmanager
async def mitm(upstream_port: int) -> AsyncIterator[tuple[int, list[MitmLeg]]]:
    """A man in the middle on a free port, relaying to ``upstream_port`` (dhe both ways)."""
    legs: list[MitmLeg] = []
    key = ed25519.Ed25519PrivateKey.generate()  # its own identity: the client's trust decides
    config = ServerConfig(
        kex_methods=frozenset({Kex.DHE}), cipher_suites=tuple(CipherSuite), sign_key=key
    )

    async def relay(src: KxpStream, dst: KxpStream, leg: MitmLeg) -> None:
        while (record := await src.recv()) is not None:
            leg.plaintext.append(record)
            await dst.send(record)
        dst.send_close()

    async def accept(down: KxpStream) -> None:
        up: KxpStream | None = None
        try:
            leg = MitmLeg(await down.do_handshake(10))
            legs.append(leg)
            suite = leg.down.cipher_suite
            up_conn = ClientConnection(
                ClientConfig(kex=Kex.DHE, cipher_suite=suite, trust=trust_any)
            )
            up = await KxpStream.connect(HOST, upstream_port, up_conn, timeout=10)
            leg.up = await up.do_handshake(10)
            await asyncio.gather(relay(down, up, leg), relay(up, down, leg))
        except Exception:  # an attacker does not care why a leg ended
            pass
        finally:
            down.send_close()
            await down.wait_closed(0.5)
            if up is not None:
                up.send_close()
                await up.wait_closed(0.5)

    server = await start_server(accept, HOST, 0, lambda: ServerConnection(config))
    try:
        yield server.sockets[0].getsockname()[1], legs
    finally:
        server.close()
        await server.wait_closed()


def _forgery(legs: list[MitmLeg], base: str, role: str) -> tuple[str, bytes] | None:
    """The message that answers ``role``'s publication in session ``base``, from a leg's SAS."""
    for leg in legs:
        for hc, peer_role in ((leg.down, "server"), (leg.up, "client")):
            if hc is not None and base.endswith(hc.client_random.hex()) and role != peer_role:
                body = json.dumps({"role": peer_role, "sas": hc.sas.hex()}).encode()
                return f"{base}/{peer_role}", body
    return None


@contextlib.asynccontextmanager
async def sas_forger(
    settings: MqttSettings, legs: list[MitmLeg], *, reflect: bool = False
) -> AsyncIterator[list[str]]:
    """An ordinary MQTT client with no secrets, on the SAS topics (issue 13 item 1).

    With ``legs`` (a man in the middle's sessions) it answers each side with the SAS of its
    own leg, under the role the side waits for. With ``reflect`` it copies every message
    from one role's topic onto the other's, as it is. Yields the topics it published on.
    """
    published: list[str] = []
    own: set[tuple[str, bytes]] = set()
    waiting: list[tuple[str, str]] = []
    async with connect(settings) as client:
        await client.subscribe("kexlab/v1/+/sas/#", qos=1)

        async def answer() -> None:
            async for message in client.messages:
                topic = str(message.topic)
                payload = message.payload if isinstance(message.payload, bytes) else b""
                if (topic, payload) in own:
                    continue  # its own publication, coming back
                base, _, role = topic.rpartition("/")
                if reflect:
                    other = f"{base}/{'server' if role == 'client' else 'client'}"
                    own.add((other, payload))
                    published.append(other)
                    await client.publish(other, payload, qos=1)
                elif topic not in published:
                    waiting.append((base, role))

        async def forge() -> None:
            while True:  # a leg may be known only a moment after its side publishes
                for base, role in list(waiting):
                    forged = _forgery(legs, base, role)
                    if forged is not None and forged[0] not in published:
                        published.append(forged[0])
                        await client.publish(forged[0], forged[1], qos=1)
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(answer()), asyncio.create_task(forge())]
        try:
            yield published
        finally:
            for task in tasks:  # they publish: one cancel() can be lost (cancel_and_wait)
                with contextlib.suppress(Exception):
                    await cancel_and_wait(task)


# --------------------------------------------------------------------------- measuring


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError("no VmRSS")


async def sample_rss(pid: int, every: float, into: list[float]) -> None:
    """Append the RSS of ``pid`` every ``every`` seconds until cancelled."""
    while True:
        with contextlib.suppress(OSError, ValueError):
            into.append(rss_mb(pid))
        await asyncio.sleep(every)


def median(values: list[float]) -> float:
    """The median (values non-empty)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


Clock = Callable[[], float]
NOW: Clock = time.time
KEY = os.urandom(32)
