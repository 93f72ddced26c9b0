"""keystore.trust: tofu, none, pin:HEX, pin:FILE, the known hosts file, and policies in real handshakes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from keystore import (
    KnownHosts,
    NonePolicy,
    PinPolicy,
    TofuPolicy,
    TrustPolicy,
    fingerprint,
    known_hosts_path,
    parse_trust,
    write_private_key,
)
from protocol import (
    AlertCode,
    ClientConfig,
    ClientConnection,
    HandshakeComplete,
    Kex,
    LocalProtocolError,
    ServerConfig,
    ServerConnection,
    ServerIdentity,
    TrustVerdict,
)
from protocol.connection import Connection
from protocol.kex import spki

HOST = "127.0.0.1:9700"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_A = ed25519.Ed25519PrivateKey.generate()
ED_B = ed25519.Ed25519PrivateKey.generate()
FP_A = fingerprint(ED_A)
FP_B = fingerprint(ED_B)


def identity(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> ServerIdentity:
    """What the core hands a trust decision for a dhe server with this key."""
    der = spki(key)
    kind = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ed25519"
    return ServerIdentity(Kex.DHE, der, kind, fingerprint(der), True)


@pytest.fixture
def known(tmp_path: Path) -> Path:
    return tmp_path / "data" / "known_hosts"


def accept(policy: TrustPolicy, ident: ServerIdentity) -> TrustVerdict:
    """What a client does: decide during the handshake, confirm once it completed."""
    verdict = policy.decide(ident)
    if verdict.trusted:
        policy.confirm(ident)
    return verdict


# --------------------------------------------------------------------------- tofu


def test_tofu_first_use_records_and_accepts(known: Path) -> None:
    policy = parse_trust("tofu", HOST, known)
    assert isinstance(policy, TofuPolicy)
    assert policy.name == "tofu"
    assert not policy.allow_anonymous
    assert policy.notes == []
    verdict = policy.decide(identity(ED_A))
    assert verdict == TrustVerdict(True)
    assert not known.exists()  # nothing is recorded before the handshake proves the key
    assert policy.notes == []
    policy.confirm(identity(ED_A))
    assert known.read_text() == f"{HOST} {FP_A}\n"
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    assert len(policy.notes) == 1
    assert policy.notes[0].startswith(f"first use: recorded server key SHA256:{FP_A} for {HOST}")


def test_tofu_same_key_accepts_silently(known: Path) -> None:
    accept(parse_trust("tofu", HOST, known), identity(ED_A))
    again = parse_trust("tofu", HOST, known)
    assert accept(again, identity(ED_A)) == TrustVerdict(True)
    assert again.notes == []
    assert known.read_text() == f"{HOST} {FP_A}\n"


def test_tofu_changed_key_refuses(known: Path) -> None:
    accept(parse_trust("tofu", HOST, known), identity(ED_A))
    policy = parse_trust("tofu", HOST, known)
    verdict = policy.decide(identity(ED_B))
    assert not verdict.trusted
    assert verdict.reason == (
        f"server key changed for {HOST}: possible man in the middle"
        f" (known SHA256:{FP_A}, got SHA256:{FP_B})"
    )
    assert policy.hint == (
        f"if the server's key changed on purpose: kexlab known-hosts forget {HOST}"
        f" (line 1 of {known})"
    )
    assert known.read_text() == f"{HOST} {FP_A}\n"  # the known key is kept


def test_tofu_is_keyed_by_host_and_port(known: Path) -> None:
    accept(parse_trust("tofu", HOST, known), identity(ED_A))
    other = parse_trust("tofu", "127.0.0.1:9701", known)
    assert accept(other, identity(ED_B)).trusted
    assert KnownHosts(known).entries() == {HOST: FP_A, "127.0.0.1:9701": FP_B}


def test_tofu_unreadable_known_hosts_refuses(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_bytes(b"\xff\xfe not utf-8")
    verdict = parse_trust("tofu", HOST, known).decide(identity(ED_A))
    assert not verdict.trusted
    assert "cannot read known hosts file" in verdict.reason


# --------------------------------------------------------------------------- none


def test_none_accepts_anything_and_warns(known: Path) -> None:
    policy = parse_trust("none", HOST, known)
    assert isinstance(policy, NonePolicy)
    assert policy.allow_anonymous
    assert policy.decide(identity(ED_A)).trusted
    assert policy.decide(identity(RSA_KEY)).trusted
    assert len(policy.notes) == 1
    assert "nothing authenticates the server" in policy.notes[0]
    assert policy.notes[0].startswith("warning:")
    assert not known.exists()  # none records nothing


# --------------------------------------------------------------------------- pin


@pytest.mark.parametrize(
    "spec",
    [f"pin:{FP_A}", f"pin:{FP_A.upper()}", f"pin:SHA256:{FP_A}"],
    ids=["lower", "upper", "prefixed"],
)
def test_pin_hex_match_and_mismatch(known: Path, spec: str) -> None:
    policy = parse_trust(spec, HOST, known)
    assert isinstance(policy, PinPolicy)
    assert not policy.allow_anonymous
    assert policy.decide(identity(ED_A)) == TrustVerdict(True)
    verdict = policy.decide(identity(ED_B))
    assert not verdict.trusted
    assert verdict.reason == f"server key SHA256:{FP_B} does not match the pinned SHA256:{FP_A}"
    assert not known.exists()


def test_pin_file_match_and_mismatch(tmp_path: Path, known: Path) -> None:
    _, pub = write_private_key(ED_A, tmp_path / "server.pem")
    policy = parse_trust(f"pin:{pub}", HOST, known)
    assert policy.decide(identity(ED_A)).trusted
    verdict = policy.decide(identity(ED_B))
    assert not verdict.trusted
    assert FP_A in verdict.reason and FP_B in verdict.reason
    assert f"(from {pub})" in verdict.reason


def test_pin_file_rsa(tmp_path: Path, known: Path) -> None:
    _, pub = write_private_key(RSA_KEY, tmp_path / "rsa.pem")
    assert parse_trust(f"pin:{pub}", HOST, known).decide(identity(RSA_KEY)).trusted


def test_pin_file_that_is_a_private_key(tmp_path: Path, known: Path) -> None:
    priv, _ = write_private_key(ED_A, tmp_path / "server.pem")
    with pytest.raises(ValueError, match=r"is a private key; give its public key"):
        parse_trust(f"pin:{priv}", HOST, known)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "unknown trust policy ''"),
        (
            "trust-me",
            "unknown trust policy 'trust-me': use tofu, none, pin:SHA256HEX, pin:FILE or mqtt",
        ),
        ("TOFU", "unknown trust policy"),
        ("pin", "unknown trust policy"),
        ("pin:", "pin: needs the server key's SHA-256"),
        ("pin:abcd", "a pin needs all 64 hex digits of the SHA-256, got 4"),
        (f"pin:{'a' * 63}", "got 63"),
        ("pin:/no/such/file.pub", "is neither a SHA-256 .* nor an existing public key file"),
        ("mqtt", "trust 'mqtt' needs the MQTT out-of-band channel"),
    ],
)
def test_bad_specs(known: Path, spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_trust(spec, HOST, known)


def test_policy_is_callable_as_trust_decision() -> None:
    policy = PinPolicy(FP_A)
    assert policy(identity(ED_A)).trusted
    with pytest.raises(NotImplementedError):
        TrustPolicy().decide(identity(ED_A))


# --------------------------------------------------------------------------- known hosts file


def test_known_hosts_file_format(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    original = (
        "# kexlab known hosts\n\n"
        f"a:1 {FP_A}  # the lab server, pinned by hand\n"
        f"b:2 SHA256:{FP_B.upper()}\n"
        f"a:1 {FP_B}\n"  # two keys for one host: either is accepted, get() gives the last
    )
    path.write_text(original)
    hosts = KnownHosts(path)
    assert hosts.problems() == []
    assert [line.sha256 for line in hosts.keys("a:1")] == [FP_A, FP_B]
    assert hosts.get("a:1") == FP_B
    assert hosts.get("b:2") == FP_B
    assert hosts.get("c:3") is None
    hosts.add("c:3", FP_A.upper())
    assert hosts.get("c:3") == FP_A
    # Every line it did not write is still there, byte for byte; the new pin comes last.
    assert path.read_text() == original + f"c:3 {FP_A}\n"
    assert hosts.remove("a:1") == 2
    assert hosts.remove("a:1") == 0
    assert hosts.entries() == {"b:2": FP_B, "c:3": FP_A}
    assert path.read_text() == f"# kexlab known hosts\n\nb:2 SHA256:{FP_B.upper()}\nc:3 {FP_A}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_hosts"]  # no temp files left


def test_known_hosts_missing_file_and_bad_host(tmp_path: Path) -> None:
    hosts = KnownHosts(tmp_path / "none")
    assert hosts.entries() == {}
    assert hosts.get(HOST) is None
    with pytest.raises(ValueError, match="bad host:port"):
        hosts.add("a b:1", FP_A)
    with pytest.raises(ValueError, match="bad host:port"):
        hosts.add("", FP_A)


# --------------------------------------------------------------------------- with the core


def _handshake(
    policy: TrustPolicy, sign_key: ed25519.Ed25519PrivateKey | None, kex: Kex = Kex.DHE
) -> list[object]:
    """One in-memory handshake with ``policy`` as the client's trust; the client's events."""
    client = ClientConnection(
        ClientConfig(kex=kex, trust=policy.decide, allow_anonymous=policy.allow_anonymous)
    )
    server = ServerConnection(ServerConfig(rsa_key=RSA_KEY, sign_key=sign_key))
    client.start()
    events: list[object] = []
    for _ in range(6):
        pairs: tuple[tuple[Connection, Connection], ...] = ((client, server), (server, client))
        for src, dst in pairs:
            data = src.data_to_send()
            if data:
                dst.receive_data(data)
            try:
                while (ev := dst.next_event()) is not None:
                    if dst is client:
                        events.append(ev)
                    if isinstance(ev, HandshakeComplete) and dst is client:
                        assert client.server_identity is not None or ev.server_key == b""
                        if client.server_identity is not None:
                            policy.confirm(client.server_identity)
            except LocalProtocolError as exc:
                assert dst is client  # only the client refuses here
                events.append(exc)
    return events


def test_core_tofu_then_changed_key_is_bad_certificate(known: Path) -> None:
    first = _handshake(parse_trust("tofu", HOST, known), ED_A)
    assert any(isinstance(e, HandshakeComplete) for e in first)
    second = _handshake(parse_trust("tofu", HOST, known), ED_B)
    errors = [e for e in second if isinstance(e, LocalProtocolError)]
    assert len(errors) == 1
    assert errors[0].alert is AlertCode.BAD_CERTIFICATE
    assert "possible man in the middle" in errors[0].reason
    assert not any(isinstance(e, HandshakeComplete) for e in second)


def test_core_tofu_rsa_records_transport_key(known: Path) -> None:
    events = _handshake(parse_trust("tofu", HOST, known), None, Kex.RSA)
    assert any(isinstance(e, HandshakeComplete) for e in events)
    assert KnownHosts(known).get(HOST) == fingerprint(RSA_KEY)


def test_core_none_accepts_anonymous_dhe(known: Path) -> None:
    events = _handshake(parse_trust("none", HOST, known), None)
    done = [e for e in events if isinstance(e, HandshakeComplete)]
    assert len(done) == 1
    assert done[0].server_key == b""


@pytest.mark.parametrize("spec", ["tofu", f"pin:{FP_A}"])
def test_core_authenticating_policies_refuse_anonymous_dhe(known: Path, spec: str) -> None:
    events = _handshake(parse_trust(spec, HOST, known), None)
    errors = [e for e in events if isinstance(e, LocalProtocolError)]
    assert [e.alert for e in errors] == [AlertCode.BAD_CERTIFICATE]
    assert not known.exists()


def test_core_pin_mismatch_refuses(known: Path) -> None:
    events = _handshake(parse_trust(f"pin:{FP_A}", HOST, known), ED_B)
    errors = [e for e in events if isinstance(e, LocalProtocolError)]
    assert len(errors) == 1
    assert errors[0].alert is AlertCode.BAD_CERTIFICATE
    assert "does not match the pinned" in errors[0].reason


def test_known_hosts_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEXLAB_HOME", str(tmp_path / "home"))
    assert known_hosts_path() == tmp_path / "home" / "known_hosts"
    assert known_hosts_path(tmp_path) == tmp_path / "known_hosts"
