"""The client's side of the out-of-band channel (docs/protocol.md §8).

Before connecting: hand the server a fresh PSK (``--kex psk --oob``) and/or read and pin
its announced fingerprint (``--trust mqtt``). After the handshake: compare the full SAS
with the server's (``--verify-sas mqtt``). Every failure is one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from keystore import MqttPinPolicy, TrustPolicy
from oob import (
    CONNECT_TIMEOUT,
    DEFAULT_SAS_TIMEOUT,
    SAS_MISMATCH,
    Fingerprint,
    MqttSettings,
    OobError,
    PskPublication,
    describe_match,
    exchange_sas,
    fetch_fingerprint,
    fingerprint_topic,
    generate_identity,
    generate_psk,
    publish_psk,
    unknown_psk_message,
)
from protocol import AlertCode, PeerAlert
from transport import EventHook

from .session import ClientOptions, ClientSession

REPUBLISH_AFTER = (0.5, 1.0)
"""Seconds a psk handshake may take before the key goes out again (twice at most)."""


class OobDeliveryError(OobError):
    """The server did not know the PSK the client published (the broker may have dropped it)."""


@dataclass
class ClientOob:
    """``--oob``, ``--server-id`` and ``--verify-sas mqtt`` of one client run."""

    settings: MqttSettings
    server_id: str
    verify_sas: bool = False
    publish_psk: bool = False
    """Generate a PSK and publish it before connecting (``--kex psk`` without ``--psk``)."""
    sas_timeout: float = DEFAULT_SAS_TIMEOUT
    timeout: float = CONNECT_TIMEOUT
    publication: PskPublication | None = field(default=None, init=False)

    def new_psk(self, options: ClientOptions) -> None:
        """32 fresh random bytes and a fresh identity, into ``options`` (published later)."""
        options.psk_identity, options.psk = generate_identity(), generate_psk()

    async def before_connect(self, options: ClientOptions, policy: TrustPolicy | None) -> list[str]:
        """Publish the PSK and/or pin the announced key; the lines to show the user."""
        notes = []
        if self.publish_psk:
            self.publication = await publish_psk(
                self.settings,
                self.server_id,
                options.psk_identity,
                options.psk,
                timeout=self.timeout,
            )
            # Only what is known: the broker took it, not that the server got it.
            notes.append(self.publication.summary())
        if isinstance(policy, MqttPinPolicy):
            announced = await self.fingerprint()
            policy.pin(
                announced.key_sha256, f"{self.settings.url} {fingerprint_topic(self.server_id)}"
            )
        return notes

    async def fingerprint(self) -> Fingerprint:
        """The server's retained announcement."""
        return await fetch_fingerprint(self.settings, self.server_id, self.timeout)

    async def open(self, options: ClientOptions, on_event: EventHook | None) -> ClientSession:
        """``ClientSession.open``, with unknown_psk_identity explained after a publish.

        A handshake still going after REPUBLISH_AFTER seconds publishes the key again: a
        server whose table a flood filled may have let our first copy go before our hello
        came, and while it waits for this identity it hands a copy straight to our handshake.
        """
        opening = asyncio.ensure_future(ClientSession.open(options, on_event=on_event))
        again = None
        if self.publication is not None:
            again = asyncio.create_task(self._republish(opening, options))
        try:
            return await opening
        except PeerAlert as exc:
            if self.publication is None or exc.code != AlertCode.UNKNOWN_PSK_IDENTITY:
                raise
            message = unknown_psk_message(options.psk_identity, self.settings, self.server_id)
            raise OobDeliveryError(
                f"{message} (server sent alert {exc.name} ({exc.code}))"
            ) from None
        finally:
            opening.cancel()  # only if we were cancelled first (Ctrl-C): it cleans up itself
            if again is not None:
                again.cancel()
                await asyncio.gather(again, return_exceptions=True)

    async def _republish(
        self, opening: asyncio.Future[ClientSession], options: ClientOptions
    ) -> None:
        assert self.publication is not None
        for delay in REPUBLISH_AFTER:
            done, _ = await asyncio.wait({opening}, timeout=delay)
            if done:
                return
            ttl = self.publication.expires_at - time.time()
            if ttl <= 0:
                return
            with contextlib.suppress(OobError):
                await publish_psk(
                    self.settings, self.server_id, options.psk_identity, options.psk, ttl,
                    timeout=self.timeout,
                )  # fmt: skip

    async def check_sas(self, session: ClientSession) -> tuple[str, bool]:
        """Compare the SAS with the server's: the line to print on a match, and whether it
        may say "verified" (never where others can publish on the server's topic).

        On a mismatch, or when no comparison could be made, the connection is aborted
        (handshake_failure) and the ``ProtocolError`` saying why is raised.
        """
        hc = session.handshake
        try:
            result = await exchange_sas(
                self.settings, self.server_id, hc.client_random, "client", hc.sas, self.sas_timeout
            )
        except OobError as exc:
            reason = f"SAS not compared: {exc}"
            raise session.stream.abort(AlertCode.HANDSHAKE_FAILURE, reason) from None
        if not result.match:
            raise session.stream.abort(AlertCode.HANDSHAKE_FAILURE, SAS_MISMATCH)
        return describe_match(result, "client", hc.sas_display, len(hc.sas) * 8)
