"""The key exchange methods of §2 behind one interface, looked up in ``METHODS`` like ``GROUPS``.

A method owns everything that differs between rsa, dhe and psk: the CLIENT_HELLO and
SERVER_HELLO fields it uses and the §3 rules for them, how each side (and a passive
holder of a long-term secret) obtains the shared secret, whether the server signs, and
the §4 flight order. ``ClientConnection`` and ``ServerConnection`` run the flights and
ask the method at each step; the annotator and the capture decryptor ask it too.
Adding a method is one class here and one line in ``METHODS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from .alerts import AlertCode, LocalProtocolError, RemoteProtocolError
from .config import ClientConfig, ServerConfig
from .constants import GROUP_NAMES, MIN_PSK_LEN, PREMASTER_LEN, Group, Kex
from .kex import (
    GROUPS,
    DHPrivate,
    RandomSource,
    ServerPrivateKey,
    ServerPublicKey,
    check_private_key,
    load_server_key,
    rsa_unwrap,
    rsa_unwrap_strict,
    rsa_wrap,
    spki,
)
from .messages import ClientHello, KeyTransport, ServerHello

FORBIDDEN_IDENTITY_CHARS = "/+#\x00"


def check_psk_identity(identity: bytes) -> str:
    """§3: 1..255 bytes of UTF-8 without '/', '+', '#' or NUL (it appears in MQTT topics)."""
    if not 1 <= len(identity) <= 255:
        raise ValueError("a PSK identity is 1..255 bytes")
    try:
        text = identity.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a PSK identity must be UTF-8") from None
    if any(c in text for c in FORBIDDEN_IDENTITY_CHARS):
        raise ValueError("a PSK identity may not contain '/', '+', '#' or NUL")
    return text


@dataclass(frozen=True)
class ClientOffer:
    """What a method puts in CLIENT_HELLO, and the private half the client keeps."""

    group: Group = Group.NONE
    key_share: bytes = b""
    psk_identity: bytes = b""
    private: DHPrivate | None = None
    """dhe: the ephemeral key pair, used once for the SERVER_HELLO's share."""


@dataclass(frozen=True)
class ServerAnswer:
    """What a method puts in SERVER_HELLO, and the server's side of the secret."""

    key_share: bytes = b""
    server_key: bytes = b""
    """DER SPKI: rsa's transport key, or dhe's identity key; empty for psk and anonymous dhe."""
    shared_secret: bytes | None = None
    """None for rsa: the secret arrives in KEY_TRANSPORT."""
    sign_key: ServerPrivateKey | None = None
    """dhe with an identity key: SERVER_SIGNATURE follows SERVER_HELLO."""


class KexMethod(ABC):
    """One §2 method. The defaults are psk-shaped: no share, no server key, no signature."""

    kex: Kex
    name: str
    client_finishes_first = False
    """§4: the client sends its FINISHED before the server's (rsa: KEY_TRANSPORT, FINISHED)."""
    forward_secret = False
    """No long-term secret, leaked later, recovers a recorded session (§5)."""
    trust_before_secret = False
    """The client decides on the server key at SERVER_HELLO, before it sends a secret to it."""
    server_signs = False
    """A server key in SERVER_HELLO is proven by a SERVER_SIGNATURE over TH(CH, SH)."""
    uses_group = False
    """The client names a DH group (and sends a share in it)."""
    server_key_role = ""
    """What SERVER_HELLO.server_key is for: "transport" (the secret is wrapped to it),
    "identity" (it signs the share), or "" (the method sends none)."""

    # ------------------------------------------------------------------ configuration

    def check_client_config(self, config: ClientConfig) -> None:  # noqa: B027 - most need none
        """ValueError for a client proposal of this method that cannot work."""

    def check_server_config(self, config: ServerConfig) -> None:  # noqa: B027 - most need none
        """ValueError for a server that enables this method without what it needs."""

    # ------------------------------------------------------------------ client side

    def client_offer(self, config: ClientConfig, rng: RandomSource) -> ClientOffer:
        """The method's CLIENT_HELLO fields (after the client random was drawn)."""
        return ClientOffer()

    def check_server_hello(self, sh: ServerHello, config: ClientConfig) -> ServerPublicKey | None:
        """§3 rules for the method's SERVER_HELLO fields; the server key it carries, if any."""
        if sh.key_share or sh.server_key:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER,
                f"{self.name} SERVER_HELLO carries a key_share or server_key",
            )
        return None

    @abstractmethod
    def client_secret(
        self,
        offer: ClientOffer,
        sh: ServerHello,
        server_key: ServerPublicKey | None,
        config: ClientConfig,
        rng: RandomSource,
    ) -> tuple[bytes, KeyTransport | None]:
        """The shared secret, and the KEY_TRANSPORT that carries it (rsa) or None."""

    # ------------------------------------------------------------------ server side

    def check_client_hello(self, ch: ClientHello, config: ServerConfig) -> Group:
        """§3 parsing rules for the method's CLIENT_HELLO fields, in the spec's order."""
        if ch.group != Group.NONE or ch.key_share:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER,
                f"{self.name} CLIENT_HELLO carries a group or key_share",
            )
        return Group.NONE

    needs_psk = False
    """The server must find a pre-shared key for the client's identity first (§8)."""

    @abstractmethod
    def server_answer(
        self, ch: ClientHello, config: ServerConfig, rng: RandomSource, psk: bytes
    ) -> ServerAnswer:
        """The method's SERVER_HELLO fields and the server's shared secret."""

    def server_secret(self, kt: KeyTransport, config: ServerConfig, rng: RandomSource) -> bytes:
        """rsa: the premaster from KEY_TRANSPORT (other methods never receive one)."""
        raise LocalProtocolError(AlertCode.INTERNAL_ERROR, f"{self.name} has no KEY_TRANSPORT")

    # ------------------------------------------------------------------ a passive holder

    def passive_secret(
        self, kt: KeyTransport | None, rsa_key: rsa.RSAPrivateKey | None, psk: bytes | None
    ) -> bytes | None:
        """The shared secret from a transcript and a long-term secret, or None if it gives none."""
        return None


class RsaTransport(KexMethod):
    """rsa: the client wraps a random premaster under the server's RSA key (RSA-OAEP)."""

    kex = Kex.RSA
    name = "rsa"
    client_finishes_first = True
    trust_before_secret = True  # never hand a secret to a key we refuse
    server_key_role = "transport"

    def check_server_config(self, config: ServerConfig) -> None:
        """An RSA transport key of at least 2048 bits."""
        if config.rsa_key is None:
            raise ValueError("rsa is enabled but no RSA key is configured")
        check_private_key(config.rsa_key, rsa_only=True)

    def check_server_hello(self, sh: ServerHello, config: ClientConfig) -> ServerPublicKey:
        """No key_share; an RSA transport key of at least 2048 bits."""
        if sh.key_share:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "rsa SERVER_HELLO carries a key_share"
            )
        if not sh.server_key:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "rsa SERVER_HELLO has no server_key"
            )
        return load_server_key(sh.server_key, rsa_only=True)

    def client_secret(
        self,
        offer: ClientOffer,
        sh: ServerHello,
        server_key: ServerPublicKey | None,
        config: ClientConfig,
        rng: RandomSource,
    ) -> tuple[bytes, KeyTransport | None]:
        """A fresh premaster, wrapped for the server."""
        assert isinstance(server_key, rsa.RSAPublicKey)
        premaster = rng(PREMASTER_LEN)
        return premaster, KeyTransport(rsa_wrap(server_key, premaster))

    def check_client_hello(self, ch: ClientHello, config: ServerConfig) -> Group:
        """No group, share or identity."""
        super().check_client_hello(ch, config)
        if ch.psk_identity:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "rsa CLIENT_HELLO carries a psk_identity"
            )
        return Group.NONE

    def server_answer(
        self, ch: ClientHello, config: ServerConfig, rng: RandomSource, psk: bytes
    ) -> ServerAnswer:
        """The transport key; the secret comes later, in KEY_TRANSPORT."""
        assert config.rsa_key is not None
        return ServerAnswer(server_key=spki(config.rsa_key))

    def server_secret(self, kt: KeyTransport, config: ServerConfig, rng: RandomSource) -> bytes:
        """Unwrap the premaster (a random one on failure, §5: no padding oracle)."""
        assert config.rsa_key is not None
        return rsa_unwrap(config.rsa_key, kt.encrypted_secret, rng)

    def passive_secret(
        self, kt: KeyTransport | None, rsa_key: rsa.RSAPrivateKey | None, psk: bytes | None
    ) -> bytes | None:
        """Whoever holds the server's RSA key unwraps any recorded KEY_TRANSPORT."""
        if kt is None or rsa_key is None:
            return None
        return rsa_unwrap_strict(rsa_key, kt.encrypted_secret)


class EphemeralDH(KexMethod):
    """dhe: both sides send an ephemeral share; the secret never crosses the wire."""

    kex = Kex.DHE
    name = "dhe"
    forward_secret = True
    server_signs = True
    server_key_role = "identity"
    uses_group = True

    def check_client_config(self, config: ClientConfig) -> None:
        """A group this installation can do."""
        impl = GROUPS.get(config.group)
        if impl is None:
            raise ValueError(f"unknown group {config.group!r}")
        if not impl.available:
            raise ValueError(f"{config.group.name.lower()} is unavailable with this cryptography")

    def client_offer(self, config: ClientConfig, rng: RandomSource) -> ClientOffer:
        """A fresh key pair in the group the user asked for."""
        private = GROUPS[config.group].generate(rng)
        return ClientOffer(config.group, private.public, private=private)

    def check_server_hello(self, sh: ServerHello, config: ClientConfig) -> ServerPublicKey | None:
        """A share of the group's length; an identity key unless anonymous dhe is allowed."""
        GROUPS[config.group].check_share_length(sh.key_share)
        if sh.server_key:
            return load_server_key(sh.server_key, rsa_only=False)
        if not config.allow_anonymous:
            # §3: a man in the middle must not be able to strip the signature.
            raise LocalProtocolError(
                AlertCode.BAD_CERTIFICATE,
                "server sent no identity key (anonymous dhe) and the trust policy requires one",
            )
        return None

    def client_secret(
        self,
        offer: ClientOffer,
        sh: ServerHello,
        server_key: ServerPublicKey | None,
        config: ClientConfig,
        rng: RandomSource,
    ) -> tuple[bytes, KeyTransport | None]:
        """The DH output with the server's share."""
        assert offer.private is not None
        return offer.private.exchange(sh.key_share), None

    def check_client_hello(self, ch: ClientHello, config: ServerConfig) -> Group:
        """A group the server enables, no identity, a share of the group's length."""
        if ch.group not in config.groups:
            raise RemoteProtocolError(
                AlertCode.HANDSHAKE_FAILURE,
                f"group 0x{ch.group:04x} not supported; this server supports "
                + ", ".join(GROUP_NAMES[g] for g in config.groups),
            )
        if ch.psk_identity:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "dhe CLIENT_HELLO carries a psk_identity"
            )
        group = Group(ch.group)
        GROUPS[group].check_share_length(ch.key_share)
        return group

    def server_answer(
        self, ch: ClientHello, config: ServerConfig, rng: RandomSource, psk: bytes
    ) -> ServerAnswer:
        """A fresh share, the DH output, and the identity key that will sign (if any)."""
        private = GROUPS[Group(ch.group)].generate(rng)
        sign_key = config.sign_key
        return ServerAnswer(
            key_share=private.public,
            server_key=spki(sign_key) if sign_key is not None else b"",
            shared_secret=private.exchange(ch.key_share),
            sign_key=sign_key,
        )


class PreSharedKey(KexMethod):
    """psk: the key was handed over out of band; CLIENT_HELLO names it by its identity."""

    kex = Kex.PSK
    name = "psk"

    def client_offer(self, config: ClientConfig, rng: RandomSource) -> ClientOffer:
        """Only the identity."""
        return ClientOffer(psk_identity=config.psk_identity.encode("utf-8"))

    def client_secret(
        self,
        offer: ClientOffer,
        sh: ServerHello,
        server_key: ServerPublicKey | None,
        config: ClientConfig,
        rng: RandomSource,
    ) -> tuple[bytes, KeyTransport | None]:
        """The pre-shared key itself."""
        return config.psk, None

    needs_psk = True

    def check_client_config(self, config: ClientConfig) -> None:
        """A §3 identity and a key of at least 16 bytes."""
        check_psk_identity(config.psk_identity.encode("utf-8"))
        if len(config.psk) < MIN_PSK_LEN:
            raise ValueError(f"a PSK must be at least {MIN_PSK_LEN} bytes")

    def server_answer(
        self, ch: ClientHello, config: ServerConfig, rng: RandomSource, psk: bytes
    ) -> ServerAnswer:
        """Nothing but the random: the key is the secret."""
        return ServerAnswer(shared_secret=psk)

    def passive_secret(
        self, kt: KeyTransport | None, rsa_key: rsa.RSAPrivateKey | None, psk: bytes | None
    ) -> bytes | None:
        """Whoever holds the PSK holds every session keyed with it."""
        return psk


def psk_identity_of(ch: ClientHello) -> str:
    """§3: the identity of a psk CLIENT_HELLO, or unknown_psk_identity."""
    if not ch.psk_identity:
        raise RemoteProtocolError(AlertCode.UNKNOWN_PSK_IDENTITY, "empty psk identity")
    try:
        return check_psk_identity(ch.psk_identity)
    except ValueError as exc:
        raise RemoteProtocolError(AlertCode.UNKNOWN_PSK_IDENTITY, str(exc)) from None


METHODS: dict[Kex, KexMethod] = {
    Kex.RSA: RsaTransport(),
    Kex.DHE: EphemeralDH(),
    Kex.PSK: PreSharedKey(),
}


def check_client_config(config: ClientConfig) -> None:
    """ValueError for a client proposal that cannot work (the connection checks it too)."""
    config.validate()
    METHODS[config.kex].check_client_config(config)


def check_server_config(config: ServerConfig) -> None:
    """ValueError for a server that cannot serve what it enables (the connection checks it too)."""
    config.validate()
    for kex in config.kex_methods:
        METHODS[kex].check_server_config(config)
