"""Issue 13 item 1: a SAS compared over MQTT is never called verified where others can publish.

The attack: a man in the middle (two core connections back to back) sits between a real
``kexlab client --trust none`` and a real ``kexlab server``, both with ``--verify-sas mqtt``,
while an ordinary MQTT client with no secrets answers each side with the SAS of its own
leg (or copies each side's message onto the other's topic). Before: both ends printed
"SAS verified over MQTT: ... all 384 bits" while the attacker read the plaintext.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from oob_brokers import CLIENT_USER, SERVER_USER, LabBroker, Mosquitto, make_broker, running
from redteam import mitm, sas_forger
from support_net import home_fixture  # noqa: F401  (the `home` fixture)
from test_oob_e2e import SID, client, line, serving, stop

from oob import OobTimeout, exchange_sas

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("home")]
SAS = re.compile(r"SAS ((?:[0-9a-f]{4} ){3}[0-9a-f]{4})")


@pytest.fixture(params=["mosquitto", "amqtt"])
async def open_broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LabBroker]:
    """An open broker of each kind: anyone may publish anywhere."""
    async with running(make_broker(request.param, tmp_path)) as broker:
        yield broker


@pytest.fixture
async def hardened(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """Mosquitto with the shipped ACL: only kexlab-server may write sas/+/server."""
    async with running(Mosquitto(tmp_path, "hardened.conf")) as broker:
        yield broker


def account(broker: Mosquitto, user: str) -> list[str]:
    """The options that log a program in as ``user``."""
    return ["--mqtt-username", user, "--mqtt-password-file", str(broker.tmp / f"{user}.password")]


async def test_a_copy_of_our_own_sas_is_not_taken_for_the_peers(open_broker: LabBroker) -> None:
    """Copying the client's message onto the server's topic used to make it "match" itself."""
    settings = open_broker.settings()
    async with sas_forger(settings, [], reflect=True) as copied:
        with pytest.raises(OobTimeout, match="no SAS from the server"):
            await exchange_sas(settings, SID, os.urandom(32), "client", os.urandom(48), 1.5)
    assert any(topic.endswith("/server") for topic in copied)  # the copy was made, and ignored


async def test_a_man_in_the_middle_on_an_open_broker_is_never_verified(
    open_broker: LabBroker,
) -> None:
    mqtt = ["--oob", open_broker.url, "--server-id", SID, "--verify-sas", "mqtt"]
    async with serving(*mqtt) as srv:
        async with mitm(srv.port) as (port, legs), sas_forger(open_broker.settings(), legs):
            result = await client(f"127.0.0.1:{port}", "--trust", "none", *mqtt, "--send", "pay")
        # The attack works at the protocol level: the attacker read the message...
        assert result.returncode == 0, result.stderr
        assert legs[0].plaintext == [b"pay", b"pay"]
        out = result.stdout.splitlines()
        assert out[2:] == ["echo: pay"]
        # ...and the two ends hold different keys (different SAS), but each saw a "match".
        server_line = await line(srv, r"server: handshake complete")
        theirs, ours = SAS.search(out[0]), SAS.search(server_line.string)
        assert theirs and ours and theirs.group(1) != ours.group(1)
        # Neither says "verified": each names the open broker in the same line.
        assert out[1].startswith("SAS NOT verified: the server's SAS over MQTT matches ours")
        assert "this broker let us publish on the server's topic too" in out[1]
        assert "man in the middle could have sent it" in out[1]
        matched = await line(srv, r"\] SAS NOT verified: the client's SAS over MQTT matches ours")
        assert "this broker let us publish on the client's topic too" in matched.string
        assert not [ln for ln in srv.lines if "SAS verified" in ln]
        await stop(srv)


async def test_a_client_account_cannot_make_either_end_say_verified(
    hardened: Mosquitto,
) -> None:
    """The hardened ACL: the attacker's client account may write sas/+/client only."""
    mqtt = ["--oob", hardened.url, "--server-id", SID, "--verify-sas", "mqtt"]
    async with serving(*mqtt, *account(hardened, SERVER_USER)) as srv:
        forger_settings = hardened.settings(CLIENT_USER)
        async with mitm(srv.port) as (port, legs), sas_forger(forger_settings, legs):
            result = await client(
                f"127.0.0.1:{port}", "--trust", "none", *mqtt, *account(hardened, CLIENT_USER),
                "--send", "pay",
            )  # fmt: skip
            # The server's check took the forged client SAS: it must say what that proves.
            matched = await line(srv, r"\] SAS matched over MQTT: the client's SAS equals ours")
        assert "shows only that an account allowed to publish on sas/+/client" in matched.string
        assert "not that no man in the middle sits between us" in matched.string
        assert "compare the SAS aloud" in matched.string
        # The client's check holds: nobody but the server may publish the server's SAS.
        assert result.returncode == 1
        assert "SAS not compared: no SAS from the server" in result.stderr
        assert "verified" not in result.stdout
        assert not [ln for ln in srv.lines if "SAS verified" in ln]
        await stop(srv)


async def test_an_honest_session_on_the_hardened_broker(hardened: Mosquitto) -> None:
    """What the ACL backs: the client may say verified (with the caveat); the server never."""
    mqtt = ["--oob", hardened.url, "--server-id", SID, "--verify-sas", "mqtt"]
    async with serving(*mqtt, *account(hardened, SERVER_USER)) as srv:
        result = await client(
            srv.address, "--trust", "none", *mqtt, *account(hardened, CLIENT_USER), "--send", "hi"
        )
        assert result.returncode == 0, result.stderr
        verified = result.stdout.splitlines()[1]
        assert verified.startswith("SAS verified over MQTT: the server's SAS equals ours")
        assert "this broker refused our own test message on the server's topic" in verified
        assert "as strong as the broker's ACL" in verified
        matched = await line(srv, r"\] SAS matched over MQTT: the client's SAS equals ours")
        assert "(on the shipped ACL, every client account)" in matched.string
        await stop(srv)


async def test_many_comparisons_at_once_each_find_their_own_peer(open_broker: LabBroker) -> None:
    """Probes, SAS and republished copies of 10 sessions at once never cross sessions."""
    settings = open_broker.settings()
    pairs = []
    for _ in range(10):
        client_random, sas = os.urandom(32), os.urandom(48)
        for role in ("client", "server"):
            pairs.append(exchange_sas(settings, SID, client_random, role, sas, 5))
    results = await asyncio.gather(*pairs)
    assert all(r.match and r.peer_topic_open and r.values == 1 for r in results)
    assert all(r.reflections == 0 for r in results)
