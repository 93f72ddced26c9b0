"""keystore.keys: generation, 0600 files, OpenSSH-style permission refusal, openssl interop, fingerprints."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from external_tools import require_tool

import keystore.keys as keys_module
from keystore import (
    KeyFileError,
    data_dir,
    ensure_server_keys,
    fingerprint,
    generate_private_key,
    load_private_key,
    load_public_key,
    short_fingerprint,
    write_private_key,
)
from keystore.keys import RSA_BITS, SERVER_RSA_NAME, long_fingerprint
from protocol import (
    ClientConfig,
    ClientConnection,
    HandshakeComplete,
    Kex,
    ServerConfig,
    ServerConnection,
    TrustVerdict,
)
from protocol.connection import Connection

# RSA generation is the slow part: one key per module, reused where the key itself does not matter.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def openssl(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run openssl (a missing openssl: see external_tools)."""
    return subprocess.run(
        [require_tool("openssl"), *args], capture_output=True, timeout=60, check=False
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def spki_sha256(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


# --------------------------------------------------------------------------- data_dir


def test_data_dir_honours_kexlab_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KEXLAB_HOME", str(tmp_path / "lab"))
    assert data_dir() == tmp_path / "lab"
    assert not (tmp_path / "lab").exists()  # created by callers that write, not here


def test_data_dir_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KEXLAB_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_dir() == tmp_path / ".local" / "share" / "kexlab"


# --------------------------------------------------------------------------- generate


@pytest.mark.parametrize("bits", [2048, 3072])
def test_generate_rsa_sizes(bits: int) -> None:
    key = generate_private_key("rsa", bits)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == bits
    assert key.private_numbers().public_numbers.e == 65537


def test_generate_ed25519() -> None:
    assert isinstance(generate_private_key("ed25519"), ed25519.Ed25519PrivateKey)


@pytest.mark.parametrize("bits", [1024, 1536, 2047, 8192, 0])
def test_generate_rsa_refuses_other_sizes(bits: int) -> None:
    assert bits not in RSA_BITS
    with pytest.raises(ValueError, match="2048, 3072 or 4096"):
        generate_private_key("rsa", bits)


def test_generate_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown key type"):
        generate_private_key("dsa", 2048)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- write


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_write_modes_and_formats(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    priv, pub = write_private_key(key, tmp_path / "k.pem")
    assert (priv, pub) == (tmp_path / "k.pem", tmp_path / "k.pem.pub")
    assert mode(priv) == 0o600
    assert mode(pub) == 0o644
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----\n")  # SPKI
    assert fingerprint(load_private_key(priv)) == spki_sha256(key)
    assert fingerprint(load_public_key(pub)) == spki_sha256(key)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_write_is_0600_even_with_umask_zero(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        priv, _ = write_private_key(ED_KEY, tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert mode(priv) == 0o600


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    priv, pub = write_private_key(ED_KEY, tmp_path / "k.pem")
    before = priv.read_bytes(), pub.read_bytes()
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(KeyFileError, match=r"k\.pem already exists; not overwriting it"):
        write_private_key(other, priv)
    assert (priv.read_bytes(), pub.read_bytes()) == before


def test_write_refuses_when_only_pub_exists(tmp_path: Path) -> None:
    (tmp_path / "k.pem.pub").write_text("old")
    with pytest.raises(KeyFileError, match=r"k\.pem\.pub already exists"):
        write_private_key(ED_KEY, tmp_path / "k.pem")
    assert not (tmp_path / "k.pem").exists()


def test_write_overwrite_replaces_and_tightens_mode(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("old")
    path.chmod(0o644)
    write_private_key(ED_KEY, path, overwrite=True)
    assert mode(path) == 0o600
    assert fingerprint(load_private_key(path)) == spki_sha256(ED_KEY)


def test_write_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        write_private_key(ED_KEY, tmp_path / "nope" / "k.pem")


# --------------------------------------------------------------------------- load


@pytest.mark.parametrize("perm", [0o644, 0o640, 0o604, 0o610, 0o700 | 0o001])
def test_load_refuses_open_permissions(tmp_path: Path, perm: int) -> None:
    priv, _ = write_private_key(ED_KEY, tmp_path / "x.pem")
    priv.chmod(perm)
    with pytest.raises(KeyFileError) as info:
        load_private_key(priv)
    assert str(info.value) == (
        f"Permissions {perm:04o} for '{priv}' are too open: run chmod 600 {priv}"
    )


def test_load_refusal_quotes_path_for_the_shell(tmp_path: Path) -> None:
    priv, _ = write_private_key(ED_KEY, tmp_path / "my key.pem")
    priv.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"run chmod 600 '.*/my key\.pem'$"):
        load_private_key(priv)


@pytest.mark.parametrize("perm", [0o600, 0o400])
def test_load_accepts_owner_only(tmp_path: Path, perm: int) -> None:
    priv, _ = write_private_key(ED_KEY, tmp_path / "x.pem")
    priv.chmod(perm)
    assert fingerprint(load_private_key(priv)) == spki_sha256(ED_KEY)


def test_load_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"private key .*nope\.pem does not exist"):
        load_private_key(tmp_path / "nope.pem")


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_private_key(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello",
        b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
        bytes(300),
    ],
)
def test_load_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "g.pem"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="is not a private key"):
        load_private_key(path)


def test_load_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "enc.pem"
    path.write_bytes(
        ED_KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="is encrypted; kexlab needs an unencrypted key"):
        load_private_key(path)


def test_load_unsupported_type(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="kexlab uses RSA or Ed25519 keys"):
        load_private_key(path)
    pub = tmp_path / "ec.pub"
    pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="kexlab uses RSA or Ed25519 keys"):
        load_public_key(pub)


@pytest.mark.parametrize(
    ("encoding", "fmt"),
    [
        (serialization.Encoding.DER, serialization.PrivateFormat.PKCS8),
        (serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL),
        (serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL),
        (serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH),
    ],
    ids=["pkcs8-der", "traditional-pem", "traditional-der", "openssh"],
)
def test_load_other_private_formats(
    tmp_path: Path, encoding: serialization.Encoding, fmt: serialization.PrivateFormat
) -> None:
    path = tmp_path / "k"
    path.write_bytes(RSA_KEY.private_bytes(encoding, fmt, serialization.NoEncryption()))
    path.chmod(0o600)
    assert fingerprint(load_private_key(path)) == spki_sha256(RSA_KEY)


@pytest.mark.parametrize(
    ("encoding", "fmt"),
    [
        (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        (serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
        (serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
    ],
    ids=["spki-der", "pkcs1-pem", "openssh"],
)
def test_load_other_public_formats(
    tmp_path: Path, encoding: serialization.Encoding, fmt: serialization.PublicFormat
) -> None:
    path = tmp_path / "k.pub"
    path.write_bytes(RSA_KEY.public_key().public_bytes(encoding, fmt))
    assert fingerprint(load_public_key(path)) == spki_sha256(RSA_KEY)


def test_load_public_key_errors(tmp_path: Path) -> None:
    priv, _ = write_private_key(ED_KEY, tmp_path / "k.pem")
    with pytest.raises(
        KeyFileError, match=r"is a private key; give its public key \(k\.pem\.pub\)"
    ):
        load_public_key(priv)
    junk = tmp_path / "junk.pub"
    junk.write_bytes(b"\x30\x03\x02\x01\x00")
    with pytest.raises(KeyFileError, match="is not a public key"):
        load_public_key(junk)
    with pytest.raises(KeyFileError, match="does not exist"):
        load_public_key(tmp_path / "missing.pub")


# --------------------------------------------------------------------------- openssl interop


@pytest.mark.parametrize(
    "genargs",
    [["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], ["-algorithm", "ed25519"]],
    ids=["rsa", "ed25519"],
)
def test_openssl_genpkey_keys_load(tmp_path: Path, genargs: list[str]) -> None:
    path = tmp_path / "o.pem"
    made = openssl("genpkey", *genargs, "-out", str(path))
    assert made.returncode == 0, made.stderr
    path.chmod(0o600)
    key = load_private_key(path)
    want = rsa.RSAPrivateKey if "RSA" in genargs else ed25519.Ed25519PrivateKey
    assert isinstance(key, want)
    der = openssl("pkey", "-in", str(path), "-pubout", "-outform", "DER")
    assert der.returncode == 0
    assert fingerprint(key) == hashlib.sha256(der.stdout).hexdigest()


def test_openssl_traditional_rsa_loads(tmp_path: Path) -> None:
    src = tmp_path / "o.pem"
    assert openssl("genpkey", "-algorithm", "RSA", "-out", str(src)).returncode == 0
    trad = tmp_path / "t.pem"
    assert openssl("rsa", "-in", str(src), "-traditional", "-out", str(trad)).returncode == 0
    assert trad.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    trad.chmod(0o600)
    assert isinstance(load_private_key(trad), rsa.RSAPrivateKey)


@pytest.mark.parametrize("key", [RSA_KEY, ED_KEY], ids=["rsa", "ed25519"])
def test_our_files_read_by_openssl(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    priv, pub = write_private_key(key, tmp_path / "ours.pem")
    checked = openssl("pkey", "-in", str(priv), "-noout")
    assert checked.returncode == 0, checked.stderr
    pub_read = openssl("pkey", "-pubin", "-in", str(pub))
    assert pub_read.returncode == 0, pub_read.stderr
    assert pub_read.stdout == pub.read_bytes()
    der = openssl("pkey", "-pubin", "-in", str(pub), "-outform", "DER")
    assert hashlib.sha256(der.stdout).hexdigest() == fingerprint(key)


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_of_key_public_key_and_der() -> None:
    der = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    want = hashlib.sha256(der).hexdigest()
    assert fingerprint(RSA_KEY) == fingerprint(RSA_KEY.public_key()) == fingerprint(der) == want


def test_fingerprint_displays() -> None:
    fp = "ab12cd34ef567890" + "0" * 48
    assert short_fingerprint(fp) == "SHA256:ab12cd34ef567890…"
    assert long_fingerprint(fp) == "SHA256:" + fp


def _pump(client: Connection, server: Connection) -> list[object]:
    events: list[object] = []
    for _ in range(10):
        for a, b in ((client, server), (server, client)):
            data = a.data_to_send()
            if data:
                b.receive_data(data)
            while (ev := b.next_event()) is not None:
                events.append(ev)
    return events


@pytest.mark.parametrize("kex", [Kex.RSA, Kex.DHE])
def test_fingerprint_equals_handshake_server_key_sha256(kex: Kex) -> None:
    sign_key = ED_KEY if kex is Kex.DHE else None
    client = ClientConnection(ClientConfig(kex=kex, trust=lambda _i: TrustVerdict(True)))
    server = ServerConnection(ServerConfig(rsa_key=RSA_KEY, sign_key=sign_key))
    client.start()
    done = [e for e in _pump(client, server) if isinstance(e, HandshakeComplete)]
    assert len(done) == 2
    expected = fingerprint(sign_key if sign_key is not None else RSA_KEY)
    assert {d.server_key_sha256 for d in done} == {expected}


# --------------------------------------------------------------------------- server keys


def test_ensure_server_keys_creates_then_reuses(tmp_path: Path) -> None:
    home = tmp_path / "home" / "kexlab"
    first = ensure_server_keys(home)
    assert first.created
    assert first.rsa_path == home / SERVER_RSA_NAME
    assert first.rsa_key.key_size == 2048
    assert mode(home) == 0o700
    assert mode(first.rsa_path) == 0o600
    assert first.rsa_pub_path == home / (SERVER_RSA_NAME + ".pub")
    assert fingerprint(load_public_key(first.rsa_pub_path)) == first.fingerprint
    second = ensure_server_keys(home)
    assert not second.created
    assert second.fingerprint == first.fingerprint


def test_ensure_server_keys_restores_missing_pub(tmp_path: Path) -> None:
    first = ensure_server_keys(tmp_path)
    assert first.rsa_pub_path is not None
    first.rsa_pub_path.unlink()
    again = ensure_server_keys(tmp_path)
    assert again.rsa_pub_path is not None
    assert fingerprint(load_public_key(again.rsa_pub_path)) == first.fingerprint


def test_ensure_server_keys_refuses_open_key(tmp_path: Path) -> None:
    first = ensure_server_keys(tmp_path)
    first.rsa_path.chmod(0o644)
    with pytest.raises(KeyFileError, match="are too open"):
        ensure_server_keys(tmp_path)


def test_ensure_server_keys_refuses_ed25519_in_rsa_slot(tmp_path: Path) -> None:
    write_private_key(ED_KEY, tmp_path / SERVER_RSA_NAME)
    with pytest.raises(KeyFileError, match="transport key is RSA"):
        ensure_server_keys(tmp_path)


def test_ensure_private_dir_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KeyFileError, match="cannot create"):
        ensure_server_keys(blocker / "sub")


# --------------------------------------------------------------------------- odd files and races


def test_load_refuses_huge_file(tmp_path: Path) -> None:
    path = tmp_path / "huge.pem"
    with path.open("wb") as fh:
        fh.truncate(2 << 20)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="too large to be a key file"):
        load_private_key(path)


def test_load_through_a_file_used_as_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KeyFileError, match="cannot read private key"):
        load_private_key(blocker / "k.pem")


def test_write_lost_race_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = keys_module._write_file

    def racing(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
        path.write_bytes(b"another process was faster")
        real(path, data, mode, overwrite)

    monkeypatch.setattr(keys_module, "_write_file", racing)
    with pytest.raises(KeyFileError, match=r"k\.pem already exists; not overwriting it"):
        write_private_key(ED_KEY, tmp_path / "k.pem")
    assert (tmp_path / "k.pem").read_bytes() == b"another process was faster"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


def test_write_os_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(keys_module, "_write_file", full)
    with pytest.raises(KeyFileError, match=r"cannot write .*k\.pem: No space left on device"):
        write_private_key(ED_KEY, tmp_path / "k.pem")


def test_ensure_server_keys_uses_the_race_winners_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = keys_module.write_private_key

    def other_process_wins(key: object, path: Path, **_kw: object) -> tuple[Path, Path]:
        real(RSA_KEY, path)
        raise KeyFileError(f"{path} already exists; not overwriting it")

    monkeypatch.setattr(keys_module, "write_private_key", other_process_wins)
    keys = ensure_server_keys(tmp_path)
    assert not keys.created
    assert keys.fingerprint == fingerprint(RSA_KEY)


def test_ensure_server_keys_reraises_real_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kw: object) -> tuple[Path, Path]:
        raise KeyFileError("cannot write: disk on fire")

    monkeypatch.setattr(keys_module, "write_private_key", broken)
    with pytest.raises(KeyFileError, match="disk on fire"):
        ensure_server_keys(tmp_path)
