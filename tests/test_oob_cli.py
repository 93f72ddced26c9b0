"""``kexlab psk send`` and ``kexlab broker`` (cli/oob_commands.py), mounted in a throwaway app.

``psk send`` runs through CliRunner in a worker thread (it calls asyncio.run) while the
test's loop serves the broker and the server side. ``broker`` runs as a real process
so that SIGINT and SIGTERM are real signals.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from oob_brokers import (
    CLIENT_USER,
    GUEST_USER,
    REPO,
    SERVER_USER,
    LabBroker,
    Mosquitto,
    assert_no_stray_tasks,
    free_port,
    make_broker,
    running,
    wait_port,
)
from typer.testing import CliRunner

from cli.main import app
from oob import PUBACK_CAVEAT, MqttSettings, ServerChannel, publish_psk
from oob.settings import connect

SID = "lab-server"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}
KEY_LINE = re.compile(r"(psk-[0-9a-f]{16})=([0-9a-f]{64})")


APP = app  # the real command group: one-line errors and exit codes as users get them


@pytest.fixture(params=["mosquitto", "amqtt"])
async def lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LabBroker]:
    """A running open broker of each kind."""
    async with running(make_broker(request.param, tmp_path)) as started:
        yield started
    await assert_no_stray_tasks()


async def invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the app in a worker thread: (exit code, stdout, stderr)."""
    runner = CliRunner(env=env)
    result = await asyncio.to_thread(runner.invoke, APP, args)
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- psk send


async def test_psk_send_hands_the_server_a_key_and_prints_it(lab: LabBroker) -> None:
    async with ServerChannel(lab.settings(), SID, **FAST) as channel:
        assert await channel.wait_ready(5)
        code, out, err = await invoke(["psk", "send", "--oob", lab.url, "--server-id", SID])
        assert code == 0, err
        match = KEY_LINE.fullmatch(out.strip())
        assert match is not None, out  # stdout is exactly IDENTITY=HEX
        identity, key = match[1], bytes.fromhex(match[2])
        assert await channel.wait_for(identity, 5) == key
    assert len(key) == 32
    assert PUBACK_CAVEAT in " ".join(err.split())
    assert "delivered" not in err


async def test_psk_send_with_identity_and_ttl(lab: LabBroker) -> None:
    async with connect(lab.settings()) as spy:
        await spy.subscribe(f"kexlab/v1/{SID}/psk/+", qos=1)
        before = time.time()
        args = ["--identity", "door-7", "--ttl", "42"]
        code, out, err = await invoke(["psk", "send", "--oob", lab.url, "--server-id", SID, *args])
        assert code == 0, err
        async with asyncio.timeout(5):
            message = await anext(aiter(spy.messages))
    body = json.loads(message.payload)
    assert out.startswith("door-7=")
    assert str(message.topic) == f"kexlab/v1/{SID}/psk/door-7"
    assert base64.b64decode(body["key"]) == bytes.fromhex(out.strip().split("=")[1])
    assert before + 41 <= body["expires_at"] <= time.time() + 43


async def test_psk_send_with_the_broker_down_fails_fast_in_one_line() -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    started = time.monotonic()
    code, out, err = await invoke(["psk", "send", "--oob", url, "--server-id", SID])
    assert time.monotonic() - started < 5
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: MQTT broker {url} unavailable: ")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--oob", "http://127.0.0.1:1883"], "mqtt:// or mqtts://"),
        (["--oob", "mqtt://user:pw@127.0.0.1:1883"], "put no credentials in the URL"),
        (["--oob", "mqtt://127.0.0.1:1", "--identity", "a=b"], "may not contain '='"),
        (["--oob", "mqtt://127.0.0.1:1", "--identity", "a/b"], "'/'"),
        (["--oob", "mqtt://127.0.0.1:1", "--mqtt-ca", "/nonexistent"], "mqtts://"),
    ],
)
async def test_psk_send_refuses_bad_options_in_one_line(args: list[str], expected: str) -> None:
    code, out, err = await invoke(["psk", "send", "--server-id", SID, *args])
    assert code == 2  # usage mistakes
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("kexlab psk send: error: ")
    assert expected in err


async def test_psk_send_logs_in_from_environment_variables(tmp_path: Path) -> None:
    hardened = Mosquitto(tmp_path, "hardened.conf")
    async with (
        running(hardened),
        ServerChannel(hardened.settings(SERVER_USER), SID, **FAST) as channel,
    ):
        assert await channel.wait_ready(5)
        send = ["psk", "send", "--oob", hardened.url, "--server-id", SID]
        env = {
            "KEXLAB_MQTT_USERNAME": CLIENT_USER,
            "KEXLAB_MQTT_PASSWORD_FILE": str(tmp_path / f"{CLIENT_USER}.password"),
        }
        code, out, err = await invoke(send, env)
        assert code == 0, err
        identity, hex_key = out.strip().split("=")
        assert await channel.wait_for(identity, 5) == bytes.fromhex(hex_key)

        # The guest may not write psk/#: the command still succeeds (MQTT cannot tell),
        # and it says so instead of claiming delivery.
        guest = {
            "KEXLAB_MQTT_USERNAME": GUEST_USER,
            "KEXLAB_MQTT_PASSWORD_FILE": str(tmp_path / f"{GUEST_USER}.password"),
        }
        code, out, err = await invoke(send, guest)
        assert code == 0, err
        identity = out.strip().split("=")[0]
        assert await channel.wait_for(identity, 1.0) is None
        assert PUBACK_CAVEAT in " ".join(err.split())
    await assert_no_stray_tasks()


# --------------------------------------------------------------------------- broker

BROKER_SCRIPT = (
    "import typer; from cli.oob_commands import broker; "
    "app = typer.Typer(); app.command()(broker); app()"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_broker_command_serves_until_a_signal_then_exits_0(sig: signal.Signals) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", "-c", BROKER_SCRIPT, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_port(port, timeout=20)
        settings = MqttSettings.from_url(f"mqtt://127.0.0.1:{port}", env={})
        key = bytes(range(32))
        async with ServerChannel(settings, SID, **FAST) as channel:
            assert await channel.wait_ready(5)
            await publish_psk(settings, SID, "via-cli-broker", key, ttl=60)
            assert await channel.wait_for("via-cli-broker", 5) == key
            proc.send_signal(sig)  # with a client still connected
            out, err = await asyncio.to_thread(proc.communicate, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = err.decode()
    assert proc.returncode == 0, text
    assert f"listening on mqtt://127.0.0.1:{port}" in text
    assert "anyone who can connect reads every key" in text
    assert text.rstrip().endswith("kexlab broker: stopped")
    assert "Traceback" not in text and "Warning" not in text
    assert out == b""
    await assert_no_stray_tasks()


def test_broker_command_on_a_busy_port_fails_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(APP, ["broker", "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: cannot start the MQTT broker on 127.0.0.1:{port}: ")
    assert "in use" in result.stderr
