"""What a man in the middle does on a broker that lets it publish: answer each SAS itself.

An attacker between a client and a server knows the SAS of each of its two legs: the
client's leg with the client, the server's leg with the server. On the SAS topics of §8
it waits until a side publishes its own SAS (that side is then subscribed and listening
on the other topic) and answers at once under the role that side waits for, with the SAS
of that side's own leg. Each side sees the SAS it computed: a match.

This is the attack issue 13 made visible: over a broker that lets others publish on the
peer's topic, a side's probe comes back and it reports the match as NOT verified. On the
hardened broker the attacker's publications are dropped by the ACL and each side sees
only the real peer's SAS, which differs: a mismatch. ``kexlab mitm --forge-sas``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from types import TracebackType

import aiomqtt

from .payloads import (
    QOS,
    MalformedPayload,
    check_server_id,
    encode_sas,
    parse_sas_message,
    sas_topic,
)
from .settings import CONNECT_TIMEOUT, MqttSettings, connect, message_bytes

log = logging.getLogger("kexlab.oob")

MEMORY = 256
"""Sessions whose victims' publications are remembered (a side may publish first)."""


class _Seen:
    """How many times a side has published its own SAS in one session, to wait on."""

    def __init__(self) -> None:
        self._n = 0
        self._reached: dict[int, asyncio.Event] = {}

    def count(self) -> None:
        """One more publication."""
        self._n += 1
        for n, event in self._reached.items():
            if self._n >= n:
                event.set()

    async def times(self, n: int) -> None:
        """Return once the side has published at least ``n`` times."""
        if self._n >= n:
            return
        await self._reached.setdefault(n, asyncio.Event()).wait()


class SasForger:
    """One MQTT connection subscribed to every SAS topic of ``server_id`` from the start."""

    def __init__(self, settings: MqttSettings, server_id: str) -> None:
        self.settings = settings
        self.server_id = check_server_id(server_id)
        self._published: OrderedDict[tuple[bytes, str], _Seen] = OrderedDict()
        self._ours: set[bytes] = set()
        self._client: aiomqtt.Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SasForger:
        stack = contextlib.AsyncExitStack()
        self._client = await stack.enter_async_context(connect(self.settings, CONNECT_TIMEOUT))
        await self._client.subscribe(f"kexlab/v1/{self.server_id}/sas/+/+", qos=QOS)
        self._stack = stack
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self._stack is not None:
            await self._stack.aclose()

    async def answer(self, client_random: bytes, victim: str, sas: bytes, wait: float) -> str:
        """When ``victim`` ("client" or "server") published its SAS, publish ``sas`` as its peer.

        Waits up to ``wait`` seconds for the victim (a side that does not compare its SAS
        publishes nothing), then until the victim publishes its SAS again: a side does that
        once, on the first SAS it receives, so it has taken ours and stopped listening. Only
        then may the other leg go on; a later side must not see that second copy. Returns a
        line saying what was done.
        """
        assert self._client is not None, "use as: async with SasForger(...)"
        impersonated = "server" if victim == "client" else "client"
        seen = self._seen(client_random, victim)
        try:
            async with asyncio.timeout(wait):
                await seen.times(1)
        except TimeoutError:
            return f"the {victim} published no SAS within {wait:g} s: nothing to forge"
        payload = encode_sas(sas, impersonated)
        self._ours.add(payload)
        topic = sas_topic(self.server_id, client_random, impersonated)
        await self._client.publish(topic, payload, qos=QOS)
        done = f"published the {victim}'s own leg's SAS as the {impersonated} on {topic}"
        try:
            async with asyncio.timeout(wait):
                await seen.times(2)
        except TimeoutError:
            return f"{done} (the {victim} did not answer it)"
        return done

    def _seen(self, client_random: bytes, role: str) -> _Seen:
        key = (client_random, role)
        seen = self._published.get(key)
        if seen is None:
            seen = self._published[key] = _Seen()
            while len(self._published) > MEMORY:
                self._published.popitem(last=False)
        return seen

    async def _read(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            payload = message_bytes(message)
            if payload in self._ours:
                continue  # our own forgery, coming back
            *_, random_hex, role = str(message.topic).split("/")
            try:
                got = parse_sas_message(payload)
                client_random = bytes.fromhex(random_hex)
            except (MalformedPayload, ValueError):
                continue
            if got.sas is not None and got.role == role:  # a side's own SAS, not a probe
                self._seen(client_random, role).count()
