"""What a caller chooses for a connection: proposals, keys, trust, randomness."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from .constants import KEY_UPDATE_THRESHOLD, CipherSuite, Group, Kex
from .kex import (
    RandomSource,
    ServerPrivateKey,
    Signer,
    available_groups,
    check_private_key,
    default_sign,
)


@dataclass(frozen=True)
class ServerIdentity:
    """What the client learned of the server, handed to its trust decision."""

    kex: Kex
    server_key: bytes
    """DER SPKI."""
    key_type: str
    """"rsa" or "ed25519"."""
    key_sha256: str
    """Hex SHA-256 of the DER SPKI: the fingerprint."""
    signature_verified: bool
    """dhe: SERVER_SIGNATURE verified over TH(CH, SH). rsa: False — the key is proven
    only by the server's FINISHED, which it cannot compute without the private key."""


@dataclass(frozen=True)
class TrustVerdict:
    """A trust decision: refusing sends bad_certificate with ``reason``."""

    trusted: bool
    reason: str = ""


TrustDecision = Callable[[ServerIdentity], TrustVerdict]


def trust_nobody(identity: ServerIdentity) -> TrustVerdict:
    """The default: a client must choose a policy on purpose."""
    return TrustVerdict(False, "no trust policy configured")


def _default_rng(n: int) -> bytes:
    return secrets.token_bytes(n)


@dataclass
class ClientConfig:
    """One client proposal: exactly the kex, suite and group its user asked for (§3: no silent downgrade)."""

    kex: Kex = Kex.DHE
    cipher_suite: CipherSuite = CipherSuite.AES_256_GCM_SHA384
    group: Group = Group.X25519
    psk_identity: str = ""
    psk: bytes = b""
    trust: TrustDecision = trust_nobody
    allow_anonymous: bool = False
    """Accept a dhe server with no identity key (the "none" trust policy). Explicit on purpose."""
    key_update_threshold: int = KEY_UPDATE_THRESHOLD
    rng: RandomSource = field(default=_default_rng, repr=False)
    trace: bool = False

    def validate(self) -> None:
        """ValueError for settings no method can use (``methods.check_client_config`` does all)."""
        if self.key_update_threshold < 2:
            raise ValueError("key_update_threshold must be at least 2")


def _all_kex() -> frozenset[Kex]:
    return frozenset(Kex)


def _all_suites() -> tuple[CipherSuite, ...]:
    return tuple(CipherSuite)


def _available_groups() -> tuple[Group, ...]:
    return tuple(available_groups())


def _no_psk(identity: str) -> bytes | None:
    return None


@dataclass
class ServerConfig:
    """What a server enables and holds."""

    kex_methods: frozenset[Kex] = field(default_factory=_all_kex)
    cipher_suites: tuple[CipherSuite, ...] = field(default_factory=_all_suites)
    groups: tuple[Group, ...] = field(default_factory=_available_groups)
    rsa_key: rsa.RSAPrivateKey | None = None
    """The RSA transport key (rsa kex)."""
    sign_key: ServerPrivateKey | None = None
    """The dhe identity key; None serves dhe anonymously (no SERVER_SIGNATURE)."""
    psk_lookup: Callable[[str], bytes | None] = _no_psk
    """Synchronous lookup; a miss raises PskNeeded so the caller can wait out of band."""
    key_update_threshold: int = KEY_UPDATE_THRESHOLD
    rng: RandomSource = field(default=_default_rng, repr=False)
    signer: Signer = field(default=default_sign, repr=False)
    trace: bool = False

    def validate(self) -> None:
        """ValueError for settings no method can use (``methods.check_server_config`` does all)."""
        if self.sign_key is not None:
            check_private_key(self.sign_key, rsa_only=False)
        if not self.kex_methods:
            raise ValueError("no key exchange method is enabled")
        if self.key_update_threshold < 2:
            raise ValueError("key_update_threshold must be at least 2")
