"""The client's side of the handshake (docs/protocol.md §3, §4, §5).

The flights are the same for every method; what differs (the hello fields, where the
secret comes from, whether the server signs, who finishes first) is asked of the
method (``protocol.methods``).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa

from .alerts import AlertCode, LocalProtocolError, RemoteProtocolError
from .config import ClientConfig, ServerIdentity
from .connection import Connection, State
from .constants import RANDOM_LEN, SUITES, FrameType
from .frames import Frame
from .kex import ServerPublicKey, sha256_hex, verify_signature
from .keyschedule import KeySchedule, TranscriptHash
from .messages import ClientHello, ServerHello, ServerSignature
from .methods import METHODS, ClientOffer, check_client_config


class ClientConnection(Connection):
    """A KXP/1 client: ``start()``, then pump bytes and events (see ``Connection``)."""

    role = "client"

    def __init__(self, config: ClientConfig) -> None:
        check_client_config(config)
        super().__init__(config.rng, config.key_update_threshold, config.trace)
        self.config = config
        self._method = METHODS[config.kex]
        self._suite = SUITES[config.cipher_suite]
        self._schedule = KeySchedule(self._suite)
        self._transcript = TranscriptHash(self._suite.hash())
        self._offer = ClientOffer()
        self._server_key: ServerPublicKey | None = None
        self.server_identity: ServerIdentity | None = None
        """The server key this client decided to trust (None for psk and anonymous dhe).

        Proven only once the handshake is complete: a trust policy that records keys
        (tofu) records this one after ``HandshakeComplete``, never before."""
        self._handlers = {
            (State.WAIT_SERVER_HELLO, FrameType.SERVER_HELLO): self._on_server_hello,
            (State.WAIT_SERVER_SIGNATURE, FrameType.SERVER_SIGNATURE): self._on_server_signature,
            (State.WAIT_SERVER_FINISHED, FrameType.FINISHED): self._on_server_finished,
        }

    def start(self) -> None:
        """Queue CLIENT_HELLO with exactly the proposal the user asked for."""
        if self.state is not State.START:
            raise LocalProtocolError(AlertCode.INTERNAL_ERROR, "start() called twice")
        cfg = self.config
        client_random = self._rng(RANDOM_LEN)
        self._offer = self._method.client_offer(cfg, self._rng)
        offer = self._offer
        self._hello = ClientHello(
            client_random,
            cfg.kex,
            cfg.cipher_suite,
            offer.group,
            offer.key_share,
            offer.psk_identity,
        )
        self._psk_identity = offer.psk_identity.decode("utf-8")  # validated by the config
        self._write_handshake(FrameType.CLIENT_HELLO, self._hello.encode())
        self.state = State.WAIT_SERVER_HELLO

    @property
    def client_random(self) -> bytes:
        """CLIENT_HELLO.random, once ``start()`` drew it (empty before)."""
        return self._hello.random if self._hello is not None else b""

    # ------------------------------------------------------------------ handlers

    def _on_server_hello(self, frame: Frame) -> None:
        sh = ServerHello.decode(frame.payload)
        cfg, method = self.config, self._method
        if (sh.kex, sh.cipher_suite, sh.group) != (cfg.kex, cfg.cipher_suite, self._offer.group):
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER,
                f"SERVER_HELLO does not echo kex/suite/group: got {sh.kex}/0x{sh.cipher_suite:04x}/0x{sh.group:04x}",
            )
        self._server_hello = sh
        key = method.check_server_hello(sh, cfg)
        self._server_key = key
        if method.trust_before_secret and key is not None:
            self._decide_trust(sh.server_key, key, signature_verified=False)
        shared, transport = method.client_secret(self._offer, sh, key, cfg, self._rng)
        self._offer = ClientOffer()  # an ephemeral private key is used once
        if transport is not None:
            self._write_handshake(FrameType.KEY_TRANSPORT, transport.encode())
        self._derive(shared)
        if method.client_finishes_first:
            self._send_finished()
        signed = method.server_signs and key is not None
        self.state = State.WAIT_SERVER_SIGNATURE if signed else State.WAIT_SERVER_FINISHED

    def _on_server_signature(self, frame: Frame) -> None:
        ss = ServerSignature.decode(frame.payload)
        assert self._server_key is not None and self._server_hello is not None
        self._scheme = verify_signature(
            self._server_key, ss.scheme, ss.signature, self._th_keys
        )  # dhe: TH(CH, SH)
        self._decide_trust(self._server_hello.server_key, self._server_key, signature_verified=True)
        self.state = State.WAIT_SERVER_FINISHED

    def _on_server_finished(self, frame: Frame) -> None:
        self._verify_finished(frame)
        if not self._method.client_finishes_first:
            self._send_finished()
        self._complete()

    # ------------------------------------------------------------------ helpers

    def _decide_trust(self, der: bytes, key: ServerPublicKey, signature_verified: bool) -> None:
        key_type = "rsa" if isinstance(key, rsa.RSAPublicKey) else "ed25519"
        identity = ServerIdentity(
            self.config.kex, der, key_type, sha256_hex(der), signature_verified
        )
        verdict = self.config.trust(identity)
        if not verdict.trusted:
            raise LocalProtocolError(
                AlertCode.BAD_CERTIFICATE, verdict.reason or "server key not trusted"
            )
        self.server_identity = identity
