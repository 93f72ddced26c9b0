"""The client's side of the handshake (docs/protocol.md §3, §4, §5)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.constant_time import bytes_eq

from .alerts import AlertCode, LocalProtocolError, RemoteProtocolError
from .config import ClientConfig, ServerIdentity
from .connection import Connection, State
from .constants import PREMASTER_LEN, RANDOM_LEN, SUITES, FrameType, Group, Kex
from .events import HandshakeComplete
from .frames import Frame
from .kex import (
    GROUPS,
    DHPrivate,
    ServerPublicKey,
    load_server_key,
    rsa_wrap,
    sha256_hex,
    verify_signature,
)
from .keyschedule import HandshakeSecrets, KeySchedule, TranscriptHash
from .messages import ClientHello, Finished, KeyTransport, ServerHello, ServerSignature
from .records import RecordReceiver, RecordSender


class ClientConnection(Connection):
    """A KXP/1 client: ``start()``, then pump bytes and events (see ``Connection``)."""

    role = "client"

    def __init__(self, config: ClientConfig) -> None:
        config.validate()
        super().__init__(config.rng, config.key_update_threshold, config.trace)
        self.config = config
        self._suite = SUITES[config.cipher_suite]
        self._schedule = KeySchedule(self._suite)
        self._transcript = TranscriptHash(self._suite.hash())
        self._dh: DHPrivate | None = None
        self._client_random = b""
        self._server_hello: ServerHello | None = None
        self._server_key: ServerPublicKey | None = None
        self._scheme: int | None = None
        self._secrets: HandshakeSecrets | None = None
        self._th_keys = b""
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
        self._client_random = self._rng(RANDOM_LEN)
        group, key_share, identity = Group.NONE, b"", b""
        if cfg.kex is Kex.DHE:
            group = cfg.group
            self._dh = GROUPS[group].generate(self._rng)
            key_share = self._dh.public
        elif cfg.kex is Kex.PSK:
            identity = cfg.psk_identity.encode("utf-8")
        hello = ClientHello(
            self._client_random, cfg.kex, cfg.cipher_suite, group, key_share, identity
        )
        self._write_handshake(FrameType.CLIENT_HELLO, hello.encode())
        self.state = State.WAIT_SERVER_HELLO

    # ------------------------------------------------------------------ handlers

    def _on_server_hello(self, frame: Frame) -> None:
        sh = ServerHello.decode(frame.payload)
        cfg = self.config
        expected_group = cfg.group if cfg.kex is Kex.DHE else Group.NONE
        if (sh.kex, sh.cipher_suite, sh.group) != (cfg.kex, cfg.cipher_suite, expected_group):
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER,
                f"SERVER_HELLO does not echo kex/suite/group: got {sh.kex}/0x{sh.cipher_suite:04x}/0x{sh.group:04x}",
            )
        self._server_hello = sh
        if cfg.kex is Kex.DHE:
            self._server_hello_dhe(sh)
        elif cfg.kex is Kex.RSA:
            self._server_hello_rsa(sh)
        else:
            self._server_hello_psk(sh)

    def _server_hello_psk(self, sh: ServerHello) -> None:
        if sh.key_share or sh.server_key:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "psk SERVER_HELLO carries a key_share or server_key"
            )
        self._derive(self.config.psk)
        self.state = State.WAIT_SERVER_FINISHED

    def _server_hello_rsa(self, sh: ServerHello) -> None:
        if sh.key_share:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "rsa SERVER_HELLO carries a key_share"
            )
        if not sh.server_key:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "rsa SERVER_HELLO has no server_key"
            )
        key = load_server_key(sh.server_key, rsa_only=True)
        assert isinstance(key, rsa.RSAPublicKey)
        self._server_key = key
        # Trust before the premaster is wrapped: never hand a secret to a key we refuse.
        self._decide_trust(sh.server_key, "rsa", signature_verified=False)
        premaster = self._rng(PREMASTER_LEN)
        kt = KeyTransport(rsa_wrap(key, premaster))
        self._write_handshake(FrameType.KEY_TRANSPORT, kt.encode())
        self._derive(premaster)
        self._send_finished()
        self.state = State.WAIT_SERVER_FINISHED

    def _server_hello_dhe(self, sh: ServerHello) -> None:
        assert self._dh is not None
        GROUPS[self.config.group].check_share_length(sh.key_share)
        if sh.server_key:
            self._server_key = load_server_key(sh.server_key, rsa_only=False)
        elif not self.config.allow_anonymous:
            # §3: a man in the middle must not be able to strip the signature.
            raise LocalProtocolError(
                AlertCode.BAD_CERTIFICATE,
                "server sent no identity key (anonymous dhe) and the trust policy requires one",
            )
        shared = self._dh.exchange(sh.key_share)
        self._dh = None  # the ephemeral private key is used once
        self._derive(shared)
        self.state = State.WAIT_SERVER_SIGNATURE if sh.server_key else State.WAIT_SERVER_FINISHED

    def _on_server_signature(self, frame: Frame) -> None:
        ss = ServerSignature.decode(frame.payload)
        assert self._server_key is not None and self._server_hello is not None
        self._scheme = verify_signature(
            self._server_key, ss.scheme, ss.signature, self._th_keys
        )  # dhe: TH(CH, SH)
        key_type = "rsa" if isinstance(self._server_key, rsa.RSAPublicKey) else "ed25519"
        self._decide_trust(self._server_hello.server_key, key_type, signature_verified=True)
        self.state = State.WAIT_SERVER_FINISHED

    def _on_server_finished(self, frame: Frame) -> None:
        assert (
            self._secrets is not None
            and self._schedule is not None
            and self._transcript is not None
        )
        fin = Finished.decode(frame.payload, self._suite.hash_len)
        expected = self._schedule.verify_data(self._secrets.s_finished, self._th_before_finished)
        if not bytes_eq(fin.verify_data, expected):
            raise RemoteProtocolError(AlertCode.DECRYPT_ERROR, "server FINISHED does not verify")
        if self.config.kex is not Kex.RSA:
            self._send_finished()
        self._complete()

    # ------------------------------------------------------------------ helpers

    def _decide_trust(self, der: bytes, key_type: str, signature_verified: bool) -> None:
        identity = ServerIdentity(
            self.config.kex, der, key_type, sha256_hex(der), signature_verified
        )
        verdict = self.config.trust(identity)
        if not verdict.trusted:
            raise LocalProtocolError(
                AlertCode.BAD_CERTIFICATE, verdict.reason or "server key not trusted"
            )

    def _derive(self, shared_secret: bytes) -> None:
        assert self._schedule is not None and self._transcript is not None
        self._th_keys = self._transcript.digest()
        self._secrets = self._schedule.derive(shared_secret, self._th_keys)

    def _send_finished(self) -> None:
        assert (
            self._secrets is not None
            and self._schedule is not None
            and self._transcript is not None
        )
        verify = self._schedule.verify_data(self._secrets.c_finished, self._transcript.digest())
        self._write_handshake(FrameType.FINISHED, Finished(verify).encode())

    def _complete(self) -> None:
        assert (
            self._secrets is not None
            and self._schedule is not None
            and self._transcript is not None
        )
        assert self._server_hello is not None
        sh = self._server_hello
        self._sender = RecordSender(self._schedule, self._secrets.c_ap_0, self._threshold)
        self._receiver = RecordReceiver(self._schedule, self._secrets.s_ap_0)
        self.state = State.CONNECTED
        self._events.append(
            HandshakeComplete(
                kex=self.config.kex,
                cipher_suite=self.config.cipher_suite,
                group=Group(sh.group),
                server_key=sh.server_key,
                server_key_sha256=sha256_hex(sh.server_key) if sh.server_key else "",
                signature_scheme=self._scheme,
                psk_identity=self.config.psk_identity if self.config.kex is Kex.PSK else "",
                client_random=self._client_random,
                server_random=sh.random,
                sas=self._schedule.sas(self._secrets.master, self._transcript.digest()),
                secrets=self._secrets,
            )
        )
