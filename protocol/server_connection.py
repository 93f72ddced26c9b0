"""The server's side of the handshake (docs/protocol.md §3, §4, §5)."""

from __future__ import annotations

from cryptography.hazmat.primitives.constant_time import bytes_eq

from .alerts import AlertCode, LocalProtocolError, RemoteProtocolError
from .config import ServerConfig, check_psk_identity
from .connection import Connection, State
from .constants import (
    GROUP_NAMES,
    KEX_NAMES,
    MIN_PSK_LEN,
    RANDOM_LEN,
    SUITE_NAMES,
    SUITES,
    CipherSuite,
    FrameType,
    Group,
    Kex,
)
from .events import HandshakeComplete, PskNeeded
from .frames import Frame
from .kex import GROUPS, rsa_unwrap, scheme_for, sha256_hex, signed_content, spki
from .keyschedule import HandshakeSecrets, KeySchedule, TranscriptHash
from .messages import ClientHello, Finished, KeyTransport, ServerHello, ServerSignature
from .records import RecordReceiver, RecordSender


def _kex_label(code: int) -> str:
    """'psk (3)' for a known method the server does not enable, '7' for an unknown one."""
    try:
        return f"{KEX_NAMES[Kex(code)]} ({code})"
    except ValueError:
        return str(code)


class ServerConnection(Connection):
    """A KXP/1 server for one connection: pump bytes and events (see ``Connection``)."""

    role = "server"

    def __init__(self, config: ServerConfig) -> None:
        config.validate()
        super().__init__(config.rng, config.key_update_threshold, config.trace)
        self.config = config
        self.state = State.WAIT_CLIENT_HELLO
        self._hello: ClientHello | None = None
        self._server_hello: ServerHello | None = None
        self._secrets: HandshakeSecrets | None = None
        self._psk_identity = ""
        self._scheme: int | None = None
        self._handlers = {
            (State.WAIT_CLIENT_HELLO, FrameType.CLIENT_HELLO): self._on_client_hello,
            (State.WAIT_KEY_TRANSPORT, FrameType.KEY_TRANSPORT): self._on_key_transport,
            (State.WAIT_CLIENT_FINISHED, FrameType.FINISHED): self._on_client_finished,
        }

    @property
    def psk_identity(self) -> str:
        """The identity the client named (psk), once CLIENT_HELLO is in."""
        return self._psk_identity

    @property
    def client_random(self) -> bytes:
        """CLIENT_HELLO.random, once it is in."""
        return self._hello.random if self._hello else b""

    def supply_psk(self, key: bytes | None) -> None:
        """Answer a ``PskNeeded`` event: the key that arrived out of band, or None if none did."""
        if self.state is not State.WAIT_PSK:
            raise LocalProtocolError(AlertCode.INTERNAL_ERROR, "no PSK is awaited")
        try:
            if key is None:
                raise RemoteProtocolError(
                    AlertCode.UNKNOWN_PSK_IDENTITY, f"unknown psk identity {self._psk_identity!r}"
                )
            self._continue_psk(key)
        except (LocalProtocolError, RemoteProtocolError) as exc:
            self._fail(exc)

    # ------------------------------------------------------------------ handlers

    def _on_client_hello(self, frame: Frame) -> None:
        ch = ClientHello.decode(frame.payload)
        self._hello = ch
        kex, suite, group = self._negotiate(ch)
        params = SUITES[suite]
        self._schedule = KeySchedule(params)
        self._transcript = TranscriptHash(params.hash())
        self._transcript.update(frame.encode())
        if kex is Kex.DHE:
            GROUPS[group].check_share_length(ch.key_share)
        if kex is Kex.PSK:
            self._begin_psk(ch)
            return
        self._send_server_hello(ch)

    def _negotiate(self, ch: ClientHello) -> tuple[Kex, CipherSuite, Group]:
        """§3 parsing rules for CLIENT_HELLO, in the spec's order."""
        cfg = self.config
        if ch.kex not in cfg.kex_methods:  # IntEnum members compare and hash as ints
            raise RemoteProtocolError(
                AlertCode.HANDSHAKE_FAILURE,
                f"kex {_kex_label(ch.kex)} not supported; this server supports "
                + ", ".join(KEX_NAMES[k] for k in sorted(cfg.kex_methods)),
            )
        kex = Kex(ch.kex)
        if ch.cipher_suite not in cfg.cipher_suites:
            raise RemoteProtocolError(
                AlertCode.HANDSHAKE_FAILURE,
                f"cipher suite 0x{ch.cipher_suite:04x} not supported; this server supports "
                + ", ".join(f"0x{s:04x} ({SUITE_NAMES[s]})" for s in cfg.cipher_suites),
            )
        suite = CipherSuite(ch.cipher_suite)
        if kex is Kex.DHE:
            if ch.group not in cfg.groups:
                raise RemoteProtocolError(
                    AlertCode.HANDSHAKE_FAILURE,
                    f"group 0x{ch.group:04x} not supported; this server supports "
                    + ", ".join(GROUP_NAMES[g] for g in cfg.groups),
                )
            if ch.psk_identity:
                raise RemoteProtocolError(
                    AlertCode.ILLEGAL_PARAMETER, "dhe CLIENT_HELLO carries a psk_identity"
                )
            return kex, suite, Group(ch.group)
        if ch.group != Group.NONE or ch.key_share:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER,
                f"{KEX_NAMES[kex]} CLIENT_HELLO carries a group or key_share",
            )
        if kex is Kex.RSA and ch.psk_identity:
            raise RemoteProtocolError(
                AlertCode.ILLEGAL_PARAMETER, "rsa CLIENT_HELLO carries a psk_identity"
            )
        return kex, suite, Group.NONE

    def _begin_psk(self, ch: ClientHello) -> None:
        if not ch.psk_identity:
            raise RemoteProtocolError(AlertCode.UNKNOWN_PSK_IDENTITY, "empty psk identity")
        try:
            self._psk_identity = check_psk_identity(ch.psk_identity)
        except ValueError as exc:
            raise RemoteProtocolError(AlertCode.UNKNOWN_PSK_IDENTITY, str(exc)) from None
        key = self.config.psk_lookup(self._psk_identity)
        if key is None:
            self.state = State.WAIT_PSK  # the caller may wait for it out of band (§8)
            self._events.append(PskNeeded(self._psk_identity))
            return
        self._continue_psk(key)

    def _continue_psk(self, key: bytes) -> None:
        if len(key) < MIN_PSK_LEN:
            raise LocalProtocolError(
                AlertCode.INTERNAL_ERROR,
                f"the PSK for {self._psk_identity!r} is under {MIN_PSK_LEN} bytes",
            )
        assert self._hello is not None
        self._send_server_hello(self._hello, psk=key)

    def _send_server_hello(self, ch: ClientHello, psk: bytes = b"") -> None:
        assert self._transcript is not None and self._schedule is not None
        cfg = self.config
        kex = Kex(ch.kex)
        key_share, server_key, shared = b"", b"", psk
        server_random = self._rng(RANDOM_LEN)
        if kex is Kex.DHE:
            dh = GROUPS[Group(ch.group)].generate(self._rng)
            key_share = dh.public
            shared = dh.exchange(ch.key_share)
            if cfg.sign_key is not None:
                server_key = spki(cfg.sign_key)
        elif kex is Kex.RSA:
            assert cfg.rsa_key is not None
            server_key = spki(cfg.rsa_key)
        sh = ServerHello(server_random, ch.kex, ch.cipher_suite, ch.group, key_share, server_key)
        self._server_hello = sh
        self._write_handshake(FrameType.SERVER_HELLO, sh.encode())
        if kex is Kex.RSA:
            self.state = State.WAIT_KEY_TRANSPORT
            return
        th_ch_sh = self._transcript.digest()
        self._secrets = self._schedule.derive(shared, th_ch_sh)
        if kex is Kex.DHE and cfg.sign_key is not None:
            scheme = scheme_for(cfg.sign_key)
            signature = cfg.signer(cfg.sign_key, signed_content(th_ch_sh))
            self._scheme = scheme
            self._write_handshake(
                FrameType.SERVER_SIGNATURE, ServerSignature(scheme, signature).encode()
            )
        self._send_finished()
        self.state = State.WAIT_CLIENT_FINISHED

    def _on_key_transport(self, frame: Frame) -> None:
        assert (
            self._transcript is not None
            and self._schedule is not None
            and self.config.rsa_key is not None
        )
        kt = KeyTransport.decode(frame.payload)
        premaster = rsa_unwrap(self.config.rsa_key, kt.encrypted_secret, self._rng)
        self._secrets = self._schedule.derive(premaster, self._transcript.digest())
        self.state = State.WAIT_CLIENT_FINISHED

    def _on_client_finished(self, frame: Frame) -> None:
        assert self._secrets is not None and self._schedule is not None and self._hello is not None
        fin = Finished.decode(frame.payload, self._schedule.suite.hash_len)
        expected = self._schedule.verify_data(self._secrets.c_finished, self._th_before_finished)
        if not bytes_eq(fin.verify_data, expected):
            # rsa: also what a failed OAEP decryption looks like (§5), by design.
            raise RemoteProtocolError(AlertCode.DECRYPT_ERROR, "client FINISHED does not verify")
        if self._hello.kex == Kex.RSA:
            self._send_finished()
        self._complete()

    # ------------------------------------------------------------------ helpers

    def _send_finished(self) -> None:
        assert (
            self._secrets is not None
            and self._schedule is not None
            and self._transcript is not None
        )
        verify = self._schedule.verify_data(self._secrets.s_finished, self._transcript.digest())
        self._write_handshake(FrameType.FINISHED, Finished(verify).encode())

    def _complete(self) -> None:
        assert (
            self._secrets is not None
            and self._schedule is not None
            and self._transcript is not None
        )
        assert self._hello is not None and self._server_hello is not None
        ch, sh = self._hello, self._server_hello
        self._sender = RecordSender(self._schedule, self._secrets.s_ap_0, self._threshold)
        self._receiver = RecordReceiver(self._schedule, self._secrets.c_ap_0)
        self.state = State.CONNECTED
        self._events.append(
            HandshakeComplete(
                kex=Kex(ch.kex),
                cipher_suite=CipherSuite(ch.cipher_suite),
                group=Group(ch.group),
                server_key=sh.server_key,
                server_key_sha256=sha256_hex(sh.server_key) if sh.server_key else "",
                signature_scheme=self._scheme,
                psk_identity=self._psk_identity,
                client_random=ch.random,
                server_random=sh.random,
                sas=self._schedule.sas(self._secrets.master, self._transcript.digest()),
                secrets=self._secrets,
            )
        )
