"""``python -m bench.client --dir D``: the bench's client process.

Reads one JSON job per line on stdin and answers each with one JSON result line:
``handshake``, ``bulk``, ``pingpong``, ``open`` / ``release`` (idle connections
for the memory figure), ``crowd`` and ``quit``. Every timing is taken here, with
``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from protocol import (
    CipherSuite,
    ClientConfig,
    ClientConnection,
    Kex,
    ServerIdentity,
    TrustVerdict,
)

from . import kxp, tls
from .keys import fingerprint, load_psk
from .procs import LOOPS, raise_fd_limit, run, stdin_lines
from .scenarios import (
    CONCURRENCY,
    CROWD_CLIENTS,
    CROWD_MESSAGES,
    HOST,
    IDLE_CONNECTIONS,
    MODE_BULK,
    MODE_PING,
    PAIRING_BY_NAME,
    PING_SIZE,
    PSK_IDENTITY,
    TLS_HOSTNAME,
    Pairing,
)

BATCH_BYTES = 256 * 1024
"""The sender awaits ``drain()`` and looks at the clock after this many bytes of messages."""
PINGS_PER_CHECK = 32

Job = dict[str, Any]


class Peer(Protocol):
    """What the jobs need of a connection, whatever carries it."""

    def send(self, data: bytes) -> None:
        """Queue one message."""

    async def drain(self) -> None:
        """Wait while the write buffer is full."""

    async def receive_exact(self, n: int) -> bytes:
        """The next ``n`` bytes of messages."""

    async def request(self, data: bytes, n: int) -> bytes:
        """Send one message and wait for ``n`` bytes of answer."""

    async def close(self) -> None:
        """Close as the implementation's users do, waiting for the peer's answer."""


class StreamPeer:
    """A TLS or TCP connection: asyncio streams as they are."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        """One ``write`` per message."""
        self.writer.write(data)

    async def drain(self) -> None:
        """``StreamWriter.drain``."""
        await self.writer.drain()

    async def receive_exact(self, n: int) -> bytes:
        """``readexactly``."""
        return await self.reader.readexactly(n)

    async def request(self, data: bytes, n: int) -> bytes:
        """``write`` then ``readexactly``."""
        self.writer.write(data)
        return await self.reader.readexactly(n)

    async def close(self) -> None:
        """close (TLS: close_notify both ways) and wait."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


Opener = Callable[[], Awaitable[Peer]]


class Client:
    """Opens connections of each implementation to the ports the orchestrator names."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._configs: dict[str, ClientConfig] = {}
        self._contexts: dict[str, Any] = {}
        self.idle: list[Peer] = []

    def kexlab_config(self, pairing: Pairing) -> ClientConfig:
        """One config per pairing, reused by every connection (as a program would)."""
        if pairing.name not in self._configs:
            pinned = ""
            if pairing.kex is not Kex.PSK:
                pinned = fingerprint(self.directory, "rsa" if pairing.kex is Kex.RSA else "ed25519")

            def trust(identity: ServerIdentity) -> TrustVerdict:
                return TrustVerdict(identity.key_sha256 == pinned, "bench: unexpected server key")

            self._configs[pairing.name] = ClientConfig(
                kex=pairing.kex,
                cipher_suite=CipherSuite.AES_256_GCM_SHA384,  # what TLS 1.3 picks by default
                group=pairing.group,
                psk_identity=PSK_IDENTITY if pairing.kex is Kex.PSK else "",
                psk=load_psk(self.directory) if pairing.kex is Kex.PSK else b"",
                trust=trust,
            )
        return self._configs[pairing.name]

    def opener(self, job: Job) -> Opener:
        """A coroutine function that opens one connection for ``job`` (handshake done)."""
        impl, port = job["impl"], int(job["port"])
        pairing = PAIRING_BY_NAME[job["pairing"]]
        if impl == "kexlab":
            config = self.kexlab_config(pairing)

            async def open_kexlab() -> Peer:
                return await kxp.connect(HOST, port, ClientConnection(config))

            return open_kexlab
        if impl == "tls":
            assert pairing.tls_key is not None and pairing.tls_group is not None
            key = f"{pairing.tls_key}/{pairing.tls_group}"
            if key not in self._contexts:
                self._contexts[key] = tls.client_context(
                    self.directory, pairing.tls_key, pairing.tls_group
                )
            ctx = self._contexts[key]

            async def open_tls() -> Peer:
                reader, writer = await asyncio.open_connection(
                    HOST, port, ssl=ctx, server_hostname=TLS_HOSTNAME
                )
                return StreamPeer(reader, writer)

            return open_tls

        async def open_tcp() -> Peer:
            reader, writer = await asyncio.open_connection(HOST, port)
            return StreamPeer(reader, writer)

        return open_tcp

    # ------------------------------------------------------------------ jobs

    async def handshake(self, job: Job) -> Job:
        """Connect, handshake, close, in ``concurrency`` loops for ``duration`` s."""
        opener = self.opener(job)
        concurrency = int(job.get("concurrency", 1))

        async def one() -> float:
            start = time.perf_counter()
            peer = await opener()
            latency = time.perf_counter() - start
            await peer.close()
            return latency

        async def loop(deadline: float, out: list[float]) -> None:
            while time.perf_counter() < deadline:
                out.append(await one())

        async def run(duration: float) -> tuple[list[float], float]:
            start = time.perf_counter()
            per_task: list[list[float]] = [[] for _ in range(concurrency)]
            await asyncio.gather(*(loop(start + duration, out) for out in per_task))
            return [x for out in per_task for x in out], time.perf_counter() - start

        warm, _ = await run(float(job["warmup"]))
        latencies, elapsed = await run(float(job["duration"]))
        latencies.sort()
        ms = [x * 1000.0 for x in latencies]
        return {
            "ops": len(warm) + len(ms),
            "count": len(ms),
            "elapsed": elapsed,
            "rate": len(ms) / elapsed,
            "p50_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))],
        }

    async def bulk(self, job: Job) -> Job:
        """One-way messages of ``size`` bytes for ``duration`` s; the server's count ends a phase."""
        size = int(job["size"])
        peer = await self.opener(job)()
        peer.send(MODE_BULK)
        message = bytes(size)
        batch = max(1, BATCH_BYTES // size)

        async def phase(duration: float) -> tuple[int, float]:
            start = time.perf_counter()
            sent = 0
            send = peer.send
            while True:
                for _ in range(batch):
                    send(message)
                sent += batch * size
                await peer.drain()
                if time.perf_counter() - start >= duration:
                    break
            peer.send(b"\x01")
            count = int.from_bytes(await peer.receive_exact(8), "big")
            elapsed = time.perf_counter() - start
            if count != sent + 1:
                raise kxp.BenchError(f"server counted {count} bytes, {sent + 1} were sent")
            return sent, elapsed

        warm, _ = await phase(float(job["warmup"]))
        sent, elapsed = await phase(float(job["duration"]))
        await peer.close()
        ops = (warm + sent) // size
        return {"ops": ops, "bytes": sent, "elapsed": elapsed, "mb_s": sent / elapsed / 1e6}

    async def pingpong(self, job: Job) -> Job:
        """64-byte message, wait for its echo, repeat for ``duration`` s."""
        peer = await self.opener(job)()
        peer.send(MODE_PING)
        message = bytes(PING_SIZE)

        async def run(duration: float) -> tuple[int, float]:
            start = time.perf_counter()
            count = 0
            while True:
                for _ in range(PINGS_PER_CHECK):
                    await peer.request(message, PING_SIZE)
                count += PINGS_PER_CHECK
                if time.perf_counter() - start >= duration:
                    return count, time.perf_counter() - start

        warm, _ = await run(float(job["warmup"]))
        count, elapsed = await run(float(job["duration"]))
        await peer.close()
        return {
            "ops": warm + count,
            "round_trips": count,
            "elapsed": elapsed,
            "rate": count / elapsed,
        }

    async def open_idle(self, job: Job) -> Job:
        """Open ``connections`` connections, one ping each, and keep them (``release`` closes)."""
        opener = self.opener(job)
        total = int(job.get("connections", IDLE_CONNECTIONS))
        gate = asyncio.Semaphore(int(job.get("concurrency", CONCURRENCY)))
        message = bytes(PING_SIZE)

        async def one() -> None:
            async with gate:
                peer = await opener()
                peer.send(MODE_PING)
                await peer.request(message, PING_SIZE)
                self.idle.append(peer)

        await asyncio.gather(*(one() for _ in range(total)))
        return {"opened": len(self.idle)}

    async def crowd(self, job: Job) -> Job:
        """``clients`` connections at once, each a handshake then ``messages`` echoed messages.

        Each message names its client and its number, so an echo that is lost, reordered or
        another client's shows; a client whose connection fails counts as not completed.
        """
        opener = self.opener(job)
        clients = int(job.get("clients", CROWD_CLIENTS))
        messages = int(job.get("messages", CROWD_MESSAGES))
        latencies: list[float] = []
        lost = reordered = completed = 0
        errors: dict[str, int] = {}

        async def one(client: int) -> None:
            nonlocal lost, reordered, completed
            start = time.perf_counter()
            try:
                peer = await opener()
            except Exception as exc:  # counted, not raised: the row reports every client
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            latencies.append(time.perf_counter() - start)
            try:
                peer.send(MODE_PING)
                for n in range(messages):
                    message = b"%06d %06d " % (client, n) + bytes(PING_SIZE - 14)
                    try:
                        echo = await asyncio.wait_for(peer.request(message, PING_SIZE), 30)
                    except TimeoutError:
                        lost += messages - n
                        return
                    if echo != message:
                        reordered += 1
                completed += 1
            except Exception as exc:  # as above
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            finally:
                with contextlib.suppress(Exception):
                    await peer.close()

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(clients)))
        elapsed = time.perf_counter() - start
        ms = sorted(x * 1000.0 for x in latencies)
        return {
            "ops": clients * (messages + 1),
            "clients": clients,
            "messages": messages,
            "completed": completed,
            "lost": lost,
            "reordered": reordered,
            "errors": errors,
            "elapsed": elapsed,
            "handshake_p50_ms": statistics.median(ms) if ms else None,
            "handshake_p99_ms": ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))] if ms else None,
        }

    async def release(self, job: Job) -> Job:
        """Close every idle connection."""
        peers, self.idle = self.idle, []
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        return {"released": len(peers)}

    async def run(self) -> None:
        """Answer jobs until ``quit`` or the end of stdin."""
        jobs = {
            "handshake": self.handshake,
            "bulk": self.bulk,
            "pingpong": self.pingpong,
            "open": self.open_idle,
            "release": self.release,
            "crowd": self.crowd,
        }
        stdin = await stdin_lines()
        print(json.dumps({"ready": True}), flush=True)
        while line := await stdin.readline():
            job = json.loads(line)
            if job["job"] == "quit":
                break
            try:
                result = await jobs[job["job"]](job)
            except Exception as exc:  # one line back to the orchestrator, never a traceback
                result = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the client process."""
    parser = argparse.ArgumentParser(prog="python -m bench.client")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args(argv)
    raise_fd_limit(max(IDLE_CONNECTIONS, CROWD_CLIENTS) * 2 + 256)
    try:
        run(Client(args.dir).run(), args.loop)
    except KeyboardInterrupt:  # pragma: no cover - interactive use
        sys.exit(130)


if __name__ == "__main__":
    main()
