"""Shared by the capture tests: KXP sessions between in-memory connections, recorded to pcap.

A session is driven by a small pump that moves bytes between a ``ClientConnection``
and a ``ServerConnection`` and writes every byte through a ``capture.pcap.Flow``
seen from the client's side, so the pcap holds exactly what crossed the "wire".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO, load_vector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from external_tools import require_tool

from capture.pcap import Flow, PcapWriter
from protocol import (
    CipherSuite,
    ClientConfig,
    ClientConnection,
    Connection,
    ConnectionClosed,
    DataReceived,
    Event,
    Group,
    HandshakeComplete,
    Kex,
    ProtocolError,
    PskNeeded,
    ServerConfig,
    ServerConnection,
    ServerIdentity,
    TrustVerdict,
)

DISSECTOR = REPO / "wireshark" / "kexlab.lua"
PSK_IDENTITY = "lab-client-1"
PSK = bytes(range(100, 132))


@dataclass(frozen=True)
class LabKeys:
    """The long-term keys of the spec's vectors (no slow RSA key generation in tests)."""

    rsa: rsa.RSAPrivateKey
    ed25519: ed25519.Ed25519PrivateKey


def lab_keys() -> LabKeys:
    """Load the RSA transport key and the Ed25519 identity key from tests/vectors."""
    keys = load_vector("keys.json")
    rsa_key = serialization.load_der_private_key(
        bytes.fromhex(keys["rsa_transport_key_pkcs8"]), None
    )
    ed_key = serialization.load_der_private_key(
        bytes.fromhex(keys["ed25519_identity_key_pkcs8"]), None
    )
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    assert isinstance(ed_key, ed25519.Ed25519PrivateKey)
    return LabKeys(rsa_key, ed_key)


def trust_all(identity: ServerIdentity) -> TrustVerdict:
    """A test client trusts whatever server key it is shown."""
    return TrustVerdict(True)


def client_config(
    kex: Kex,
    suite: CipherSuite = CipherSuite.AES_128_GCM_SHA256,
    group: Group = Group.X25519,
    psk_identity: str = PSK_IDENTITY,
    psk: bytes = PSK,
) -> ClientConfig:
    """A client proposing ``kex`` (with the lab PSK for psk)."""
    if kex is Kex.PSK:
        return ClientConfig(kex=kex, cipher_suite=suite, psk_identity=psk_identity, psk=psk)
    return ClientConfig(
        kex=kex,
        cipher_suite=suite,
        group=group if kex is Kex.DHE else Group.NONE,
        trust=trust_all,
    )


def server_config(keys: LabKeys, psk: bytes | None = PSK) -> ServerConfig:
    """A server enabling every method; it knows the lab PSK unless ``psk`` is None."""
    return ServerConfig(
        rsa_key=keys.rsa,
        sign_key=keys.ed25519,
        psk_lookup=lambda identity: psk if identity == PSK_IDENTITY else None,
    )


@dataclass
class Recorded:
    """What one recorded session did, for the assertions."""

    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    errors: list[ProtocolError] = field(default_factory=list)

    @property
    def complete(self) -> HandshakeComplete:
        """The client's HandshakeComplete."""
        done = [e for e in self.client_events if isinstance(e, HandshakeComplete)]
        assert done, f"handshake did not complete: {self.errors}"
        return done[0]

    @property
    def keylog(self) -> str:
        """The session's §9 key log lines."""
        return self.complete.keylog

    def received_by_server(self) -> list[bytes]:
        """Application data the server got."""
        return [e.data for e in self.server_events if isinstance(e, DataReceived)]

    def received_by_client(self) -> list[bytes]:
        """Application data the client got."""
        return [e.data for e in self.client_events if isinstance(e, DataReceived)]


def _drain(conn: Connection, sink: list[Event], rec: Recorded, psk: bytes | None) -> None:
    while True:
        try:
            event = conn.next_event()
        except ProtocolError as exc:
            rec.errors.append(exc)
            return
        if event is None:
            return
        sink.append(event)
        if isinstance(event, PskNeeded) and isinstance(conn, ServerConnection):
            conn.supply_psk(psk)  # what arrives "out of band"; None means nothing did


def pump(
    client: ClientConnection,
    server: ServerConnection,
    flow: Flow,
    rec: Recorded,
    psk_on_demand: bytes | None = None,
) -> None:
    """Move bytes both ways (through the pcap flow) until neither side has anything to send."""
    while True:
        _drain(client, rec.client_events, rec, None)
        _drain(server, rec.server_events, rec, psk_on_demand)
        c_out, s_out = client.data_to_send(), server.data_to_send()
        if not c_out and not s_out:
            return
        if c_out:
            flow.sent(c_out)
            server.receive_data(c_out)
        if s_out:
            flow.received(s_out)
            client.receive_data(s_out)


def record_session(
    writer: PcapWriter,
    client_cfg: ClientConfig,
    server_cfg: ServerConfig,
    *,
    client_messages: tuple[bytes, ...] = (),
    server_messages: tuple[bytes, ...] = (),
    key_update: bool = False,
    client_addr: tuple[str, int] = ("127.0.0.1", 50000),
    server_addr: tuple[str, int] = ("127.0.0.1", 9700),
    psk_on_demand: bytes | None = None,
) -> Recorded:
    """Handshake, client then server messages (a requested key update in between), close."""
    rec = Recorded()
    flow = writer.flow(client_addr, server_addr)
    client, server = ClientConnection(client_cfg), ServerConnection(server_cfg)
    client.start()
    pump(client, server, flow, rec, psk_on_demand)
    if client.handshake_complete and server.handshake_complete:
        for i, msg in enumerate(client_messages):
            client.send_data(msg)
            if key_update and i == len(client_messages) // 2:
                client.send_key_update(request_update=True)
            pump(client, server, flow, rec)
        for msg in server_messages:
            server.send_data(msg)
            pump(client, server, flow, rec)
        client.close()
        pump(client, server, flow, rec)
    flow.close()
    return rec


def tshark_env(home: Path) -> dict[str, str]:
    """An environment with an empty Wireshark configuration (no user plugins or prefs)."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "WIRESHARK_CONFIG_DIR": str(home),
        "LC_ALL": "C.UTF-8",
    }


def tshark_fields(
    capture: Path, fields: list[str], home: Path, extra: tuple[str, ...] = ()
) -> list[list[str]]:
    """Rows of ``-T fields`` for KXP packets, one list per packet; fails on any Lua error."""
    tshark = require_tool("tshark")
    args = [tshark, "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(capture)]
    args += ["-Y", "kxp", "-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]
    args += ["-E", "aggregator=,", *extra]
    for name in fields:
        args += ["-e", name]
    proc = subprocess.run(
        args, env=tshark_env(home), capture_output=True, text=True, timeout=60, check=False
    )
    assert_no_lua_error(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    return [line.split("|") for line in proc.stdout.splitlines()]


@dataclass
class Rows:
    """tshark rows of one session, split by direction; each field flattened over frames."""

    client: list[dict[str, str]]
    server: list[dict[str, str]]

    def values(self, side: str, field: str) -> list[str]:
        """Every value of ``field`` in one direction, in wire order."""
        rows = self.client if side == "client" else self.server
        return [v for row in rows for v in row[field].split(",") if v]


def assert_no_lua_error(stderr: str) -> None:
    """tshark exits 0 after a Lua error, so its stderr is the only witness."""
    lowered = stderr.lower()
    for marker in ("lua", "error", "attempt to", "stack traceback", "bad argument"):
        assert marker not in lowered, f"tshark reported a problem:\n{stderr}"


# --------------------------------------------------------------------------- real loopback sessions


@dataclass
class LiveResult:
    """One real session over 127.0.0.1: the client's handshake and the echoes it read back."""

    complete: HandshakeComplete
    echoes: list[bytes]
    client_port: int


async def _read_events(
    conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> list[Event]:
    """Read once, feed the connection, write its answer; the events that came of it."""
    data = await asyncio.wait_for(reader.read(1 << 16), timeout=10)
    if data:
        conn.receive_data(data)
    else:
        conn.receive_eof()
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is None:
            break
        events.append(event)
    out = conn.data_to_send()
    if out:
        writer.write(out)
        await writer.drain()
    if not data:
        events.append(ConnectionClosed(False, "eof"))
    return events


async def echo_server(keys: LabKeys) -> tuple[asyncio.Server, int]:
    """A KXP echo server on 127.0.0.1, a free port: every application_data record comes back."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(server_config(keys))
        try:
            while True:
                events = await _read_events(conn, reader, writer)
                for event in events:
                    if isinstance(event, DataReceived):
                        conn.send_data(event.data)
                out = conn.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                if any(isinstance(e, ConnectionClosed) for e in events):
                    break
        except (ProtocolError, OSError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def echo_session(
    port: int, cfg: ClientConfig, messages: tuple[bytes, ...], key_update: bool = True
) -> LiveResult:
    """Connect, handshake, send each message and read its echo (a key update midway), close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client_port = writer.get_extra_info("sockname")[1]
    conn = ClientConnection(cfg)
    conn.start()
    writer.write(conn.data_to_send())
    complete: HandshakeComplete | None = None
    while complete is None:
        for event in await _read_events(conn, reader, writer):
            if isinstance(event, HandshakeComplete):
                complete = event
    echoes: list[bytes] = []
    for i, msg in enumerate(messages):
        conn.send_data(msg)
        if key_update and i == len(messages) // 2:
            conn.send_key_update(request_update=True)
        writer.write(conn.data_to_send())
        got = b""
        while len(got) < len(msg):
            for event in await _read_events(conn, reader, writer):
                if isinstance(event, DataReceived):
                    got += event.data
        echoes.append(got)
    conn.close()
    writer.write(conn.data_to_send())
    closed = False
    while not closed:
        events = await _read_events(conn, reader, writer)
        closed = any(isinstance(e, ConnectionClosed) for e in events)
    writer.close()
    await writer.wait_closed()
    return LiveResult(complete, echoes, client_port)


@dataclass
class TcpdumpRun:
    """What tcpdump said when it stopped."""

    dropped: int | None = None
    """Packets the kernel dropped because tcpdump's buffer was full (None if not reported)."""


@contextlib.contextmanager
def tcpdump(path: Path, port: int, *more_ports: int) -> Iterator[TcpdumpRun]:
    """Capture ``tcp port PORT`` (and ``more_ports``) on lo into ``path`` while the block runs."""
    # A large buffer: loopback packets are up to 64 KiB, and the default 2 MiB ring fills
    # up (kernel drops) when a busy machine schedules tcpdump late.
    binary = require_tool("tcpdump")
    args = [binary, "-i", "lo", "--immediate-mode", "-U", "-n", "-B", "65536", "-w", str(path)]
    if os.geteuid() == 0:
        args[1:1] = ["-Z", "root"]  # keep root so the file can go anywhere root may write
    args.append(" or ".join(f"tcp port {p}" for p in (port, *more_ports)))
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    run = TcpdumpRun()
    try:
        deadline = time.monotonic() + 15
        banner = b""
        while b"listening on" not in banner:  # tcpdump says so once the capture is live
            left = deadline - time.monotonic()
            ready, _, _ = select.select([proc.stderr], [], [], max(left, 0))
            line = proc.stderr.readline() if ready else b""
            if not line and (proc.poll() is not None or left <= 0):
                raise AssertionError(f"tcpdump did not start: {banner.decode(errors='replace')}")
            banner += line
        yield run
        time.sleep(0.2)  # the last FIN/ACKs of the kernel reach the capture
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=5)
        tail = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        found = re.search(r"(\d+) packets? dropped by kernel", tail)
        run.dropped = int(found.group(1)) if found else None


async def live_sessions(
    path: Path, keys: LabKeys, messages: tuple[bytes, ...], attempts: int = 3
) -> tuple[int, dict[str, LiveResult]]:
    """An rsa, a dhe and a psk echo session over 127.0.0.1, captured by tcpdump into ``path``.

    A run in which the kernel dropped packets (a busy machine, not our code) is done again.
    Returns the server's port and each method's result.
    """
    for _ in range(attempts):
        server, port = await echo_server(keys)
        results = {}
        async with server:
            with tcpdump(path, port) as run:
                for name, kex in (("rsa", Kex.RSA), ("dhe", Kex.DHE), ("psk", Kex.PSK)):
                    results[name] = await echo_session(port, client_config(kex), messages)
        if not run.dropped:
            return port, results
    raise AssertionError(f"tcpdump dropped packets in {attempts} runs (last: {run.dropped})")
