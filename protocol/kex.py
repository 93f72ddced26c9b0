"""Key exchange primitives (docs/protocol.md §2, §3, §5): DH groups, RSA-OAEP transport, signatures.

Every primitive is ``cryptography``'s; this module only chooses parameters, encodes
shares as §2 says, and translates library exceptions into the protocol's alerts at
the boundary. Adding a group is one class (if needed) and one line in ``GROUPS``.

About 400 lines, most of them the two RFC 7919 primes and three short sections (groups,
RSA transport, signatures) that share the same key types: split, each would import the
others.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, ed25519, padding, rsa, x25519
from cryptography.utils import CryptographyDeprecationWarning

from .alerts import AlertCode, LocalProtocolError, RemoteProtocolError
from .constants import MIN_RSA_BITS, PREMASTER_LEN, Group, SignatureScheme

RandomSource = Callable[[int], bytes]
"""Returns n bytes from a CSPRNG; injectable so handshakes replay byte for byte."""


# --------------------------------------------------------------------------- DH groups


class DHPrivate(ABC):
    """One ephemeral key pair of a group, generated per connection and never reused (§5)."""

    public: bytes

    @abstractmethod
    def exchange(self, peer_share: bytes) -> bytes:
        """The raw DH output with the peer's share, after validating it (§2)."""


class DHGroup(ABC):
    """A §2 group: share encoding and key generation from injected randomness."""

    group: Group
    share_len: int

    @property
    def available(self) -> bool:
        """Whether the installed ``cryptography`` can do this group."""
        return True

    @abstractmethod
    def generate(self, rng: RandomSource) -> DHPrivate:
        """A fresh key pair whose private value comes from ``rng``."""

    def check_share_length(self, share: bytes) -> None:
        """§3: a key_share of the wrong length is illegal_parameter."""
        if len(share) != self.share_len:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER,
                f"{self.group.name.lower()} key_share must be {self.share_len} bytes, got {len(share)}",
            )


class _X25519Private(DHPrivate):
    def __init__(self, key: x25519.X25519PrivateKey) -> None:
        self._key = key
        self.public = key.public_key().public_bytes_raw()

    def exchange(self, peer_share: bytes) -> bytes:
        try:
            return self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_share))
        except ValueError:
            # cryptography refuses the all-zero output (RFC 7748 §6.1 small-order points).
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "x25519 share gives the all-zero secret"
            ) from None


class X25519Group(DHGroup):
    """x25519, 32-byte shares (RFC 7748)."""

    group = Group.X25519
    share_len = 32

    def generate(self, rng: RandomSource) -> DHPrivate:
        return _X25519Private(x25519.X25519PrivateKey.from_private_bytes(rng(32)))


class _ECPrivate(DHPrivate):
    def __init__(self, key: ec.EllipticCurvePrivateKey, curve: ec.EllipticCurve) -> None:
        self._key = key
        self._curve = curve
        self.public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def exchange(self, peer_share: bytes) -> bytes:
        if peer_share[:1] != b"\x04":
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "EC share is not an uncompressed point"
            )
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, peer_share)
            return self._key.exchange(ec.ECDH(), peer)
        except ValueError:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "EC share is not on the curve"
            ) from None


class ECGroup(DHGroup):
    """NIST curves: uncompressed points; the DH output is the fixed-length x-coordinate."""

    def __init__(self, group: Group, curve: ec.EllipticCurve, order: int) -> None:
        self.group = group
        self._curve = curve
        self._order = order
        self._coord = (curve.key_size + 7) // 8
        self.share_len = 1 + 2 * self._coord

    def generate(self, rng: RandomSource) -> DHPrivate:
        while True:  # rejection sampling keeps the scalar uniform in [1, n-1]
            scalar = int.from_bytes(rng(self._coord), "big")
            if 0 < scalar < self._order:
                return _ECPrivate(ec.derive_private_key(scalar, self._curve), self._curve)


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def _der(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _der_len(len(value)) + value


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_OID_DH_KEY_AGREEMENT = bytes.fromhex("06092a864886f70d010301")  # 1.2.840.113549.1.3.1


@contextlib.contextmanager
def _ffdh_quietly() -> Iterator[None]:
    """cryptography >= 50 deprecates finite-field DH; we keep it on purpose (RFC 7919 groups
    are part of the lesson), so exactly that warning is silenced at each ffdhe call site."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Diffie-Hellman over finite fields",
            category=CryptographyDeprecationWarning,
        )
        yield


class _FFDHPrivate(DHPrivate):
    def __init__(self, key: dh.DHPrivateKey, group: FFDHEGroup) -> None:
        self._key = key
        self._group = group
        self.public = key.public_key().public_numbers().y.to_bytes(group.share_len, "big")

    def exchange(self, peer_share: bytes) -> bytes:
        y = int.from_bytes(peer_share, "big")
        if not 2 <= y <= self._group.p - 2:
            raise RemoteProtocolError(AlertCode.ILLEGAL_PARAMETER, "ffdhe share outside 2..p-2")
        try:
            with _ffdh_quietly():
                peer = dh.DHPublicNumbers(y, self._group.parameter_numbers()).public_key()
                secret = self._key.exchange(peer)
        except ValueError:  # pragma: no cover - the range check above refuses it first
            raise RemoteProtocolError(AlertCode.ILLEGAL_PARAMETER, "ffdhe share rejected") from None
        return secret.rjust(self._group.share_len, b"\x00")


class FFDHEGroup(DHGroup):
    """RFC 7919 finite-field groups, generator 2; shares left-padded to the prime's length.

    The private exponent has ``exponent_bits`` random bits: RFC 7919 §5.2 finds 225 bits
    enough for ffdhe2048 and 275 for ffdhe3072 (what OpenSSL draws), a ninth of the work
    of a full-length one. None draws it at the prime's full length (the test vectors'
    exponents). Either way it is rejection-sampled into 2 .. p-2.
    """

    def __init__(self, group: Group, p_hex: str, exponent_bits: int | None = None) -> None:
        self.group = group
        self.p = int(p_hex, 16)
        self.share_len = (self.p.bit_length() + 7) // 8
        self.exponent_bits = exponent_bits or self.p.bit_length()
        self._draw_len = (self.exponent_bits + 7) // 8
        self._mask = (1 << self.exponent_bits) - 1

    @property
    def available(self) -> bool:
        with _ffdh_quietly():
            return hasattr(dh, "DHParameterNumbers") and hasattr(dh, "DHPublicNumbers")

    def parameter_numbers(self) -> dh.DHParameterNumbers:
        """(p, g=2)."""
        return dh.DHParameterNumbers(self.p, 2)

    def generate(self, rng: RandomSource) -> DHPrivate:
        if not self.available:
            raise LocalProtocolError(
                AlertCode.INTERNAL_ERROR,
                f"{self.group.name.lower()} is unavailable: this cryptography has no finite-field DH",
            )
        while True:
            x = int.from_bytes(rng(self._draw_len), "big") & self._mask
            if 1 < x < self.p - 1:
                break
        # OpenSSL computes g^x mod p when it loads a PKCS#8 key that holds only x, so we
        # never do modular arithmetic of our own: we only wrap x and (p, g) in DER.
        alg = _der(0x30, _OID_DH_KEY_AGREEMENT + _der(0x30, _der_int(self.p) + _der_int(2)))
        pkcs8 = _der(0x30, _der_int(0) + alg + _der(0x04, _der_int(x)))
        try:
            with _ffdh_quietly():
                key = serialization.load_der_private_key(pkcs8, None)
                assert isinstance(key, dh.DHPrivateKey)
                return _FFDHPrivate(key, self)
        except (ValueError, UnsupportedAlgorithm) as exc:  # pragma: no cover - a build without FFDH
            raise LocalProtocolError(
                AlertCode.INTERNAL_ERROR, f"{self.group.name.lower()} is unavailable: {exc}"
            ) from None


FFDHE2048_P = (
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9"
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB"
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
    "886B423861285C97FFFFFFFFFFFFFFFF"
)
FFDHE3072_P = (
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9"
    "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB"
    "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
    "886B4238611FCFDCDE355B3B6519035BBC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C"
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF5CAE82AB9C9DF69EE86D2BC522363A0D"
    "ABC521979B0DEADA1DBF9A42D5C4484E0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF"
)

GROUPS: dict[Group, DHGroup] = {
    Group.X25519: X25519Group(),
    Group.SECP256R1: ECGroup(
        Group.SECP256R1,
        ec.SECP256R1(),
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    Group.SECP384R1: ECGroup(
        Group.SECP384R1,
        ec.SECP384R1(),
        int(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
            16,
        ),
    ),
    Group.FFDHE2048: FFDHEGroup(Group.FFDHE2048, FFDHE2048_P, exponent_bits=225),
    Group.FFDHE3072: FFDHEGroup(Group.FFDHE3072, FFDHE3072_P, exponent_bits=275),
}


def available_groups() -> list[Group]:
    """Groups this installation can use, in table order."""
    return [g for g, impl in GROUPS.items() if impl.available]


# --------------------------------------------------------------------------- RSA transport

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def rsa_wrap(public_key: rsa.RSAPublicKey, premaster: bytes) -> bytes:
    """RSA-OAEP(SHA-256, MGF1-SHA-256, empty label) of the premaster (§3 KEY_TRANSPORT)."""
    try:
        return public_key.encrypt(premaster, _OAEP)
    except ValueError:
        # Some keys parse yet OpenSSL will not encrypt to them (even modulus, over 16384
        # bits): a server_key that cannot be used is bad_certificate (§3), not a crash.
        raise RemoteProtocolError(
            AlertCode.BAD_CERTIFICATE, "RSA server_key cannot be used for encryption"
        ) from None


def rsa_unwrap_strict(private_key: rsa.RSAPrivateKey, encrypted: bytes) -> bytes | None:
    """The 32-byte premaster, or None: for a passive holder of the key, who may say which."""
    try:
        premaster = private_key.decrypt(encrypted, _OAEP)
    except ValueError:
        return None
    return premaster if len(premaster) == PREMASTER_LEN else None


def rsa_unwrap(private_key: rsa.RSAPrivateKey, encrypted: bytes, rng: RandomSource) -> bytes:
    """The premaster, or a random one on any failure (§5), so that a bad ciphertext shows
    only as a FINISHED mismatch: no padding oracle, one code path."""
    fallback = rng(PREMASTER_LEN)
    premaster = rsa_unwrap_strict(private_key, encrypted)
    return premaster if premaster is not None else fallback


# --------------------------------------------------------------------------- server keys

ServerPublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
ServerPrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def spki(key: ServerPublicKey | ServerPrivateKey) -> bytes:
    """DER SubjectPublicKeyInfo of a key (or of a private key's public half)."""
    pub = (
        key.public_key() if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) else key
    )
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 (server key fingerprints)."""
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize().hex()


def load_server_key(der: bytes, *, rsa_only: bool) -> ServerPublicKey:
    """Parse SERVER_HELLO.server_key; anything unusable is bad_certificate (§3)."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise RemoteProtocolError(
            AlertCode.BAD_CERTIFICATE, "server_key does not parse as DER SPKI"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise RemoteProtocolError(
                AlertCode.BAD_CERTIFICATE,
                f"RSA server_key of {key.key_size} bits is under {MIN_RSA_BITS}",
            )
        return key
    if isinstance(key, ed25519.Ed25519PublicKey) and not rsa_only:
        return key
    wanted = "an RSA key" if rsa_only else "an RSA or Ed25519 key"
    raise RemoteProtocolError(AlertCode.BAD_CERTIFICATE, f"server_key is not {wanted}")


def check_private_key(key: object, *, rsa_only: bool) -> None:
    """A server's own key must be one the peer will accept; else a local configuration error."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits is under {MIN_RSA_BITS}")
        return
    if isinstance(key, ed25519.Ed25519PrivateKey) and not rsa_only:
        return
    raise ValueError("an RSA key is required" if rsa_only else "an RSA or Ed25519 key is required")


# --------------------------------------------------------------------------- signatures

SIGNATURE_CONTEXT = b"\x20" * 64 + b"kexlab/1 server signature" + b"\x00"
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def signed_content(th_ch_sh: bytes) -> bytes:
    """0x20 x 64 || "kexlab/1 server signature" || 0x00 || TH(CH, SH)."""
    return SIGNATURE_CONTEXT + th_ch_sh


def scheme_for(key: ServerPrivateKey | ServerPublicKey) -> SignatureScheme:
    """The one scheme §3 allows for a key type."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return SignatureScheme.RSA_PSS_RSAE_SHA256
    return SignatureScheme.ED25519


Signer = Callable[[ServerPrivateKey, bytes], bytes]


def default_sign(key: ServerPrivateKey, content: bytes) -> bytes:
    """Sign with the key's scheme (RSA-PSS salt 32 with SHA-256, or Ed25519)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(content, _PSS, hashes.SHA256())
    return key.sign(content)


def verify_signature(
    key: ServerPublicKey, scheme: int, signature: bytes, th_ch_sh: bytes
) -> SignatureScheme:
    """Check SERVER_SIGNATURE: wrong scheme is illegal_parameter, a bad signature decrypt_error."""
    try:
        known = SignatureScheme(scheme)
    except ValueError:
        raise RemoteProtocolError(
            AlertCode.ILLEGAL_PARAMETER, f"unknown signature scheme 0x{scheme:04x}"
        ) from None
    if known is not scheme_for(key):
        raise RemoteProtocolError(
            AlertCode.ILLEGAL_PARAMETER,
            f"signature scheme {known.name.lower()} does not match the server key",
        )
    content = signed_content(th_ch_sh)
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, content, _PSS, hashes.SHA256())
        else:
            key.verify(signature, content)
    except InvalidSignature:
        raise RemoteProtocolError(
            AlertCode.DECRYPT_ERROR, "server signature does not verify"
        ) from None
    return known
