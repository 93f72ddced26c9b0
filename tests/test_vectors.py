"""KXP/1 handshake vectors (tests/vectors), replayed byte for byte as client and as server.

Every random value is injected through a scripted ``rng``. RSA-OAEP and RSA-PSS are randomised
inside ``cryptography``; for those the other direction is checked (decrypt the given
KEY_TRANSPORT, verify the given SERVER_SIGNATURE), and the vector's ciphertext or signature is
injected so that everything after it can still be compared byte for byte.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import handshake_vector_names, load_vector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519

from protocol import methods
from protocol.alerts import AlertCode, RemoteProtocolError
from protocol.client_connection import ClientConnection
from protocol.config import ClientConfig, ServerConfig, ServerIdentity, TrustVerdict
from protocol.connection import Connection, State
from protocol.constants import (
    SUITES,
    CipherSuite,
    ContentType,
    FrameType,
    Group,
    Kex,
    SignatureScheme,
)
from protocol.events import (
    AlertReceived,
    ConnectionClosed,
    DataReceived,
    Event,
    FrameTraced,
    HandshakeComplete,
    KeyUpdateReceived,
)
from protocol.frames import Frame, FrameDecoder
from protocol.kex import (
    FFDHE2048_P,
    FFDHE3072_P,
    GROUPS,
    FFDHEGroup,
    ServerPrivateKey,
    Signer,
    load_server_key,
    rsa_unwrap,
    sha256_hex,
    signed_content,
    spki,
    verify_signature,
)
from protocol.keyschedule import (
    HandshakeSecrets,
    KeySchedule,
    TranscriptHash,
    keylog_lines,
    parse_keylog,
    sas_display,
)
from protocol.messages import (
    Alert,
    ClientHello,
    Finished,
    KeyTransport,
    ServerHello,
    ServerSignature,
)
from protocol.records import RecordReceiver, RecordSender
from protocol.server_connection import ServerConnection

NAMES = handshake_vector_names()
ROLES = ("client", "server")
# What a private value costs the rng: x25519 32 bytes, EC the coordinate length, ffdhe the share
# (the vectors' ffdhe exponents are full length: see ``full_length_ffdhe``).
DRAW_LEN = {
    Group.X25519: 32,
    Group.SECP256R1: 32,
    Group.SECP384R1: 48,
    Group.FFDHE2048: 256,
    Group.FFDHE3072: 384,
}
# The rsa server draws a fallback premaster for §5's uniform failure; it must not be the real one.
FALLBACK_PREMASTER = bytes(range(0xA0, 0xC0))
ABBREV = {
    FrameType.CLIENT_HELLO: "CH",
    FrameType.SERVER_HELLO: "SH",
    FrameType.KEY_TRANSPORT: "KT",
    FrameType.SERVER_SIGNATURE: "SS",
}


# --------------------------------------------------------------------------- the vector files


@dataclass(frozen=True)
class WireFrame:
    """One frame of a vector's ``frames`` list."""

    sender: str
    type: FrameType
    data: bytes

    @property
    def label(self) -> str:
        """The name the vector's ``th`` keys use (CH, SH, KT, SS, SF, CF)."""
        if self.type is FrameType.FINISHED:
            return "CF" if self.sender == "client" else "SF"
        return ABBREV[self.type]

    @property
    def payload(self) -> bytes:
        """The frame without its 8-byte header."""
        return self.data[8:]


@dataclass(frozen=True)
class VectorRecord:
    """One entry of a vector's ``records`` list."""

    sender: str
    epoch: int
    seq: int
    content_type: ContentType
    content: bytes
    frame: bytes


def _sender(direction: str) -> str:
    assert direction in ("C->S", "S->C"), direction
    return "client" if direction == "C->S" else "server"


class Vector:
    """Typed access to one handshake vector file."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.raw: dict[str, Any] = load_vector(name)
        self.inputs: dict[str, Any] = self.raw["inputs"]
        self.kex = Kex(self.raw["kex_code"])
        self.suite = CipherSuite(int(self.raw["cipher_suite"], 16))
        self.group = Group(int(self.raw["group"], 16))
        self.params = SUITES[self.suite]
        self.server_auth: str = self.raw["server_auth"]
        self.frames = [
            WireFrame(_sender(f["dir"]), FrameType(int(f["type"], 16)), bytes.fromhex(f["hex"]))
            for f in self.raw["frames"]
        ]
        self.handshake = [f for f in self.frames if f.type is not FrameType.RECORD]
        self.records = [
            VectorRecord(
                _sender(r["dir"]),
                r["epoch"],
                r["seq"],
                ContentType(int(r["content_type"], 16)),
                bytes.fromhex(r["content"]),
                bytes.fromhex(r["frame"]),
            )
            for r in self.raw["records"]
        ]

    def hex(self, key: str) -> bytes:
        """A top-level hex value."""
        return bytes.fromhex(self.raw[key])

    def input(self, key: str) -> bytes:
        """A hex value of ``inputs``."""
        return bytes.fromhex(self.inputs[key])

    def th(self, key: str) -> bytes:
        """A transcript hash of the ``th`` table."""
        return bytes.fromhex(self.raw["th"][key])

    def index(self, sender: str, frame_type: FrameType) -> int:
        """Position in ``handshake`` of the one frame of this type from ``sender``."""
        found = [
            i for i, f in enumerate(self.handshake) if f.sender == sender and f.type is frame_type
        ]
        assert len(found) == 1, f"{self.name}: {len(found)} {frame_type.name} from {sender}"
        return found[0]

    def frame(self, sender: str, frame_type: FrameType) -> WireFrame:
        """The one handshake frame of this type from ``sender``."""
        return self.handshake[self.index(sender, frame_type)]

    @property
    def signed(self) -> bool:
        """dhe with a server identity key (a SERVER_SIGNATURE is sent)."""
        return self.kex is Kex.DHE and self.server_auth != "anonymous"

    @property
    def server_key_spki(self) -> bytes:
        """What SERVER_HELLO.server_key must carry."""
        if self.kex is Kex.RSA:
            return self.input("rsa_key_spki")
        return self.input("identity_key_spki") if self.signed else b""

    @property
    def scheme(self) -> SignatureScheme | None:
        """The SERVER_SIGNATURE scheme, if any."""
        if not self.signed:
            return None
        if self.server_auth == "rsa-pss":
            return SignatureScheme.RSA_PSS_RSAE_SHA256
        return SignatureScheme.ED25519

    def rsa_key(self) -> rsa.RSAPrivateKey | None:
        """The RSA transport key (rsa only)."""
        if self.kex is not Kex.RSA:
            return None
        key = serialization.load_der_private_key(self.input("rsa_key_pkcs8"), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def sign_key(self) -> ServerPrivateKey | None:
        """The dhe identity key (None when anonymous or not dhe)."""
        if not self.signed:
            return None
        key = serialization.load_der_private_key(self.input("identity_key_pkcs8"), None)
        assert isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey)
        return key

    def secrets(self) -> HandshakeSecrets:
        """The vector's §5 secrets."""
        return HandshakeSecrets(
            shared_secret=self.hex("shared_secret"),
            master=self.hex("master"),
            c_ap_0=self.hex("c_ap_0"),
            s_ap_0=self.hex("s_ap_0"),
            c_finished=self.hex("c_finished"),
            s_finished=self.hex("s_finished"),
        )

    def ephemeral(self, side: str) -> bytes:
        """A side's private value as the rng hands it out (raw big-endian, left-padded)."""
        raw = self.input(f"{side}_ephemeral_private_raw")
        return int.from_bytes(raw, "big").to_bytes(DRAW_LEN[self.group], "big")

    def client_rng(self) -> ScriptedRng:
        """client_random, then the ephemeral private value (dhe) or the premaster (rsa)."""
        values = [("client_random", self.input("client_random"))]
        if self.kex is Kex.DHE:
            values.append(("client ephemeral private", self.ephemeral("client")))
        if self.kex is Kex.RSA:
            values.append(("premaster", self.input("premaster")))
        return ScriptedRng(*values)

    def server_rng(self) -> ScriptedRng:
        """server_random, then the ephemeral private value (dhe) or a fallback premaster (rsa)."""
        values = [("server_random", self.input("server_random"))]
        if self.kex is Kex.DHE:
            values.append(("server ephemeral private", self.ephemeral("server")))
        if self.kex is Kex.RSA:
            values.append(("fallback premaster", FALLBACK_PREMASTER))
        return ScriptedRng(*values)

    def transcript(self, frames: list[WireFrame]) -> bytes:
        """TH over the given handshake frames."""
        th = TranscriptHash(self.params.hash())
        for f in frames:
            th.update(f.data)
        return th.digest()


@functools.cache
def vector(name: str) -> Vector:
    """Each file is read and parsed once per session."""
    return Vector(name)


class ScriptedRng:
    """An injected ``rng``: hands out the vector's values in order, checking each length."""

    def __init__(self, *values: tuple[str, bytes]) -> None:
        self._values = deque(values)

    def __call__(self, n: int) -> bytes:
        assert self._values, f"unexpected draw of {n} random bytes"
        what, value = self._values.popleft()
        assert len(value) == n, f"{what}: the core drew {n} bytes, the vector has {len(value)}"
        return value

    def assert_used_up(self) -> None:
        """Every scripted value was drawn."""
        assert not self._values, f"never drawn: {[what for what, _ in self._values]}"


# --------------------------------------------------------------------------- driving a connection


class Pump:
    """Feeds frames to one connection, drains its events (traces kept apart) and its output."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.out = bytearray()
        self.traces: list[FrameTraced] = []

    def drain(self) -> list[Event]:
        """Every event up to "need data"; a ProtocolError propagates after the output is taken."""
        events: list[Event] = []
        try:
            while (ev := self.conn.next_event()) is not None:
                if isinstance(ev, FrameTraced):
                    self.traces.append(ev)
                else:
                    events.append(ev)
        finally:
            self.out += self.conn.data_to_send()
        return events

    def feed(self, data: bytes) -> list[Event]:
        """Receive bytes from the peer and drain."""
        self.conn.receive_data(data)
        return self.drain()

    def take(self, expected: bytes, what: str) -> None:
        """The next bytes we sent must be ``expected``, byte for byte."""
        got = bytes(self.out[: len(expected)])
        assert got.hex() == expected.hex(), f"{what} differs from the vector"
        del self.out[: len(expected)]


def make_client(v: Vector, seen: list[ServerIdentity]) -> tuple[Pump, ScriptedRng]:
    """A started client for the vector, trusting (and recording) whatever server key it sees."""

    def trust(identity: ServerIdentity) -> TrustVerdict:
        seen.append(identity)
        return TrustVerdict(True)

    rng = v.client_rng()
    cfg = ClientConfig(
        kex=v.kex,
        cipher_suite=v.suite,
        group=v.group,
        psk_identity=v.inputs.get("psk_identity_text", ""),
        psk=v.input("psk") if v.kex is Kex.PSK else b"",
        trust=trust,
        allow_anonymous=v.server_auth == "anonymous",
        rng=rng,
        trace=True,
    )
    client = ClientConnection(cfg)
    client.start()
    pump = Pump(client)
    assert pump.drain() == []
    return pump, rng


def make_server(v: Vector, signer: Signer | None = None) -> tuple[Pump, ScriptedRng]:
    """A server that enables exactly the vector's kex, suite and group."""
    rng = v.server_rng()
    identity = v.inputs.get("psk_identity_text")
    psk = v.input("psk") if v.kex is Kex.PSK else None
    extra: dict[str, Any] = {"signer": signer} if signer is not None else {}
    if v.kex is Kex.DHE:
        extra["groups"] = (v.group,)
    cfg = ServerConfig(
        kex_methods=frozenset({v.kex}),
        cipher_suites=(v.suite,),
        rsa_key=v.rsa_key(),
        sign_key=v.sign_key(),
        psk_lookup=lambda name: psk if name == identity else None,
        rng=rng,
        trace=True,
        **extra,
    )
    return Pump(ServerConnection(cfg)), rng


def vector_signer(v: Vector) -> Signer:
    """A signer that returns the vector's RSA-PSS signature (the salt cannot be injected)."""
    given = ServerSignature.decode(v.frame("server", FrameType.SERVER_SIGNATURE).payload)

    def signer(key: ServerPrivateKey, content: bytes) -> bytes:
        assert spki(key) == v.server_key_spki
        assert content.hex() == signed_content(v.th("TH_keys")).hex()
        return given.signature

    return signer


@pytest.fixture(autouse=True)
def full_length_ffdhe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectors' ffdhe exponents are as long as the prime (§2 leaves the length to each side;
    kexlab draws 225 or 275 bits, RFC 7919 §5.2): replay them through groups that draw so."""
    for group, prime in ((Group.FFDHE2048, FFDHE2048_P), (Group.FFDHE3072, FFDHE3072_P)):
        monkeypatch.setitem(GROUPS, group, FFDHEGroup(group, prime))


@pytest.fixture
def inject_oaep(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the client's RSA-OAEP return the vector's KEY_TRANSPORT (the seed cannot be injected)."""
    v = vector("rsa-0x1301.json")
    given = KeyTransport.decode(v.frame("client", FrameType.KEY_TRANSPORT).payload)

    def wrap(public_key: rsa.RSAPublicKey, premaster: bytes) -> bytes:
        assert spki(public_key) == v.input("rsa_key_spki")
        assert premaster == v.input("premaster")
        return given.encrypted_secret

    monkeypatch.setattr(methods, "rsa_wrap", wrap)


def play_handshake(v: Vector, role: str, pump: Pump, stop: int | None = None) -> list[Event]:
    """Walk the handshake frames (up to index ``stop``): compare ours, feed the peer's.

    Returns the events of the peer's last handshake frame; earlier frames must give none.
    """
    last_peer = max(i for i, f in enumerate(v.handshake) if f.sender != role)
    result: list[Event] = []
    for i, f in enumerate(v.handshake[:stop]):
        if f.sender == role:
            pump.take(f.data, f"{role} {f.label} (frame {i})")
            continue
        events = pump.feed(f.data)
        if i == last_peer:
            result = events
        else:
            assert events == [], f"events after {f.label}"
    return result


def actions(v: Vector, role: str) -> deque[tuple[str, bytes]]:
    """What the caller does after the handshake, from ``inputs.messages``.

    The client sends each message and then closes; the server echoes application data.
    The server's answer to request_update=1 (§6) and to close_notify (§7) is the core's own.
    """
    todo: deque[tuple[str, bytes]] = deque()
    for msg in v.inputs["messages"]:
        if "application_data" in msg:
            todo.append(("data", bytes.fromhex(msg["application_data"])))
        elif role == "client":
            request = msg["key_update"]["request_update"]
            assert request in (0, 1)
            todo.append(("key_update", bytes((request,))))
    if role == "client":
        todo.append(("close", b""))
    return todo


def events_for(r: VectorRecord) -> list[Event]:
    """What receiving one of the vector's records must produce."""
    if r.content_type is ContentType.APPLICATION_DATA:
        return [DataReceived(r.content)]
    if r.content_type is ContentType.KEY_UPDATE:
        return [KeyUpdateReceived(r.content == b"\x01", r.epoch + 1)]
    assert Alert.decode(r.content) == Alert(AlertCode.CLOSE_NOTIFY, "")
    return [AlertReceived(AlertCode.CLOSE_NOTIFY, ""), ConnectionClosed(True, "")]


def play_records(v: Vector, role: str, pump: Pump) -> None:
    """Replay the post-handshake messages and compare every record and event with the vector."""
    todo = actions(v, role)
    for i, r in enumerate(v.records):
        what = f"record {i} ({r.sender} epoch {r.epoch} seq {r.seq} {r.content_type.name})"
        if r.sender != role:
            assert pump.feed(r.frame) == events_for(r), what
            continue
        if not pump.out:  # not an answer the core queued by itself: the caller's next action
            assert todo, f"{what}: no action left to produce it"
            action, arg = todo.popleft()
            if action == "data":
                pump.conn.send_data(arg)
            elif action == "key_update":
                pump.conn.send_key_update(arg == b"\x01")
            else:
                pump.conn.close()
            assert pump.drain() == []
        pump.take(r.frame, what)
    assert not todo, f"actions never taken: {list(todo)}"
    assert not pump.out, "sent more than the vector shows"
    assert pump.conn.state is State.CLOSED


def check_traces(v: Vector, role: str, pump: Pump) -> None:
    """FrameTraced for every frame each way, with each record's epoch, seq, type and content."""
    for direction, ours in (("sent", True), ("received", False)):
        expected = [
            FrameTraced(direction, f.data) for f in v.handshake if (f.sender == role) == ours
        ] + [
            FrameTraced(direction, r.frame, r.epoch, r.seq, r.content_type, r.content)
            for r in v.records
            if (r.sender == role) == ours
        ]
        assert [t for t in pump.traces if t.direction == direction] == expected, direction


def check_complete(v: Vector, ev: Event) -> None:
    """Every field of HandshakeComplete against the vector, SAS and key log (§5, §9) included."""
    assert isinstance(ev, HandshakeComplete)
    assert (ev.kex, ev.cipher_suite, ev.group) == (v.kex, v.suite, v.group)
    assert ev.server_key.hex() == v.server_key_spki.hex()
    assert ev.server_key_sha256 == (sha256_hex(v.server_key_spki) if v.server_key_spki else "")
    assert ev.signature_scheme == v.scheme
    assert ev.psk_identity == v.inputs.get("psk_identity_text", "")
    assert ev.client_random == v.input("client_random")
    assert ev.server_random == v.input("server_random")
    assert ev.secrets == v.secrets()
    assert ev.sas.hex() == v.raw["sas"]["bytes"]
    assert ev.sas_display == v.raw["sas"]["display"]
    cr = v.inputs["client_random"]
    assert ev.keylog == (
        f"CLIENT_TRAFFIC_SECRET_0 {cr} {v.raw['c_ap_0']}\n"
        f"SERVER_TRAFFIC_SECRET_0 {cr} {v.raw['s_ap_0']}\n"
    )


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    """``data`` with one bit flipped at ``index``."""
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def sent_alert(pump: Pump, receiver: RecordReceiver | None = None) -> Alert:
    """The one alert we sent: a plaintext ALERT frame, or an alert record when ``receiver``."""
    decoder = FrameDecoder()
    decoder.feed(bytes(pump.out))
    frame = decoder.next_frame()
    assert frame is not None and decoder.buffered == 0
    if receiver is None:
        assert frame.type is FrameType.ALERT
        return Alert.decode(frame.payload)
    assert frame.type is FrameType.RECORD
    content_type, content = receiver.open(frame.payload)
    assert content_type is ContentType.ALERT
    return Alert.decode(content)


# --------------------------------------------------------------------------- the values alone


@pytest.mark.parametrize("name", NAMES)
def test_transcript_hashes(name: str) -> None:
    """§4: TH over each prefix of the handshake frames, TH_keys and TH_all."""
    v = vector(name)
    hs = v.handshake
    expected = {
        f"TH({','.join(f.label for f in hs[: i + 1])})": v.transcript(hs[: i + 1])
        for i in range(len(hs))
    }
    keys_prefix = 3 if v.kex is Kex.RSA else 2  # rsa: TH(CH, SH, KT); dhe, psk: TH(CH, SH)
    expected["TH_keys"] = v.transcript(hs[:keys_prefix])
    expected["TH_all"] = v.transcript(hs)
    assert {k: bytes.fromhex(h) for k, h in v.raw["th"].items()} == expected


@pytest.mark.parametrize("name", NAMES)
def test_handshake_frames_decode_to_the_inputs(name: str) -> None:
    """§1, §3: each handshake frame parses exactly, re-encodes to the same bytes, carries the inputs."""
    v = vector(name)
    # The RECORD frames listed in ``frames`` are the ``records``, in the same order.
    assert [f.data for f in v.frames if f.type is FrameType.RECORD] == [r.frame for r in v.records]
    for f in v.handshake:
        decoder = FrameDecoder()
        decoder.feed(f.data)
        frame = decoder.next_frame()
        assert frame == Frame(f.type, f.payload) and decoder.buffered == 0
    ch = ClientHello.decode(v.frame("client", FrameType.CLIENT_HELLO).payload)
    sh = ServerHello.decode(v.frame("server", FrameType.SERVER_HELLO).payload)
    assert ch.encode() == v.frame("client", FrameType.CLIENT_HELLO).payload
    assert sh.encode() == v.frame("server", FrameType.SERVER_HELLO).payload
    assert (ch.random, sh.random) == (v.input("client_random"), v.input("server_random"))
    for hello in (ch, sh):
        assert (hello.kex, hello.cipher_suite, hello.group) == (v.kex, v.suite, v.group)
    dhe = v.kex is Kex.DHE
    assert ch.key_share == (v.input("client_key_share") if dhe else b"")
    assert sh.key_share == (v.input("server_key_share") if dhe else b"")
    assert ch.psk_identity == (v.input("psk_identity") if v.kex is Kex.PSK else b"")
    assert sh.server_key == v.server_key_spki
    if v.signed:
        ss = ServerSignature.decode(v.frame("server", FrameType.SERVER_SIGNATURE).payload)
        assert ss.scheme == v.scheme
    for side in ("client", "server"):
        fin = Finished.decode(v.frame(side, FrameType.FINISHED).payload, v.params.hash_len)
        assert fin.verify_data.hex() == v.raw[f"{side}_verify_data"]


def test_long_term_keys_are_those_of_keys_json() -> None:
    """The server keys in the vectors' inputs are keys.json's, and each SPKI is its key's."""
    keys = load_vector("keys.json")
    rsa_v = vector("rsa-0x1301.json")
    assert rsa_v.inputs["rsa_key_pkcs8"] == keys["rsa_transport_key_pkcs8"]
    rsa_key = rsa_v.rsa_key()
    assert rsa_key is not None and rsa_key.key_size >= 2048
    assert spki(rsa_key) == rsa_v.input("rsa_key_spki")
    wanted = {"ed25519": "ed25519_identity_key_pkcs8", "rsa-pss": "rsa_identity_key_pkcs8"}
    signed = [vector(n) for n in NAMES if vector(n).signed]
    assert {v.server_auth for v in signed} == set(wanted)
    for v in signed:
        assert v.inputs["identity_key_pkcs8"] == keys[wanted[v.server_auth]]
        key = v.sign_key()
        assert key is not None and spki(key) == v.input("identity_key_spki")


@pytest.mark.parametrize("name", NAMES)
def test_shared_secret(name: str) -> None:
    """§2, §5: the DH output of both ephemeral keys, the unwrapped premaster, or the PSK."""
    v = vector(name)
    shared = v.hex("shared_secret")
    if v.kex is Kex.DHE:
        impl = GROUPS[v.group]
        client = impl.generate(ScriptedRng(("client private", v.ephemeral("client"))))
        server = impl.generate(ScriptedRng(("server private", v.ephemeral("server"))))
        assert client.public.hex() == v.inputs["client_key_share"]
        assert server.public.hex() == v.inputs["server_key_share"]
        assert client.exchange(server.public).hex() == shared.hex()
        assert server.exchange(client.public).hex() == shared.hex()
        assert len(shared) == {Group.SECP256R1: 32, Group.SECP384R1: 48}.get(
            v.group, impl.share_len
        )
        for side in ("client", "server"):  # the PKCS#8 form, where given, holds the same value
            if f"{side}_ephemeral_private_pkcs8" not in v.inputs:
                continue
            key = serialization.load_der_private_key(
                v.input(f"{side}_ephemeral_private_pkcs8"), None
            )
            raw = v.input(f"{side}_ephemeral_private_raw")
            if isinstance(key, x25519.X25519PrivateKey):
                assert key.private_bytes_raw() == raw
            else:
                assert isinstance(key, ec.EllipticCurvePrivateKey)
                assert key.private_numbers().private_value == int.from_bytes(raw, "big")
    elif v.kex is Kex.RSA:
        rsa_key = v.rsa_key()
        assert rsa_key is not None
        kt = KeyTransport.decode(v.frame("client", FrameType.KEY_TRANSPORT).payload)
        rng = ScriptedRng(("fallback premaster", FALLBACK_PREMASTER))
        assert rsa_unwrap(rsa_key, kt.encrypted_secret, rng) == v.input("premaster") == shared
        rng.assert_used_up()
    else:
        assert shared == v.input("psk")


@pytest.mark.parametrize("name", NAMES)
def test_key_schedule(name: str) -> None:
    """§5: master, traffic and finished secrets, verify_data, keys and ivs per epoch, SAS; §9 key log."""
    v = vector(name)
    ks = KeySchedule(v.params)
    assert ks.derive(v.hex("shared_secret"), v.th("TH_keys")) == v.secrets()
    for side, key in (("client", "c_finished"), ("server", "s_finished")):
        i = v.index(side, FrameType.FINISHED)
        verify = ks.verify_data(v.hex(key), v.transcript(v.handshake[:i]))
        assert verify.hex() == v.raw[f"{side}_verify_data"]
        assert v.handshake[i].payload == verify
    for side, first in (("client", "c_ap_0"), ("server", "s_ap_0")):
        epochs = v.raw["epochs"][side]
        assert [e["epoch"] for e in epochs] == [0, 1]
        secret = v.hex(first)
        for e in epochs:
            keys = ks.traffic_keys(secret)
            assert (secret.hex(), keys.key.hex(), keys.iv.hex()) == (e["secret"], e["key"], e["iv"])
            assert len(keys.key) == v.params.key_len
            secret = ks.next_secret(secret)
    sas = ks.sas(v.hex("master"), v.th("TH_all"))
    assert sas.hex() == v.raw["sas"]["bytes"]
    assert sas_display(sas) == v.raw["sas"]["display"]
    cr = v.input("client_random")
    lines = keylog_lines(cr, v.hex("c_ap_0"), v.hex("s_ap_0"))
    assert lines.splitlines() == [
        f"CLIENT_TRAFFIC_SECRET_0 {v.inputs['client_random']} {v.raw['c_ap_0']}",
        f"SERVER_TRAFFIC_SECRET_0 {v.inputs['client_random']} {v.raw['s_ap_0']}",
    ]
    assert parse_keylog(lines) == {
        cr: {
            "CLIENT_TRAFFIC_SECRET_0": v.hex("c_ap_0"),
            "SERVER_TRAFFIC_SECRET_0": v.hex("s_ap_0"),
        }
    }


@pytest.mark.parametrize("name", NAMES)
def test_records_seal_and_open(name: str) -> None:
    """§6: every record sealed from the traffic secrets byte for byte, and opened back."""
    v = vector(name)
    ks = KeySchedule(v.params)
    first = {"client": v.hex("c_ap_0"), "server": v.hex("s_ap_0")}
    senders = {side: RecordSender(ks, secret) for side, secret in first.items()}
    # A passive decryptor: one receiver per sending side, from the key log secret alone.
    receivers = {side: RecordReceiver(ks, secret) for side, secret in first.items()}
    for i, r in enumerate(v.records):
        sender, receiver = senders[r.sender], receivers[r.sender]
        assert (sender.epoch, sender.seq) == (r.epoch, r.seq), f"record {i}"
        assert sender.seal(r.content_type, r.content).hex() == r.frame.hex(), f"record {i}"
        assert (receiver.epoch, receiver.seq) == (r.epoch, r.seq), f"record {i}"
        assert receiver.open(r.frame[8:]) == (r.content_type, r.content), f"record {i}"
        if r.content_type is ContentType.KEY_UPDATE:
            sender.update()
            receiver.update()


# --------------------------------------------------------------------------- whole connections


@pytest.mark.parametrize("name", NAMES)
def test_as_client(name: str, request: pytest.FixtureRequest) -> None:
    """§3-§7 as the client: every frame we send, every event, every record, byte for byte."""
    v = vector(name)
    if v.kex is Kex.RSA:
        request.getfixturevalue("inject_oaep")
    seen: list[ServerIdentity] = []
    pump, rng = make_client(v, seen)
    events = play_handshake(v, "client", pump)
    assert len(events) == 1
    check_complete(v, events[0])
    assert not pump.out
    rng.assert_used_up()
    if v.server_key_spki:
        key_type = "rsa" if v.kex is Kex.RSA or v.server_auth == "rsa-pss" else "ed25519"
        assert seen == [
            ServerIdentity(
                v.kex,
                v.server_key_spki,
                key_type,
                sha256_hex(v.server_key_spki),
                signature_verified=v.kex is Kex.DHE,
            )
        ]
    else:
        assert seen == []
    play_records(v, "client", pump)
    check_traces(v, "client", pump)


@pytest.mark.parametrize("name", NAMES)
def test_as_server(name: str) -> None:
    """§3-§7 as the server: every frame we send, every event, every record, byte for byte.

    rsa: the server decrypts the given KEY_TRANSPORT to the given premaster (else its FINISHED
    would differ). rsa-pss: the vector's signature is injected through ``ServerConfig.signer``.
    """
    v = vector(name)
    signer = vector_signer(v) if v.server_auth == "rsa-pss" else None
    pump, rng = make_server(v, signer)
    events = play_handshake(v, "server", pump)
    assert len(events) == 1
    check_complete(v, events[0])
    assert not pump.out
    rng.assert_used_up()
    play_records(v, "server", pump)
    check_traces(v, "server", pump)


def test_rsa_client_key_transport_decrypts_to_the_premaster() -> None:
    """§3 KEY_TRANSPORT with cryptography's own (random) OAEP seed: CLIENT_HELLO is the vector's,
    KEY_TRANSPORT decrypts to the injected premaster, and our FINISHED covers our KEY_TRANSPORT."""
    v = vector("rsa-0x1301.json")
    pump, rng = make_client(v, [])
    pump.take(v.handshake[0].data, "CLIENT_HELLO")
    assert pump.feed(v.frame("server", FrameType.SERVER_HELLO).data) == []
    rng.assert_used_up()
    decoder = FrameDecoder()
    decoder.feed(bytes(pump.out))
    kt_frame, cf_frame = decoder.next_frame(), decoder.next_frame()
    assert kt_frame is not None and cf_frame is not None and decoder.buffered == 0
    assert (kt_frame.type, cf_frame.type) == (FrameType.KEY_TRANSPORT, FrameType.FINISHED)
    rsa_key = v.rsa_key()
    assert rsa_key is not None
    encrypted = KeyTransport.decode(kt_frame.payload).encrypted_secret
    assert len(encrypted) == rsa_key.key_size // 8
    fallback = ScriptedRng(("fallback premaster", FALLBACK_PREMASTER))
    assert rsa_unwrap(rsa_key, encrypted, fallback) == v.input("premaster")
    ks = KeySchedule(v.params)
    th = TranscriptHash(v.params.hash())
    for data in (v.handshake[0].data, v.handshake[1].data, kt_frame.encode()):
        th.update(data)
    ours = ks.derive(v.input("premaster"), th.digest())
    assert ours.master == v.hex("master")  # master depends on the premaster alone
    finished = Finished.decode(cf_frame.payload, v.params.hash_len)
    assert finished.verify_data == ks.verify_data(ours.c_finished, th.digest())


def test_rsa_pss_server_signs_with_its_own_salt() -> None:
    """§3 SERVER_SIGNATURE with cryptography's own (random) PSS salt: SERVER_HELLO is the
    vector's, our signature verifies over TH(CH, SH), and our FINISHED covers our signature."""
    v = vector("dhe-x25519-0x1302-rsa-pss.json")
    pump, rng = make_server(v)
    assert pump.feed(v.handshake[0].data) == []
    rng.assert_used_up()
    pump.take(v.frame("server", FrameType.SERVER_HELLO).data, "SERVER_HELLO")
    decoder = FrameDecoder()
    decoder.feed(bytes(pump.out))
    ss_frame, sf_frame = decoder.next_frame(), decoder.next_frame()
    assert ss_frame is not None and sf_frame is not None and decoder.buffered == 0
    assert (ss_frame.type, sf_frame.type) == (FrameType.SERVER_SIGNATURE, FrameType.FINISHED)
    ss = ServerSignature.decode(ss_frame.payload)
    public = load_server_key(v.server_key_spki, rsa_only=False)
    assert (
        verify_signature(public, ss.scheme, ss.signature, v.th("TH_keys"))
        is SignatureScheme.RSA_PSS_RSAE_SHA256
    )
    th = TranscriptHash(v.params.hash())
    for data in (v.handshake[0].data, v.handshake[1].data, ss_frame.encode()):
        th.update(data)
    finished = Finished.decode(sf_frame.payload, v.params.hash_len)
    assert finished.verify_data == KeySchedule(v.params).verify_data(
        v.hex("s_finished"), th.digest()
    )


@pytest.mark.parametrize("name", [n for n in NAMES if vector(n).signed])
def test_given_signature_verifies(name: str) -> None:
    """§3: the vector's SERVER_SIGNATURE verifies over TH(CH, SH) with its identity key."""
    v = vector(name)
    ss = ServerSignature.decode(v.frame("server", FrameType.SERVER_SIGNATURE).payload)
    public = load_server_key(v.server_key_spki, rsa_only=False)
    assert verify_signature(public, ss.scheme, ss.signature, v.th("TH_keys")) is v.scheme


# --------------------------------------------------------------------------- the tests can fail


@pytest.mark.parametrize("name", NAMES)
def test_flipped_server_finished_is_decrypt_error(
    name: str, request: pytest.FixtureRequest
) -> None:
    """§3, §7: one flipped byte in the server's FINISHED ends the client with decrypt_error."""
    v = vector(name)
    if v.kex is Kex.RSA:
        request.getfixturevalue("inject_oaep")
    pump, _ = make_client(v, [])
    i = v.index("server", FrameType.FINISHED)
    play_handshake(v, "client", pump, stop=i)
    with pytest.raises(RemoteProtocolError) as exc:
        pump.feed(flip(v.handshake[i].data, len(v.handshake[i].data) - 1))
    assert exc.value.alert is AlertCode.DECRYPT_ERROR
    assert sent_alert(pump).code == AlertCode.DECRYPT_ERROR  # plaintext: not complete (§7)
    assert pump.conn.state is State.ERROR


@pytest.mark.parametrize("name", NAMES)
def test_flipped_client_finished_is_decrypt_error(name: str) -> None:
    """§3, §7: one flipped byte in the client's FINISHED ends the server with decrypt_error."""
    v = vector(name)
    signer = vector_signer(v) if v.server_auth == "rsa-pss" else None
    pump, _ = make_server(v, signer)
    i = v.index("client", FrameType.FINISHED)
    play_handshake(v, "server", pump, stop=i)
    with pytest.raises(RemoteProtocolError) as exc:
        pump.feed(flip(v.handshake[i].data, 8))
    assert exc.value.alert is AlertCode.DECRYPT_ERROR
    assert sent_alert(pump).code == AlertCode.DECRYPT_ERROR


@pytest.mark.parametrize("name", [n for n in NAMES if vector(n).signed])
def test_flipped_server_signature_is_decrypt_error(name: str) -> None:
    """§3: a SERVER_SIGNATURE with one flipped bit does not verify: decrypt_error."""
    v = vector(name)
    pump, _ = make_client(v, [])
    i = v.index("server", FrameType.SERVER_SIGNATURE)
    play_handshake(v, "client", pump, stop=i)
    with pytest.raises(RemoteProtocolError) as exc:
        pump.feed(flip(v.handshake[i].data, len(v.handshake[i].data) - 1))
    assert exc.value.alert is AlertCode.DECRYPT_ERROR
    assert sent_alert(pump).code == AlertCode.DECRYPT_ERROR


@pytest.mark.parametrize("where", ["ciphertext", "tag"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", NAMES)
def test_flipped_record_bit_is_bad_record_mac(
    name: str, role: str, where: str, request: pytest.FixtureRequest
) -> None:
    """§6: a record with one flipped bit fails authentication: bad_record_mac, sent as a record."""
    v = vector(name)
    if role == "client":
        if v.kex is Kex.RSA:
            request.getfixturevalue("inject_oaep")
        pump, _ = make_client(v, [])
    else:
        pump, _ = make_server(v, vector_signer(v) if v.server_auth == "rsa-pss" else None)
    play_handshake(v, role, pump)
    first = next(r for r in v.records if r.sender != role)
    index = 8 + 8 if where == "ciphertext" else len(first.frame) - 1
    with pytest.raises(RemoteProtocolError) as exc:
        pump.feed(flip(first.frame, index, 0x80))
    assert exc.value.alert is AlertCode.BAD_RECORD_MAC
    own = v.hex("c_ap_0" if role == "client" else "s_ap_0")
    # §7: the handshake is complete, so the alert goes out as a record under our key.
    assert sent_alert(pump, RecordReceiver(KeySchedule(v.params), own)).code == (
        AlertCode.BAD_RECORD_MAC
    )


def test_bad_key_transport_falls_back_to_a_random_premaster() -> None:
    """§5: a KEY_TRANSPORT that does not decrypt gives the fallback premaster, so the failure
    shows only as a FINISHED mismatch (decrypt_error), like a wrong key."""
    v = vector("rsa-0x1301.json")
    rsa_key = v.rsa_key()
    assert rsa_key is not None
    i = v.index("client", FrameType.KEY_TRANSPORT)
    bad = flip(v.handshake[i].data, 20)
    rng = ScriptedRng(("fallback premaster", FALLBACK_PREMASTER))
    assert rsa_unwrap(rsa_key, KeyTransport.decode(bad[8:]).encrypted_secret, rng) == (
        FALLBACK_PREMASTER
    )
    pump, server_rng = make_server(v)
    play_handshake(v, "server", pump, stop=i)
    assert pump.feed(bad) == []
    server_rng.assert_used_up()
    with pytest.raises(RemoteProtocolError) as exc:
        pump.feed(v.frame("client", FrameType.FINISHED).data)
    assert exc.value.alert is AlertCode.DECRYPT_ERROR
    assert sent_alert(pump).code == AlertCode.DECRYPT_ERROR
