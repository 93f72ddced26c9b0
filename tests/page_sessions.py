"""Sessions for the page tests: captures and live event streams from in-memory connections.

Everything runs in memory with the core's own connections (``kxp_sessions.pump`` moves the
bytes and writes them to a pcap as they cross), so the pages the tests open are made
exactly as ``kexlab decrypt --html`` and ``kexlab client --html`` make them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kxp_sessions import (
    PSK,
    PSK_IDENTITY,
    LabKeys,
    Recorded,
    client_config,
    lab_keys,
    pump,
    record_session,
    server_config,
)

from capture.decrypt import DecryptReport, decrypt_capture
from capture.pcap import PcapWriter
from protocol import (
    ClientConfig,
    ClientConnection,
    Connection,
    Event,
    FrameTraced,
    HandshakeComplete,
    Kex,
    ProtocolError,
    ServerConfig,
    ServerConnection,
)
from protocol.keyschedule import parse_keylog
from webpage import LiveSession, Story, capture_stories, write_page

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\x1b[2J\u202eevil"
"""A message that must show as text: markup, a terminal escape, a bidi override."""
MESSAGES = (b"my card is 4111 1111 1111 1111", HOSTILE.encode("utf-8"), b"third")
REPLY = (b"card accepted",)


def traced(cfg: ClientConfig) -> ClientConfig:
    """The same proposal with frame tracing on (what ``--html`` turns on)."""
    return dataclasses.replace(cfg, trace=True)


@dataclass
class Lab:
    """One capture holding an rsa, a dhe and a psk session (each with a key update)."""

    path: Path
    keys: LabKeys
    sessions: dict[str, Recorded]

    def report(
        self, *, keylog: bool = False, rsa: bool = False, psk: bool = False
    ) -> DecryptReport:
        """``kexlab decrypt`` with the key sources asked for."""
        lines = "".join(r.keylog for r in self.sessions.values()) if keylog else ""
        return decrypt_capture(
            self.path,
            keylog=parse_keylog(lines) if keylog else None,
            rsa_key=self.keys.rsa if rsa else None,
            psks={PSK_IDENTITY: PSK} if psk else None,
        )


def record_lab(path: Path) -> Lab:
    """rsa, dhe and psk sessions, each with messages both ways and a key update."""
    keys = lab_keys()
    sessions = {}
    with PcapWriter(path) as writer:
        for port, (name, kex) in enumerate((("rsa", Kex.RSA), ("dhe", Kex.DHE), ("psk", Kex.PSK))):
            sessions[name] = record_session(
                writer,
                traced(client_config(kex)),
                server_config(keys),
                client_messages=MESSAGES,
                server_messages=REPLY,
                key_update=True,
                client_addr=("127.0.0.1", 51000 + port),
            )
    return Lab(path, keys, sessions)


def page_of(report: DecryptReport, kex: str) -> Story:
    """The page of the (only) session of one method in a report."""
    found = [story for _, story in capture_stories(report) if f" {kex}/" in story.title]
    assert len(found) == 1, [s.title for s in found]
    return found[0]


def live_page(
    events: list[Event], role: str = "client", *, secrets: bool = False, seed: str | None = None
) -> Story:
    """The page ``--html`` writes from one side's events."""
    live = LiveSession(role, peer="server 127.0.0.1:9700", show_secrets=secrets, seed=seed)
    for event in events:
        live.on_event(event)
    return live.story()


# --------------------------------------------------------------------------- a failed handshake


def wrong_psk_session(path: Path) -> Recorded:
    """A psk client whose key differs from the server's: the client sends decrypt_error."""
    keys = lab_keys()
    with PcapWriter(path) as writer:
        return record_session(
            writer, traced(client_config(Kex.PSK, psk=bytes(32))), server_config(keys)
        )


# --------------------------------------------------------------------------- a tampered record


def tampered_session(path: Path, how: str = "flip") -> Recorded:
    """A dhe session whose first client record is changed on the wire: a bit flipped
    (``flip``) or the record sent twice (``replay``)."""
    keys = lab_keys()
    rec = Recorded()
    with PcapWriter(path) as writer:
        flow = writer.flow(("127.0.0.1", 51500), ("127.0.0.1", 9700))
        client = ClientConnection(traced(client_config(Kex.DHE)))
        server = ServerConnection(server_config(keys))
        client.start()
        pump(client, server, flow, rec)
        client.send_data(b"transfer 100 to alice")
        wire = bytearray(client.data_to_send())
        if how == "flip":
            wire[20] ^= 0x01  # a ciphertext bit: the tag no longer matches
        else:
            wire = wire + bytes(wire)  # the same record again: a seq the server has seen
        flow.sent(bytes(wire))
        server.receive_data(bytes(wire))
        pump(client, server, flow, rec)
        flow.close()
    return rec


# --------------------------------------------------------------------------- a man in the middle


@dataclass
class Mitm:
    """Both legs of an interception, recorded in one capture."""

    path: Path
    client: Recorded = field(default_factory=Recorded)
    """The real client and the attacker's server side."""
    upstream: Recorded = field(default_factory=Recorded)
    """The attacker's client side and the real server."""


def _replay(first: bytes) -> Callable[[int], bytes]:
    """The attacker's rng: its first draw is the client's random (as kexlab mitm does)."""
    state = {"first": first}

    def rng(n: int) -> bytes:
        value = state.pop("first", None)
        return value if value is not None and len(value) == n else os.urandom(n)

    return rng


def _data(rec: Recorded, side: str) -> list[bytes]:
    from protocol import DataReceived

    events = rec.client_events if side == "client" else rec.server_events
    return [e.data for e in events if isinstance(e, DataReceived)]


def mitm_session(path: Path) -> Mitm:
    """A psk client talking through an attacker who sniffed the PSK: two legs, one random."""
    keys = lab_keys()
    out = Mitm(path)
    with PcapWriter(path) as writer:
        leg1 = writer.flow(("127.0.0.1", 51600), ("127.0.0.1", 9701))
        leg2 = writer.flow(("127.0.0.1", 51601), ("127.0.0.1", 9700))
        client = ClientConnection(traced(client_config(Kex.PSK)))
        fake = ServerConnection(
            ServerConfig(kex_methods=frozenset({Kex.PSK}), psk_lookup=lambda identity: PSK)
        )
        client.start()
        pump(client, fake, leg1, out.client)
        (done,) = [e for e in out.client.client_events if isinstance(e, HandshakeComplete)]
        upstream = ClientConnection(
            dataclasses.replace(client_config(Kex.PSK), rng=_replay(done.client_random))
        )
        server = ServerConnection(server_config(keys))
        upstream.start()
        pump(upstream, server, leg2, out.upstream)
        client.send_data(b"send 100 to bob")
        pump(client, fake, leg1, out.client)
        for data in _data(out.client, "server"):
            upstream.send_data(data.replace(b"bob", b"eve"))  # the attacker rewrites it
        pump(upstream, server, leg2, out.upstream)
        server.send_data(b"sent 100 to eve")
        pump(upstream, server, leg2, out.upstream)
        for data in _data(out.upstream, "client"):
            fake.send_data(data.replace(b"eve", b"bob"))
        pump(client, fake, leg1, out.client)
        for first, second, flow, rec in (
            (client, fake, leg1, out.client),
            (upstream, server, leg2, out.upstream),
        ):
            first.close()
            pump(first, second, flow, rec)  # type: ignore[arg-type]
        leg1.close()
        leg2.close()
    return out


# --------------------------------------------------------------------------- a long transfer


def _drain(conn: Connection, sink: Callable[[Event], None] | None) -> None:
    while True:
        try:
            event = conn.next_event()
        except ProtocolError:
            return
        if event is None:
            return
        if sink is not None:
            sink(event)


def big_transfer(size: int, chunk: int = 65536) -> LiveSession:
    """A psk client sending ``size`` bytes, recorded as ``kexlab client --html`` records it."""
    keys = lab_keys()
    live = LiveSession("client", peer="server 127.0.0.1:9700", show_secrets=False)
    client = ClientConnection(traced(client_config(Kex.PSK)))
    server = ServerConnection(server_config(keys))
    client.start()

    def move() -> None:
        for _ in range(6):
            c_out = client.data_to_send()
            if c_out:
                server.receive_data(c_out)
            _drain(server, None)
            s_out = server.data_to_send()
            if s_out:
                client.receive_data(s_out)
            _drain(client, live.on_event)
            if not c_out and not s_out:
                return

    move()
    block = bytes(range(256)) * (chunk // 256)
    for _ in range(size // chunk):
        client.send_data(block)
        move()
    client.close()
    move()
    return live


def frames_of(rec: Recorded, side: str = "client") -> list[FrameTraced]:
    """The frames one side traced."""
    events = rec.client_events if side == "client" else rec.server_events
    return [e for e in events if isinstance(e, FrameTraced)]


def write(story: Story, folder: Path, name: str) -> Path:
    """Write a page for a test."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_page(folder / name, story)
