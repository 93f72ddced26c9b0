"""Code points and limits of KXP/1 (docs/protocol.md §1, §2, §3, §6): the one table to extend."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

MAGIC = b"KX"
VERSION = 1
HEADER_LEN = 8
MAX_HANDSHAKE_PAYLOAD = 16384
MAX_CONTENT = 65536
TAG_LEN = 16
SEQ_LEN = 8
# seq || content_type || content || tag  (§1 check 4: 8 + 1 + 65536 + 16)
MAX_RECORD_PAYLOAD = SEQ_LEN + 1 + MAX_CONTENT + TAG_LEN
MIN_RECORD_PAYLOAD = SEQ_LEN + 1 + TAG_LEN
RANDOM_LEN = 32
PREMASTER_LEN = 32
MIN_PSK_LEN = 16
MIN_RSA_BITS = 2048
# §6: a sender updates its key before it has sent 2^24 records with one key.
KEY_UPDATE_THRESHOLD = 1 << 24
DEFAULT_PORT = 9700
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


class FrameType(enum.IntEnum):
    """Frame types of §1."""

    CLIENT_HELLO = 0x01
    SERVER_HELLO = 0x02
    KEY_TRANSPORT = 0x03
    SERVER_SIGNATURE = 0x04
    FINISHED = 0x05
    ALERT = 0x15
    RECORD = 0x17

    @property
    def is_handshake(self) -> bool:
        """Types 0x01-0x05 enter the transcript."""
        return self <= FrameType.FINISHED


class Kex(enum.IntEnum):
    """Key exchange methods of §2."""

    RSA = 1
    DHE = 2
    PSK = 3


class CipherSuite(enum.IntEnum):
    """Cipher suites of §2 (the TLS 1.3 code points)."""

    AES_128_GCM_SHA256 = 0x1301
    AES_256_GCM_SHA384 = 0x1302


class Group(enum.IntEnum):
    """DH groups of §2 (TLS named-group code points); NONE for rsa and psk."""

    NONE = 0x0000
    SECP256R1 = 0x0017
    SECP384R1 = 0x0018
    X25519 = 0x001D
    FFDHE2048 = 0x0100
    FFDHE3072 = 0x0101


class SignatureScheme(enum.IntEnum):
    """SERVER_SIGNATURE schemes of §3."""

    RSA_PSS_RSAE_SHA256 = 0x0804
    ED25519 = 0x0807


class ContentType(enum.IntEnum):
    """Inner content types of a RECORD (§6)."""

    ALERT = 0x15
    APPLICATION_DATA = 0x17
    KEY_UPDATE = 0x18


@dataclass(frozen=True)
class SuiteParams:
    """What a cipher suite fixes: AEAD key length and the hash."""

    key_len: int
    hash_name: str

    def hash(self) -> hashes.HashAlgorithm:
        """A fresh hash algorithm object for this suite."""
        return hashes.SHA256() if self.hash_name == "sha256" else hashes.SHA384()

    @property
    def hash_len(self) -> int:
        """HashLen of §5."""
        return 32 if self.hash_name == "sha256" else 48


SUITES: dict[CipherSuite, SuiteParams] = {
    CipherSuite.AES_128_GCM_SHA256: SuiteParams(16, "sha256"),
    CipherSuite.AES_256_GCM_SHA384: SuiteParams(32, "sha384"),
}

# Short names used by programs, logs and the key log; the spec's names where it has them.
KEX_NAMES = {Kex.RSA: "rsa", Kex.DHE: "dhe", Kex.PSK: "psk"}
SUITE_NAMES = {CipherSuite.AES_128_GCM_SHA256: "aes128", CipherSuite.AES_256_GCM_SHA384: "aes256"}
GROUP_NAMES = {
    Group.NONE: "none",
    Group.X25519: "x25519",
    Group.SECP256R1: "secp256r1",
    Group.SECP384R1: "secp384r1",
    Group.FFDHE2048: "ffdhe2048",
    Group.FFDHE3072: "ffdhe3072",
}
SCHEME_NAMES = {
    SignatureScheme.RSA_PSS_RSAE_SHA256: "rsa_pss_rsae_sha256",
    SignatureScheme.ED25519: "ed25519",
}
