"""Long-term keys on disk: generate, write (0600), load like OpenSSH does, fingerprint.

A private key readable by anyone but its owner is refused, as ``ssh`` refuses one:
a lab that teaches key exchange should not teach careless key files.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from protocol import KexlabError
from protocol.kex import ServerPrivateKey, ServerPublicKey, sha256_hex, spki

KeyKind = Literal["rsa", "ed25519"]
PrivateKey = ServerPrivateKey
PublicKey = ServerPublicKey
RSA_BITS = (2048, 3072, 4096)
SERVER_RSA_NAME = "server-rsa.pem"
# No key file is anywhere near this size; the cap keeps a mistaken path (a log, a device)
# from being read whole.
MAX_KEY_FILE = 1 << 20


class KeyFileError(KexlabError):
    """A key file that cannot be used; ``str(exc)`` is one line for the user."""


def data_dir() -> Path:
    """``$KEXLAB_HOME``, else ``~/.local/share/kexlab`` (not created here)."""
    home = os.environ.get("KEXLAB_HOME")
    if home:
        return Path(home).expanduser()
    return Path.home() / ".local" / "share" / "kexlab"


def ensure_private_dir(directory: Path) -> Path:
    """Create ``directory`` (and parents) with mode 0700 if missing; return it."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(f"cannot create {directory}: {exc.strerror or exc}") from None
    return directory


def generate_private_key(kind: KeyKind, bits: int = 2048) -> PrivateKey:
    """A fresh RSA (2048/3072/4096 bits, e = 65537) or Ed25519 private key."""
    if kind == "rsa":
        if bits not in RSA_BITS:
            raise ValueError(f"RSA key size must be 2048, 3072 or 4096 bits, not {bits}")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r}: use rsa or ed25519")


def private_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PrivateKey | PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of a key (or of a private key's public half)."""
    der = spki(key)
    pub = serialization.load_der_public_key(der)
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pub_path_for(path: Path) -> Path:
    """``FILE`` -> ``FILE.pub``."""
    return path.with_name(path.name + ".pub")


def _write_file(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write via a temporary file created 0600 in the same folder, then link or rename it.

    mkstemp creates the file 0600, so a private key is never readable by others, not even
    for an instant; ``os.link`` fails if the target exists, so two processes creating the
    same key cannot both win, and a reader never sees a half-written key.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_private_key(key: PrivateKey, path: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write PKCS#8 PEM (0600) to ``path`` and SPKI PEM to ``path.pub``; return both paths."""
    path = Path(path)
    pub = pub_path_for(path)
    if not overwrite:
        for p in (path, pub):
            if p.exists() or p.is_symlink():
                raise KeyFileError(f"{p} already exists; not overwriting it")
    if not path.parent.is_dir():
        raise KeyFileError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        _write_file(path, private_pem(key), 0o600, overwrite)
        _write_file(pub, public_pem(key), 0o644, overwrite)
    except FileExistsError as exc:
        raise KeyFileError(f"{exc.filename2 or path} already exists; not overwriting it") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path, pub


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"{what} {path} is not a regular file")
    if info.st_size > MAX_KEY_FILE:
        raise KeyFileError(f"{path} is {info.st_size} bytes: too large to be a key file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def check_permissions(path: Path) -> None:
    """Refuse a private key file that group or others may access, with OpenSSH's wording."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"Permissions {mode:04o} for '{path}' are too open: run chmod 600 {shlex.quote(str(path))}"
        )


def _key_type_name(key: object) -> str:
    name = type(key).__name__.removeprefix("_")
    for suffix in ("PrivateKey", "PublicKey"):
        name = name.removesuffix(suffix)
    return name or "unknown"


def _check_kind(key: object, path: Path) -> None:
    if not isinstance(
        key,
        rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey,
    ):
        raise KeyFileError(
            f"{path} holds a {_key_type_name(key)} key; kexlab uses RSA or Ed25519 keys"
        )


def load_private_key(path: Path, *, own: bool = True) -> PrivateKey:
    """An RSA or Ed25519 private key from PKCS#8 or traditional PEM, OpenSSH or DER.

    ``own``: a key this program uses as its own must be private to its user (0600, as
    ssh insists); a key found elsewhere (``kexlab decrypt --rsa-key`` of a leaked key)
    is read whatever its mode.
    """
    path = Path(path)
    data = _read_key_file(path, "private key")
    if own:
        check_permissions(path)
    try:
        if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
            key: object = serialization.load_ssh_private_key(data, password=None)
        elif data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        # cryptography raises TypeError for an encrypted key given no password.
        raise KeyFileError(
            f"{path} is encrypted; kexlab needs an unencrypted key "
            f"(openssl pkey -in {shlex.quote(str(path))} -out NEW.pem)"
        ) from None
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{path} holds a key type kexlab does not support") from None
    except ValueError:
        raise KeyFileError(
            f"{path} is not a private key in PEM (PKCS#8 or traditional), OpenSSH or DER form"
        ) from None
    _check_kind(key, path)
    assert isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey)
    return key


def load_rsa_private_key(path: Path) -> rsa.RSAPrivateKey:
    """``load_private_key``, refusing any key but RSA (``--rsa-key``: RSA-OAEP transport)."""
    key = load_private_key(path)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path} is not an RSA key (--rsa-key needs RSA >= 2048 bits)")
    return key


def load_public_key(path: Path) -> PublicKey:
    """An RSA or Ed25519 public key from SPKI PEM or DER (also PKCS#1 PEM and OpenSSH)."""
    path = Path(path)
    data = _read_key_file(path, "public key")
    try:
        if data.lstrip().startswith((b"ssh-rsa ", b"ssh-ed25519 ")):
            key: object = serialization.load_ssh_public_key(data.strip())
        elif data.lstrip().startswith(b"-----BEGIN"):
            if b"PRIVATE KEY-----" in data:
                raise KeyFileError(
                    f"{path} is a private key; give its public key ({pub_path_for(path).name})"
                )
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except UnsupportedAlgorithm:
        raise KeyFileError(f"{path} holds a key type kexlab does not support") from None
    except ValueError:
        raise KeyFileError(f"{path} is not a public key in SPKI PEM or DER form") from None
    _check_kind(key, path)
    assert isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
    return key


def fingerprint(key_or_der: PrivateKey | PublicKey | bytes) -> str:
    """Hex SHA-256 of the DER SPKI (``HandshakeComplete.server_key_sha256``)."""
    der = bytes(key_or_der) if isinstance(key_or_der, bytes | bytearray) else spki(key_or_der)
    return sha256_hex(der)


def short_fingerprint(sha256hex: str) -> str:
    """Display form: ``SHA256:`` and the first 16 hex digits."""
    return f"SHA256:{sha256hex[:16]}…"


def long_fingerprint(sha256hex: str) -> str:
    """The full form people compare and pin: ``SHA256:`` and all 64 hex digits."""
    return f"SHA256:{sha256hex}"


@dataclass(frozen=True)
class ServerKeys:
    """A server's keys in its data directory."""

    rsa_key: rsa.RSAPrivateKey
    rsa_path: Path
    rsa_pub_path: Path | None = None
    created: bool = False
    """True when this call generated the key (first run)."""

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the RSA key's DER SPKI."""
        return fingerprint(self.rsa_key)


def ensure_server_keys(directory: Path) -> ServerKeys:
    """Load ``server-rsa.pem`` from ``directory``, creating it (RSA-2048) on first run."""
    directory = ensure_private_dir(Path(directory))
    path = directory / SERVER_RSA_NAME
    pub = pub_path_for(path)
    created = False
    if not path.exists():
        try:
            write_private_key(generate_private_key("rsa", 2048), path)
            created = True
        except KeyFileError:
            if not path.exists():  # lost a race to another process: use its key
                raise
    key = load_private_key(path)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{path} holds an Ed25519 key; the server's transport key is RSA")
    if not pub.exists():
        with contextlib.suppress(OSError):
            _write_file(pub, public_pem(key), 0o644, overwrite=False)
    return ServerKeys(key, path, pub if pub.exists() else None, created)
