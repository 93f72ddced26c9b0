"""The server's side of §8: a PSK table fed from ``psk/+`` and a retained ``fingerprint``.

One background task holds one MQTT connection. When the broker goes away it logs one
line, retries with exponential backoff, and on return publishes the fingerprint again
(a broker without persistence forgets retained messages) and resubscribes. Nothing here
touches a KXP connection: a broker outage only means unknown identities stay unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import aiomqtt

from .payloads import (
    QOS,
    Fingerprint,
    MalformedPayload,
    check_server_id,
    fingerprint_topic,
    parse_psk,
    psk_filter,
)
from .psk_table import PskTable
from .settings import CONNECT_TIMEOUT, MqttSettings, OobError, connect

log = logging.getLogger("kexlab.oob")

# docs/protocol.md §8: the default time a server waits for an identity it does not know yet.
DEFAULT_PSK_WAIT = 3.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
# An outage is logged with its reason each time the reason changes (the broker went away,
# then refused the login), and again at most this often while it stays the same.
OUTAGE_REPEAT = 30.0
_MALFORMED_MEMORY = 256


class ServerChannel:
    """Subscribe to ``kexlab/v1/<server_id>/psk/+`` and keep the keys in a ``PskTable``.

    Use as ``async with ServerChannel(...) as channel:``; ``channel.lookup`` fits
    ``ServerConfig.psk_lookup`` and ``channel.wait_for`` serves ``--psk-wait``.
    """

    def __init__(
        self,
        settings: MqttSettings,
        server_id: str,
        *,
        table: PskTable | None = None,
        fingerprint: Fingerprint | None = None,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        connect_timeout: float = CONNECT_TIMEOUT,
        outage_repeat: float = OUTAGE_REPEAT,
    ) -> None:
        self.settings = settings
        self.server_id = check_server_id(server_id)
        self.table = table if table is not None else PskTable()
        if fingerprint is not None and fingerprint.server_id != self.server_id:
            raise ValueError("the fingerprint names another server id")
        self.fingerprint = fingerprint
        self.subscriptions = 0
        """How many times the subscription has been (re)established."""
        self._backoff = (backoff_initial, backoff_max)
        self._connect_timeout = connect_timeout
        self._outage_repeat = outage_repeat
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._malformed_seen: OrderedDict[tuple[str, bytes], None] = OrderedDict()

    async def __aenter__(self) -> ServerChannel:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start(self) -> None:
        """Start the background subscriber (it connects, and reconnects, on its own)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"kexlab-oob-{self.server_id}")

    async def stop(self) -> None:
        """Stop the subscriber and close its connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ready.clear()

    @property
    def ready(self) -> bool:
        """Subscribed right now (and the fingerprint, if any, published)."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until subscribed; False if that did not happen within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    def lookup(self, identity: str) -> bytes | None:
        """A key already received (synchronous: ``ServerConfig.psk_lookup``)."""
        return self.table.lookup(identity)

    async def wait_for(self, identity: str, timeout: float = DEFAULT_PSK_WAIT) -> bytes | None:
        """The key for ``identity``, waiting up to ``timeout`` s for it to arrive on the channel."""
        return await self.table.wait_for(identity, timeout)

    def provider(
        self, timeout: float = DEFAULT_PSK_WAIT
    ) -> Callable[[str], Awaitable[bytes | None]]:
        """``wait_for`` with ``timeout`` bound: an async identity -> key function."""

        async def provide(identity: str) -> bytes | None:
            return await self.wait_for(identity, timeout)

        return provide

    # ------------------------------------------------------------------ the task

    async def _run(self) -> None:
        delay = self._backoff[0]
        outage_logged = False
        said, said_at = "", -math.inf  # the last reason logged, and when
        clock = asyncio.get_running_loop().time
        while True:
            try:
                async with connect(self.settings, self._connect_timeout) as client:
                    await self._setup(client)
                    self._ready.set()
                    self.subscriptions += 1
                    if outage_logged:
                        log.warning("MQTT: reconnected to %s and resubscribed", self.settings.url)
                    else:
                        log.info("MQTT: subscribed to %s on %s", self._filter, self.settings.url)
                    delay, outage_logged = self._backoff[0], False
                    said = ""
                    async for message in client.messages:
                        self._on_message(message)
            except OobError as exc:
                # Say why every time the reason changes, and repeat it while it lasts, at most
                # once per outage_repeat: a login refused after a disconnect must not hide.
                reason = str(exc)
                if reason != said or clock() - said_at >= self._outage_repeat:
                    again = " (still)" if reason == said else ""
                    log.warning("%s%s; retrying in the background", reason, again)
                    said, said_at = reason, clock()
                else:
                    log.debug("MQTT retry failed: %s", exc)
                outage_logged = True
            except Exception:
                # A server must outlive its out-of-band channel: log the surprise, retry.
                log.exception("MQTT subscriber failed; retrying")
                outage_logged = True
            finally:
                self._ready.clear()
            # Jitter so that many servers do not hammer a returning broker in step.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff[1])

    @property
    def _filter(self) -> str:
        return psk_filter(self.server_id)

    async def _setup(self, client: aiomqtt.Client) -> None:
        if self.fingerprint is not None:
            await client.publish(
                fingerprint_topic(self.server_id), self.fingerprint.encode(), qos=QOS, retain=True
            )
        granted = await client.subscribe(self._filter, qos=QOS)
        if any(getattr(code, "is_failure", False) for code in granted):
            raise OobError(
                f"MQTT broker {self.settings.describe()} refused the subscription to "
                f"{self._filter} (does this user have read access?)"
            )

    def _on_message(self, message: aiomqtt.Message) -> None:
        if not message.topic.matches(self._filter):
            # amqtt replays retained messages of other clients' topics at connect.
            return
        topic = str(message.topic)
        payload = message.payload if isinstance(message.payload, bytes) else b""
        try:
            psk = parse_psk(topic, payload, self.table.clock())
        except MalformedPayload as exc:
            self._malformed(topic, payload, str(exc))
            return
        self.table.add(psk.identity, psk.key, psk.expires_at)
        # Never the key itself: logs are read by more people than the key was meant for.
        log.info(
            "MQTT: PSK for identity %r received (expires in %.0f s)",
            psk.identity,
            psk.expires_at - self.table.clock(),
        )

    def _malformed(self, topic: str, payload: bytes, reason: str) -> None:
        # Logged once per distinct message, so a flood or a retained message that returns
        # at every resubscribe cannot fill the log.
        mark = (topic, hashlib.sha256(payload).digest())
        if mark in self._malformed_seen:
            return
        self._malformed_seen[mark] = None
        if len(self._malformed_seen) > _MALFORMED_MEMORY:
            self._malformed_seen.popitem(last=False)
        log.warning("MQTT: ignored a malformed message on %s: %s", topic, reason)
