"""PSKs published on the out-of-band channel (docs/protocol.md §8), found in a capture.

MQTT without TLS carries every PUBLISH in the clear, so whoever records the
broker's traffic holds every PSK handed over on ``kexlab/v1/<server_id>/psk/<identity>``:
the stolen-key lesson. This module parses MQTT 3.1.1 and 5 control packets from
reassembled TCP streams (port 1883, or any stream that opens with a CONNECT) and
returns those keys. It reads only what it needs: PUBLISH topics and payloads.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass

from protocol.json_payload import JsonPayloadError, load_object

from .streams import Address, Capture, TcpStream

MQTT_PORT = 1883
MAX_PSK_PAYLOAD = 65536
"""A §8 psk payload is a few hundred bytes; a capture's larger ones are not parsed."""
CONNECT, PUBLISH = 1, 3
V311, V5 = 4, 5

# MQTT 5 property identifiers (§2.2.2.2) allowed in PUBLISH, by value type, so a
# parser can step over them; 0x23 (topic alias) is the one we use.
_PROP_BYTE = {0x01}
_PROP_U16 = {0x23}
_PROP_U32 = {0x02}
_PROP_VARINT = {0x0B}
_PROP_STRING = {0x03, 0x08}
_PROP_BINARY = {0x09}
_PROP_PAIR = {0x26}
_TOPIC_ALIAS = 0x23


@dataclass(frozen=True)
class Publish:
    """One PUBLISH packet seen in a stream."""

    topic: str
    payload: bytes
    time: float
    src: Address
    dst: Address


@dataclass(frozen=True)
class LeakedPsk:
    """A PSK read off the wire from a PUBLISH on ``kexlab/v1/<server_id>/psk/<identity>``."""

    identity: str
    key: bytes
    topic: str
    server_id: str
    time: float
    """Capture time of the PUBLISH."""
    expires_at: float | None
    src: Address
    dst: Address


class _Malformed(Exception):
    pass


class _Buf:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Malformed
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def varint(self) -> int:
        value = 0
        for i in range(4):
            b = self.take(1)[0]
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return value
        raise _Malformed

    def string(self) -> str:
        try:
            return self.take(self.u16()).decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed from None

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)


def control_packets(data: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    """(packet type, flags, body, end offset) of each whole packet; stops at a cut or bad one."""
    pos = 0
    while pos < len(data):
        buf = _Buf(data)
        buf.pos = pos + 1
        try:
            length = buf.varint()
        except _Malformed:
            return
        end = buf.pos + length
        if end > len(data):
            return
        first = data[pos]
        yield first >> 4, first & 0x0F, data[buf.pos : end], end
        pos = end


def connect_version(body: bytes) -> int | None:
    """The protocol level of a CONNECT body (4 = 3.1.1, 5 = 5), or None if it is not one."""
    buf = _Buf(body)
    try:
        name = buf.string()
        level = buf.take(1)[0]
    except _Malformed:
        return None
    return level if name in ("MQTT", "MQIsdp") else None


def _properties(buf: _Buf) -> dict[int, int]:
    """Step over an MQTT 5 property block; returns the integer-valued ones we may need."""
    end = buf.varint()
    end += buf.pos
    found: dict[int, int] = {}
    while buf.pos < end:
        prop = buf.varint()
        if prop in _PROP_BYTE:
            found[prop] = buf.take(1)[0]
        elif prop in _PROP_U16:
            found[prop] = buf.u16()
        elif prop in _PROP_U32:
            found[prop] = int.from_bytes(buf.take(4), "big")
        elif prop in _PROP_VARINT:
            found[prop] = buf.varint()
        elif prop in _PROP_STRING or prop in _PROP_BINARY:
            buf.take(buf.u16())
        elif prop in _PROP_PAIR:
            buf.take(buf.u16())
            buf.take(buf.u16())
        else:
            raise _Malformed
    if buf.pos != end:
        raise _Malformed
    return found


def parse_publish(
    flags: int, body: bytes, version: int, aliases: dict[int, str]
) -> tuple[str, bytes] | None:
    """(topic, payload) of a PUBLISH body under ``version``, or None if it does not parse."""
    buf = _Buf(body)
    try:
        topic = buf.string()
        if (flags >> 1) & 0x03:
            buf.u16()  # packet identifier, present for QoS 1 and 2
        if version == V5:
            props = _properties(buf)
            alias = props.get(_TOPIC_ALIAS)
            if alias is not None:
                if topic:
                    aliases[alias] = topic
                else:
                    topic = aliases.get(alias, "")
        return topic, buf.rest()
    except _Malformed:
        return None


def publishes(stream: TcpStream, version: int | None) -> Iterator[Publish]:
    """Every PUBLISH in one direction of an MQTT connection.

    With the version unknown (the CONNECT was not captured) each PUBLISH is read as
    3.1.1 and as 5, and the reading whose payload is a JSON object is kept.
    """
    aliases: dict[int, str] = {}
    for ptype, flags, body, end in control_packets(stream.data):
        if ptype != PUBLISH:
            continue
        candidates = [version] if version is not None else [V311, V5]
        for v in candidates:
            parsed = parse_publish(flags, body, v, aliases)
            if parsed is None:
                continue
            if version is None and not _looks_like_json(parsed[1]):
                continue
            topic, payload = parsed
            start = max(end - len(body), 0)
            yield Publish(topic, payload, stream.time_at(start, end), stream.src, stream.dst)
            break


def _looks_like_json(payload: bytes) -> bool:
    return payload.lstrip()[:1] == b"{"


def psk_topic(topic: str) -> tuple[str, str] | None:
    """(server_id, identity) of a topic matching ``kexlab/v1/+/psk/+``, else None."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:2] == ["kexlab", "v1"] and parts[3] == "psk" and all(parts):
        return parts[2], parts[4]
    return None


def leaked_psk(pub: Publish) -> LeakedPsk | None:
    """The PSK in a §8 ``psk/<identity>`` PUBLISH, or None if it is not one."""
    names = psk_topic(pub.topic)
    if names is None:
        return None
    server_id, topic_identity = names
    try:
        # Bounded: a nesting bomb in a captured PUBLISH used to abort the whole report.
        doc = load_object(pub.payload, max_bytes=MAX_PSK_PAYLOAD)
        key = base64.b64decode(doc["key"], validate=True)
    except (JsonPayloadError, ValueError, KeyError, TypeError, binascii.Error):
        return None
    if not key:
        return None
    identity = doc.get("identity")
    if not isinstance(identity, str) or not identity:
        identity = topic_identity
    expires = doc.get("expires_at")
    expires_at = float(expires) if isinstance(expires, int | float) else None
    return LeakedPsk(identity, key, pub.topic, server_id, pub.time, expires_at, pub.src, pub.dst)


def find_psks(capture: Capture) -> list[LeakedPsk]:
    """Every PSK published on ``kexlab/v1/+/psk/+`` in the capture, in capture order, deduplicated."""
    found: list[LeakedPsk] = []
    seen: set[tuple[str, bytes]] = set()
    for conn in capture.connections:
        client, server = conn.a, conn.b
        version = _version_of(client)
        if version is None and MQTT_PORT not in (client.dst[1], client.src[1]):
            continue  # neither port 1883 nor a CONNECT: not an MQTT connection
        for stream in (client, server):
            for pub in publishes(stream, version):
                leak = leaked_psk(pub)
                if leak is not None and (leak.identity, leak.key) not in seen:
                    seen.add((leak.identity, leak.key))
                    found.append(leak)
    found.sort(key=lambda leak: leak.time)
    return found


def _version_of(stream: TcpStream) -> int | None:
    for ptype, _flags, body, _end in control_packets(stream.data[:65536]):
        if ptype == CONNECT:
            return connect_version(body)
        return None
    return None
