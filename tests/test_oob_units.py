"""oob pieces without a second party: settings, §8 topics and payloads, the PSK table, the broker."""

from __future__ import annotations

import ast
import asyncio
import base64
import gc
import json
import socket
import sys
from pathlib import Path

import pytest
from oob_brokers import assert_no_stray_tasks, free_port

from oob import (
    EmbeddedBroker,
    Fingerprint,
    MalformedPayload,
    MqttSettings,
    OobError,
    PskMessage,
    PskTable,
    ServerChannel,
    fingerprint_topic,
    format_shared_psk,
    generate_identity,
    generate_psk,
    is_loopback,
    psk_topic,
    publish_psk,
    sas_topic,
)
from oob.payloads import (
    SasMessage,
    encode_probe,
    encode_sas,
    parse_fingerprint,
    parse_psk,
    parse_sas_message,
    psk_filter,
)
from oob.psk_table import Admission
from oob.settings import cancel_and_wait, connect

NOW = 1_900_000_000.0

# --------------------------------------------------------------------------- settings


def test_settings_from_url_defaults_and_tls_port() -> None:
    plain = MqttSettings.from_url("mqtt://broker.lab", env={})
    assert (plain.host, plain.port, plain.tls, plain.username) == ("broker.lab", 1883, False, None)
    assert plain.url == "mqtt://broker.lab:1883"
    secure = MqttSettings.from_url("mqtts://[::1]", env={})
    assert (secure.host, secure.port, secure.tls) == ("::1", 8883, True)
    assert secure.url == "mqtts://[::1]:8883"
    assert MqttSettings.from_url("MQTT://h:1999", env={}).port == 1999


def test_settings_from_environment_and_explicit_options_win(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\nignored second line\n")
    (tmp_path / "pw2").write_text("other")
    env = {
        "KEXLAB_MQTT_USERNAME": "alice",
        "KEXLAB_MQTT_PASSWORD_FILE": str(tmp_path / "pw"),
        "KEXLAB_MQTT_CA": str(tmp_path / "ca.pem"),
    }
    from_env = MqttSettings.from_url("mqtts://h:8883", env=env)
    assert from_env.username == "alice"
    assert from_env.password() == "s3cret"
    assert from_env.ca_file == tmp_path / "ca.pem"
    assert from_env.describe() == "mqtts://h:8883 as 'alice'"
    explicit = MqttSettings.from_url(
        "mqtts://h:8883", username="bob", password_file=tmp_path / "pw2", env=env
    )
    assert (explicit.username, explicit.password()) == ("bob", "other")
    assert "s3cret" not in repr(from_env)  # the password itself is never held


@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        ("http://h:1883", {}, "mqtt:// or mqtts://"),
        ("h:1883", {}, "mqtt:// or mqtts://"),
        ("mqtt://u:p@h:1883", {}, "no credentials in the URL"),
        ("mqtt://h:1883/topic", {}, "nothing after it"),
        ("mqtt://h:99999", {}, "bad port"),
        ("mqtt://:1883", {}, "no host"),
        ("mqtt://h", {"password_file": "pw"}, "needs a username"),
        ("mqtt://h", {"ca_file": "ca.pem"}, "mqtts://"),
    ],
)
def test_settings_refuse_what_cannot_work(url: str, options: dict[str, str], expected: str) -> None:
    with pytest.raises(OobError, match=expected):
        MqttSettings.from_url(url, env={}, **options)  # type: ignore[arg-type]


def test_unreadable_password_or_ca_file_is_one_clear_error(tmp_path: Path) -> None:
    settings = MqttSettings.from_url(
        "mqtts://h", username="u", password_file=tmp_path / "missing", env={}
    )
    with pytest.raises(OobError, match="cannot read the MQTT password file"):
        settings.password()
    bad_ca = MqttSettings.from_url("mqtts://h", ca_file=tmp_path / "missing.pem", env={})
    with pytest.raises(OobError, match="cannot load the MQTT CA file"):
        bad_ca.tls_context()
    assert MqttSettings.from_url("mqtt://h", env={}).tls_context() is None


# --------------------------------------------------------------------------- topics and payloads


def test_topics_are_exactly_the_spec() -> None:
    assert psk_topic("srv", "id-1") == "kexlab/v1/srv/psk/id-1"
    assert psk_filter("srv") == "kexlab/v1/srv/psk/+"
    assert fingerprint_topic("srv") == "kexlab/v1/srv/fingerprint"
    random = bytes(range(32))
    assert sas_topic("srv", random, "client") == f"kexlab/v1/srv/sas/{random.hex()}/client"
    assert sas_topic("srv", random, "server").endswith("/server")


@pytest.mark.parametrize("bad", ["", "a/b", "a+b", "a#b", "a\x00b", "x" * 256])
def test_topic_levels_refuse_what_would_change_the_topic(bad: str) -> None:
    with pytest.raises(ValueError):
        psk_topic("srv", bad)
    with pytest.raises(ValueError, match="server id"):
        fingerprint_topic(bad)


def test_sas_topic_refuses_bad_role_and_random() -> None:
    with pytest.raises(ValueError, match="role"):
        sas_topic("srv", bytes(32), "mitm")
    with pytest.raises(ValueError, match="32 bytes"):
        sas_topic("srv", bytes(31), "client")


def test_psk_message_round_trip_and_json_shape() -> None:
    message = PskMessage("id-1", bytes(range(32)), NOW + 60)
    body = json.loads(message.encode())
    assert body == {
        "identity": "id-1",
        "key": base64.b64encode(bytes(range(32))).decode(),
        "expires_at": int(NOW + 60),
    }
    assert parse_psk("kexlab/v1/srv/psk/id-1", message.encode(), NOW) == message


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"x" * 5000, "over 4096"),
        (b'{"identity": 5}', "identity"),
        (b'{"identity": "id-1"}', '"key"'),
        (
            b'{"identity": "id-1", "key": "'
            + base64.b64encode(b"k" * 2000)
            + b'", "expires_at": 2e9}',
            "over 1024",
        ),
        (
            b'{"identity": "id-1", "key": "'
            + base64.b64encode(b"k" * 32)
            + b'", "expires_at": true}',
            "not a number",
        ),
        (
            b'{"identity": "id-1", "key": "'
            + base64.b64encode(b"k" * 32)
            + b'", "expires_at": NaN}',
            "not finite",
        ),
    ],
)
def test_parse_psk_edge_cases(payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason):
        parse_psk("kexlab/v1/srv/psk/id-1", payload, NOW)


def test_fingerprint_and_sas_payloads() -> None:
    fp = Fingerprint("srv", "ab" * 32, "10.0.0.1:9700")
    assert json.loads(fp.encode()) == {
        "server_id": "srv",
        "key_sha256": "ab" * 32,
        "address": "10.0.0.1:9700",
    }
    assert parse_fingerprint("srv", fp.encode()) == fp
    with pytest.raises(MalformedPayload, match="does not match"):
        parse_fingerprint("other", fp.encode())
    with pytest.raises(MalformedPayload, match="64 lowercase hex"):
        parse_fingerprint("srv", Fingerprint("srv", "AB" * 32, "a:1").encode())
    with pytest.raises(MalformedPayload, match="address"):
        parse_fingerprint("srv", b'{"server_id": "srv", "key_sha256": "' + b"ab" * 32 + b'"}')
    sas = bytes(range(48))
    assert json.loads(encode_sas(sas, "client")) == {"role": "client", "sas": sas.hex()}
    assert parse_sas_message(encode_sas(sas, "server")) == SasMessage("server", sas=sas)
    assert parse_sas_message(encode_probe("ab" * 16, "client")) == SasMessage(
        "client", probe="ab" * 16
    )
    for bad in (
        b'{"sas": "zz", "role": "client"}',
        b'{"sas": "abcd", "role": "client"}',
        b'{"sas": 1, "role": "server"}',
        b"[]",
        b'{"sas": "' + sas.hex().encode() + b'"}',  # the old, role-less payload
        b'{"sas": "' + sas.hex().encode() + b'", "role": "mallory"}',
        b'{"probe": "abc", "role": "client"}',
    ):
        with pytest.raises(MalformedPayload):
            parse_sas_message(bad)
    with pytest.raises(ValueError):
        encode_sas(sas, "mallory")


def test_shared_psk_line_and_generators() -> None:
    key = generate_psk()
    identity = generate_identity()
    assert len(key) == 32 and key != generate_psk()
    assert identity.startswith("psk-") and len(identity) == 20 and identity != generate_identity()
    assert format_shared_psk(identity, key) == f"{identity}={key.hex()}"
    with pytest.raises(ValueError, match="'='"):
        format_shared_psk("a=b", key)


async def test_publish_psk_validates_before_touching_the_network() -> None:
    settings = MqttSettings.from_url(f"mqtt://127.0.0.1:{free_port()}", env={})
    with pytest.raises(ValueError, match="16"):
        await publish_psk(settings, "srv", "id", b"short")
    with pytest.raises(ValueError, match="ttl"):
        await publish_psk(settings, "srv", "id", generate_psk(), ttl=0)
    with pytest.raises(ValueError, match="server id"):
        await publish_psk(settings, "s/rv", "id", generate_psk())
    with pytest.raises(ValueError, match="fingerprint names another server"):
        ServerChannel(settings, "srv", fingerprint=Fingerprint("other", "ab" * 32, "a:1"))


# --------------------------------------------------------------------------- PSK table


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_table_forgets_expired_keys_and_refuses_stale_ones() -> None:
    clock = Clock()
    table = PskTable(clock=clock)
    assert table.add("a", b"A" * 16, NOW + 10)
    assert not table.add("old", b"O" * 16, NOW)  # expires_at == now: already gone
    assert table.lookup("a") == b"A" * 16 and "a" in table and len(table) == 1
    clock.now = NOW + 10
    assert table.lookup("a") is None and "a" not in table and len(table) == 0


def test_a_full_table_evicts_no_unexpired_key_and_keeps_newcomers_only_briefly() -> None:
    """Issue 13 item 7: a flood must not push out keys already received."""
    clock = Clock()
    table = PskTable(clock=clock, max_entries=3, recent=2, recent_lifetime=30)
    for name, ttl in (("b", 300), ("a", 10), ("c", 20)):
        assert table.add(name, name.encode() * 16, NOW + ttl).admission is Admission.STORED
    assert table.full
    late = table.add("d", b"d" * 16, NOW + 1e9)
    assert late.admission is Admission.RECENT and late.expires_at == NOW + 30
    assert [table.lookup(n) is not None for n in "abcd"] == [True] * 4  # nobody evicted
    table.add("e", b"e" * 16, NOW + 60)
    table.add("f", b"f" * 16, NOW + 60)  # the ring of recent arrivals holds 2
    assert table.lookup("d") is None and table.lookup("f") == b"f" * 16
    assert len(table) == 3 and table.lookup("a") == b"a" * 16
    clock.now = NOW + 10  # "a" expires: room for one more in the table proper
    assert table.add("g", b"g" * 16, NOW + 100).admission is Admission.STORED
    clock.now = NOW + 31  # the recent ones are gone, the stored ones are not
    assert table.lookup("f") is None and table.lookup("g") == b"g" * 16
    with pytest.raises(ValueError):
        PskTable(max_entries=0)


def test_a_key_lives_at_most_the_ceiling_and_an_identity_keeps_its_first_key() -> None:
    clock = Clock()
    table = PskTable(clock=clock, max_lifetime=600)
    added = table.add("far", b"F" * 16, 1e15)  # the retained bomb's expires_at
    assert added.clamped and added.expires_at == NOW + 600
    other = table.add("far", b"X" * 16, NOW + 60)  # someone else's key for the same identity
    assert other.admission is Admission.CONFLICT and not other
    assert table.lookup("far") == b"F" * 16
    again = table.add("far", b"F" * 16, NOW + 60)  # the same key again is no conflict
    assert again.admission is Admission.STORED
    clock.now = NOW + 600
    assert table.lookup("far") is None
    assert table.add("far", b"X" * 16, NOW + 700)  # expired: the identity is free again
    assert not table.add("old", b"O" * 16, NOW + 600)  # not in the future: refused


async def test_table_wait_for_wakes_on_add_and_cleans_up_after_timeout() -> None:
    table = PskTable(clock=Clock())
    waiter = asyncio.create_task(table.wait_for("late", 5))
    other = asyncio.create_task(table.wait_for("late", 5))
    await asyncio.sleep(0)
    table.add("late", b"L" * 16, NOW + 60)
    assert await waiter == b"L" * 16 and await other == b"L" * 16
    assert await table.wait_for("never", 0.05) is None
    assert await table.wait_for("never", 0) is None
    assert table._waiters == {}  # no future left behind for identities that never came


# --------------------------------------------------------------------------- embedded broker


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert not is_loopback("broker.lab")


async def test_embedded_broker_binds_loopback_by_default_and_picks_a_port() -> None:
    broker = EmbeddedBroker(port=0)
    assert broker.host == "127.0.0.1"
    async with broker:
        assert broker.port != 0
        assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
        with socket.create_connection(("127.0.0.1", broker.port)):
            pass
        with pytest.raises(OobError, match="already running"):
            await broker.start()
    await asyncio.sleep(0.05)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", broker.port), 1):
        pass
    gc.collect()  # a probe that never sent CONNECT must not leak its socket
    await assert_no_stray_tasks()


async def test_embedded_broker_on_a_busy_port_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        with pytest.raises(
            OobError, match=r"cannot start the MQTT broker on 127\.0\.0\.1:\d+: .*in use"
        ):
            await EmbeddedBroker(port=busy.getsockname()[1]).start()
    with pytest.raises(OobError, match="bad port"):
        EmbeddedBroker(port=70000)
    await assert_no_stray_tasks()


async def test_embedded_broker_stops_promptly_with_clients_connected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with EmbeddedBroker(port=0) as broker:
        settings = MqttSettings.from_url(broker.url, env={})
        async with connect(settings) as idle:
            await idle.subscribe("kexlab/#", qos=1)
            async with asyncio.timeout(5):
                await broker.stop()
            await asyncio.sleep(0.05)  # the client notices the drop while nobody reads
    del idle
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    await assert_no_stray_tasks()


# --------------------------------------------------------------------------- layering


def test_only_oob_speaks_mqtt() -> None:
    """The style guide: ``oob/`` owns MQTT; no other package imports an MQTT library."""
    repo = Path(__file__).resolve().parent.parent
    mqtt_libraries = {"aiomqtt", "amqtt", "paho"}
    offenders = []
    # mutants/: mutmut's working copy (make mutate), copies of these packages.
    skip = {"oob", "tests", "mutants"}
    folders = [p for p in repo.iterdir() if p.is_dir() and p.name not in skip]
    sources = [*repo.glob("*.py")]
    for folder in folders:
        if not folder.name.startswith(".") and "egg-info" not in folder.name:
            sources += folder.rglob("*.py")
    for path in sorted(sources):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in mqtt_libraries]
    assert offenders == []


# --------------------------------------------------------------------------- stopping a task


def _publisher(acks: list[asyncio.Future[None]]) -> asyncio.Task[None]:
    """A task that publishes for ever, awaiting each PUBACK through wait_for as aiomqtt does."""

    async def publish_forever() -> None:
        loop = asyncio.get_running_loop()
        while True:
            acks.append(loop.create_future())
            await asyncio.wait_for(acks[-1], timeout=5)

    return asyncio.create_task(publish_forever())


async def test_cancel_and_wait_ends_a_task_that_lost_its_cancellation() -> None:
    """The CI hang: a PUBACK and the cancel in one loop step; one cancel() was lost."""
    acks: list[asyncio.Future[None]] = []
    task = _publisher(acks)
    await asyncio.sleep(0)
    acks[-1].set_result(None)
    task.cancel()
    await asyncio.sleep(0.05)
    if sys.version_info < (3, 12):  # gh-86296: 3.11's wait_for returns the result instead
        assert not task.done() and len(acks) == 2
    acks[-1].set_result(None)  # the next PUBACK, again with the cancel
    async with asyncio.timeout(2):
        await cancel_and_wait(task)
    assert task.cancelled()


async def test_cancel_and_wait_raises_what_the_task_raised() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ValueError("cleanup failed") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="cleanup failed"):
        await cancel_and_wait(task)
