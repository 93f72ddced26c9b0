"""The server's side of the handshake (docs/protocol.md §3, §4, §5).

The flights are the same for every method; what differs (the hello fields and their
§3 rules, where the secret comes from, whether it signs, who finishes first) is asked
of the method (``protocol.methods``).
"""

from __future__ import annotations

from .alerts import AlertCode, LocalProtocolError, RemoteProtocolError
from .config import ServerConfig
from .connection import Connection, State
from .constants import (
    KEX_NAMES,
    MIN_PSK_LEN,
    RANDOM_LEN,
    SUITE_NAMES,
    SUITES,
    CipherSuite,
    FrameType,
    Kex,
)
from .events import PskNeeded
from .frames import Frame
from .kex import scheme_for, signed_content
from .keyschedule import KeySchedule, TranscriptHash
from .messages import ClientHello, KeyTransport, ServerHello, ServerSignature
from .methods import METHODS, KexMethod, check_server_config, psk_identity_of


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
        check_server_config(config)
        super().__init__(config.rng, config.key_update_threshold, config.trace)
        self.config = config
        self.state = State.WAIT_CLIENT_HELLO
        self._method: KexMethod | None = None
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

    @property
    def client_hello(self) -> ClientHello | None:
        """The client's CLIENT_HELLO as it arrived (None before it did, or if it did not decode)."""
        return self._hello

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
        method = self._method = self._negotiate(ch)
        method.check_client_hello(ch, self.config)
        params = SUITES[CipherSuite(ch.cipher_suite)]
        self._schedule = KeySchedule(params)
        self._transcript = TranscriptHash(params.hash())
        self._transcript.update(frame.encode())
        if method.needs_psk:
            self._begin_psk(ch)
            return
        self._send_server_hello(ch)

    def _negotiate(self, ch: ClientHello) -> KexMethod:
        """§3 parsing rules for CLIENT_HELLO shared by every method: kex, then suite."""
        cfg = self.config
        if ch.kex not in cfg.kex_methods:  # IntEnum members compare and hash as ints
            raise RemoteProtocolError(
                AlertCode.HANDSHAKE_FAILURE,
                f"kex {_kex_label(ch.kex)} not supported; this server supports "
                + ", ".join(KEX_NAMES[k] for k in sorted(cfg.kex_methods)),
            )
        if ch.cipher_suite not in cfg.cipher_suites:
            raise RemoteProtocolError(
                AlertCode.HANDSHAKE_FAILURE,
                f"cipher suite 0x{ch.cipher_suite:04x} not supported; this server supports "
                + ", ".join(f"0x{s:04x} ({SUITE_NAMES[s]})" for s in cfg.cipher_suites),
            )
        return METHODS[Kex(ch.kex)]

    def _begin_psk(self, ch: ClientHello) -> None:
        self._psk_identity = psk_identity_of(ch)
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
        assert self._method is not None and self._transcript is not None
        method = self._method
        server_random = self._rng(RANDOM_LEN)
        answer = method.server_answer(ch, self.config, self._rng, psk)
        sh = ServerHello(
            server_random, ch.kex, ch.cipher_suite, ch.group, answer.key_share, answer.server_key
        )
        self._server_hello = sh
        self._write_handshake(FrameType.SERVER_HELLO, sh.encode())
        if answer.shared_secret is None:  # rsa: the secret comes in KEY_TRANSPORT (§4)
            self.state = State.WAIT_KEY_TRANSPORT
            return
        self._derive(answer.shared_secret)
        if answer.sign_key is not None:
            self._scheme = scheme_for(answer.sign_key)
            signature = self.config.signer(answer.sign_key, signed_content(self._th_keys))
            self._write_handshake(
                FrameType.SERVER_SIGNATURE, ServerSignature(self._scheme, signature).encode()
            )
        self._send_finished()
        self.state = State.WAIT_CLIENT_FINISHED

    def _on_key_transport(self, frame: Frame) -> None:
        assert self._method is not None
        kt = KeyTransport.decode(frame.payload)
        self._derive(self._method.server_secret(kt, self.config, self._rng))
        self.state = State.WAIT_CLIENT_FINISHED

    def _on_client_finished(self, frame: Frame) -> None:
        assert self._method is not None
        # rsa: a failed OAEP decryption also shows here, as decrypt_error (§5), by design.
        self._verify_finished(frame)
        if self._method.client_finishes_first:
            self._send_finished()
        self._complete()
