"""The server's side of the out-of-band channel (docs/protocol.md §8), wired into a KexlabServer.

``ServerOob`` runs one ``oob.ServerChannel`` for the server's lifetime: keys arriving on
``psk/+`` feed the PSK lookup, an identity nobody knows yet is waited for (``--psk-wait``),
and the retained ``fingerprint`` announces the key clients will see. With ``verify_sas``
each session's SAS is compared with the client's before the app runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from keystore import fingerprint
from oob import (
    DEFAULT_PSK_WAIT,
    DEFAULT_SAS_TIMEOUT,
    SAS_MISMATCH,
    Fingerprint,
    MqttSettings,
    OobError,
    PskTable,
    ServerChannel,
    describe_match,
    exchange_sas,
)
from oob.psk_table import DEFAULT_MAX_LIFETIME
from protocol import HandshakeComplete

from .server import SasOutcome, ServerObserver, ServerOptions

OOB_LOGGER = "kexlab.oob"


def announced_key_sha256(options: ServerOptions) -> tuple[str, str] | None:
    """(role, SHA-256) of the key ``fingerprint`` announces: the dhe identity key, else the RSA key.

    A dhe client sees the signing key and an rsa client the RSA key; they are the same key
    unless ``--sign-key`` names another, and then only dhe clients can pin what is announced.
    """
    if options.sign_key is not None:
        return "sign", fingerprint(options.sign_key)
    if options.rsa_key is not None:
        return "rsa", fingerprint(options.rsa_key)
    return None  # psk and anonymous dhe only: there is no key to pin


@dataclass
class ServerOob:
    """``--oob``, ``--server-id``, ``--psk-wait`` and ``--verify-sas mqtt`` of one server."""

    settings: MqttSettings
    server_id: str
    psk_wait: float = DEFAULT_PSK_WAIT
    verify_sas: bool = False
    sas_timeout: float = DEFAULT_SAS_TIMEOUT
    psk_max_lifetime: float = DEFAULT_MAX_LIFETIME
    """No key handed over lives longer than this, whatever its expires_at says."""
    channel_options: dict[str, Any] = field(default_factory=dict)
    """Passed to ``ServerChannel`` (tests shorten the reconnect backoff)."""
    channel: ServerChannel | None = field(default=None, init=False)
    _bridge: OobLogBridge | None = field(default=None, init=False, repr=False)

    def attach(self, options: ServerOptions) -> ServerChannel:
        """Create the channel and hook it into ``options`` (before the KexlabServer is built)."""
        options_ = {"table": PskTable(max_lifetime=self.psk_max_lifetime), **self.channel_options}
        self.channel = ServerChannel(self.settings, self.server_id, **options_)
        options.psk_lookup = self.channel.lookup
        options.psk_provider = self.channel.provider(self.psk_wait)
        if self.verify_sas:
            options.sas_check = self.check_sas
        return self.channel

    def start(
        self, options: ServerOptions, address: str, observer: ServerObserver | None = None
    ) -> tuple[str, str] | None:
        """Start subscribing (in the background) and announce the server's key for ``address``.

        Returns the announced key's (role, SHA-256). With an ``observer``, the channel's
        log lines (broker lost, back, key received, malformed message) become its events.
        """
        assert self.channel is not None, "attach() first"
        if observer is not None:
            self._bridge = OobLogBridge(observer).install()
        announced = announced_key_sha256(options)
        if announced is not None:
            self.channel.fingerprint = Fingerprint(self.server_id, announced[1], address)
        self.channel.start()
        return announced

    async def stop(self) -> None:
        """Stop the subscriber and close its connection."""
        if self.channel is not None:
            await self.channel.stop()
        if self._bridge is not None:
            self._bridge.uninstall()
            self._bridge = None

    async def check_sas(self, hc: HandshakeComplete) -> SasOutcome:
        """``SasCheck``: probe, publish our SAS, wait for the client's; say what a match shows."""
        try:
            result = await exchange_sas(
                self.settings, self.server_id, hc.client_random, "server", hc.sas, self.sas_timeout
            )
        except OobError as exc:
            # Asked to verify and could not: going on would silently drop the check.
            return SasOutcome(f"SAS not compared: {exc}")
        if not result.match:
            return SasOutcome(SAS_MISMATCH)
        line, _verified = describe_match(result, "server", hc.sas_display, len(hc.sas) * 8)
        return SasOutcome(None, line)


class OobLogBridge(logging.Handler):
    """The channel's log lines (broker lost, reconnected, key received, malformed message)
    as server log events, so they come out in the server's own text or JSON format."""

    def __init__(self, observer: ServerObserver) -> None:
        super().__init__(logging.INFO)
        self.observer = observer

    def emit(self, record: logging.LogRecord) -> None:
        """One ``oob`` event per log record."""
        try:
            self.observer.log(
                "oob", "", {"level": record.levelname.lower(), "message": record.getMessage()}
            )
        except Exception:  # a broken log sink must not break the channel
            self.handleError(record)

    def install(self) -> OobLogBridge:
        """Attach to the ``kexlab.oob`` logger (INFO and up)."""
        logger = logging.getLogger(OOB_LOGGER)
        self._level = logger.level
        logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        return self

    def uninstall(self) -> None:
        """Detach again, restoring the logger's level."""
        logger = logging.getLogger(OOB_LOGGER)
        logger.removeHandler(self)
        logger.setLevel(self._level)
