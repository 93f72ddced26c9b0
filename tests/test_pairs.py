"""In-memory client/server pairs (docs/protocol.md §3-§7): every kex x suite x group x server auth.

Both connections are driven by a small pump that moves bytes between them until
neither has anything to send, so each test reads as the conversation it checks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from protocol import (
    AlertCode,
    AlertReceived,
    CipherSuite,
    ClientConfig,
    ClientConnection,
    Connection,
    ConnectionClosed,
    ContentType,
    DataReceived,
    Event,
    FrameTraced,
    FrameType,
    Group,
    HandshakeComplete,
    Kex,
    KeyUpdateReceived,
    LocalProtocolError,
    ProtocolError,
    PskNeeded,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
    ServerIdentity,
    State,
    TrustVerdict,
    check_psk_identity,
)
from protocol.kex import GROUPS
from protocol.messages import ClientHello, ServerHello

PSK_IDENTITY = "lab-client-1"
PSK = bytes(range(32))

# The names the programs print, written out here rather than read from protocol/ tables.
KEX_TEXT = {Kex.RSA: "rsa", Kex.DHE: "dhe", Kex.PSK: "psk"}
SUITE_TEXT = {CipherSuite.AES_128_GCM_SHA256: "aes128", CipherSuite.AES_256_GCM_SHA384: "aes256"}
HASH_LEN = {CipherSuite.AES_128_GCM_SHA256: 32, CipherSuite.AES_256_GCM_SHA384: 48}
GROUP_TEXT = {
    Group.X25519: "x25519",
    Group.SECP256R1: "secp256r1",
    Group.SECP384R1: "secp384r1",
    Group.FFDHE2048: "ffdhe2048",
    Group.FFDHE3072: "ffdhe3072",
}
DHE_GROUPS = list(GROUP_TEXT)
SUITES = list(CipherSuite)

E = TypeVar("E", bound=Event)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class Keys:
    """The long-term keys of this module, generated once (RSA keygen is slow)."""

    rsa_transport: rsa.RSAPrivateKey
    rsa_identity: rsa.RSAPrivateKey
    ed25519_identity: ed25519.Ed25519PrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    """One RSA-2048 transport key, one RSA-2048 identity key, one Ed25519 identity key."""
    return Keys(
        rsa.generate_private_key(65537, 2048),
        rsa.generate_private_key(65537, 2048),
        ed25519.Ed25519PrivateKey.generate(),
    )


def der_spki(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    """DER SPKI of a private key's public half, computed without protocol/."""
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --------------------------------------------------------------------------- pump


def only(events: list[Event], kind: type[E]) -> list[E]:
    """The events of one type, in order."""
    return [e for e in events if isinstance(e, kind)]


def untraced(events: list[Event]) -> list[Event]:
    """Every event but FrameTraced."""
    return [e for e in events if not isinstance(e, FrameTraced)]


@dataclass
class Pair:
    """A client and a server joined by an in-memory wire."""

    client: ClientConnection
    server: ServerConnection
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    c2s: bytearray = field(default_factory=bytearray)
    """Every byte the client wrote, in order."""
    s2c: bytearray = field(default_factory=bytearray)
    """Every byte the server wrote, in order."""
    errors: dict[str, ProtocolError] = field(default_factory=dict)

    def _drain(self, role: str, conn: Connection, sink: list[Event]) -> list[Event]:
        new: list[Event] = []
        try:
            while (ev := conn.next_event()) is not None:
                new.append(ev)
        except ProtocolError as exc:
            self.errors[role] = exc
        sink.extend(new)
        return new

    def run(self) -> tuple[list[Event], list[Event]]:
        """Move bytes both ways until both sides are quiet; the new (client, server) events."""
        new_c = self._drain("client", self.client, self.client_events)
        new_s = self._drain("server", self.server, self.server_events)
        while True:
            c_out, s_out = self.client.data_to_send(), self.server.data_to_send()
            if not c_out and not s_out:
                return new_c, new_s
            self.c2s += c_out
            self.s2c += s_out
            self.server.receive_data(c_out)
            self.client.receive_data(s_out)
            new_s += self._drain("server", self.server, self.server_events)
            new_c += self._drain("client", self.client, self.client_events)


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One combination of the matrix."""

    kex: Kex
    suite: CipherSuite
    group: Group = Group.NONE
    auth: str = "none"
    """rsa: "rsa"; dhe: "ed25519", "rsa-pss" or "anonymous"; psk: "none"."""

    @property
    def id(self) -> str:
        """A readable test id."""
        parts = [KEX_TEXT[self.kex]]
        if self.group is not Group.NONE:
            parts.append(GROUP_TEXT[self.group])
        parts.append(SUITE_TEXT[self.suite])
        if self.kex is Kex.DHE:
            parts.append(self.auth)
        return "-".join(parts)


CASES = (
    [Case(Kex.RSA, s, auth="rsa") for s in SUITES]
    + [
        Case(Kex.DHE, s, g, a)
        for s in SUITES
        for g in DHE_GROUPS
        for a in ("ed25519", "rsa-pss", "anonymous")
    ]
    + [Case(Kex.PSK, s) for s in SUITES]
)


def test_matrix_is_complete() -> None:
    """2 rsa + 2 x 5 x 3 dhe + 2 psk combinations, each once."""
    assert len(CASES) == 34
    assert len({c.id for c in CASES}) == 34


def server_key_for(case: Case, keys: Keys) -> bytes:
    """The DER SPKI the server should present, or b''."""
    if case.kex is Kex.RSA:
        return der_spki(keys.rsa_transport)
    if case.auth == "ed25519":
        return der_spki(keys.ed25519_identity)
    if case.auth == "rsa-pss":
        return der_spki(keys.rsa_identity)
    return b""


def expected_scheme(case: Case) -> int | None:
    """The SERVER_SIGNATURE scheme code point (§3), or None when no signature is sent."""
    if case.kex is not Kex.DHE:
        return None
    return {"ed25519": 0x0807, "rsa-pss": 0x0804}.get(case.auth)


def expected_summary(case: Case) -> str:
    """method / group / suite / scheme as the programs print them."""
    parts = [KEX_TEXT[case.kex]]
    if case.group is not Group.NONE:
        parts.append(GROUP_TEXT[case.group])
    parts.append(SUITE_TEXT[case.suite])
    scheme = expected_scheme(case)
    if scheme is not None:
        parts.append({0x0807: "ed25519", 0x0804: "rsa_pss_rsae_sha256"}[scheme])
    return "/".join(parts)


def make_pair(
    case: Case,
    keys: Keys,
    *,
    seen: list[ServerIdentity] | None = None,
    trace: bool = False,
    psk_lookup: Callable[[str], bytes | None] | None = None,
    **server_overrides: Any,
) -> Pair:
    """A started client and a server for ``case``; the trust decision records what it sees."""
    identities = seen if seen is not None else []

    def trust(identity: ServerIdentity) -> TrustVerdict:
        identities.append(identity)
        return TrustVerdict(True)

    client = ClientConnection(
        ClientConfig(
            kex=case.kex,
            cipher_suite=case.suite,
            group=case.group if case.kex is Kex.DHE else Group.X25519,
            psk_identity=PSK_IDENTITY if case.kex is Kex.PSK else "",
            psk=PSK if case.kex is Kex.PSK else b"",
            trust=trust,
            allow_anonymous=case.auth == "anonymous",
            trace=trace,
        )
    )
    sign_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | None = None
    if case.auth == "ed25519":
        sign_key = keys.ed25519_identity
    elif case.auth == "rsa-pss":
        sign_key = keys.rsa_identity
    server_kwargs: dict[str, Any] = {
        "rsa_key": keys.rsa_transport,
        "sign_key": sign_key,
        "psk_lookup": psk_lookup or {PSK_IDENTITY: PSK}.get,
        "trace": trace,
    }
    server_kwargs.update(server_overrides)
    server = ServerConnection(ServerConfig(**server_kwargs))
    client.start()
    return Pair(client, server)


def received_records(events: list[Event], content_type: ContentType) -> list[FrameTraced]:
    """Traced RECORD frames of one inner type that this side received."""
    return [
        e
        for e in only(events, FrameTraced)
        if e.direction == "received" and e.content_type is content_type
    ]


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_full_session(case: Case, keys: Keys) -> None:
    """Handshake, data both ways, key updates both ways, more data, close_notify both ways."""
    seen: list[ServerIdentity] = []
    pair = make_pair(case, keys, seen=seen, trace=True)
    c, s = pair.run()
    assert pair.errors == {}

    # --- handshake: identical parameters and secrets on both sides
    (c_hc,) = only(c, HandshakeComplete)
    (s_hc,) = only(s, HandshakeComplete)
    assert untraced(c) == [c_hc] and untraced(s) == [s_hc]
    assert c_hc == s_hc  # every field, sas and secrets included
    assert pair.client.state is State.CONNECTED and pair.server.state is State.CONNECTED
    assert pair.client.handshake_complete and pair.server.handshake_complete
    der = server_key_for(case, keys)
    assert (c_hc.kex, c_hc.cipher_suite) == (case.kex, case.suite)
    assert c_hc.group is case.group
    assert c_hc.server_key == der
    assert c_hc.server_key_sha256 == (hashlib.sha256(der).hexdigest() if der else "")
    assert c_hc.signature_scheme == expected_scheme(case)
    assert c_hc.summary == s_hc.summary == expected_summary(case)
    assert c_hc.psk_identity == (PSK_IDENTITY if case.kex is Kex.PSK else "")
    assert c_hc.sas == s_hc.sas and len(c_hc.sas) == HASH_LEN[case.suite]
    assert c_hc.sas_display == s_hc.sas_display
    assert c_hc.secrets == s_hc.secrets
    assert c_hc.secrets.c_ap_0 != c_hc.secrets.s_ap_0
    assert c_hc.keylog == s_hc.keylog
    assert c_hc.client_random == pair.c2s[8:40]  # CLIENT_HELLO.random follows the header

    # --- the trust decision saw the right identity (and none for psk / anonymous)
    if der:
        key_type = "ed25519" if case.auth == "ed25519" else "rsa"
        assert seen == [
            ServerIdentity(
                case.kex, der, key_type, hashlib.sha256(der).hexdigest(), case.kex is Kex.DHE
            )
        ]
    else:
        assert seen == []

    # --- data both ways at epoch 0
    pair.client.send_data(b"hello server")
    pair.server.send_data(b"hello client")
    c, s = pair.run()
    assert untraced(s) == [DataReceived(b"hello server")]
    assert untraced(c) == [DataReceived(b"hello client")]

    # --- client updates and asks the server to follow; the server answers with request 0
    pair.client.send_key_update(request_update=True)
    c, s = pair.run()
    assert untraced(s) == [KeyUpdateReceived(request_update=True, receive_epoch=1)]
    assert untraced(c) == [KeyUpdateReceived(request_update=False, receive_epoch=1)]
    (answer,) = received_records(c, ContentType.KEY_UPDATE)
    assert (answer.epoch, answer.seq, answer.content) == (0, 1, b"\x00")

    # --- server updates once more on its own, without asking
    pair.server.send_key_update()
    c, s = pair.run()
    assert untraced(c) == [KeyUpdateReceived(request_update=False, receive_epoch=2)]
    assert untraced(s) == []

    # --- more data, now under the new keys
    pair.client.send_data(b"after update: client")
    pair.server.send_data(b"after update: server")
    c, s = pair.run()
    assert untraced(s) == [DataReceived(b"after update: client")]
    assert untraced(c) == [DataReceived(b"after update: server")]
    (c_rec,) = received_records(s, ContentType.APPLICATION_DATA)
    (s_rec,) = received_records(c, ContentType.APPLICATION_DATA)
    assert (c_rec.epoch, c_rec.seq) == (1, 0)
    assert (s_rec.epoch, s_rec.seq) == (2, 0)

    # --- close_notify from the client, the server's answer
    pair.client.close()
    c, s = pair.run()
    assert untraced(s) == [AlertReceived(0, ""), ConnectionClosed(clean=True)]
    assert untraced(c) == [AlertReceived(0, ""), ConnectionClosed(clean=True)]
    assert pair.client.state is State.CLOSED and pair.server.state is State.CLOSED
    assert pair.errors == {}
    assert pair.client.next_event() is None and pair.server.next_event() is None


# --------------------------------------------------------------------------- psk lookups

PSK_CASE = Case(Kex.PSK, CipherSuite.AES_128_GCM_SHA256)
DHE_CASE = Case(Kex.DHE, CipherSuite.AES_128_GCM_SHA256, Group.X25519, "ed25519")
RSA_CASE = Case(Kex.RSA, CipherSuite.AES_256_GCM_SHA384, auth="rsa")


def test_psk_needed_then_supply_psk_completes(keys: Keys) -> None:
    """A lookup miss parks the server in WAIT_PSK; the key arriving out of band finishes it (§8)."""
    asked: list[str] = []

    def lookup(identity: str) -> bytes | None:
        asked.append(identity)
        return None

    pair = make_pair(PSK_CASE, keys, psk_lookup=lookup)
    assert (pair.client.role, pair.server.role) == ("client", "server")
    assert pair.server.client_random == b""  # no CLIENT_HELLO yet
    assert pair.server.psk_identity == ""
    c, s = pair.run()
    assert s == [PskNeeded(PSK_IDENTITY)]
    assert c == []
    assert asked == [PSK_IDENTITY]
    assert pair.server.state is State.WAIT_PSK
    assert pair.server.psk_identity == PSK_IDENTITY
    assert pair.server.client_random == pair.c2s[8:40]
    assert pair.s2c == b""  # nothing answered while the key is awaited

    pair.server.supply_psk(PSK)
    c, s = pair.run()
    assert pair.errors == {}
    (c_hc,) = only(c, HandshakeComplete)
    (s_hc,) = only(s, HandshakeComplete)
    assert c_hc == s_hc and c_hc.psk_identity == PSK_IDENTITY
    assert pair.server.state is State.CONNECTED
    pair.client.send_data(b"via supplied psk")
    _, s = pair.run()
    assert s == [DataReceived(b"via supplied psk")]


def test_psk_lookup_hit_completes_without_psk_needed(keys: Keys) -> None:
    """A key the lookup holds is used at once: no PskNeeded event, and the lookup runs once."""
    asked: list[str] = []

    def lookup(identity: str) -> bytes | None:
        asked.append(identity)
        return PSK if identity == PSK_IDENTITY else None

    pair = make_pair(PSK_CASE, keys, psk_lookup=lookup)
    c, s = pair.run()
    assert pair.errors == {}
    assert only(s, PskNeeded) == []
    assert asked == [PSK_IDENTITY]
    assert [type(e) for e in s] == [HandshakeComplete]
    assert [type(e) for e in c] == [HandshakeComplete]


def test_supply_psk_when_none_awaited_is_refused(keys: Keys) -> None:
    """supply_psk outside WAIT_PSK is API misuse, not a protocol event."""
    pair = make_pair(PSK_CASE, keys)
    pair.run()
    with pytest.raises(LocalProtocolError) as info:
        pair.server.supply_psk(PSK)
    assert info.value.alert is AlertCode.INTERNAL_ERROR
    assert info.value.reason == "no PSK is awaited"
    assert pair.server.state is State.CONNECTED


# --------------------------------------------------------------------------- no silent downgrade


@pytest.mark.parametrize(
    ("case", "server_overrides", "named"),
    [
        (RSA_CASE, {"kex_methods": frozenset({Kex.DHE, Kex.PSK})}, "dhe, psk"),
        (
            Case(Kex.DHE, CipherSuite.AES_256_GCM_SHA384, Group.X25519, "ed25519"),
            {"cipher_suites": (CipherSuite.AES_128_GCM_SHA256,)},
            "0x1301 (aes128)",
        ),
        (
            Case(Kex.DHE, CipherSuite.AES_128_GCM_SHA256, Group.SECP256R1, "ed25519"),
            {"groups": (Group.X25519, Group.FFDHE2048)},
            "x25519, ffdhe2048",
        ),
    ],
    ids=["kex", "suite", "group"],
)
def test_unsupported_proposal_fails_without_retry(
    case: Case, server_overrides: dict[str, Any], named: str, keys: Keys
) -> None:
    """§3: handshake_failure naming what the server supports; the client never proposes again."""
    pair = make_pair(case, keys, trace=True, **server_overrides)
    c, s = pair.run()
    err = pair.errors["server"]
    assert isinstance(err, RemoteProtocolError)
    assert err.alert is AlertCode.HANDSHAKE_FAILURE and named in err.reason
    assert pair.server.state is State.ERROR
    assert untraced(s) == []  # the failure is raised, after the (traced) frames before it
    (alert_frame,) = [e.frame for e in only(s, FrameTraced) if e.direction == "sent"]
    assert alert_frame[3] == FrameType.ALERT and alert_frame[8] == AlertCode.HANDSHAKE_FAILURE
    assert untraced(c) == [
        AlertReceived(AlertCode.HANDSHAKE_FAILURE, err.reason),
        ConnectionClosed(clean=False, reason=f"peer sent 40: {err.reason}"),
    ]
    assert pair.client.state is State.ERROR
    assert "client" not in pair.errors
    # One CLIENT_HELLO is all the client ever wrote: no second proposal of its own.
    sent = [e.frame[3] for e in only(c, FrameTraced) if e.direction == "sent"]
    assert sent == [FrameType.CLIENT_HELLO]
    assert pair.c2s == only(c, FrameTraced)[0].frame
    assert pair.client.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        pair.client.start()
    assert pair.client.data_to_send() == b""


# --------------------------------------------------------------------------- close during the handshake


def test_client_close_before_server_hello(keys: Keys) -> None:
    """close() before the handshake ends sends a plaintext close_notify; the server answers it."""
    pair = make_pair(DHE_CASE, keys)
    pair.client.close()
    assert pair.client.state is State.CLOSED
    c, s = pair.run()
    assert c == [ConnectionClosed(clean=False)]
    frames = split_frames(bytes(pair.c2s))
    assert [f[3] for f in frames] == [FrameType.CLIENT_HELLO, FrameType.ALERT]
    assert frames[1][8:] == b"\x00\x00"  # close_notify, empty reason, in the clear
    assert only(s, HandshakeComplete) == []
    assert untraced(s) == [AlertReceived(0, ""), ConnectionClosed(clean=True)]
    assert pair.server.state is State.CLOSED
    assert pair.errors == {}
    with pytest.raises(LocalProtocolError):
        pair.client.send_data(b"too late")
    with pytest.raises(LocalProtocolError):
        pair.server.send_key_update()
    pair.client.close()  # a second close() is a no-op
    assert pair.client.data_to_send() == b""


def test_server_close_while_waiting_for_psk(keys: Keys) -> None:
    """A server that gives up in WAIT_PSK says close_notify; the client closes, no handshake."""
    pair = make_pair(PSK_CASE, keys, psk_lookup=lambda identity: None)
    pair.run()
    assert pair.server.state is State.WAIT_PSK
    pair.server.close()
    c, s = pair.run()
    assert s == [ConnectionClosed(clean=False)]
    assert c == [AlertReceived(0, ""), ConnectionClosed(clean=True)]
    assert pair.client.state is State.CLOSED and pair.server.state is State.CLOSED
    assert not pair.client.handshake_complete
    with pytest.raises(LocalProtocolError):
        pair.server.supply_psk(PSK)


def test_server_close_before_client_finished(keys: Keys) -> None:
    """dhe: the server closes after its flight; the client completes, then answers as a record."""
    pair = make_pair(DHE_CASE, keys, trace=True)
    pair.server.receive_data(pair.client.data_to_send())
    assert untraced(drain(pair.server)) == []
    pair.server.close()
    s2c = pair.server.data_to_send()
    assert [f[3] for f in split_frames(s2c)] == [
        FrameType.SERVER_HELLO,
        FrameType.SERVER_SIGNATURE,
        FrameType.FINISHED,
        FrameType.ALERT,
    ]
    assert untraced(drain(pair.server)) == [ConnectionClosed(clean=False)]
    pair.client.receive_data(s2c)
    c = untraced(drain(pair.client))
    assert [type(e) for e in c] == [HandshakeComplete, AlertReceived, ConnectionClosed]
    assert c[1:] == [AlertReceived(0, ""), ConnectionClosed(clean=True)]
    # The client's handshake is complete, so its close_notify goes out as a record (§7).
    assert [f[3] for f in split_frames(pair.client.data_to_send())] == [
        FrameType.FINISHED,
        FrameType.RECORD,
    ]
    assert pair.server.state is State.CLOSED and pair.client.state is State.CLOSED


# --------------------------------------------------------------------------- data sizes


def split_frames(wire: bytes) -> list[bytes]:
    """Cut a byte stream into whole frames (header and payload) by their length fields."""
    frames, pos = [], 0
    while pos < len(wire):
        end = pos + 8 + int.from_bytes(wire[pos + 4 : pos + 8], "big")
        assert end <= len(wire), "stream ends inside a frame"
        frames.append(wire[pos:end])
        pos = end
    return frames


def drain(conn: Connection) -> list[Event]:
    """Every event a connection has now."""
    events: list[Event] = []
    while (ev := conn.next_event()) is not None:
        events.append(ev)
    return events


@pytest.mark.parametrize("case", [DHE_CASE, RSA_CASE], ids=lambda c: c.id)
def test_large_send_is_split_into_max_records(case: Case, keys: Keys) -> None:
    """200,000 bytes go out as records of at most 65536 content bytes and reassemble exactly."""
    pair = make_pair(case, keys)
    pair.run()
    data = os.urandom(200_000)
    for sender, receiver in ((pair.client, pair.server), (pair.server, pair.client)):
        sender.send_data(data)
        wire = sender.data_to_send()
        frames = split_frames(wire)
        assert [f[3] for f in frames] == [FrameType.RECORD] * 4
        # seq(8) || content_type(1) || content || tag(16)
        assert [len(f) - 8 - 25 for f in frames] == [65536, 65536, 65536, 200_000 - 3 * 65536]
        receiver.receive_data(wire)
        got = drain(receiver)
        assert all(isinstance(e, DataReceived) for e in got)
        chunks = [e.data for e in only(got, DataReceived)]
        assert [len(x) for x in chunks] == [65536, 65536, 65536, 3392]
        assert b"".join(chunks) == data


def test_exactly_max_content_is_one_record(keys: Keys) -> None:
    """65536 bytes fit one record; one more byte needs a second."""
    pair = make_pair(DHE_CASE, keys)
    pair.run()
    pair.client.send_data(b"m" * 65536)
    assert len(split_frames(pair.client.data_to_send())) == 1
    pair.client.send_data(b"m" * 65537)
    frames = split_frames(pair.client.data_to_send())
    assert [len(f) - 33 for f in frames] == [65536, 1]


def test_empty_send_is_one_empty_record(keys: Keys) -> None:
    """send_data(b"") sends one RECORD of 25 payload bytes that arrives as DataReceived(b"")."""
    pair = make_pair(DHE_CASE, keys)
    pair.run()
    pair.client.send_data(b"")
    wire = pair.client.data_to_send()
    (frame,) = split_frames(wire)
    assert frame[3] == FrameType.RECORD and len(frame) == 8 + 25
    pair.server.receive_data(wire)
    assert drain(pair.server) == [DataReceived(b"")]


# --------------------------------------------------------------------------- traces


TRACE_CASES = [
    DHE_CASE,
    Case(Kex.DHE, CipherSuite.AES_256_GCM_SHA384, Group.SECP384R1, "anonymous"),
    RSA_CASE,
    PSK_CASE,
]

HANDSHAKE_TRACE = {
    # (client's view, server's view) of the handshake frames, §4
    "dhe-signed": (
        [
            ("sent", 0x01),
            ("received", 0x02),
            ("received", 0x04),
            ("received", 0x05),
            ("sent", 0x05),
        ],
        [("received", 0x01), ("sent", 0x02), ("sent", 0x04), ("sent", 0x05), ("received", 0x05)],
    ),
    "dhe-anonymous": (
        [("sent", 0x01), ("received", 0x02), ("received", 0x05), ("sent", 0x05)],
        [("received", 0x01), ("sent", 0x02), ("sent", 0x05), ("received", 0x05)],
    ),
    "rsa": (
        [("sent", 0x01), ("received", 0x02), ("sent", 0x03), ("sent", 0x05), ("received", 0x05)],
        [
            ("received", 0x01),
            ("sent", 0x02),
            ("received", 0x03),
            ("received", 0x05),
            ("sent", 0x05),
        ],
    ),
}
HANDSHAKE_TRACE["psk"] = HANDSHAKE_TRACE["dhe-anonymous"]


def trace_kind(case: Case) -> str:
    """Which §4 flight shape a case has."""
    if case.kex is Kex.DHE:
        return "dhe-anonymous" if case.auth == "anonymous" else "dhe-signed"
    return KEX_TEXT[case.kex]


def check_trace(traced: list[FrameTraced], sent_wire: bytes, received_wire: bytes) -> None:
    """Sent and received frames each concatenate to the bytes on the wire; records annotated."""
    assert b"".join(t.frame for t in traced if t.direction == "sent") == sent_wire
    assert b"".join(t.frame for t in traced if t.direction == "received") == received_wire
    for t in traced:
        assert t.direction in ("sent", "received")
        assert t.frame[:3] == b"KX\x01"
        assert len(t.frame) == 8 + int.from_bytes(t.frame[4:8], "big")
        if t.frame[3] == FrameType.RECORD:
            assert t.epoch is not None and t.seq is not None and t.content is not None
            assert t.content_type in set(ContentType)
            assert int.from_bytes(t.frame[8:16], "big") == t.seq  # the clear seq field (§6)
            # ciphertext = 1 + len(content) bytes, plus the tag
            assert len(t.frame) == 8 + 8 + 1 + len(t.content) + 16
        else:
            assert (t.epoch, t.seq, t.content_type, t.content) == (None, None, None, None)


def record_view(traced: list[FrameTraced], direction: str) -> list[tuple[Any, ...]]:
    """(frame, epoch, seq, type, content) of every traced RECORD in one direction."""
    return [
        (t.frame, t.epoch, t.seq, t.content_type, t.content)
        for t in traced
        if t.direction == direction and t.frame[3] == FrameType.RECORD
    ]


@pytest.mark.parametrize("case", TRACE_CASES, ids=lambda c: c.id)
def test_frame_trace_lists_every_frame_in_wire_order(case: Case, keys: Keys) -> None:
    """trace=True: FrameTraced for every frame both sides see, in order, records annotated."""
    pair = make_pair(case, keys, trace=True)
    pair.run()
    pair.client.send_data(b"one")
    pair.server.send_data(b"two")
    pair.run()
    pair.client.send_key_update(request_update=True)
    pair.run()
    pair.server.send_data(b"three")
    pair.client.send_data(b"")
    pair.run()
    pair.server.close()
    pair.run()
    assert pair.errors == {}
    assert pair.client.state is State.CLOSED and pair.server.state is State.CLOSED

    c_traced = only(pair.client_events, FrameTraced)
    s_traced = only(pair.server_events, FrameTraced)
    check_trace(c_traced, bytes(pair.c2s), bytes(pair.s2c))
    check_trace(s_traced, bytes(pair.s2c), bytes(pair.c2s))

    c_hs, s_hs = HANDSHAKE_TRACE[trace_kind(case)]
    n = len(c_hs)
    assert [(t.direction, t.frame[3]) for t in c_traced[:n]] == c_hs
    assert [(t.direction, t.frame[3]) for t in s_traced[:n]] == s_hs
    assert all(t.frame[3] == FrameType.RECORD for t in c_traced[n:] + s_traced[n:])

    # What one side sealed is exactly what the other side opened, annotation and all.
    c_sent = record_view(c_traced, "sent")
    s_sent = record_view(s_traced, "sent")
    assert c_sent == record_view(s_traced, "received")
    assert s_sent == record_view(c_traced, "received")
    K, A, AL = ContentType.KEY_UPDATE, ContentType.APPLICATION_DATA, ContentType.ALERT
    assert [r[1:] for r in c_sent] == [
        (0, 0, A, b"one"),
        (0, 1, K, b"\x01"),
        (1, 0, A, b""),
        (1, 1, AL, b"\x00\x00"),  # the client's answering close_notify
    ]
    assert [r[1:] for r in s_sent] == [
        (0, 0, A, b"two"),
        (0, 1, K, b"\x00"),  # the answer to request_update
        (1, 0, A, b"three"),
        (1, 1, AL, b"\x00\x00"),
    ]


def test_no_frame_traced_without_trace(keys: Keys) -> None:
    """trace=False (the default) produces no FrameTraced events."""
    pair = make_pair(DHE_CASE, keys)
    pair.run()
    pair.client.send_data(b"x")
    pair.client.send_key_update(request_update=True)
    pair.client.close()
    pair.run()
    assert only(pair.client_events + pair.server_events, FrameTraced) == []
    assert pair.client.state is State.CLOSED and pair.server.state is State.CLOSED


# --------------------------------------------------------------------------- ends without close_notify


def test_eof_after_handshake_is_an_unclean_close(keys: Keys) -> None:
    """A peer that just disconnects ends the connection with clean=False (truncation is visible)."""
    pair = make_pair(DHE_CASE, keys)
    pair.run()
    pair.server.receive_eof()
    assert drain(pair.server) == [
        ConnectionClosed(clean=False, reason="peer closed the connection without close_notify")
    ]
    assert pair.server.state is State.CLOSED
    assert pair.server.data_to_send() == b""


def test_eof_during_handshake(keys: Keys) -> None:
    """EOF between frames before the handshake completes is reported as such."""
    pair = make_pair(RSA_CASE, keys)
    pair.client.receive_eof()
    assert drain(pair.client) == [
        ConnectionClosed(clean=False, reason="peer closed the connection during the handshake")
    ]
    assert pair.client.state is State.CLOSED


def test_eof_inside_a_frame_is_decode_error(keys: Keys) -> None:
    """§1: end of stream inside a frame gets decode_error, sent while the side may still send."""
    pair = make_pair(PSK_CASE, keys)
    pair.server.receive_data(pair.client.data_to_send()[:20])
    assert drain(pair.server) == []
    pair.server.receive_eof()
    with pytest.raises(RemoteProtocolError) as info:
        drain(pair.server)
    assert info.value.alert is AlertCode.DECODE_ERROR
    assert pair.server.error is info.value
    out = pair.server.data_to_send()
    assert out[3] == FrameType.ALERT and out[8] == AlertCode.DECODE_ERROR
    assert drain(pair.server) == []  # raised once, then quiet


# --------------------------------------------------------------------------- timeout and abort


def test_handshake_timeout_before_completion(keys: Keys) -> None:
    """The caller's timer ends an unfinished handshake with handshake_failure (§4)."""
    pair = make_pair(PSK_CASE, keys, psk_lookup=lambda identity: None)
    pair.run()
    err = pair.server.handshake_timeout()
    assert err is not None and err.alert is AlertCode.HANDSHAKE_FAILURE
    assert err.reason == "handshake timeout"
    assert pair.server.state is State.ERROR
    assert drain(pair.server) == []  # returned, not raised again
    assert pair.server.handshake_timeout() is None  # already over
    c, _ = pair.run()
    assert c[0] == AlertReceived(AlertCode.HANDSHAKE_FAILURE, "handshake timeout")
    assert pair.client.state is State.ERROR


def test_handshake_timeout_after_completion_is_ignored(keys: Keys) -> None:
    """A timer that fires late changes nothing once the handshake is complete."""
    pair = make_pair(PSK_CASE, keys)
    pair.run()
    assert pair.client.handshake_timeout() is None
    assert pair.server.handshake_timeout() is None
    assert pair.client.state is State.CONNECTED and pair.client.data_to_send() == b""


def test_abort_after_handshake_sends_an_alert_record(keys: Keys) -> None:
    """abort() (e.g. a SAS mismatch) sends the alert as a record; the peer closes, unclean."""
    pair = make_pair(DHE_CASE, keys)
    pair.run()
    err = pair.client.abort(AlertCode.HANDSHAKE_FAILURE, "SAS mismatch")
    assert isinstance(err, LocalProtocolError) and pair.client.error is err
    assert pair.client.state is State.ERROR
    pair.client.abort(AlertCode.INTERNAL_ERROR, "second abort")  # already over: no-op
    out = pair.client.data_to_send()
    assert [f[3] for f in split_frames(out)] == [FrameType.RECORD]
    pair.server.receive_data(out)
    got = drain(pair.server)
    assert got[0] == AlertReceived(AlertCode.HANDSHAKE_FAILURE, "SAS mismatch")
    assert got[0].fatal and got[0].name == "handshake_failure"
    assert got[1] == ConnectionClosed(clean=False, reason="peer sent 40: SAS mismatch")
    assert pair.server.state is State.ERROR
    assert pair.server.data_to_send() == b""  # the receiver of a fatal alert does not answer


# --------------------------------------------------------------------------- defaults and configuration


def test_default_trust_refuses_every_server(keys: Keys) -> None:
    """A client that chose no trust policy refuses the server key (bad_certificate), on purpose."""
    client = ClientConnection(ClientConfig(kex=Kex.RSA))
    server = ServerConnection(ServerConfig(rsa_key=keys.rsa_transport))
    client.start()
    pair = Pair(client, server)
    c, s = pair.run()
    err = pair.errors["client"]
    assert err.alert is AlertCode.BAD_CERTIFICATE and err.reason == "no trust policy configured"
    # No premaster was wrapped for a key the client refused: only CLIENT_HELLO and the alert.
    assert [f[3] for f in split_frames(bytes(pair.c2s))] == [
        FrameType.CLIENT_HELLO,
        FrameType.ALERT,
    ]
    assert s[0] == AlertReceived(AlertCode.BAD_CERTIFICATE, "no trust policy configured")
    assert c == []


def test_default_psk_lookup_knows_no_key() -> None:
    """A server configured without a lookup asks for every PSK out of band."""
    client = ClientConnection(ClientConfig(kex=Kex.PSK, psk_identity=PSK_IDENTITY, psk=PSK))
    server = ServerConnection(ServerConfig(kex_methods=frozenset({Kex.PSK})))
    client.start()
    _, s = Pair(client, server).run()
    assert s == [PskNeeded(PSK_IDENTITY)]


@pytest.mark.parametrize(
    ("key", "alert", "reason"),
    [
        (None, AlertCode.UNKNOWN_PSK_IDENTITY, f"unknown psk identity {PSK_IDENTITY!r}"),
        (b"too short", AlertCode.INTERNAL_ERROR, f"the PSK for {PSK_IDENTITY!r} is under 16 bytes"),
    ],
    ids=["none-arrived", "short-key"],
)
def test_supply_psk_failures(key: bytes | None, alert: AlertCode, reason: str, keys: Keys) -> None:
    """supply_psk(None) is unknown_psk_identity; a key under 16 bytes is our own error."""
    pair = make_pair(PSK_CASE, keys, psk_lookup=lambda identity: None)
    pair.run()
    pair.server.supply_psk(key)
    assert pair.server.state is State.ERROR and pair.server.error is not None
    assert pair.server.error.alert is alert
    assert pair.server.error.reason == reason
    c, _ = pair.run()
    assert c[0] == AlertReceived(alert, pair.server.error.reason)
    assert pair.client.state is State.ERROR


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kex": Kex.DHE, "group": Group.NONE}, "unknown group"),
        ({"kex": Kex.PSK, "psk_identity": "", "psk": PSK}, "1..255 bytes"),
        ({"kex": Kex.PSK, "psk_identity": "x" * 256, "psk": PSK}, "1..255 bytes"),
        ({"kex": Kex.PSK, "psk_identity": "a/b", "psk": PSK}, "may not contain"),
        ({"kex": Kex.PSK, "psk_identity": "a#", "psk": PSK}, "may not contain"),
        ({"kex": Kex.PSK, "psk_identity": "ok", "psk": bytes(15)}, "at least 16 bytes"),
    ],
    ids=["group-none", "empty-id", "long-id", "slash", "hash", "short-psk"],
)
def test_client_config_refuses_unworkable_proposals(kwargs: dict[str, Any], message: str) -> None:
    """ClientConnection validates its proposal before it sends anything."""
    with pytest.raises(ValueError, match=message):
        ClientConnection(ClientConfig(**kwargs))


def test_psk_identity_must_be_utf8() -> None:
    """§3: identities are UTF-8 (they appear in MQTT topics)."""
    assert check_psk_identity("ünïcode-ok".encode()) == "ünïcode-ok"
    with pytest.raises(ValueError, match="UTF-8"):
        check_psk_identity(b"\xff\xfe")


def test_unavailable_group_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group this cryptography cannot do is refused up front, and by the group itself."""
    ffdhe = GROUPS[Group.FFDHE2048]
    monkeypatch.setattr(type(ffdhe), "available", property(lambda self: False))
    with pytest.raises(ValueError, match="unavailable"):
        ClientConnection(ClientConfig(kex=Kex.DHE, group=Group.FFDHE2048))
    with pytest.raises(LocalProtocolError) as info:
        ffdhe.generate(os.urandom)
    assert info.value.alert is AlertCode.INTERNAL_ERROR


def test_server_config_refuses_unusable_keys(keys: Keys) -> None:
    """A server key the peer would refuse is a configuration error at construction."""
    small = rsa.generate_private_key(65537, 1024)
    bad: list[tuple[dict[str, Any], str]] = [
        ({}, "no RSA key is configured"),
        ({"rsa_key": small}, "1024 bits is under 2048"),
        ({"rsa_key": keys.ed25519_identity}, "an RSA key is required"),
        (
            {"rsa_key": keys.rsa_transport, "sign_key": ec.generate_private_key(ec.SECP256R1())},
            "an RSA or Ed25519 key is required",
        ),
        ({"kex_methods": frozenset()}, "no key exchange method"),
        ({"kex_methods": frozenset({Kex.PSK}), "key_update_threshold": 1}, "key_update_threshold"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            ServerConnection(ServerConfig(**kwargs))


def test_alert_and_frame_type_properties() -> None:
    """close_notify is the one non-fatal alert; types 0x01-0x05 are the handshake frames."""
    assert [code for code in AlertCode if not code.fatal] == [AlertCode.CLOSE_NOTIFY]
    assert {t for t in FrameType if t.is_handshake} == {
        FrameType.CLIENT_HELLO,
        FrameType.SERVER_HELLO,
        FrameType.KEY_TRANSPORT,
        FrameType.SERVER_SIGNATURE,
        FrameType.FINISHED,
    }


def test_oversize_vectors_are_refused_locally() -> None:
    """Encoding a field longer than its length prefix allows is a local bug, never truncated."""
    with pytest.raises(ValueError, match="exceeds 255"):
        ClientHello(bytes(32), 3, 0x1301, 0, b"", b"i" * 256).encode()
    with pytest.raises(ValueError, match="exceeds 65535"):
        ServerHello(bytes(32), 1, 0x1301, 0, b"", b"k" * 65536).encode()
