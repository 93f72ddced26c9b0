"""The §8 channel against real brokers: every scenario on Mosquitto and on the embedded amqtt broker.

PSK delivery into the server's table, expiry, malformed payloads (each kind), the
retained fingerprint, SAS match and mismatch, a broker that is down at start, and a
broker that stops and returns while the server's subscriber runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from oob_brokers import (
    LabBroker,
    assert_no_stray_tasks,
    free_port,
    make_broker,
    running,
    subscriber,
)

from oob import (
    CONNECT_TIMEOUT,
    DEFAULT_SAS_TIMEOUT,
    BrokerUnavailable,
    Fingerprint,
    MqttSettings,
    OobError,
    OobTimeout,
    PskTable,
    ServerChannel,
    exchange_sas,
    fetch_fingerprint,
    generate_identity,
    generate_psk,
    publish_psk,
    sas_topic,
)
from oob.settings import connect

SID = "lab-server"
KINDS = ["mosquitto", "amqtt"]
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}
FINGERPRINT = Fingerprint(SID, "ab" * 32, "127.0.0.1:9700")


@pytest.fixture(params=KINDS)
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LabBroker]:
    """A running broker of each kind; afterwards no oob task may be left behind."""
    async with running(make_broker(request.param, tmp_path)) as lab:
        yield lab
    await assert_no_stray_tasks()


@pytest.fixture
def oob_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture kexlab.oob at INFO."""
    caplog.set_level(logging.INFO, logger="kexlab.oob")
    return caplog


class FakeClock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def publish_raw(settings: MqttSettings, *messages: tuple[str, bytes]) -> None:
    """Publish (topic, payload) pairs in order over one connection, QoS 1."""
    async with connect(settings) as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1)


def oob_warnings(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    """kexlab.oob warnings that contain ``needle``."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "kexlab.oob" and r.levelno == logging.WARNING and needle in r.getMessage()
    ]


# --------------------------------------------------------------------------- psk


async def test_published_psk_reaches_the_server_table(broker: LabBroker) -> None:
    settings = broker.settings()
    identity, key = generate_identity(), generate_psk()
    async with ServerChannel(settings, SID, **FAST) as channel:
        assert await channel.wait_ready(5)
        publication = await publish_psk(settings, SID, identity, key, ttl=60)
        assert await channel.wait_for(identity, 5) == key
        assert channel.lookup(identity) == key
    assert len(key) == 32
    assert publication.topic == f"kexlab/v1/{SID}/psk/{identity}"
    assert publication.shareable == f"{identity}={key.hex()}"
    assert publication.broker == broker.url


async def test_psk_payload_on_the_wire_and_open_broker_eavesdropper(broker: LabBroker) -> None:
    """§8 payload, QoS 1, not retained; and on an open broker anyone subscribed reads the key."""
    settings = broker.settings()
    identity, key = "wire-check", generate_psk()
    async with subscriber(settings, "kexlab/#") as eve:
        before = time.time()
        await publish_psk(settings, SID, identity, key, ttl=120)
        await eventually(lambda: len(eve) == 1)
    (message,) = eve
    body = json.loads(message.payload)
    assert str(message.topic) == f"kexlab/v1/{SID}/psk/{identity}"
    assert (message.qos, message.retain) == (1, False)
    assert set(body) == {"identity", "key", "expires_at"}
    assert body["identity"] == identity
    assert base64.b64decode(body["key"]) == key  # the lesson: the eavesdropper holds the key
    assert isinstance(body["expires_at"], int)
    assert before + 119 <= body["expires_at"] <= time.time() + 121


async def test_psk_wait_returns_a_key_that_arrives_late_and_none_for_a_stranger(
    broker: LabBroker,
) -> None:
    settings = broker.settings()
    key = generate_psk()
    async with ServerChannel(settings, SID, **FAST) as channel:
        assert await channel.wait_ready(5)
        waiting = asyncio.create_task(channel.provider(5.0)("late-key"))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await publish_psk(settings, SID, "late-key", key, ttl=60)
        assert await waiting == key
        started = time.monotonic()
        assert await channel.wait_for("stranger", 0.3) is None
        # It waited its own 0.3 s: not less; not the provider's 5 s (4 s leaves room for a
        # busy machine without letting the wrong timeout pass).
        assert 0.25 <= time.monotonic() - started < 4


async def test_keys_are_forgotten_past_expires_at(broker: LabBroker) -> None:
    settings = broker.settings()
    clock = FakeClock()
    table = PskTable(clock=clock)
    key = generate_psk()
    async with ServerChannel(settings, SID, table=table, **FAST) as channel:
        assert await channel.wait_ready(5)
        await publish_psk(settings, SID, "short-lived", key, ttl=60, clock=clock)
        assert await channel.wait_for("short-lived", 5) == key
        clock.now += 59
        assert channel.lookup("short-lived") == key
        clock.now += 1
        assert channel.lookup("short-lived") is None
        assert len(table) == 0


def _psk_body(identity: str, raw_key: bytes = b"k" * 32, **override: Any) -> bytes:
    body: dict[str, Any] = {
        "identity": identity,
        "key": base64.b64encode(raw_key).decode(),
        "expires_at": int(time.time()) + 600,
    }
    body.update(override)
    return json.dumps(body).encode()


MALFORMED = {
    "not-json": (b"this is not json {", "not UTF-8 JSON"),
    "not-utf8": (b"\xff\xfe\x00", "not UTF-8 JSON"),
    "not-an-object": (b'["victim"]', "not a JSON object"),
    "bad-base64": (_psk_body("victim", key="***not base64***"), "base64"),
    "short-key": (_psk_body("victim", raw_key=b"x" * 15), "under the 16-byte minimum"),
    "expired": (_psk_body("victim", expires_at=int(time.time()) - 10), "expired"),
    "no-expiry": (_psk_body("victim", expires_at=None), '"expires_at"'),
    "identity-slash": (_psk_body("vic/tim"), "bad identity"),
    "identity-plus": (_psk_body("vic+tim"), "bad identity"),
    "identity-hash": (_psk_body("vic#tim"), "bad identity"),
    "topic-mismatch": (_psk_body("someone-else"), "does not match"),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
async def test_malformed_psk_messages_are_logged_once_and_ignored(
    broker: LabBroker, oob_log: pytest.LogCaptureFixture, kind: str
) -> None:
    payload, reason = MALFORMED[kind]
    settings = broker.settings()
    topic = f"kexlab/v1/{SID}/psk/victim"
    async with ServerChannel(settings, SID, **FAST) as channel:
        assert await channel.wait_ready(5)
        # Twice, then a good key: messages from one connection arrive in order, so once the
        # good key is in, both bad copies have been handled.
        good = ("sentinel", _psk_body("sentinel"))
        await publish_raw(
            settings, (topic, payload), (topic, payload), (f"{topic[:-6]}{good[0]}", good[1])
        )
        assert await channel.wait_for("sentinel", 5) == b"k" * 32
        assert channel.lookup("victim") is None
        assert channel.lookup("someone-else") is None
        assert len(channel.table) == 1
        assert channel.ready  # still subscribed: nothing crashed
    lines = oob_warnings(oob_log, topic)
    assert len(lines) == 1, lines
    assert reason in lines[0]


# --------------------------------------------------------------------------- fingerprint


async def test_fingerprint_is_retained_and_fetched(broker: LabBroker) -> None:
    settings = broker.settings()
    async with ServerChannel(settings, SID, fingerprint=FINGERPRINT, **FAST) as channel:
        assert await channel.wait_ready(5)
    # The server's connection is gone; the broker still holds the retained message.
    assert await fetch_fingerprint(settings, SID, timeout=5) == FINGERPRINT
    async with subscriber(settings, f"kexlab/v1/{SID}/fingerprint") as seen:
        await eventually(lambda: len(seen) >= 1)
    assert seen[-1].retain is True
    assert json.loads(seen[-1].payload) == {
        "server_id": SID,
        "key_sha256": "ab" * 32,
        "address": "127.0.0.1:9700",
    }


async def test_no_fingerprint_is_a_clear_timeout_and_malformed_ones_are_ignored(
    broker: LabBroker, oob_log: pytest.LogCaptureFixture
) -> None:
    settings = broker.settings()
    started = time.monotonic()
    with pytest.raises(OobTimeout, match=f"no fingerprint for server '{SID}'"):
        await fetch_fingerprint(settings, SID, timeout=0.5)
    assert time.monotonic() - started < CONNECT_TIMEOUT - 1  # the 0.5 s given, not the default
    async with connect(settings) as client:
        await client.publish(
            f"kexlab/v1/{SID}/fingerprint", b'{"server_id": 1}', qos=1, retain=True
        )
    with pytest.raises(OobTimeout):
        await fetch_fingerprint(settings, SID, timeout=0.5)
    assert oob_warnings(oob_log, "malformed fingerprint")


# --------------------------------------------------------------------------- sas


async def test_sas_match_both_sides_true_and_payload_on_the_wire(broker: LabBroker) -> None:
    settings = broker.settings()
    client_random, sas = os.urandom(32), os.urandom(48)
    async with subscriber(settings, f"kexlab/v1/{SID}/sas/#") as seen:
        results = await asyncio.gather(
            exchange_sas(settings, SID, client_random, "client", sas, timeout=5),
            exchange_sas(settings, SID, client_random, "server", sas, timeout=5),
        )
        await eventually(
            lambda: {str(m.topic).rsplit("/", 1)[1] for m in seen} == {"client", "server"}
        )
    assert [r.match for r in results] == [True, True]
    # An open broker: each side's probe on the other's topic came back, so neither may
    # call the match verified.
    assert [r.peer_topic_open for r in results] == [True, True]
    for message in seen:
        assert str(message.topic).startswith(f"kexlab/v1/{SID}/sas/{client_random.hex()}/")
        assert (message.qos, message.retain) == (1, False)
    bodies = {(str(m.topic).rsplit("/", 1)[1], m.payload) for m in seen}
    for role in ("client", "server"):
        other = "server" if role == "client" else "client"
        # Each SAS names its publisher's role; each probe goes on the other's topic.
        assert (role, json.dumps({"role": role, "sas": sas.hex()}).encode()) in {
            (t, json.dumps(json.loads(p), sort_keys=True).encode()) for t, p in bodies
        }
        probes = [json.loads(p) for t, p in bodies if t == other and b"probe" in p]
        assert [p["role"] for p in probes] == [role]


async def test_sas_mismatch_both_sides_false(broker: LabBroker) -> None:
    settings = broker.settings()
    client_random = os.urandom(32)
    results = await asyncio.gather(
        exchange_sas(settings, SID, client_random, "client", os.urandom(32), timeout=5),
        exchange_sas(settings, SID, client_random, "server", os.urandom(32), timeout=5),
    )
    assert [r.match for r in results] == [False, False]


async def test_sas_peer_that_arrives_late_still_sees_ours(broker: LabBroker) -> None:
    """Messages are not retained: the early side publishes once more when the late one speaks."""
    settings = broker.settings()
    client_random, sas = os.urandom(32), os.urandom(32)
    async with connect(settings) as watcher:
        await watcher.subscribe(sas_topic(SID, client_random, "client"), qos=1)
        early = asyncio.create_task(exchange_sas(settings, SID, client_random, "client", sas, 5))
        async with asyncio.timeout(5):
            await anext(aiter(watcher.messages))  # the client's first publish has gone by
    late = await exchange_sas(settings, SID, client_random, "server", sas, timeout=5)
    assert late.match is True
    assert (await early).match is True


async def test_sas_without_a_peer_times_out(broker: LabBroker) -> None:
    started = time.monotonic()
    with pytest.raises(OobTimeout, match="no SAS from the server"):
        await exchange_sas(broker.settings(), SID, os.urandom(32), "client", os.urandom(32), 0.5)
    assert time.monotonic() - started < DEFAULT_SAS_TIMEOUT - 1  # the 0.5 s given, not the default


# --------------------------------------------------------------------------- faults


async def test_broker_down_at_start_fails_fast_with_one_clear_line() -> None:
    port = free_port()
    settings = MqttSettings.from_url(f"mqtt://127.0.0.1:{port}", env={})
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: publish_psk(settings, SID, "id", generate_psk()),
        lambda: fetch_fingerprint(settings, SID),
        lambda: exchange_sas(settings, SID, os.urandom(32), "client", os.urandom(32)),
    ]
    for attempt in attempts:
        started = time.monotonic()
        with pytest.raises(OobError) as info:
            await attempt()
        assert time.monotonic() - started < CONNECT_TIMEOUT
        assert isinstance(info.value, BrokerUnavailable)
        text = str(info.value)
        assert f"mqtt://127.0.0.1:{port}" in text and "unavailable" in text and "\n" not in text
    assert CONNECT_TIMEOUT <= 5
    await assert_no_stray_tasks()


async def test_a_listener_that_never_answers_fails_within_the_timeout() -> None:
    """A hung broker accepts TCP (the kernel does) but never sends CONNACK."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        settings = MqttSettings.from_url(f"mqtt://127.0.0.1:{hung.getsockname()[1]}", env={})
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match="did not answer"):
            await publish_psk(settings, SID, "id", generate_psk(), timeout=1.0)
        assert time.monotonic() - started < CONNECT_TIMEOUT - 1  # the 1 s given, not the default
        await assert_no_stray_tasks()


@pytest.mark.parametrize("kind", KINDS)
async def test_server_channel_starts_before_the_broker(
    kind: str, tmp_path: Path, oob_log: pytest.LogCaptureFixture
) -> None:
    lab = make_broker(kind, tmp_path)
    key = generate_psk()
    async with ServerChannel(lab.settings(), SID, fingerprint=FINGERPRINT, **FAST) as channel:
        assert not await channel.wait_ready(0.5)  # several retries happen meanwhile
        assert await channel.wait_for("early", 0.2) is None  # --psk-wait expires quietly
        async with running(lab):
            assert await channel.wait_ready(5)
            await publish_psk(lab.settings(), SID, "early", key, ttl=60)
            assert await channel.wait_for("early", 5) == key
            assert await fetch_fingerprint(lab.settings(), SID, 5) == FINGERPRINT
            await channel.stop()  # before the broker goes, which would be a second outage
    assert len(oob_warnings(oob_log, "unavailable")) == 1
    assert len(oob_warnings(oob_log, "reconnected")) == 1
    await assert_no_stray_tasks()


async def test_broker_stops_and_returns_subscriber_reconnects_and_resubscribes(
    broker: LabBroker, oob_log: pytest.LogCaptureFixture
) -> None:
    settings = broker.settings()
    first, second = generate_psk(), generate_psk()
    async with ServerChannel(settings, SID, fingerprint=FINGERPRINT, **FAST) as channel:
        assert await channel.wait_ready(5)
        await publish_psk(settings, SID, "before", first, ttl=60)
        assert await channel.wait_for("before", 5) == first

        await broker.stop()
        await eventually(lambda: not channel.ready)
        with pytest.raises(BrokerUnavailable):
            await publish_psk(settings, SID, "during", generate_psk())
        await broker.start()

        assert await channel.wait_ready(5)
        assert channel.subscriptions == 2
        await publish_psk(settings, SID, "after", second, ttl=60)
        assert await channel.wait_for("after", 5) == second
        assert channel.lookup("before") == first  # the table outlives the connection
        # Both brokers lost the retained fingerprint; the server published it again.
        assert await fetch_fingerprint(settings, SID, 5) == FINGERPRINT
    # One line per reason (dropped, then refused while it was down), never one per retry.
    outage = oob_warnings(oob_log, "unavailable")
    assert 1 <= len(outage) == len(set(outage)), outage
    assert "Disconnected during message iteration" in outage[0]
    assert len(oob_warnings(oob_log, "reconnected")) == 1
