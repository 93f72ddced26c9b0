"""Issue 13 items 2 and 7, and the third figure: hostile messages on the broker.

Each attack is an ordinary MQTT client with no secrets (on the hardened broker, any
client account may write ``psk/#`` just the same). Before: a 3 KB retained nesting bomb
restarted the server's subscriber in a loop (RecursionError escaped the payload checks)
and no psk-over-MQTT client got in; a flood of valid far-future keys evicted honest keys
between "received" and their handshake; a retained key with expires_at=1e15 came back at
every resubscribe.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from oob_brokers import LabBroker, make_broker, running
from support_net import home_fixture, home_key  # noqa: F401  (the `home` fixture)
from test_oob_e2e import SID, client, line, serving, stop

from client.oob import ClientOob
from client.session import ClientOptions
from oob import (
    OobTimeout,
    PskTable,
    ServerChannel,
    fetch_fingerprint,
    generate_identity,
    generate_psk,
    publish_psk,
)
from oob.settings import cancel_and_wait, connect
from oob.subscriber import SUMMARY_WORDS
from protocol import Kex
from server.server import KexlabServer, ServerOptions

FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}
BOMB = b"[" * 1500 + b"]" * 1500  # 3 KB, as the red team sent it
FAR = 1e15


def psk_body(identity: str, expires_at: float = FAR, key: bytes = b"k" * 32) -> bytes:
    """A valid-looking §8 psk payload."""
    doc = {"identity": identity, "key": base64.b64encode(key).decode(), "expires_at": expires_at}
    return json.dumps(doc).encode()


@pytest.fixture(params=["mosquitto", "amqtt"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LabBroker]:
    """An open broker of each kind."""
    async with running(make_broker(request.param, tmp_path)) as lab:
        yield lab


def oob_lines(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    """The kexlab.oob log lines matching ``pattern``."""
    rx = re.compile(pattern)
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "kexlab.oob" and rx.search(r.getMessage())
    ]


async def test_a_retained_nesting_bomb_stops_nothing(
    broker: LabBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kexlab.oob")
    settings = broker.settings()
    async with connect(settings) as attacker:  # planted before the server comes
        await attacker.publish(f"kexlab/v1/{SID}/psk/bomb", BOMB, qos=1, retain=True)
        await attacker.publish(f"kexlab/v1/{SID}-gone/fingerprint", BOMB, qos=1, retain=True)
    async with ServerChannel(settings, SID, **FAST) as channel:
        assert await channel.wait_ready(5)
        async with connect(settings) as attacker:  # and again while it listens
            for _ in range(20):
                await attacker.publish(f"kexlab/v1/{SID}/psk/bomb", BOMB, qos=1)
        identity, key = generate_identity(), generate_psk()
        await publish_psk(settings, SID, identity, key, ttl=60)
        assert await channel.wait_for(identity, 5) == key  # psk over MQTT still works
        assert channel.subscriptions == 1  # and the subscriber never restarted
    assert not oob_lines(caplog, "subscriber failed")
    assert len(oob_lines(caplog, r"ignored a retained PSK on kexlab/v1/lab/psk/bomb")) == 1
    assert len(oob_lines(caplog, r"nested 1500 levels deep, over 8")) == 1  # 20 bombs, one line
    # A client reading a bombed fingerprint waits for a real one, then says none came.
    with pytest.raises(OobTimeout, match="no fingerprint"):
        await fetch_fingerprint(settings, f"{SID}-gone", 1.0)
    async with connect(settings) as attacker:  # clean up the retained messages
        for topic in (f"kexlab/v1/{SID}/psk/bomb", f"kexlab/v1/{SID}-gone/fingerprint"):
            await attacker.publish(topic, b"", qos=1, retain=True)


async def test_a_retained_key_never_becomes_a_key(
    broker: LabBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kexlab.oob")
    settings = broker.settings()
    async with connect(settings) as attacker:
        await attacker.publish(
            f"kexlab/v1/{SID}/psk/planted", psk_body("planted"), qos=1, retain=True
        )
    for _ in range(2):  # a resubscribe sees it again, and refuses it again
        async with ServerChannel(settings, SID, **FAST) as channel:
            assert await channel.wait_ready(5)
            await asyncio.sleep(0.3)
            assert channel.lookup("planted") is None
    assert len(oob_lines(caplog, "ignored a retained PSK on kexlab/v1/lab/psk/planted")) == 2
    async with connect(settings) as attacker:
        await attacker.publish(f"kexlab/v1/{SID}/psk/planted", b"", qos=1, retain=True)


async def test_a_flood_of_far_future_keys_evicts_no_honest_key(
    broker: LabBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kexlab.oob")
    settings = broker.settings()
    table = PskTable(max_lifetime=600)
    async with ServerChannel(settings, SID, table=table, **FAST) as channel:
        assert await channel.wait_ready(5)
        honest = [(generate_identity(), generate_psk()) for _ in range(6)]
        for identity, key in honest[:3]:  # three arrive before the flood, three during it
            await publish_psk(settings, SID, identity, key, ttl=300)
            assert await channel.wait_for(identity, 5) == key

        async def flood() -> None:
            async with connect(settings) as attacker:
                for i in range(3000):
                    await attacker.publish(f"kexlab/v1/{SID}/psk/f{i}", psk_body(f"f{i}"), qos=0)

        flooding = asyncio.create_task(flood())
        for identity, key in honest[3:]:
            await publish_psk(settings, SID, identity, key, ttl=300)
            assert await channel.wait_for(identity, 5) == key
        await flooding
        await asyncio.sleep(0.5)
        for identity, key in honest:  # nobody was pushed out to make room
            assert channel.lookup(identity) == key
        assert len(table) == table.max_entries
        now = time.time()
        assert all(e.expires_at <= now + 600 for e in table._entries.values())  # the ceiling
    # The flood costs a few lines: a burst of receipts, one "full", one "clamped".
    assert len(oob_lines(caplog, r"^MQTT: PSK for identity 'f\d+' received")) <= 20
    assert len(oob_lines(caplog, r"^MQTT: PSK table full")) == 1
    assert len(oob_lines(caplog, r"past the 600 s ceiling")) == 1


HOSTILE = {
    "depth": lambda i: (f"b{i}", BOMB, False),
    "field": lambda i: (
        f"t{i}",
        json.dumps({"identity": 5, "key": [], "expires_at": "x"}).encode(),
        False,
    ),
    "size": lambda i: (f"h{i}", b'{"pad": "' + b"x" * 5000 + b'"}', False),
    "retained": lambda i: (f"r{i}", psk_body(f"r{i}"), True),
    "json": lambda i: (f"j{i}", b"\xff not json", False),
    "expired": lambda i: (f"e{i}", psk_body(f"e{i}", expires_at=1000), False),
}


@pytest.mark.slow
@pytest.mark.usefixtures("home")
async def test_every_hostile_class_is_logged_once_a_minute_and_psk_still_works(
    broker: LabBroker,
) -> None:
    """The third figure: bombs, wrong types, huge and retained messages in a loop, while
    honest psk clients come and go; each class gets one line, every client gets in."""
    mqtt = ["--oob", broker.url, "--server-id", SID]
    async with connect(broker.settings()) as attacker:
        # Retained keys wait for the server's subscription (a live one is a plain message
        # to a subscriber: MQTT 3.1.1 clears the flag; it is retained for the next one).
        for i in range(50):
            await attacker.publish(
                f"kexlab/v1/{SID}/psk/r{i}", psk_body(f"r{i}"), qos=1, retain=True
            )
    async with serving(*mqtt) as srv:
        await line(srv, r"^oob: MQTT: subscribed to ")
        sent = dict.fromkeys(HOSTILE, 0)

        async def attack() -> None:
            async with connect(broker.settings()) as attacker:
                i = 0
                while True:
                    for kind, make in HOSTILE.items():
                        name, payload, retain = make(i % 50)
                        await attacker.publish(
                            f"kexlab/v1/{SID}/psk/{name}", payload, qos=1, retain=retain
                        )
                        sent[kind] += 1
                    i += 1
                    await asyncio.sleep(0.01)

        attacking = asyncio.create_task(attack())
        try:
            for n in range(4):
                result = await client(srv.address, *mqtt, "--kex", "psk", "--send", f"honest {n}")
                assert result.returncode == 0, result.stderr
                assert result.stdout.splitlines()[1:] == [f"echo: honest {n}"]
        finally:
            await cancel_and_wait(attacking)  # one cancel() can be lost in a publish
        assert min(sent.values()) >= 20, sent
        ignored = [ln for ln in srv.lines if ln.startswith("oob: MQTT: ignored")]
        for marker in (
            "nested 1500 levels",
            "missing or not a string",
            "over 4096",
            "retained PSK",
            "not UTF-8 JSON",
            "key expired",
        ):
            assert sum(marker in ln for ln in ignored) == 1, (marker, ignored)
        assert len(ignored) == 6
        assert count_lines(srv.lines, "subscriber failed") == 0
        await stop(srv)
    # Stopped before the minute was over: the summaries are for later, nothing is lost.
    assert set(SUMMARY_WORDS) >= set(HOSTILE)


def count_lines(lines: list[str], text: str) -> int:
    """Lines containing ``text``."""
    return sum(text in ln for ln in lines)


async def test_the_minute_summary_counts_what_was_held_back(
    broker: LabBroker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="kexlab.oob")
    settings = broker.settings()
    async with ServerChannel(settings, SID, **FAST) as channel:
        assert await channel.wait_ready(5)
        channel._throttle.interval = 0.5  # a short minute, so the test does not wait one
        async with connect(settings) as attacker:
            for i in range(30):
                await attacker.publish(f"kexlab/v1/{SID}/psk/b{i}", BOMB, qos=1)
        await asyncio.sleep(1.0)
    assert len(oob_lines(caplog, r"nested 1500 levels deep")) == 1
    (summary,) = oob_lines(caplog, r"^MQTT: ignored nesting bombs: ")
    assert summary.startswith("MQTT: ignored nesting bombs: 29 more in the last")


@pytest.mark.usefixtures("home")
async def test_a_key_crowded_out_of_a_full_table_is_sent_again_while_the_server_waits(
    broker: LabBroker, home: Path
) -> None:
    """The flood filled the table and the ring of recent keys is gone (size 0 here): the
    client's first copy finds no room, its second reaches the handshake that waits for it."""
    settings = broker.settings()
    table = PskTable(max_entries=1, recent=0)
    async with ServerChannel(settings, SID, table=table, **FAST) as channel:
        assert await channel.wait_ready(5)
        key = home_key(home)
        options = ServerOptions(port=0, rsa_key=key, sign_key=key, inbox=home / "inbox")
        options.psk_lookup, options.psk_provider = channel.lookup, channel.provider(3.0)
        srv = KexlabServer(options)
        host, port = await srv.start()
        try:
            table.add("squatter", b"s" * 32, time.time() + 600)  # the flood's key
            mqtt = ClientOob(settings, SID, publish_psk=True)
            client_options = ClientOptions(host=host, port=port, kex=Kex.PSK, timeout=10)
            mqtt.new_psk(client_options)
            await mqtt.before_connect(client_options, None)
            assert channel.lookup(client_options.psk_identity) is None  # no room for it
            session = await mqtt.open(client_options, None)
            assert await session.request(b"in") == b"in"
            await session.close()
        finally:
            await srv.shutdown(grace=1.0)
