"""Throwaway keys for one bench run: kexlab's server keys and self-signed TLS certificates of the same types."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from protocol import sha256_hex
from protocol.kex import ServerPrivateKey, spki

from .scenarios import TLS_HOSTNAME

KEY_TYPES = ("rsa", "ed25519", "p256")
PSK_FILE = "psk.bin"

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def key_path(directory: Path, kind: str) -> Path:
    """PKCS#8 PEM private key of one type."""
    return directory / f"{kind}.key.pem"


def cert_path(directory: Path, kind: str) -> Path:
    """Self-signed certificate (PEM) for the key of one type."""
    return directory / f"{kind}.crt.pem"


def _new_key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _self_signed(key: PrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_HOSTNAME)])
    now = datetime.datetime.now(datetime.UTC)
    alt = x509.SubjectAlternativeName(
        [x509.DNSName(TLS_HOSTNAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    # Ed25519 signs the message itself: cryptography wants no hash algorithm for it.
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def generate(directory: Path) -> None:
    """Write an RSA-2048, an Ed25519 and a P-256 key with self-signed certificates, and a PSK."""
    for kind in KEY_TYPES:
        key = _new_key(kind)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = key_path(directory, kind)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        cert = _self_signed(key)
        cert_path(directory, kind).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(directory / PSK_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(os.urandom(32))


def load_server_key(directory: Path, kind: str) -> ServerPrivateKey:
    """kexlab's server key of one type (rsa or ed25519)."""
    key = serialization.load_pem_private_key(key_path(directory, kind).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey)
    return key


def fingerprint(directory: Path, kind: str) -> str:
    """Hex SHA-256 of the DER SPKI of a kexlab server key (what the bench client pins)."""
    return sha256_hex(spki(load_server_key(directory, kind)))


def load_psk(directory: Path) -> bytes:
    """The run's pre-shared key."""
    return (directory / PSK_FILE).read_bytes()
