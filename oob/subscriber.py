"""The server's side of §8: a PSK table fed from ``psk/+`` and a retained ``fingerprint``.

One background task holds one MQTT connection. When the broker goes away it logs one
line, retries with exponential backoff, and on return publishes the fingerprint again
(a broker without persistence forgets retained messages) and resubscribes. Nothing here
touches a KXP connection: a broker outage only means unknown identities stay unknown.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable

import aiomqtt

from explain.throttle import LogThrottle

from .payloads import (
    KIND_RETAINED,
    KIND_WORDS,
    QOS,
    Fingerprint,
    MalformedPayload,
    check_server_id,
    fingerprint_topic,
    parse_psk,
    psk_filter,
)
from .psk_table import Admission, PskTable
from .settings import (
    CONNECT_TIMEOUT,
    MqttSettings,
    OobError,
    cancel_and_wait,
    connect,
    message_bytes,
)

log = logging.getLogger("kexlab.oob")

# docs/protocol.md §8: the default time a server waits for an identity it does not know yet.
DEFAULT_PSK_WAIT = 3.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
# An outage is logged with its reason each time the reason changes (the broker went away,
# then refused the login), and again at most this often while it stays the same.
OUTAGE_REPEAT = 30.0
RECEIVED_LINES = 20
"""Key receipts logged per minute before they are only counted (a flood of valid keys)."""
KIND_RECEIVED = "received"
KIND_CONFLICT = "conflict"
KIND_CLAMPED = "clamped"
KIND_FULL = "full"
KIND_ERROR = "error"
SUMMARY_WORDS = {
    **{kind: f"ignored {words}" for kind, words in KIND_WORDS.items()},
    KIND_RECEIVED: "PSKs received",
    KIND_CONFLICT: "ignored second keys for identities that hold one",
    KIND_CLAMPED: "PSK lifetimes brought down to the ceiling",
    KIND_FULL: "PSKs kept only briefly (table full)",
    KIND_ERROR: "messages that could not be handled",
}


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
        # Hostile input is logged at most once a minute per kind; key receipts a few times.
        self._throttle = LogThrottle(bursts={KIND_RECEIVED: RECEIVED_LINES})
        self._flush_timer: asyncio.TimerHandle | None = None

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
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if task is not None:
            await cancel_and_wait(task)
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
        try:
            self._take(message)
        except Exception as exc:
            # One message must never end the subscription (issue 13: a RecursionError
            # restarted the subscriber in a loop and no psk client got in).
            self._note(KIND_ERROR, f"could not handle a message on {message.topic}: {exc!r}")

    def _take(self, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        payload = message_bytes(message)
        if message.retain:
            # §8 never retains a PSK: a retained one was planted, and would come back at
            # every resubscribe (with expires_at far in the future, forever).
            self._note(
                KIND_RETAINED, f"ignored a retained PSK on {topic}: §8 keys are never retained"
            )
            return
        try:
            psk = parse_psk(topic, payload, self.table.clock())
        except MalformedPayload as exc:
            self._note(exc.kind, f"ignored a malformed message on {topic}: {exc}")
            return
        added = self.table.add(psk.identity, psk.key, psk.expires_at)
        left = added.expires_at - self.table.clock()
        if added.admission is Admission.CONFLICT:
            self._note(
                KIND_CONFLICT,
                f"ignored a second key for PSK identity {psk.identity!r}: it holds another"
                f" for {left:.0f} s more",
            )
            return
        if added.clamped:
            self._note(
                KIND_CLAMPED,
                f"PSK for identity {psk.identity!r} asked to live past the"
                f" {self.table.max_lifetime:.0f} s ceiling: kept {left:.0f} s",
            )
        if added.admission is Admission.RECENT:
            self._note(
                KIND_FULL,
                f"PSK table full ({self.table.max_entries} keys, none evicted before it"
                f" expires): the key for {psk.identity!r} is kept only {left:.0f} s,"
                " for a handshake on its way",
            )
            return
        # Never the key itself: logs are read by more people than the key was meant for.
        self._note(
            KIND_RECEIVED,
            f"PSK for identity {psk.identity!r} received (expires in {left:.0f} s)",
            level=logging.INFO,
        )

    def _note(self, kind: str, line: str, level: int = logging.WARNING) -> None:
        """Log ``line`` unless its kind has had its lines this minute; then count it."""
        self._flush()
        if self._throttle.allow(kind):
            log.log(level, "MQTT: %s", line)
        else:
            self._schedule_flush()

    def _flush(self) -> None:
        """The summaries of what was held back, once their minute is over."""
        for summary in self._throttle.summaries():
            words = SUMMARY_WORDS.get(summary.kind, summary.kind)
            log.warning("MQTT: %s: %s", words, summary.tail())
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        due = self._throttle.next_due()
        if due is not None and self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(due, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        self._flush_timer = None
        self._flush()
