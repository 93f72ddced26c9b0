"""The ``kexlab`` group: its commands, ``demo``, and the one-line error contract."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
from support_net import KEXLAB, home_fixture  # noqa: F401  (home_fixture provides `home`)
from typer.testing import CliRunner

import cli.demo
from cli.main import app

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("keygen", "server", "client", "demo"):
        assert re.search(rf"\b{name}\b", result.stdout)


def test_no_arguments_prints_help_with_exit_2() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2
    assert "Usage" in result.output and "error" not in result.stderr


def test_unknown_command_is_one_line() -> None:
    result = runner.invoke(app, ["bogus"])
    assert result.exit_code == 2
    assert result.stderr == "kexlab: error: No such command 'bogus'. (see 'kexlab --help')\n"


def test_keygen_is_registered(tmp_path: Path) -> None:
    out = tmp_path / "id.pem"
    result = runner.invoke(app, ["keygen", "--type", "ed25519", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert re.search(r"fingerprint: SHA256:[0-9a-f]{64}", result.stdout)
    assert out.stat().st_mode & 0o777 == 0o600


def test_demo_runs_three_methods_and_compares_sas() -> None:
    start = time.monotonic()
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start < 10
    out = result.stdout
    assert "PSK handed over by hand to both sides: identity 'demo-psk'" in out
    for method in ("rsa/aes128", "dhe/x25519/aes256", "psk/aes256"):
        assert f"client: handshake complete: {method}" in out
    for title in (
        "CLIENT_HELLO",
        "KEY_TRANSPORT",
        "SERVER_SIGNATURE",
        "FINISHED",
        "RECORD (key_update)",
    ):
        assert title in out
    assert "sent 'hello over psk', echo 'hello over psk'" in out
    rows = re.findall(
        r"^ ?(\S+)\s+((?:[0-9a-f]{4} ){3}[0-9a-f]{4})\s+((?:[0-9a-f]{4} ){3}[0-9a-f]{4})\s+(\w+)",
        out,
        re.M,
    )
    assert [r[0] for r in rows] == [
        "rsa/aes128",
        "dhe/x25519/aes256",
        "psk/aes256",
        "psk/aes256*",  # over MQTT (issue 4)
        "dhe/x25519/aes256*",
    ]
    assert all(client == server and same == "yes" for _m, client, server, same in rows)


def test_demo_without_explain_and_with_secrets() -> None:
    quiet = runner.invoke(app, ["demo", "--no-explain"])
    assert quiet.exit_code == 0, quiet.output
    assert "CLIENT_HELLO" not in quiet.stdout and quiet.stdout.count("handshake complete") == 5
    secret = runner.invoke(app, ["demo", "--no-explain", "--show-secrets"])
    assert secret.exit_code == 0
    assert secret.stdout.count("session secrets") == 5


def test_internal_errors_are_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.demo, "_demo", boom)
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 1
    assert result.stderr == "internal error: RuntimeError: boom (set KEXLAB_DEBUG=1 for details)\n"
    assert "Traceback" not in result.output
    monkeypatch.setenv("KEXLAB_DEBUG", "1")
    debug = runner.invoke(app, ["demo"])
    assert isinstance(debug.exception, RuntimeError)


def test_make_demo_as_a_process_within_10_seconds() -> None:
    start = time.monotonic()
    proc = subprocess.run([KEXLAB, "demo"], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 10
    assert proc.stdout.count("yes") >= 3 and "Traceback" not in proc.stderr
