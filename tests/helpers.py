"""In-memory KXP/1 pairs for the core's tests: keys made once, a pump, and readers for sent alerts."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from protocol import (
    AlertCode,
    AlertReceived,
    CipherSuite,
    ClientConfig,
    ClientConnection,
    ConnectionClosed,
    Event,
    FrameDecoder,
    FrameType,
    Group,
    HandshakeComplete,
    Kex,
    LocalProtocolError,
    ProtocolError,
    ServerConfig,
    ServerConnection,
    ServerIdentity,
    State,
    TrustVerdict,
)
from protocol.connection import Connection
from protocol.constants import SUITES, ContentType
from protocol.frames import Frame
from protocol.kex import RandomSource
from protocol.keyschedule import KeySchedule
from protocol.messages import Alert
from protocol.records import RecordReceiver, RecordSender

# Long-term keys are slow to make (RSA above all): once per test process.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()
PSK_IDENTITY = "alice"
PSK = bytes(range(32))


def trust_all(identity: ServerIdentity) -> TrustVerdict:
    """A trust policy that accepts any server key."""
    return TrustVerdict(True)


def psk_lookup(identity: str) -> bytes | None:
    """The server's PSK store: one key for PSK_IDENTITY."""
    return PSK if identity == PSK_IDENTITY else None


def det_rng(seed: int) -> RandomSource:
    """A reproducible RandomSource, so that a handshake replays byte for byte (never for real use)."""
    return random.Random(seed).randbytes


def client_config(
    kex: Kex = Kex.PSK,
    suite: CipherSuite = CipherSuite.AES_128_GCM_SHA256,
    group: Group = Group.X25519,
    **kw: object,
) -> ClientConfig:
    """A client proposal with test defaults (trust anything, the test PSK)."""
    base: dict[str, object] = {
        "kex": kex,
        "cipher_suite": suite,
        "group": group,
        "trust": trust_all,
    }
    if kex is Kex.PSK:
        base.update(psk_identity=PSK_IDENTITY, psk=PSK)
    base.update(kw)
    return ClientConfig(**base)  # type: ignore[arg-type]


def server_config(**kw: object) -> ServerConfig:
    """A server that enables everything, with the module's RSA, Ed25519 and PSK keys."""
    base: dict[str, object] = {"rsa_key": RSA_KEY, "sign_key": ED_KEY, "psk_lookup": psk_lookup}
    base.update(kw)
    return ServerConfig(**base)  # type: ignore[arg-type]


def make_pair(
    kex: Kex = Kex.PSK,
    suite: CipherSuite = CipherSuite.AES_128_GCM_SHA256,
    group: Group = Group.X25519,
    *,
    client_kw: dict[str, object] | None = None,
    server_kw: dict[str, object] | None = None,
    seed: int | None = None,
) -> tuple[ClientConnection, ServerConnection]:
    """A started client and a fresh server; with ``seed`` both draw reproducible randomness."""
    ckw = dict(client_kw or {})
    skw = dict(server_kw or {})
    if seed is not None:
        ckw.setdefault("rng", det_rng(seed))
        skw.setdefault("rng", det_rng(seed + 1))
    client = ClientConnection(client_config(kex, suite, group, **ckw))
    server = ServerConnection(server_config(**skw))
    client.start()
    return client, server


@dataclass
class Drained:
    """What ``next_event`` gave until it returned None or raised."""

    events: list[Event] = field(default_factory=list)
    error: ProtocolError | None = None

    def of(self, kind: type[Event]) -> list[Event]:
        """The events of one type."""
        return [e for e in self.events if isinstance(e, kind)]


def drain(conn: Connection) -> Drained:
    """Take every event; stop at None or at the ProtocolError that ended the connection."""
    out = Drained()
    try:
        while (ev := conn.next_event()) is not None:
            out.events.append(ev)
    except ProtocolError as exc:
        out.error = exc
    return out


def feed(conn: Connection, data: bytes, eof: bool = False) -> Drained:
    """Give ``conn`` bytes (and optionally end of stream), then drain it."""
    conn.receive_data(data)
    if eof:
        conn.receive_eof()
    return drain(conn)


def pump(
    client: ClientConnection, server: ServerConnection, rounds: int = 10
) -> tuple[Drained, Drained]:
    """Move bytes both ways until neither side has anything to say; collect both sides' events."""
    c_all, s_all = Drained(), Drained()
    for _ in range(rounds):
        to_server, to_client = client.data_to_send(), server.data_to_send()
        if not to_server and not to_client:
            break
        for conn, data, acc in ((server, to_server, s_all), (client, to_client, c_all)):
            if data:
                got = feed(conn, data)
                acc.events += got.events
                acc.error = acc.error or got.error
    return c_all, s_all


def handshake(
    client: ClientConnection, server: ServerConnection
) -> tuple[HandshakeComplete, HandshakeComplete]:
    """Run a handshake to completion and return both HandshakeComplete events."""
    c, s = pump(client, server)
    assert c.error is None and s.error is None, (c.error, s.error)
    (c_done,) = c.of(HandshakeComplete)
    (s_done,) = s.of(HandshakeComplete)
    assert isinstance(c_done, HandshakeComplete) and isinstance(s_done, HandshakeComplete)
    assert client.state is State.CONNECTED and server.state is State.CONNECTED
    return c_done, s_done


def connected(
    kex: Kex = Kex.PSK,
    suite: CipherSuite = CipherSuite.AES_128_GCM_SHA256,
    group: Group = Group.X25519,
) -> tuple[ClientConnection, ServerConnection, HandshakeComplete]:
    """A client/server pair whose handshake is complete; the client's HandshakeComplete."""
    client, server = make_pair(kex, suite, group)
    c_done, _ = handshake(client, server)
    return client, server, c_done


def frames(data: bytes) -> list[Frame]:
    """Split bytes into frames (no state checks: an observer's view)."""
    dec = FrameDecoder()
    dec.feed(data)
    out = []
    while (fr := dec.next_frame()) is not None:
        out.append(fr)
    assert dec.buffered == 0, "trailing partial frame"
    return out


def forger(done: HandshakeComplete, direction: str = "s") -> RecordSender:
    """A RecordSender holding one side's traffic secret (epoch 0), to forge records with."""
    secret = done.secrets.s_ap_0 if direction == "s" else done.secrets.c_ap_0
    return RecordSender(KeySchedule(SUITES[done.cipher_suite]), secret)


def open_records(
    data: bytes, done: HandshakeComplete, direction: str = "c"
) -> list[tuple[ContentType, bytes]]:
    """Decrypt the RECORD frames in ``data`` sent by one side (epoch 0 onwards), as a key log would."""
    secret = done.secrets.c_ap_0 if direction == "c" else done.secrets.s_ap_0
    rx = RecordReceiver(KeySchedule(SUITES[done.cipher_suite]), secret)
    return [rx.open(f.payload) for f in frames(data) if f.type is FrameType.RECORD]


def assert_ended(
    conn: Connection, got: Drained, code: AlertCode, reason: str = ""
) -> ProtocolError:
    """The connection failed with ``code`` (reason containing ``reason``) and is in ERROR for good."""
    assert got.error is not None, f"expected {code.name}, got events {got.events}"
    assert got.error.alert == code, got.error
    assert reason in got.error.reason, got.error.reason
    assert conn.state is State.ERROR
    assert conn.error is got.error
    with pytest.raises(LocalProtocolError):
        conn.send_data(b"after the end")
    with pytest.raises(LocalProtocolError):
        conn.send_key_update()
    return got.error


def assert_plain_alert(
    conn: Connection, code: AlertCode, reason: str = "", *, alone: bool = False
) -> Alert:
    """``conn`` queued one plaintext ALERT with ``code`` as its last frame (``alone``: its only one)."""
    sent = frames(conn.data_to_send())
    assert sent and sent[-1].type is FrameType.ALERT, [f.type for f in sent]
    if alone:
        assert len(sent) == 1, [f.type for f in sent]
    alerts = [f for f in sent if f.type is FrameType.ALERT]
    assert len(alerts) == 1
    alert = Alert.decode(sent[-1].payload)
    assert alert.code == code, alert
    assert reason in alert.reason
    # §1 and §7: nothing after the fatal alert, and nothing more later.
    assert conn.next_event() is None
    assert conn.data_to_send() == b""
    return alert


def assert_record_alert(
    conn: Connection, peer: Connection, code: AlertCode, reason: str = ""
) -> None:
    """``conn`` queued its alert as an alert record; ``peer`` opens it and reports it."""
    sent = frames(data := conn.data_to_send())
    assert sent and all(f.type is FrameType.RECORD for f in sent), [f.type for f in sent]
    got = feed(peer, data)
    assert got.error is None, got.error
    alerts = got.of(AlertReceived)
    assert len(alerts) == 1
    alert = alerts[0]
    assert isinstance(alert, AlertReceived)
    assert alert.code == code and reason in alert.reason, alert
    closed = got.of(ConnectionClosed)
    assert len(closed) == 1 and isinstance(closed[0], ConnectionClosed) and not closed[0].clean
    assert peer.data_to_send() == b"", "the receiver of a fatal alert does not answer (§7)"


def expect_failure(
    conn: Connection,
    data: bytes,
    code: AlertCode,
    reason: str = "",
    *,
    eof: bool = False,
    alone: bool = False,
) -> Alert:
    """Feed ``data`` to a side whose handshake is not complete: it fails and sends a plaintext ALERT."""
    conn.data_to_send()  # what it said before the fault is not under test here
    got = feed(conn, data, eof)
    err = assert_ended(conn, got, code, reason)
    return assert_plain_alert(conn, code, err.reason, alone=alone)


def replace_frame(
    data: bytes, frame_type: FrameType, change: Callable[[bytes], bytes], index: int = 0
) -> bytes:
    """``data`` with the ``index``-th frame of ``frame_type`` given a new payload (a man in the middle)."""
    out, seen = b"", 0
    for fr in frames(data):
        payload = fr.payload
        if fr.type is frame_type:
            if seen == index:
                payload = change(payload)
            seen += 1
        out += Frame(fr.type, payload).encode()
    return out


def flip(payload: bytes, pos: int = -1) -> bytes:
    """``payload`` with the bits of one byte inverted."""
    b = bytearray(payload)
    b[pos] ^= 0xFF
    return bytes(b)
