"""Comparing the SAS over MQTT (docs/protocol.md §8), and saying exactly what a match is worth.

A match shows only that *someone allowed to publish on the peer's topic* derived the same
SAS. A man in the middle knows the SAS of both its legs; on a broker that lets it publish
there it posts them, or copies each side's own message onto the other topic (issue 13:
both ends then printed "verified"). So each publication names its role, a receiver
ignores messages whose role is not the topic's (a reflected copy of its own included),
and each side first publishes a *probe* on the peer's topic: if the broker delivers it
back, the broker lets this account (and so anyone like it) write there, and a match is
reported as not verified. Reading the SAS aloud stays the check that needs no broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass

import aiomqtt

from explain.throttle import LogThrottle

from .payloads import (
    KIND_RETAINED,
    QOS,
    ROLES,
    MalformedPayload,
    encode_probe,
    encode_sas,
    parse_sas_message,
    sas_equal,
    sas_topic,
)
from .settings import (
    CONNECT_TIMEOUT,
    BrokerUnavailable,
    MqttSettings,
    OobTimeout,
    connect,
    message_bytes,
)

log = logging.getLogger("kexlab.oob")

DEFAULT_SAS_TIMEOUT = 10.0
PROBE_GRACE = 0.5
"""Seconds after the broker acknowledged our probe that we wait for it to come back."""
SAS_MISMATCH = "SAS mismatch: possible man in the middle"
"""The reason both ends abort with when the SAS they compared over MQTT differ."""
ALOUD = "compare the SAS aloud: only that needs no broker"

_warnings = LogThrottle()


@dataclass(frozen=True)
class SasComparison:
    """What one side learned by comparing its SAS with the peer's over the broker."""

    match: bool
    """Every SAS that arrived under the peer's role equals ours (and one did)."""
    peer_topic_open: bool
    """Our probe on the peer's topic came back: the broker lets us, and others, write there."""
    reflections: int = 0
    """Copies of our own SAS that came back on the peer's topic: someone copies messages."""
    values: int = 1
    """Distinct SAS values seen under the peer's role (more than one: several publishers)."""

    @property
    def others_publish(self) -> bool:
        """Someone besides the peer can, or did, publish on the peer's topic."""
        return self.peer_topic_open or self.reflections > 0 or self.values > 1


async def exchange_sas(
    settings: MqttSettings,
    server_id: str,
    client_random: bytes,
    role: str,
    sas: bytes,
    timeout: float = DEFAULT_SAS_TIMEOUT,
) -> SasComparison:
    """Probe the peer's topic, publish our SAS, collect the peer's; OobTimeout if none came."""
    if role not in ROLES:
        raise ValueError(f"role must be 'client' or 'server', not {role!r}")
    peer_role = "server" if role == "client" else "client"
    own_topic = sas_topic(server_id, client_random, role)
    peer_topic = sas_topic(server_id, client_random, peer_role)
    nonce = secrets.token_hex(16)
    loop = asyncio.get_running_loop()
    connected = False
    try:
        async with asyncio.timeout(timeout):
            async with connect(settings, min(timeout, CONNECT_TIMEOUT)) as client:
                connected = True
                # Subscribe before publishing, so a peer that answers at once is not missed.
                await client.subscribe(peer_topic, qos=QOS)
                await client.publish(peer_topic, encode_probe(nonce, role), qos=QOS)
                probe_deadline = loop.time() + PROBE_GRACE
                await client.publish(own_topic, encode_sas(sas, role), qos=QOS)
                return await _collect(client, peer_topic, role, sas, nonce, probe_deadline)
    except TimeoutError:
        if not connected:
            raise BrokerUnavailable(
                f"MQTT broker {settings.describe()} unavailable: did not answer within"
                f" {timeout:g} s"
            ) from None
    raise OobTimeout(
        f"no SAS from the {peer_role} on {settings.url} within {timeout:g} s "
        "(did both sides run with --verify-sas mqtt?)"
    )


async def _collect(
    client: aiomqtt.Client,
    peer_topic: str,
    role: str,
    sas: bytes,
    nonce: str,
    probe_deadline: float,
) -> SasComparison:
    """Read the peer's topic until its SAS is in and the probe has come back or is overdue."""
    loop = asyncio.get_running_loop()
    probe_back = False
    reflections = 0
    theirs: list[bytes] = []
    # A local queue, so that waiting on it with a deadline can never lose a message
    # (a lost probe would turn into a false "verified").
    inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
    reader = asyncio.create_task(_read_into(client, inbox))
    try:
        while not (theirs and (probe_back or loop.time() >= probe_deadline)):
            wait = max(0.0, probe_deadline - loop.time()) if theirs else None
            getter = asyncio.ensure_future(inbox.get())
            try:
                await asyncio.wait(
                    {getter, reader}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                if not getter.done():
                    getter.cancel()  # Queue.get gives up without taking a message
            if not getter.done() or getter.cancelled():
                if reader.done():
                    reader.result()  # the connection broke: its error ends the exchange
                    raise aiomqtt.MqttError("the broker ended the subscription")
                continue  # the probe is overdue: the broker did not let it through
            message = getter.result()
            if not message.topic.matches(peer_topic):
                continue
            if message.retain:
                # §8 never retains a SAS: one waiting for us was planted before we came.
                _warn(KIND_RETAINED, f"ignored a retained message on {peer_topic}")
                continue
            try:
                got = parse_sas_message(message_bytes(message))
            except MalformedPayload as exc:
                _warn(exc.kind, f"ignored a malformed SAS on {peer_topic}: {exc}")
                continue
            if got.role == role:
                if got.probe == nonce:
                    probe_back = True
                elif got.sas is not None and sas_equal(got.sas, sas):
                    reflections += 1  # our own publication, copied onto the peer's topic
                continue
            if got.sas is None:
                continue  # a probe under the peer's role on the peer's own topic: nobody's
            if not theirs:
                # §8 messages are not retained: if the peer subscribed only after our first
                # publish it missed it. It is subscribed now (it subscribes before it
                # publishes), so one more copy reaches it.
                own_topic = peer_topic.rsplit("/", 1)[0] + "/" + role
                await client.publish(own_topic, encode_sas(sas, role), qos=QOS)
            if got.sas not in theirs:
                theirs.append(got.sas)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await reader
    return SasComparison(
        match=all(sas_equal(t, sas) for t in theirs),
        peer_topic_open=probe_back,
        reflections=reflections,
        values=len(theirs),
    )


async def _read_into(client: aiomqtt.Client, inbox: asyncio.Queue[aiomqtt.Message]) -> None:
    async for message in client.messages:
        inbox.put_nowait(message)


def describe_match(result: SasComparison, role: str, display: str, bits: int) -> tuple[str, bool]:
    """The line a side prints after a match, and whether it may call the SAS verified.

    Never "verified" where others can publish on the peer's topic, and never on the
    server, whose check of a client's SAS is worth no more than the broker's control of
    who may write ``sas/+/client``: on the shipped ACL, every client account may.
    """
    peer = "server" if role == "client" else "client"
    copied = (
        f"; {result.reflections} copy(ies) of our own SAS came back on the {peer}'s topic:"
        " someone copies messages there"
        if result.reflections
        else ""
    )
    if result.others_publish:
        why = (
            f"this broker let us publish on the {peer}'s topic too (our test message came back)"
            if result.peer_topic_open
            else f"someone besides the {peer} publishes on its topic"
        )
        return (
            f"SAS NOT verified: the {peer}'s SAS over MQTT matches ours ({display} …), but {why},"
            f" so a man in the middle could have sent it{copied}; {ALOUD}",
            False,
        )
    if role == "client":
        return (
            f"SAS verified over MQTT: the server's SAS equals ours, all {bits} bits"
            f" ({display} …); this broker refused our own test message on the server's topic,"
            " so only an account it lets publish there could have sent it (the check is as"
            f" strong as the broker's ACL; {ALOUD})",
            True,
        )
    return (
        f"SAS matched over MQTT: the client's SAS equals ours, all {bits} bits ({display} …)."
        " This shows only that an account allowed to publish on sas/+/client computed it"
        " (on the shipped ACL, every client account), not that no man in the middle sits"
        f" between us; {ALOUD}",
        False,
    )


def _warn(kind: str, line: str) -> None:
    for summary in _warnings.summaries():
        log.warning("MQTT: ignored %s on SAS topics (%s)", summary.tail(), summary.kind)
    if _warnings.allow(kind):
        log.warning("MQTT: %s", line)
