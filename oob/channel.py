"""One-shot operations on the §8 channel: hand a server a PSK, read its fingerprint.

Each opens its own short MQTT connection, does one thing, and closes it. Every failure
is an ``OobError`` whose text is one line; nothing here retries behind the caller's back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol.constants import MIN_PSK_LEN

from .payloads import (
    MAX_PSK_LEN,
    QOS,
    Fingerprint,
    MalformedPayload,
    PskMessage,
    check_identity,
    check_server_id,
    fingerprint_topic,
    format_shared_psk,
    parse_fingerprint,
    psk_topic,
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

PSK_LEN = 32
DEFAULT_TTL = 300.0

# MQTT 3.1.1 has no way to tell a publisher that an ACL dropped its message: the
# broker still answers PUBACK. So a PUBACK proves only that the broker took the bytes.
PUBACK_CAVEAT = (
    "the broker acknowledged it (PUBACK), but MQTT does not tell a publisher when an ACL "
    "drops a message, so this does not prove that the server can read it"
)
REFUSED_PUBLISH_HINT = (
    "the broker may have refused the publish (MQTT ACLs drop denied messages silently "
    "and still acknowledge them)"
)


def unknown_psk_message(identity: str, settings: MqttSettings, server_id: str) -> str:
    """The client's line for unknown_psk_identity after it published the key over MQTT."""
    return (
        f"the server does not know PSK identity {identity!r}: {REFUSED_PUBLISH_HINT}; check "
        f"that {settings.describe()} lets this user write kexlab/v1/{server_id}/psk/# and "
        f"that the server subscribes to the same broker with --server-id {server_id}"
    )


def generate_psk() -> bytes:
    """32 bytes from the OS CSPRNG (§5: a PSK is never a password)."""
    return secrets.token_bytes(PSK_LEN)


def generate_identity() -> str:
    """A fresh identity that is safe in a topic: ``psk-`` and 16 hex digits."""
    return f"psk-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class PskPublication:
    """A PSK the broker acknowledged. Not a delivery receipt: see ``PUBACK_CAVEAT``."""

    broker: str
    topic: str
    identity: str
    key: bytes = field(repr=False)
    expires_at: float

    @property
    def shareable(self) -> str:
        """``IDENTITY=HEX``: the copy-paste form for the other side."""
        return format_shared_psk(self.identity, self.key)

    def summary(self, now: float | None = None) -> str:
        """One line for the user that claims exactly what is known."""
        left = self.expires_at - (time.time() if now is None else now)
        return (
            f"published PSK {self.identity!r} to {self.broker} on {self.topic} "
            f"(expires in {left:.0f} s); {PUBACK_CAVEAT}"
        )


async def publish_psk(
    settings: MqttSettings,
    server_id: str,
    identity: str,
    key: bytes,
    ttl: float = DEFAULT_TTL,
    *,
    clock: Callable[[], float] = time.time,
    timeout: float = CONNECT_TIMEOUT,
) -> PskPublication:
    """Publish a PSK (QoS 1) and wait for the broker's PUBACK; fails within ``timeout``."""
    check_server_id(server_id)
    check_identity(identity)
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if not MIN_PSK_LEN <= len(key) <= MAX_PSK_LEN:
        raise ValueError(f"a PSK is {MIN_PSK_LEN}..{MAX_PSK_LEN} bytes")
    message = PskMessage(identity, key, float(math.ceil(clock() + ttl)))
    topic = psk_topic(server_id, identity)
    connected = False
    try:
        async with asyncio.timeout(timeout):
            async with connect(settings, timeout) as client:
                connected = True
                await client.publish(topic, message.encode(), qos=QOS)
    except TimeoutError:
        raise _no_answer(settings, timeout, connected, "acknowledge the PSK") from None
    return PskPublication(settings.url, topic, identity, key, message.expires_at)


async def fetch_fingerprint(
    settings: MqttSettings, server_id: str, timeout: float = CONNECT_TIMEOUT
) -> Fingerprint:
    """The server's retained fingerprint; ``OobTimeout`` if none arrives within ``timeout``."""
    topic = fingerprint_topic(server_id)
    connected = False
    try:
        async with asyncio.timeout(timeout):
            async with connect(settings, timeout) as client:
                connected = True
                await client.subscribe(topic, qos=QOS)
                async for message in client.messages:
                    if not message.topic.matches(topic):
                        continue  # amqtt may replay retained messages of other topics
                    try:
                        return parse_fingerprint(server_id, message_bytes(message))
                    except MalformedPayload as exc:
                        log.warning("MQTT: ignored a malformed fingerprint on %s: %s", topic, exc)
    except TimeoutError:
        if not connected:
            raise _no_answer(settings, timeout, connected, "answer") from None
    raise OobTimeout(
        f"no fingerprint for server {server_id!r} on {settings.url} within {timeout:g} s "
        "(is the server running with --oob, and may this user read its fingerprint?)"
    )


def _no_answer(
    settings: MqttSettings, timeout: float, connected: bool, what: str
) -> BrokerUnavailable:
    if not connected:
        what = "answer"
    return BrokerUnavailable(
        f"MQTT broker {settings.describe()} unavailable: did not {what} within {timeout:g} s"
    )
