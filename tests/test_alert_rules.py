"""Every alert rule of docs/protocol.md, one test each: the AlertCode raised and the alert on the wire.

Before a side's handshake is complete its alert is a plaintext ALERT frame, read back with
FrameDecoder + messages.Alert; after, it is an alert record, which the peer opens (§7).
Hostile frames are forged with encode_frame, messages and RecordSender (keys from a real
handshake), as a man in the middle or a malicious peer would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import (
    ED_KEY,
    PSK_IDENTITY,
    RSA_KEY,
    assert_ended,
    assert_plain_alert,
    assert_record_alert,
    connected,
    drain,
    expect_failure,
    feed,
    flip,
    forger,
    frames,
    handshake,
    make_pair,
    open_records,
    replace_frame,
)

from protocol import (
    AlertCode,
    AlertReceived,
    CipherSuite,
    ClientConnection,
    ConnectionClosed,
    DataReceived,
    FrameType,
    Group,
    HandshakeComplete,
    Kex,
    LocalProtocolError,
    PskNeeded,
    ServerConnection,
    ServerIdentity,
    State,
    TrustVerdict,
    encode_frame,
)
from protocol.connection import Connection
from protocol.constants import ContentType
from protocol.kex import FFDHE2048_P, rsa_wrap, spki
from protocol.messages import Alert, ClientHello, KeyTransport, ServerHello, ServerSignature

A = AlertCode
AES128 = CipherSuite.AES_128_GCM_SHA256
RSA_1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
P256_SPKI = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
)
P_2048 = int(FFDHE2048_P, 16)
MAX_U32 = (1 << 32) - 1


def hdr(frame_type: int, length: int, magic: bytes = b"KX", version: int = 1) -> bytes:
    """A raw 8-byte header, any field may be wrong."""
    return magic + bytes((version, frame_type)) + length.to_bytes(4, "big")


def client_hello(
    kex: int,
    suite: int = AES128,
    group: int = Group.NONE,
    share: bytes = b"",
    identity: bytes = b"",
) -> bytes:
    """A forged CLIENT_HELLO frame."""
    msg = ClientHello(b"\x11" * 32, kex, suite, group, share, identity)
    return encode_frame(FrameType.CLIENT_HELLO, msg.encode())


def server_flight(
    kex: Kex = Kex.DHE,
    group: Group = Group.X25519,
    *,
    client_kw: dict[str, object] | None = None,
    server_kw: dict[str, object] | None = None,
) -> tuple[ClientConnection, ServerConnection, bytes]:
    """A started client, and the server's first flight to it (not yet delivered)."""
    client, server = make_pair(kex, AES128, group, client_kw=client_kw, server_kw=server_kw)
    got = feed(server, client.data_to_send())
    assert got.error is None
    return client, server, server.data_to_send()


def server_hello_of(flight: bytes) -> ServerHello:
    """The SERVER_HELLO of a server flight."""
    first = frames(flight)[0]
    assert first.type is FrameType.SERVER_HELLO
    return ServerHello.decode(first.payload)


def sh_frame(sh: ServerHello) -> bytes:
    """A SERVER_HELLO frame."""
    return encode_frame(FrameType.SERVER_HELLO, sh.encode())


def alert_frame(code: int, reason: str = "") -> bytes:
    """A plaintext ALERT frame."""
    return encode_frame(FrameType.ALERT, Alert(code, reason).encode())


def fresh(role: str) -> Connection:
    """A server waiting for CLIENT_HELLO, or a client waiting for SERVER_HELLO."""
    client, server = make_pair()
    client.data_to_send()
    return server if role == "server" else client


# ====================================================================== §1 frames

HEADER_ORDER = [
    # check 1 wins over everything else that is also wrong
    pytest.param(hdr(0x99, MAX_U32, b"XX", 9), A.DECODE_ERROR, "magic", id="magic"),
    pytest.param(hdr(0x99, MAX_U32, b"KY"), A.DECODE_ERROR, "magic", id="magic-half"),
    # check 2 before check 3 (unknown type) and check 4 (length)
    pytest.param(hdr(0x99, MAX_U32, version=2), A.PROTOCOL_VERSION, "version", id="version"),
    pytest.param(hdr(0x01, 10, version=0), A.PROTOCOL_VERSION, "version", id="version-0"),
    # check 3 before check 4
    pytest.param(hdr(0x99, MAX_U32), A.UNEXPECTED_MESSAGE, "unknown frame type", id="type"),
    pytest.param(hdr(0x00, 0), A.UNEXPECTED_MESSAGE, "unknown frame type", id="type-0"),
    pytest.param(hdr(0x16, 0), A.UNEXPECTED_MESSAGE, "unknown frame type", id="type-0x16"),
    # check 4 before check 5: none of these types is expected now either
    pytest.param(hdr(0x01, 16385), A.RECORD_OVERFLOW, "16384", id="client-hello-16385"),
    pytest.param(hdr(0x02, 16385), A.RECORD_OVERFLOW, "16384", id="server-hello-16385"),
    pytest.param(hdr(0x05, MAX_U32), A.RECORD_OVERFLOW, "16384", id="finished-huge"),
    pytest.param(hdr(0x15, 16385), A.RECORD_OVERFLOW, "16384", id="alert-16385"),
    pytest.param(hdr(0x17, 65562), A.RECORD_OVERFLOW, "65561", id="record-65562"),
    # check 5, from the header alone
    pytest.param(hdr(0x05, 32), A.UNEXPECTED_MESSAGE, "not expected", id="finished-now"),
    pytest.param(hdr(0x03, 10), A.UNEXPECTED_MESSAGE, "not expected", id="key-transport-now"),
    pytest.param(hdr(0x04, 10), A.UNEXPECTED_MESSAGE, "not expected", id="signature-now"),
    pytest.param(hdr(0x17, 65561), A.UNEXPECTED_MESSAGE, "not expected", id="record-now"),
]


@pytest.mark.parametrize("role", ["server", "client"])
@pytest.mark.parametrize(("header", "code", "reason"), HEADER_ORDER)
def test_header_checks_in_order_from_eight_bytes(
    role: str, header: bytes, code: AlertCode, reason: str
) -> None:
    """§1 checks 1-5 run in order on the 8 header bytes, before any payload byte has arrived."""
    assert len(header) == 8
    conn = fresh(role)
    expect_failure(conn, header, code, reason)


@pytest.mark.parametrize(
    "header",
    [hdr(0x01, 16384), hdr(0x15, 16384), hdr(0x01, 57) + b"\x11" * 56],
    ids=["client-hello-16384", "alert-16384", "one-byte-short"],
)
def test_header_at_the_limit_waits_for_its_payload(header: bytes) -> None:
    """A length at the limit is legal: the server just waits for the payload."""
    server = fresh("server")
    assert feed(server, header).error is None
    assert server.state is State.WAIT_CLIENT_HELLO
    assert server.data_to_send() == b""


def test_record_of_65561_is_legal_when_connected() -> None:
    """A connected side waits for a maximum-size RECORD rather than refusing its header."""
    client, _, _ = connected()
    got = feed(client, hdr(0x17, 65561) + b"\x00" * 100)
    assert got.error is None and got.events == []
    assert client.data_to_send() == b""


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (hdr(0x17, 65562), A.RECORD_OVERFLOW),
        (hdr(0x15, 16385), A.RECORD_OVERFLOW),
        (hdr(0x01, 100), A.UNEXPECTED_MESSAGE),
        (hdr(0x05, 32), A.UNEXPECTED_MESSAGE),
        (hdr(0x42, 1), A.UNEXPECTED_MESSAGE),
        (hdr(0x17, 30, version=2), A.PROTOCOL_VERSION),
    ],
    ids=["record-overflow", "alert-overflow", "client-hello", "finished", "type", "version"],
)
def test_header_checks_after_the_handshake(header: bytes, code: AlertCode) -> None:
    """The same checks once connected; the alert then travels as an alert record (§7)."""
    client, server, _ = connected()
    got = feed(client, header)
    assert_ended(client, got, code)
    assert_record_alert(client, server, code)


def _ch_payload() -> bytes:
    return ClientHello(b"\x11" * 32, Kex.PSK, AES128, 0, b"", PSK_IDENTITY.encode()).encode()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x11" * 10, id="short"),
        pytest.param(b"", id="empty"),
        pytest.param(_ch_payload()[:-1], id="cut"),
        pytest.param(_ch_payload() + b"\x00", id="trailing"),
        pytest.param(
            b"\x11" * 32 + b"\x02\x13\x01\x00\x1d" + b"\x00\x64" + b"\x22" * 32 + b"\x00",
            id="key-share-length-too-big",
        ),
        pytest.param(b"\x11" * 32 + b"\x03\x13\x01\x00\x00\x00\x00\x09abc", id="identity-length"),
    ],
)
def test_client_hello_that_does_not_parse(payload: bytes) -> None:
    """§1: a CLIENT_HELLO payload that does not parse exactly is decode_error."""
    server = fresh("server")
    expect_failure(server, encode_frame(FrameType.CLIENT_HELLO, payload), A.DECODE_ERROR)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x28", b"\x28\x05abc", b"\x28\x01ab", b"\x28\x02\xff\xfe"],
    ids=["empty", "no-reason-length", "reason-short", "trailing", "reason-not-utf8"],
)
@pytest.mark.parametrize("role", ["server", "client"])
def test_alert_that_does_not_parse(role: str, payload: bytes) -> None:
    """§1: an ALERT payload that does not parse is decode_error (not taken as the peer's alert)."""
    conn = fresh(role)
    expect_failure(conn, encode_frame(FrameType.ALERT, payload), A.DECODE_ERROR, "ALERT")


@pytest.mark.parametrize(
    ("kex", "frame_type", "change"),
    [
        (Kex.PSK, FrameType.SERVER_HELLO, lambda p: p + b"\x00"),
        (Kex.PSK, FrameType.SERVER_HELLO, lambda p: p[:-1]),
        (Kex.PSK, FrameType.FINISHED, lambda p: p[:-1]),
        (Kex.PSK, FrameType.FINISHED, lambda p: p + b"\x00"),
        (Kex.DHE, FrameType.SERVER_SIGNATURE, lambda p: p + b"\x00"),
        (Kex.DHE, FrameType.SERVER_SIGNATURE, lambda p: p[:3]),
    ],
    ids=["sh-trailing", "sh-short", "fin-short", "fin-long", "sig-trailing", "sig-short"],
)
def test_server_flight_that_does_not_parse(
    kex: Kex, frame_type: FrameType, change: Callable[[bytes], bytes]
) -> None:
    """SERVER_HELLO, SERVER_SIGNATURE and FINISHED payloads are parsed exactly by the client."""
    client, _, flight = server_flight(kex)
    expect_failure(client, replace_frame(flight, frame_type, change), A.DECODE_ERROR)


@pytest.mark.parametrize(
    ("frame_type", "change"),
    [
        (FrameType.KEY_TRANSPORT, lambda p: p + b"\x00"),
        (FrameType.KEY_TRANSPORT, lambda p: p[:-1]),
        (FrameType.FINISHED, lambda p: p[:-1]),
    ],
    ids=["kt-trailing", "kt-short", "fin-short"],
)
def test_client_flight_that_does_not_parse(
    frame_type: FrameType, change: Callable[[bytes], bytes]
) -> None:
    """KEY_TRANSPORT and the client's FINISHED are parsed exactly by the server."""
    client, server, flight = server_flight(Kex.RSA)
    assert feed(client, flight).error is None
    bad = replace_frame(client.data_to_send(), frame_type, change)
    expect_failure(server, bad, A.DECODE_ERROR)


@pytest.mark.parametrize(
    "data",
    [b"K", b"KX\x01\x01\x00", hdr(0x01, 57), hdr(0x01, 57) + b"\x11" * 56],
    ids=["1-byte", "5-bytes", "header-only", "payload-short-by-1"],
)
def test_eof_inside_a_frame(data: bytes) -> None:
    """§1: end of stream inside a frame is decode_error while we may still send."""
    server = fresh("server")
    expect_failure(server, data, A.DECODE_ERROR, "inside a frame", eof=True)


def test_eof_inside_a_record_when_connected() -> None:
    """The decode_error for a cut RECORD goes out as an alert record."""
    client, server, done = connected()
    record = forger(done).seal(ContentType.APPLICATION_DATA, b"hello")
    got = feed(client, record[:-3], eof=True)
    assert_ended(client, got, A.DECODE_ERROR, "inside a frame")
    assert_record_alert(client, server, A.DECODE_ERROR)


def test_eof_between_frames_is_no_protocol_error() -> None:
    """Contrast: EOF on a frame boundary is an unclean close, not decode_error."""
    client, _, _ = connected()
    got = feed(client, b"", eof=True)
    assert got.error is None
    assert got.events == [
        ConnectionClosed(False, "peer closed the connection without close_notify")
    ]
    assert client.data_to_send() == b""


# ====================================================================== §3 negotiation


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        pytest.param(
            client_hello(0), "kex 0 not supported; this server supports rsa, dhe, psk", id="kex-0"
        ),
        pytest.param(
            client_hello(4), "kex 4 not supported; this server supports rsa, dhe, psk", id="kex-4"
        ),
        pytest.param(
            client_hello(Kex.PSK, 0x1303, identity=b"alice"),
            "cipher suite 0x1303 not supported; this server supports 0x1301 (aes128), 0x1302 (aes256)",
            id="suite-0x1303",
        ),
        pytest.param(
            client_hello(Kex.DHE, AES128, 0x001E, b"\x09" * 56),
            "group 0x001e not supported; this server supports x25519, secp256r1, secp384r1, "
            "ffdhe2048, ffdhe3072",
            id="group-x448",
        ),
        pytest.param(client_hello(Kex.DHE, AES128, 0), "supports x25519", id="group-none-dhe"),
    ],
)
def test_unknown_kex_suite_group(hello: bytes, reason: str) -> None:
    """§3: an unknown kex, suite or group is handshake_failure naming what the server supports."""
    expect_failure(fresh("server"), hello, A.HANDSHAKE_FAILURE, reason)


@pytest.mark.parametrize(
    ("kex", "suite", "group", "server_kw", "reason"),
    [
        (
            Kex.PSK,
            AES128,
            Group.X25519,
            {"kex_methods": frozenset({Kex.DHE})},
            "kex psk (3) not supported; this server supports dhe",
        ),
        (
            Kex.RSA,
            AES128,
            Group.X25519,
            {"kex_methods": frozenset({Kex.PSK, Kex.DHE})},
            "kex rsa (1) not supported; this server supports dhe, psk",
        ),
        (
            Kex.PSK,
            AES128,
            Group.X25519,
            {"cipher_suites": (CipherSuite.AES_256_GCM_SHA384,)},
            "supports 0x1302 (aes256)",
        ),
        (Kex.DHE, AES128, Group.SECP256R1, {"groups": (Group.X25519,)}, "supports x25519"),
    ],
    ids=["kex-psk", "kex-rsa", "suite", "group"],
)
def test_not_enabled_kex_suite_group(
    kex: Kex, suite: CipherSuite, group: Group, server_kw: dict[str, object], reason: str
) -> None:
    """§3: a known but disabled choice is handshake_failure too; the client does not retry."""
    client, server = make_pair(kex, suite, group, server_kw=server_kw)
    hello = client.data_to_send()
    expect_failure(server, hello, A.HANDSHAKE_FAILURE, reason)
    server.data_to_send()
    got = feed(client, alert_frame(A.HANDSHAKE_FAILURE, reason))
    assert got.error is None
    assert got.events[0] == AlertReceived(A.HANDSHAKE_FAILURE, reason)
    assert isinstance(got.events[1], ConnectionClosed) and not got.events[1].clean
    assert client.data_to_send() == b"", "no silent downgrade: the client proposes nothing else"


X_SHARE = b"\x09" + b"\x00" * 31  # the x25519 base point: a valid share


@pytest.mark.parametrize(
    ("hello", "reason"),
    [
        pytest.param(client_hello(Kex.RSA, group=Group.X25519), "group", id="rsa-group"),
        pytest.param(client_hello(Kex.RSA, share=X_SHARE), "key_share", id="rsa-share"),
        pytest.param(
            client_hello(Kex.PSK, group=Group.X25519, identity=b"alice"), "group", id="psk-group"
        ),
        pytest.param(
            client_hello(Kex.PSK, share=X_SHARE, identity=b"alice"), "key_share", id="psk-share"
        ),
        pytest.param(client_hello(Kex.RSA, identity=b"alice"), "psk_identity", id="rsa-identity"),
        pytest.param(
            client_hello(Kex.DHE, group=Group.X25519, share=X_SHARE, identity=b"alice"),
            "psk_identity",
            id="dhe-identity",
        ),
        pytest.param(
            client_hello(Kex.DHE, group=Group.X25519, share=X_SHARE[:31]), "32", id="x25519-31"
        ),
        pytest.param(client_hello(Kex.DHE, group=Group.X25519), "32", id="x25519-empty"),
        pytest.param(
            client_hello(Kex.DHE, group=Group.SECP256R1, share=b"\x02" + b"\x01" * 32),
            "65",
            id="p256-compressed",
        ),
        pytest.param(
            client_hello(Kex.DHE, group=Group.FFDHE2048, share=b"\x05" * 255), "256", id="ffdhe-255"
        ),
    ],
)
def test_client_hello_field_not_for_the_kex(hello: bytes, reason: str) -> None:
    """§3: a field that does not belong to the kex, or a share of the wrong length: illegal_parameter."""
    expect_failure(fresh("server"), hello, A.ILLEGAL_PARAMETER, reason)


@pytest.mark.parametrize(
    ("hello", "code", "reason"),
    [
        pytest.param(
            client_hello(Kex.RSA, identity=b"alice"),
            A.ILLEGAL_PARAMETER,
            "rsa CLIENT_HELLO carries a psk_identity",
            id="rsa-identity",
        ),
        pytest.param(
            client_hello(Kex.DHE, group=Group.X25519, share=X_SHARE, identity=b"alice"),
            A.ILLEGAL_PARAMETER,
            "dhe CLIENT_HELLO carries a psk_identity",
            id="dhe-identity",
        ),
        pytest.param(
            client_hello(Kex.PSK, group=Group.X25519, identity=b"alice"),
            A.ILLEGAL_PARAMETER,
            "psk CLIENT_HELLO carries a group or key_share",
            id="psk-group",
        ),
        pytest.param(
            client_hello(Kex.PSK), A.UNKNOWN_PSK_IDENTITY, "empty psk identity", id="psk-empty"
        ),
    ],
)
def test_client_hello_refusal_reasons_word_for_word(hello: bytes, code: A, reason: str) -> None:
    """The reason is the one line a student reads: exact, not just containing a keyword."""
    alert = expect_failure(fresh("server"), hello, code, reason)
    assert alert.reason == reason


@pytest.mark.parametrize(
    ("kex", "group", "change", "reason"),
    [
        (Kex.PSK, Group.X25519, {"server_key": spki(ED_KEY)}, "server_key"),
        (Kex.PSK, Group.X25519, {"key_share": X_SHARE}, "key_share"),
        (Kex.RSA, Group.X25519, {"server_key": b""}, "no server_key"),
        (Kex.RSA, Group.X25519, {"key_share": X_SHARE}, "key_share"),
        (Kex.DHE, Group.X25519, {"key_share": X_SHARE[:31]}, "32"),
        (Kex.DHE, Group.X25519, {"key_share": X_SHARE + b"\x00"}, "32"),
        (Kex.DHE, Group.SECP256R1, {"key_share": b""}, "65"),
        # SERVER_HELLO must echo kex, suite and group exactly
        (Kex.PSK, Group.X25519, {"kex": Kex.DHE}, "echo"),
        (Kex.DHE, Group.X25519, {"kex": Kex.PSK}, "echo"),
        (Kex.PSK, Group.X25519, {"cipher_suite": CipherSuite.AES_256_GCM_SHA384}, "echo"),
        (Kex.DHE, Group.X25519, {"group": Group.SECP256R1}, "echo"),
        (Kex.RSA, Group.X25519, {"group": Group.X25519}, "echo"),
    ],
    ids=[
        "psk-server-key",
        "psk-share",
        "rsa-no-key",
        "rsa-share",
        "x25519-31",
        "x25519-33",
        "p256-empty",
        "echo-kex-psk",
        "echo-kex-dhe",
        "echo-suite",
        "echo-group",
        "echo-group-rsa",
    ],
)
def test_server_hello_field_not_for_the_kex(
    kex: Kex, group: Group, change: dict[str, object], reason: str
) -> None:
    """§3: the client checks SERVER_HELLO's echo and fields the same way: illegal_parameter."""
    client, _, flight = server_flight(kex, group)
    forged = replace(server_hello_of(flight), **change)  # type: ignore[arg-type]
    expect_failure(client, sh_frame(forged), A.ILLEGAL_PARAMETER, reason)


def _signature_swap(scheme: int) -> Callable[[bytes], bytes]:
    def change(payload: bytes) -> bytes:
        return ServerSignature(scheme, ServerSignature.decode(payload).signature).encode()

    return change


@pytest.mark.parametrize(
    ("sign_key", "scheme", "reason"),
    [
        (ED_KEY, 0x0403, "unknown signature scheme 0x0403"),
        (ED_KEY, 0x0000, "unknown signature scheme"),
        (ED_KEY, 0x0804, "does not match"),
        (RSA_KEY, 0x0807, "does not match"),
    ],
    ids=["ecdsa", "zero", "pss-for-ed25519", "ed25519-for-rsa"],
)
def test_signature_scheme_unknown_or_mismatched(sign_key: object, scheme: int, reason: str) -> None:
    """§3: an unknown scheme, or one that does not match the key type, is illegal_parameter."""
    client, _, flight = server_flight(server_kw={"sign_key": sign_key})
    bad = replace_frame(flight, FrameType.SERVER_SIGNATURE, _signature_swap(scheme))
    expect_failure(client, bad, A.ILLEGAL_PARAMETER, reason)


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (b"", "empty"),
        (b"a/b", "may not contain"),
        (b"a+b", "may not contain"),
        (b"a#b", "may not contain"),
        (b"a\x00b", "may not contain"),
        (b"\xff\xfe", "UTF-8"),
    ],
    ids=["empty", "slash", "plus", "hash", "nul", "not-utf8"],
)
def test_psk_identity_empty_or_malformed(identity: bytes, reason: str) -> None:
    """§3: with psk, an empty or malformed identity is unknown_psk_identity."""
    hello = client_hello(Kex.PSK, identity=identity)
    expect_failure(fresh("server"), hello, A.UNKNOWN_PSK_IDENTITY, reason)


def test_psk_identity_unknown_after_waiting_out_of_band() -> None:
    """§3, §8: an unknown identity raises PskNeeded; supply_psk(None) ends with unknown_psk_identity."""
    client, server = make_pair(Kex.PSK, client_kw={"psk_identity": "bob"})
    got = feed(server, client.data_to_send())
    assert got.error is None and got.events == [PskNeeded("bob")]
    assert server.state is State.WAIT_PSK
    assert server.data_to_send() == b"", "nothing is said while the key may still arrive"
    server.supply_psk(None)
    err = assert_ended(server, drain(server), A.UNKNOWN_PSK_IDENTITY, "'bob'")
    assert_plain_alert(server, A.UNKNOWN_PSK_IDENTITY, err.reason)


def test_psk_supplied_out_of_band_completes() -> None:
    """Contrast: the same wait ends in a handshake when the key arrives."""
    client, server = make_pair(Kex.PSK, client_kw={"psk_identity": "bob", "psk": b"k" * 16})
    feed(server, client.data_to_send())
    server.supply_psk(b"k" * 16)
    c_done, s_done = handshake(client, server)
    assert c_done.sas == s_done.sas and s_done.psk_identity == "bob"


def _rsa_even_modulus_spki() -> bytes:
    # Parses as a 2049-bit RSA key, but OpenSSL refuses to encrypt to it.
    return spki(rsa.RSAPublicNumbers(65537, 1 << 2048).public_key())


@pytest.mark.parametrize(
    ("kex", "server_key", "reason"),
    [
        (Kex.RSA, b"not der at all", "does not parse"),
        (Kex.DHE, b"\x30\x03\x02\x01\x00", "does not parse"),
        (Kex.RSA, spki(ED_KEY), "not an RSA key"),
        (Kex.RSA, P256_SPKI, "not an RSA key"),
        (Kex.DHE, P256_SPKI, "not an RSA or Ed25519 key"),
        (Kex.RSA, spki(RSA_1024), "1024 bits"),
        (Kex.DHE, spki(RSA_1024), "1024 bits"),
        (Kex.RSA, _rsa_even_modulus_spki(), "RSA"),
    ],
    ids=[
        "rsa-garbage",
        "dhe-garbage",
        "rsa-ed25519",
        "rsa-p256",
        "dhe-p256",
        "rsa-1024",
        "dhe-rsa-1024",
        "rsa-unusable",
    ],
)
def test_server_key_unusable(kex: Kex, server_key: bytes, reason: str) -> None:
    """§3: a server_key that does not parse, is the wrong type or under 2048 bits: bad_certificate."""
    client, _, flight = server_flight(kex)
    forged = replace(server_hello_of(flight), server_key=server_key)
    expect_failure(client, sh_frame(forged), A.BAD_CERTIFICATE, reason)


def test_anonymous_dhe_refused_when_authentication_is_required() -> None:
    """§3: an anonymous server (no server_key) is bad_certificate unless the client allows it."""
    client, _, flight = server_flight(server_kw={"sign_key": None})
    assert [f.type for f in frames(flight)] == [FrameType.SERVER_HELLO, FrameType.FINISHED]
    expect_failure(client, flight, A.BAD_CERTIFICATE, "anonymous")


def test_stripped_signature_refused() -> None:
    """§3: a man in the middle who strips server_key and SERVER_SIGNATURE gets bad_certificate."""
    client, _, flight = server_flight()
    sh = server_hello_of(flight)
    stripped = sh_frame(replace(sh, server_key=b"")) + frames(flight)[-1].encode()
    expect_failure(client, stripped, A.BAD_CERTIFICATE, "anonymous")


def test_anonymous_dhe_allowed_on_purpose() -> None:
    """Contrast: with allow_anonymous the same server completes."""
    client, server = make_pair(
        Kex.DHE, client_kw={"allow_anonymous": True}, server_kw={"sign_key": None}
    )
    c_done, _ = handshake(client, server)
    assert c_done.server_key == b"" and c_done.signature_scheme is None


@pytest.mark.parametrize(
    ("kex", "sign_key", "verified"),
    [(Kex.RSA, ED_KEY, False), (Kex.DHE, ED_KEY, True), (Kex.DHE, RSA_KEY, True)],
    ids=["rsa", "dhe-ed25519", "dhe-rsa"],
)
def test_trust_refusal(kex: Kex, sign_key: object, verified: bool) -> None:
    """§7: a key the client's trust policy refuses is bad_certificate, with the policy's reason."""
    seen: list[ServerIdentity] = []

    def refuse(identity: ServerIdentity) -> TrustVerdict:
        seen.append(identity)
        return TrustVerdict(False, "fingerprint does not match the pinned key")

    client, _, flight = server_flight(
        kex, client_kw={"trust": refuse}, server_kw={"sign_key": sign_key}
    )
    # alone=True: for rsa the premaster is never wrapped to a refused key (no KEY_TRANSPORT).
    expect_failure(client, flight, A.BAD_CERTIFICATE, "fingerprint does not match", alone=True)
    (identity,) = seen
    assert identity.signature_verified is verified
    assert identity.server_key == server_hello_of(flight).server_key


@pytest.mark.parametrize("sign_key", [ED_KEY, RSA_KEY], ids=["ed25519", "rsa-pss"])
def test_bad_signature(sign_key: object) -> None:
    """§3: a SERVER_SIGNATURE that does not verify is decrypt_error."""
    client, _, flight = server_flight(server_kw={"sign_key": sign_key})
    bad = replace_frame(flight, FrameType.SERVER_SIGNATURE, lambda p: flip(p, 10))
    expect_failure(client, bad, A.DECRYPT_ERROR, "signature does not verify")


def test_signature_from_another_handshake() -> None:
    """A valid signature over another transcript (a replay) is decrypt_error too."""
    client, _, flight = server_flight()
    _, _, other = server_flight()
    old_sig = next(f for f in frames(other) if f.type is FrameType.SERVER_SIGNATURE).payload
    bad = replace_frame(flight, FrameType.SERVER_SIGNATURE, lambda p: old_sig)
    expect_failure(client, bad, A.DECRYPT_ERROR, "signature does not verify")


@pytest.mark.parametrize("kex", [Kex.PSK, Kex.DHE])
def test_server_finished_mismatch(kex: Kex) -> None:
    """§3: a server FINISHED that does not verify is decrypt_error."""
    client, _, flight = server_flight(kex)
    bad = replace_frame(flight, FrameType.FINISHED, flip)
    expect_failure(client, bad, A.DECRYPT_ERROR, "server FINISHED")


def test_rsa_server_finished_mismatch() -> None:
    """The same for the rsa flight, where the server's FINISHED comes last."""
    client, server, flight = server_flight(Kex.RSA)
    feed(client, flight)
    feed(server, client.data_to_send())
    expect_failure(
        client,
        replace_frame(server.data_to_send(), FrameType.FINISHED, flip),
        A.DECRYPT_ERROR,
        "server FINISHED",
    )


@pytest.mark.parametrize("kex", [Kex.PSK, Kex.DHE])
def test_client_finished_mismatch_reaches_a_complete_client(kex: Kex) -> None:
    """§3, §4: the server rejects the client's FINISHED with a plaintext ALERT, which the
    already complete client still accepts (no RECORD from the server has arrived)."""
    client, server, flight = server_flight(kex)
    assert feed(client, flight).of(HandshakeComplete)
    assert client.handshake_complete
    bad = replace_frame(client.data_to_send(), FrameType.FINISHED, flip)
    alert = expect_failure(server, bad, A.DECRYPT_ERROR, "client FINISHED")
    got = feed(client, alert_frame(alert.code, alert.reason))
    assert got.error is None
    assert got.events[0] == AlertReceived(A.DECRYPT_ERROR, "client FINISHED does not verify")
    assert isinstance(got.events[1], ConnectionClosed) and not got.events[1].clean
    assert client.state is State.ERROR


def _wrapped(premaster: bytes) -> bytes:
    return KeyTransport(rsa_wrap(RSA_KEY.public_key(), premaster)).encode()


@pytest.mark.parametrize(
    "kt_payload",
    [
        pytest.param(KeyTransport(b"\x42" * 256).encode(), id="garbage"),
        pytest.param(KeyTransport(b"").encode(), id="empty"),
        pytest.param(KeyTransport(b"\x42" * 255).encode(), id="short"),
        pytest.param(KeyTransport(b"\xff" * 257).encode(), id="long"),
        pytest.param(_wrapped(b"\x01" * 16), id="16-byte-premaster"),
        pytest.param(_wrapped(b"\x01" * 33), id="33-byte-premaster"),
        pytest.param(_wrapped(b"\x01" * 32), id="other-premaster"),
    ],
)
def test_rsa_key_transport_failure_is_uniform(kt_payload: bytes) -> None:
    """§5: a bad KEY_TRANSPORT is not refused by itself; it shows only as decrypt_error at
    FINISHED, with the same reason as a wrong premaster (no padding oracle)."""
    client, server, flight = server_flight(Kex.RSA)
    feed(client, flight)
    _, fin = frames(client.data_to_send())
    got = feed(server, encode_frame(FrameType.KEY_TRANSPORT, kt_payload))
    assert got.error is None and got.events == []
    assert server.state is State.WAIT_CLIENT_FINISHED and server.data_to_send() == b""
    alert = expect_failure(server, fin.encode(), A.DECRYPT_ERROR)
    assert alert.reason == "client FINISHED does not verify"


# ====================================================================== §2 share validation

_P256_OFF_CURVE = b"\x04" + (1).to_bytes(32, "big") + (1).to_bytes(32, "big")
_P384_OFF_CURVE = b"\x04" + (1).to_bytes(48, "big") + (2).to_bytes(48, "big")

BAD_SHARES = [
    pytest.param(Group.X25519, b"\x00" * 32, "all-zero", id="x25519-zero"),
    pytest.param(Group.X25519, b"\x01" + b"\x00" * 31, "all-zero", id="x25519-one"),
    pytest.param(Group.SECP256R1, _P256_OFF_CURVE, "not on the curve", id="p256-off-curve"),
    pytest.param(Group.SECP256R1, b"\x00" * 65, "not an uncompressed point", id="p256-zero"),
    pytest.param(Group.SECP384R1, _P384_OFF_CURVE, "not on the curve", id="p384-off-curve"),
    pytest.param(Group.FFDHE2048, (1).to_bytes(256, "big"), "2..p-2", id="ffdhe-1"),
    pytest.param(Group.FFDHE2048, (P_2048 - 1).to_bytes(256, "big"), "2..p-2", id="ffdhe-p-1"),
    pytest.param(Group.FFDHE2048, bytes(256), "2..p-2", id="ffdhe-0"),
    pytest.param(Group.FFDHE2048, P_2048.to_bytes(256, "big"), "2..p-2", id="ffdhe-p"),
    pytest.param(Group.FFDHE2048, b"\xff" * 256, "2..p-2", id="ffdhe-max"),
]


@pytest.mark.parametrize(("group", "share", "reason"), BAD_SHARES)
def test_bad_client_share(group: Group, share: bytes, reason: str) -> None:
    """§2: the server validates the client's share: illegal_parameter."""
    hello = client_hello(Kex.DHE, AES128, group, share)
    expect_failure(fresh("server"), hello, A.ILLEGAL_PARAMETER, reason)


@pytest.mark.parametrize(("group", "share", "reason"), BAD_SHARES)
def test_bad_server_share(group: Group, share: bytes, reason: str) -> None:
    """§2: the client validates the server's share the same way."""
    client, _, flight = server_flight(Kex.DHE, group)
    forged = replace(server_hello_of(flight), key_share=share)
    expect_failure(client, sh_frame(forged), A.ILLEGAL_PARAMETER, reason)


# ====================================================================== §4 flights


def test_handshake_timeout_client() -> None:
    """§4: the caller's timer ends an incomplete handshake with handshake_failure on the wire."""
    client, _ = make_pair()
    client.data_to_send()
    err = client.handshake_timeout()
    assert err is not None and err.alert == A.HANDSHAKE_FAILURE
    assert err.reason == "handshake timeout"
    assert isinstance(err, LocalProtocolError)
    assert client.state is State.ERROR
    assert_plain_alert(client, A.HANDSHAKE_FAILURE, "handshake timeout")
    assert client.handshake_timeout() is None  # once


@pytest.mark.parametrize("kex", [Kex.PSK, Kex.RSA, Kex.DHE])
def test_handshake_timeout_server(kex: Kex) -> None:
    """The same on a server waiting for the client's next flight."""
    client, server = make_pair(kex)
    feed(server, client.data_to_send())
    server.data_to_send()
    err = server.handshake_timeout()
    assert err is not None and err.alert == A.HANDSHAKE_FAILURE
    assert server.state is State.ERROR
    assert_plain_alert(server, A.HANDSHAKE_FAILURE, "handshake timeout")
    with pytest.raises(LocalProtocolError):
        server.send_data(b"x")


def test_handshake_timeout_after_completion_is_none() -> None:
    """Once complete, the timer means nothing: None, and nothing is sent."""
    client, server, _ = connected()
    assert client.handshake_timeout() is None
    assert server.handshake_timeout() is None
    assert client.data_to_send() == b"" and server.data_to_send() == b""
    assert client.state is State.CONNECTED and server.state is State.CONNECTED


def test_plaintext_alert_accepted_until_the_first_record() -> None:
    """§4: a complete side still takes a plaintext ALERT before the peer's first RECORD."""
    client, _, _ = connected()
    got = feed(client, alert_frame(A.INTERNAL_ERROR, "server gave up"))
    assert got.error is None
    assert got.events[0] == AlertReceived(A.INTERNAL_ERROR, "server gave up")
    assert isinstance(got.events[1], ConnectionClosed) and not got.events[1].clean
    assert client.data_to_send() == b""


@pytest.mark.parametrize("whole", [True, False], ids=["whole-frame", "header-only"])
def test_plaintext_alert_rejected_after_a_record(whole: bool) -> None:
    """§4: after the first RECORD a plaintext ALERT is unexpected_message (from its header)."""
    client, server, _ = connected()
    server.send_data(b"hello")
    assert feed(client, server.data_to_send()).events == [DataReceived(b"hello")]
    frame = alert_frame(A.INTERNAL_ERROR, "forged")
    got = feed(client, frame if whole else frame[:8])
    assert_ended(client, got, A.UNEXPECTED_MESSAGE, "ALERT not expected")
    assert_record_alert(client, server, A.UNEXPECTED_MESSAGE)


def test_record_before_handshake_server_waiting_for_hello() -> None:
    """§4: a RECORD before the handshake is complete is unexpected_message."""
    expect_failure(fresh("server"), hdr(0x17, 40) + b"\x00" * 40, A.UNEXPECTED_MESSAGE, "RECORD")


@pytest.mark.parametrize("kex", [Kex.PSK, Kex.RSA])
def test_record_before_client_finished(kex: Kex) -> None:
    """The server accepts no RECORD before it has verified the client's FINISHED."""
    client, server = make_pair(kex)
    feed(server, client.data_to_send())
    expect_failure(server, hdr(0x17, 40) + b"\x00" * 40, A.UNEXPECTED_MESSAGE, "RECORD")


@pytest.mark.parametrize("kex", [Kex.PSK, Kex.RSA, Kex.DHE])
def test_record_before_server_finished(kex: Kex) -> None:
    """The client accepts no RECORD before it has verified the server's FINISHED."""
    client, _, flight = server_flight(kex)
    sh = frames(flight)[0].encode()
    expect_failure(client, sh + hdr(0x17, 40) + b"\x00" * 40, A.UNEXPECTED_MESSAGE, "RECORD")


# ====================================================================== §6 records


def _victim(role: str) -> tuple[Connection, Connection, HandshakeComplete, str]:
    """A connected pair; (victim, its peer, secrets, the direction the peer sends in)."""
    client, server, done = connected()
    if role == "client":
        return client, server, done, "s"
    return server, client, done, "c"


ROLES = ["client", "server"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("size", [0, 1, 8, 24])
def test_record_under_25_bytes(role: str, size: int) -> None:
    """§6: a RECORD payload under 25 bytes is decode_error."""
    victim, peer, _, _ = _victim(role)
    got = feed(victim, encode_frame(FrameType.RECORD, b"\x00" * size))
    assert_ended(victim, got, A.DECODE_ERROR, "under 25")
    assert_record_alert(victim, peer, A.DECODE_ERROR)


@pytest.mark.parametrize("role", ROLES)
def test_replayed_record(role: str) -> None:
    """§6: a seq smaller than expected is a replay: unexpected_message, diagnosed in the reason."""
    victim, peer, done, direction = _victim(role)
    record = forger(done, direction).seal(ContentType.APPLICATION_DATA, b"pay me")
    assert feed(victim, record).events == [DataReceived(b"pay me")]
    got = feed(victim, record)
    assert_ended(victim, got, A.UNEXPECTED_MESSAGE, "replayed")
    assert_record_alert(victim, peer, A.UNEXPECTED_MESSAGE, "replayed")


@pytest.mark.parametrize("role", ROLES)
def test_dropped_record(role: str) -> None:
    """§6: a seq larger than expected means a record was lost or dropped."""
    victim, peer, done, direction = _victim(role)
    sender = forger(done, direction)
    sender.seal(ContentType.APPLICATION_DATA, b"first")
    got = feed(victim, sender.seal(ContentType.APPLICATION_DATA, b"second"))
    assert_ended(victim, got, A.UNEXPECTED_MESSAGE, "lost or dropped")
    assert_record_alert(victim, peer, A.UNEXPECTED_MESSAGE, "lost or dropped")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    "where", [8, 9, 20, -1, 2], ids=["content-type", "content", "mid", "tag", "length"]
)
def test_bad_record_mac(role: str, where: int) -> None:
    """§6: a record that fails authentication (ciphertext, tag or header) is bad_record_mac."""
    victim, peer, done, direction = _victim(role)
    record = forger(done, direction).seal(ContentType.APPLICATION_DATA, b"0123456789abcdef")
    if where == 2:  # the header is AAD: a record moved under another length must not open
        bad = encode_frame(FrameType.RECORD, record[8:] + b"\x00")
    else:
        bad = record[:8] + flip(record[8:], where)
    got = feed(victim, bad)
    assert_ended(victim, got, A.BAD_RECORD_MAC)
    assert_record_alert(victim, peer, A.BAD_RECORD_MAC)


@pytest.mark.parametrize("role", ROLES)
def test_record_under_the_wrong_key(role: str) -> None:
    """A record sealed with the other direction's key is bad_record_mac (no reflection)."""
    victim, peer, done, direction = _victim(role)
    own = "c" if direction == "s" else "s"
    got = feed(victim, forger(done, own).seal(ContentType.APPLICATION_DATA, b"echo"))
    assert_ended(victim, got, A.BAD_RECORD_MAC)
    assert_record_alert(victim, peer, A.BAD_RECORD_MAC)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("content_type", [0x00, 0x14, 0x16, 0x19, 0xFF])
def test_unknown_content_type(role: str, content_type: int) -> None:
    """§6: an authentic record of unknown content type is unexpected_message."""
    victim, peer, done, direction = _victim(role)
    record = forger(done, direction).seal(content_type, b"x")  # type: ignore[arg-type]
    got = feed(victim, record)
    assert_ended(victim, got, A.UNEXPECTED_MESSAGE, "content type")
    assert_record_alert(victim, peer, A.UNEXPECTED_MESSAGE)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", A.DECODE_ERROR),
        (b"\x00\x00", A.DECODE_ERROR),
        (b"\x01\x00", A.DECODE_ERROR),
        (b"\x02", A.ILLEGAL_PARAMETER),
        (b"\xff", A.ILLEGAL_PARAMETER),
    ],
    ids=["0-bytes", "2-bytes", "2-bytes-1", "request-2", "request-255"],
)
def test_bad_key_update(role: str, content: bytes, code: AlertCode) -> None:
    """§6: key_update content must be one byte (decode_error) of value 0 or 1 (illegal_parameter)."""
    victim, peer, done, direction = _victim(role)
    got = feed(victim, forger(done, direction).seal(ContentType.KEY_UPDATE, content))
    assert_ended(victim, got, code, "key_update" if code == A.DECODE_ERROR else "request_update")
    assert_record_alert(victim, peer, code)


@pytest.mark.parametrize("role", ROLES)
def test_bad_alert_record(role: str) -> None:
    """An alert record whose content does not parse is decode_error."""
    victim, peer, done, direction = _victim(role)
    got = feed(victim, forger(done, direction).seal(ContentType.ALERT, b"\x28"))
    assert_ended(victim, got, A.DECODE_ERROR, "ALERT")
    assert_record_alert(victim, peer, A.DECODE_ERROR)


# ====================================================================== §7 alerts


@pytest.mark.parametrize("code", [A.INTERNAL_ERROR, A.BAD_RECORD_MAC, 99], ids=["80", "20", "99"])
def test_fatal_alert_record_received(code: int) -> None:
    """§7: the receiver of a fatal alert closes without answering."""
    client, _, done = connected()
    got = feed(client, forger(done).seal(ContentType.ALERT, Alert(code, "bye").encode()))
    assert got.error is None
    assert got.events[0] == AlertReceived(code, "bye")
    assert isinstance(got.events[1], ConnectionClosed) and not got.events[1].clean
    assert len(got.events) == 2
    assert client.data_to_send() == b""
    assert client.state is State.ERROR
    with pytest.raises(LocalProtocolError):
        client.send_data(b"x")
    # and it stays over: later bytes are ignored
    assert feed(client, forger(done).seal(ContentType.APPLICATION_DATA, b"x")).events == []


@pytest.mark.parametrize("role", ["server", "client"])
def test_fatal_plaintext_alert_during_handshake(role: str) -> None:
    """§7: the same before the handshake, for a plaintext ALERT."""
    conn = fresh(role)
    got = feed(conn, alert_frame(A.HANDSHAKE_FAILURE, "no"))
    assert got.error is None
    assert got.events[0] == AlertReceived(A.HANDSHAKE_FAILURE, "no")
    assert isinstance(got.events[1], ConnectionClosed) and not got.events[1].clean
    assert conn.data_to_send() == b""
    assert conn.state is State.ERROR


@pytest.mark.parametrize("closer", ["server", "client"])
def test_close_notify_is_answered(closer: str) -> None:
    """§7: the receiver of close_notify answers with its own, then both close cleanly."""
    client, server, done = connected()
    a, b = (server, client) if closer == "server" else (client, server)
    a.close()
    sent = a.data_to_send()
    got = feed(b, sent)
    assert got.error is None
    assert got.events == [AlertReceived(A.CLOSE_NOTIFY, ""), ConnectionClosed(True, "")]
    assert b.state is State.CLOSED
    answer = b.data_to_send()
    direction = "c" if b is client else "s"
    assert open_records(answer, done, direction) == [(ContentType.ALERT, Alert(0).encode())]
    back = feed(a, answer)
    assert back.error is None
    assert back.events == [AlertReceived(A.CLOSE_NOTIFY, ""), ConnectionClosed(True, "")]
    assert a.data_to_send() == b"", "close_notify is answered once, not echoed back and forth"
    assert a.state is State.CLOSED


def test_error_state_is_final() -> None:
    """§7: after a fatal error nothing more comes in or goes out, and send_data raises."""
    client, server, done = connected()
    got = feed(client, encode_frame(FrameType.RECORD, b"\x00" * 3))
    assert_ended(client, got, A.DECODE_ERROR)
    client.data_to_send()
    good = forger(done).seal(ContentType.APPLICATION_DATA, b"late")
    assert feed(client, good).events == []
    assert client.state is State.ERROR
    assert client.data_to_send() == b""
    client.close()  # a no-op now: no close_notify after a fatal alert
    assert client.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        client.send_data(b"x")
    assert client.handshake_timeout() is None
    assert server.state is State.CONNECTED
