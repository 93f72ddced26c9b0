"""The MQTT wiring of the programs in-process: options and their errors, the server's PSK wait,
SAS checks that cannot happen, the announced fingerprint, the server log, and the demo.

Process-level scenarios (faults, ACL, man in the middle) are in test_oob_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric import ed25519
from oob_brokers import LabBroker, assert_no_stray_tasks, make_broker, running
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    Recorder,
    home_fixture,
    home_key,
)
from typer.testing import CliRunner

from cli.main import app
from cli.options import mqtt_settings
from client.oob import ClientOob
from client.session import ClientOptions, ClientSession
from keystore import MqttPinPolicy, NonePolicy, fingerprint, parse_trust
from oob import (
    EmbeddedBroker,
    Fingerprint,
    MqttSettings,
    exchange_sas,
    fingerprint_topic,
    generate_identity,
    generate_psk,
    publish_psk,
)
from oob.settings import connect
from protocol import AlertCode, Kex, LocalProtocolError, PeerAlert, ServerIdentity, TrustVerdict
from server.log import ServerLog
from server.oob import ServerOob, announced_key_sha256
from server.server import KexlabServer, ServerOptions

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()
SID = "lab"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}


def one_line(text: str) -> str:
    """The single non-empty line of ``text`` (and never a traceback)."""
    assert "Traceback" not in text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--server-id", "lab"], "--server-id"),
        (["--verify-sas", "mqtt"], "--verify-sas"),
        (["--mqtt-username", "u"], "--mqtt-username"),
        (["--mqtt-password-file", "/p"], "--mqtt-password-file"),
        (["--mqtt-ca", "/ca"], "--mqtt-ca"),
    ],
)
@pytest.mark.parametrize("command", [["client", "127.0.0.1"], ["server"]])
def test_mqtt_options_without_oob_are_usage_errors(
    command: list[str], args: list[str], option: str
) -> None:
    result = runner.invoke(app, [*command, *args])
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith(
        f"kexlab {command[0]}: error: Invalid value for '{option}': needs the MQTT"
        " out-of-band channel: add --oob mqtt://HOST:PORT"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--psk-wait", "1"], "Invalid value for '--psk-wait': needs the MQTT out-of-band"),
        (
            ["--oob", "mqtt://127.0.0.1:1", "--psk-wait", "10"],
            "'--psk-wait': must be shorter than --handshake-timeout (10 s)",
        ),
        (["--oob", "mqtt://127.0.0.1:1", "--verify-sas", "phone"], "compared over mqtt"),
        (["--oob", "mqtt://127.0.0.1:1", "--server-id", "a/b"], "'--server-id': a server id"),
    ],
)
def test_server_option_errors(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["server", *args])
    assert result.exit_code == 2
    assert message in one_line(result.stderr)


@pytest.mark.parametrize("command", [["client", "127.0.0.1"], ["server"]])
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--oob", "http://127.0.0.1:1"], {}, "the broker URL must start with mqtt://"),
        (["--oob", "mqtt://127.0.0.1:1", "--mqtt-ca", "/ca.pem"], {}, "a CA file is for TLS"),
        (["--oob", "mqtt://127.0.0.1:1"], {"KEXLAB_MQTT_CA": "/ca.pem"}, "a CA file is for TLS"),
        (
            ["--oob", "mqtt://127.0.0.1:1"],
            {"KEXLAB_MQTT_PASSWORD_FILE": "/pw"},
            "a password file needs a username",
        ),
    ],
)
def test_broker_settings_errors_are_usage_errors(
    command: list[str], args: list[str], env: dict[str, str], message: str
) -> None:
    result = runner.invoke(app, [*command, *args], env=env)
    assert result.exit_code == 2  # issue 12 item 4: usage mistakes (were exit 1)
    assert one_line(result.stderr).startswith(f"kexlab {command[0]}: error: ")
    assert message in result.stderr


def test_client_psk_needs_a_key_or_a_broker() -> None:
    result = runner.invoke(app, ["client", "127.0.0.1", "--kex", "psk"])
    assert result.exit_code == 2
    assert "--kex psk needs --psk IDENTITY=HEX (or --oob mqtt://HOST:PORT" in result.stderr


def test_the_three_commands_share_the_mqtt_options() -> None:
    """One definition (cli/common.py): same names, same help, same environment variables."""
    group: Any = typer.main.get_command(app)
    commands = [group.commands["server"], group.commands["client"]]
    commands.append(group.commands["psk"].commands["send"])
    params = [{p.name: p for p in command.params} for command in commands]
    for name, env in [
        ("mqtt_username", "KEXLAB_MQTT_USERNAME"),
        ("mqtt_password_file", "KEXLAB_MQTT_PASSWORD_FILE"),
        ("mqtt_ca", "KEXLAB_MQTT_CA"),
    ]:
        helps = {getattr(p[name], "help", None) for p in params}
        assert len(helps) == 1 and env in str(next(iter(helps)))
        assert {tuple(p[name].opts) for p in params} == {(f"--{name.replace('_', '-')}",)}
    assert all(p["oob"].opts == ["--oob"] for p in params)
    for p in params[:2]:
        assert {"server_id", "verify_sas"} <= p.keys()
    assert "psk_wait" in params[0]


def test_mqtt_settings_reads_options_then_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("a CA file that exists\n")  # a missing one is a usage error
    monkeypatch.setenv("KEXLAB_MQTT_USERNAME", "from-env")
    monkeypatch.setenv("KEXLAB_MQTT_CA", str(ca))
    settings = mqtt_settings("mqtts://broker:8883")
    assert (settings.username, settings.ca_file, settings.tls) == ("from-env", ca, True)
    assert mqtt_settings("mqtts://broker", "given").username == "given"


def test_trust_mqtt_is_a_pin_filled_from_the_broker(tmp_path: Path) -> None:
    policy = parse_trust("mqtt", "h:1", tmp_path / "known_hosts", mqtt=True)
    assert isinstance(policy, MqttPinPolicy)
    assert not policy.decide(_identity("ab" * 32)).trusted  # nothing read yet: refuse
    policy.pin("AB" * 32, "mqtt://b:1 kexlab/v1/lab/fingerprint")
    assert policy.decide(_identity("ab" * 32)).trusted
    refused = policy.decide(_identity("cd" * 32))
    assert not refused.trusted and "(from mqtt://b:1 kexlab/v1/lab/fingerprint)" in refused.reason
    assert "only as trustworthy as the broker's write permissions" in policy.notes[0]


def _identity(sha: str) -> ServerIdentity:
    return ServerIdentity(Kex.DHE, b"", "rsa", sha, True)


# --------------------------------------------------------------------------- the announced key


def test_the_announced_key_is_the_dhe_identity_key_else_the_rsa_key(home: Path) -> None:
    rsa_key = home_key(home)
    ed = ed25519.Ed25519PrivateKey.generate()
    assert announced_key_sha256(ServerOptions(rsa_key=rsa_key, sign_key=rsa_key)) == (
        "sign",
        fingerprint(rsa_key),
    )
    assert announced_key_sha256(ServerOptions(rsa_key=rsa_key, sign_key=ed)) == (
        "sign",
        fingerprint(ed),
    )
    assert announced_key_sha256(ServerOptions(rsa_key=rsa_key)) == ("rsa", fingerprint(rsa_key))
    assert announced_key_sha256(ServerOptions(kex_methods=frozenset({Kex.PSK}))) is None


# --------------------------------------------------------------------------- in-process server


@pytest.fixture(params=["mosquitto", "amqtt"])
async def lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LabBroker]:
    """A running open broker of each kind."""
    async with running(make_broker(request.param, tmp_path)) as broker:
        yield broker
    await assert_no_stray_tasks()


@pytest.fixture
async def oob_server(home: Path, lab: LabBroker) -> AsyncIterator:
    """Start a KexlabServer wired to ``lab`` through ServerOob (``psk_wait``, ``sas_timeout``)."""
    running_servers: list[tuple[KexlabServer, ServerOob]] = []

    async def make(**oob: float | bool) -> tuple[KexlabServer, ServerOob, Recorder]:
        key = home_key(home)
        options = ServerOptions(port=0, rsa_key=key, sign_key=key, inbox=home / "inbox")
        mqtt = ServerOob(lab.settings(), SID, channel_options=FAST, **oob)  # type: ignore[arg-type]
        channel = mqtt.attach(options)
        recorder = Recorder()
        srv = KexlabServer(options, recorder)
        host, port = await srv.start()
        mqtt.start(options, f"{host}:{port}", recorder)
        running_servers.append((srv, mqtt))
        assert await channel.wait_ready(5)
        return srv, mqtt, recorder

    yield make
    for srv, mqtt in running_servers:
        await srv.shutdown(grace=1.0)
        await mqtt.stop()


def psk_options(srv: KexlabServer, identity: str, key: bytes) -> ClientOptions:
    return ClientOptions(
        port=srv.address[1], kex=Kex.PSK, psk_identity=identity, psk=key, timeout=5
    )


async def test_server_waits_for_a_key_that_arrives_during_the_handshake(
    oob_server, lab: LabBroker
) -> None:
    srv, _mqtt, recorder = await oob_server(psk_wait=3.0)
    identity, key = generate_identity(), generate_psk()
    provide, asked = srv.options.psk_provider, asyncio.Event()
    assert provide is not None

    async def watched(name: str) -> bytes | None:
        asked.set()  # the server has no key for ``name`` and starts waiting for it
        return await provide(name)

    srv.options.psk_provider = watched

    async def late_publish() -> None:
        await asyncio.wait_for(asked.wait(), 5)
        await publish_psk(lab.settings(), SID, identity, key)

    publisher = asyncio.create_task(late_publish())
    session = await ClientSession.open(psk_options(srv, identity, key))
    await publisher
    assert session.handshake.psk_identity == identity
    assert await session.request(b"late but fine") == b"late but fine"
    await session.close()
    # The channel's log reached the server's observer as "oob" events.
    messages = [f["message"] for f in recorder.named("oob")]
    assert any(f"PSK for identity {identity!r} received" in m for m in messages)


async def test_an_identity_that_never_arrives_is_refused_after_psk_wait(oob_server) -> None:
    srv, _mqtt, _recorder = await oob_server(psk_wait=0.6)
    started = time.monotonic()
    with pytest.raises(PeerAlert) as info:
        await ClientSession.open(psk_options(srv, "nobody", b"k" * 32))
    elapsed = time.monotonic() - started
    assert info.value.code == AlertCode.UNKNOWN_PSK_IDENTITY
    # Not before --psk-wait; no upper bound here: the client's own 5 s timeout would end it
    # with another error, and two busy cores can add whole seconds.
    assert elapsed >= 0.55


async def test_server_aborts_when_the_client_never_compares_its_sas(oob_server) -> None:
    srv, _mqtt, recorder = await oob_server(verify_sas=True, sas_timeout=0.5)
    options = ClientOptions(port=srv.address[1], trust=lambda i: TrustVerdict(True), timeout=5)
    session = await ClientSession.open(options)
    with pytest.raises(PeerAlert) as info:
        await session.receive(5)
    await session.wait_closed()
    assert info.value.code == AlertCode.HANDSHAKE_FAILURE
    assert info.value.reason.startswith("SAS not compared: no SAS from the client on ")
    error = await recorder.event("error")
    assert error["sent_alert"] == "handshake_failure" and "SAS not compared" in error["reason"]
    assert recorder.named("sas-matched") == []


async def test_client_aborts_when_the_server_never_compares_its_sas(
    oob_server, lab: LabBroker
) -> None:
    srv, _mqtt, recorder = await oob_server()  # the server does not verify
    options = ClientOptions(port=srv.address[1], trust=lambda i: TrustVerdict(True), timeout=5)
    mqtt = ClientOob(lab.settings(), SID, verify_sas=True, sas_timeout=0.5)
    session = await mqtt.open(options, None)
    with pytest.raises(LocalProtocolError) as info:
        await mqtt.check_sas(session)
    await session.wait_closed()
    assert info.value.alert is AlertCode.HANDSHAKE_FAILURE
    assert info.value.reason.startswith("SAS not compared: no SAS from the server on ")
    error = await recorder.event("error")
    assert error["received_alert"] == "handshake_failure"


async def test_client_explains_unknown_psk_after_publishing(oob_server, lab: LabBroker) -> None:
    srv, _mqtt, _recorder = await oob_server(psk_wait=0.3)
    # A client publishing for another server id: the broker takes it, our server never sees it.
    mqtt = ClientOob(lab.settings(), "elsewhere", publish_psk=True)
    options = psk_options(srv, "", b"")
    mqtt.new_psk(options)
    notes = await mqtt.before_connect(options, NonePolicy())  # psk: no key to pin
    assert notes and notes[0].startswith(f"published PSK {options.psk_identity!r}")
    with pytest.raises(Exception) as info:
        await mqtt.open(options, None)
    text = str(info.value)
    assert text.startswith(f"the server does not know PSK identity {options.psk_identity!r}")
    assert "the broker may have refused the publish" in text
    assert "--server-id elsewhere" in text and text.endswith("(115))")


# --------------------------------------------------------------------------- the server's log


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_server_log_shows_oob_lines_and_the_sas_line(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log = ServerLog(log_format, explain=False, show_secrets=False)
    log.log("oob", "", {"level": "warning", "message": "MQTT broker x unavailable: refused"})
    detail = "SAS matched over MQTT: ... not that no man in the middle sits between us"
    log.log("sas-matched", "127.0.0.1:5", {"sas": "aaaa bbbb cccc dddd", "detail": detail})
    out = capsys.readouterr().out.splitlines()
    if log_format == "text":
        assert out == ["oob: MQTT broker x unavailable: refused", f"[127.0.0.1:5] {detail}"]
    else:
        records = [json.loads(line) for line in out]
        assert [r["event"] for r in records] == ["oob", "sas-matched"]
        assert records[1]["detail"] == detail
        assert records[0]["level"] == "warning" and records[1]["peer"] == "127.0.0.1:5"


def test_the_log_bridge_is_removed_when_the_channel_stops() -> None:
    async def main() -> None:
        recorder = Recorder()
        mqtt = ServerOob(MqttSettings.from_url("mqtt://127.0.0.1:1", env={}), SID)
        options = ServerOptions(kex_methods=frozenset({Kex.PSK}))
        mqtt.attach(options)
        assert mqtt.start(options, "127.0.0.1:9", recorder) is None  # psk only: nothing to pin
        logging.getLogger("kexlab.oob").info("hello")
        await mqtt.stop()
        logging.getLogger("kexlab.oob").info("after")
        assert [f["message"] for f in recorder.named("oob")] == ["hello"]

    asyncio.run(main())


# --------------------------------------------------------------------------- demo


def test_demo_runs_the_mqtt_path_within_10_seconds() -> None:
    started = time.monotonic()
    result = runner.invoke(app, ["demo", "--no-explain"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 10
    out = result.stdout
    assert re.search(r"embedded MQTT broker on mqtt://127\.0\.0\.1:\d+", out)
    assert re.search(r"published PSK 'psk-[0-9a-f]{16}' to mqtt://127\.0\.0\.1:\d+", out)
    assert re.search(r"pinned server key SHA256:[0-9a-f]{64} read from mqtt://", out)
    assert "only as trustworthy as the broker's write permissions" in out
    # The embedded broker is open: both matches are reported, neither as verified.
    assert out.count("SAS NOT verified: the server's SAS over MQTT matches ours") == 2
    assert "SAS verified" not in out
    assert "sent 'hello over psk, via MQTT', echo 'hello over psk, via MQTT'" in out
    assert re.search(r"^ ?psk/aes256\*\s+((?:[0-9a-f]{4} ){3}[0-9a-f]{4})\s+\1\s+yes", out, re.M)
    assert re.search(
        r"^ ?dhe/x25519/aes256\*\s+((?:[0-9a-f]{4} ){3}[0-9a-f]{4})\s+\1\s+yes", out, re.M
    )


# --------------------------------------------------------------------------- embedded broker


async def test_embedded_broker_survives_subscriptions_while_others_connect() -> None:
    """Regression: amqtt walked its subscription table across awaits and a concurrent
    subscribe killed the connecting client's session, so SAS exchanges timed out."""
    async with EmbeddedBroker("127.0.0.1", 0) as broker:
        settings = MqttSettings.from_url(broker.url, env={})
        async with connect(settings) as keeper:
            # Retained messages under live subscriptions make every connect await.
            for n in range(5):
                announced = Fingerprint(f"s{n}", "ab" * 32, "127.0.0.1:9700").encode()
                await keeper.publish(fingerprint_topic(f"s{n}"), announced, qos=1, retain=True)
                await keeper.subscribe(fingerprint_topic(f"s{n}"), qos=1)
            for round_ in range(8):
                pairs = []
                for n in range(8):  # each side connects and subscribes to a new topic
                    client_random, sas = bytes([round_, n]) * 16, bytes([n]) * 48
                    for role in ("client", "server"):
                        pairs.append(exchange_sas(settings, SID, client_random, role, sas, 2.0))
                assert [r.match for r in await asyncio.gather(*pairs)] == [True] * 16
    await assert_no_stray_tasks()
