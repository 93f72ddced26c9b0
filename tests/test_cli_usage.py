"""Every usage mistake of every command: one line, `kexlab CMD: error: ...`, exit 2, no work done.

A usage mistake is anything wrong on the command line itself: an unknown option, a value
the option cannot take, options that exclude each other, an input file that is missing or
a folder. What is *in* a file (a bad key, a loose mode) is not the command line's fault:
those are failures, exit 1 (tests/test_cli_server.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    home_fixture,
    one_error_line,
)
from typer.testing import CliRunner

from cli.main import app

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()
NOWHERE = "/no/such/file"
BROKER = "mqtt://127.0.0.1:1"  # never contacted: every case fails before connecting


def usage(args: list[str], env: dict[str, str] | None = None) -> str:
    """The one stderr line of a usage mistake; asserts exit 2 and the command's prefix."""
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, (args, result.output)
    line = one_error_line(result.stderr)
    command = "kexlab " + " ".join(args[:2] if args[0] == "psk" else args[:1])
    assert line.startswith(f"{command}: error: "), line
    assert line.endswith(f"(see '{command} --help')"), line
    return line


MQTT_CASES = [
    # issue 12 item 4: a URL without its scheme was "error: ..." and exit 1
    (
        ["--oob", "127.0.0.1:1883"],
        "'--oob': '127.0.0.1:1883': the broker URL must start with mqtt://",
    ),
    (["--oob", "mqtt://user:pw@h"], "'--oob': 'mqtt://user:pw@h': put no credentials in the URL"),
    (["--oob", "mqtt://h/topic"], "'--oob': 'mqtt://h/topic': a broker URL is mqtt://HOST:PORT"),
    (["--oob", "mqtt://h:port"], "'--oob': 'mqtt://h:port': bad port"),
    (["--oob", BROKER, "--mqtt-password-file", NOWHERE], "'--mqtt-username': a password file"),
    (["--oob", BROKER, "--mqtt-ca", NOWHERE], "'--mqtt-ca': a CA file is for TLS"),
    (
        ["--oob", BROKER, "--mqtt-username", "u", "--mqtt-password-file", NOWHERE],
        f"'--mqtt-password-file' / KEXLAB_MQTT_PASSWORD_FILE: {NOWHERE}: no such file",
    ),
    (
        ["--oob", "mqtts://127.0.0.1:1", "--mqtt-ca", NOWHERE],
        f"'--mqtt-ca' / KEXLAB_MQTT_CA: {NOWHERE}: no such file",
    ),
]


@pytest.mark.parametrize(("args", "message"), MQTT_CASES)
@pytest.mark.parametrize(
    "command",
    [
        ["server"],
        ["client", "127.0.0.1:1", "--kex", "psk"],
        ["psk", "send", "--server-id", "lab"],
    ],
    ids=["server", "client", "psk-send"],
)
def test_mqtt_option_mistakes_are_usage_errors(
    command: list[str], args: list[str], message: str
) -> None:
    assert message in usage([*command, *args])


def test_a_password_file_from_the_environment_is_checked_too() -> None:
    env = {"KEXLAB_MQTT_USERNAME": "u", "KEXLAB_MQTT_PASSWORD_FILE": NOWHERE}
    line = usage(["psk", "send", "--server-id", "lab", "--oob", BROKER], env=env)
    assert f"KEXLAB_MQTT_PASSWORD_FILE: {NOWHERE}: no such file" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["psk", "send", "--server-id", "a/b"], "'--server-id': a server id may not contain '/'"),
        (["psk", "send", "--server-id", "lab", "--identity", "a=b"], "may not contain '='"),
        (["server", "--rsa-key", NOWHERE], f"'--rsa-key': {NOWHERE}: no such file"),
        (["server", "--sign-key", "/"], "'--sign-key': /: a directory"),
        (["server", "--inbox", "/etc/passwd"], "'--inbox': /etc/passwd: not a directory"),
        (["server", "--keylog", "/"], "'--keylog': /: a directory"),
        (["server", "--pcap", "/"], "'--pcap': /: a directory"),
        (["client", "h", "--keylog", "/", "--send", "x"], "'--keylog': /: a directory"),
        (["client", "h", "--pcap", "/", "--send", "x"], "'--pcap': /: a directory"),
        (["decrypt", NOWHERE], f"CAPTURE: {NOWHERE}: no such file"),
        (["decrypt", "/etc/passwd", "--keylog", NOWHERE], f"'--keylog': {NOWHERE}: no such"),
        (["decrypt", "/etc/passwd", "--rsa-key", "/"], "'--rsa-key': /: a directory"),
        # a malformed --psk was "error: --psk: ..." and exit 1 in decrypt only
        (["decrypt", "/etc/passwd", "--psk", "nokey"], "'--psk': 'nokey' is not IDENTITY=HEX"),
        (["bench", "--only", "nothing"], "'--only': unknown measurement 'nothing'"),
        (["bench", "--plot", "x.png", "--only", "pingpong"], "'--plot': needs at least one bulk"),
        (["bench", "--json", "/", "--only", "pingpong"], "'--json': /: a directory"),
        (["keygen", "--type", "dsa", "-o", "k.pem"], "'dsa' is not one of rsa, ed25519"),
        # issue 12 item 18: the list of policies left out mqtt
        (
            ["client", "h", "--trust", "tofo"],
            "'--trust': unknown trust policy 'tofo': use tofu, none, pin:SHA256HEX, pin:FILE"
            " or mqtt (with --oob)",
        ),
        (["broker", "--port", "70000"], "'--port'"),
    ],
)
def test_other_usage_mistakes(args: list[str], message: str) -> None:
    assert message in usage(args)


def test_a_bench_result_that_could_not_be_written_fails_before_measuring(tmp_path: Path) -> None:
    # Before: the whole benchmark ran, then an internal error (FileNotFoundError).
    result = runner.invoke(app, ["bench", "--json", str(tmp_path / "no" / "r.json")])
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"error: cannot write {tmp_path / 'no' / 'r.json'}: folder {tmp_path / 'no'} does not exist"
    )
    assert "handshake" not in result.stderr  # nothing was measured


def test_a_server_key_log_that_cannot_be_written_fails_before_listening(tmp_path: Path) -> None:
    target = tmp_path / "no" / "keys.log"
    result = runner.invoke(app, ["server", "--port", "0", "--keylog", str(target)])
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"error: cannot write the key log {target}: no such file or directory"
    )
    assert "listening" not in result.stdout


def test_psk_is_checked_the_same_way_by_every_command() -> None:
    lines = [
        usage(["server", "--psk", "a=zz"]),
        usage(["client", "h", "--psk", "a=zz"]),
        usage(["decrypt", "/etc/passwd", "--psk", "a=zz"]),
    ]
    reasons = {line.split("'--psk': ")[1].split(" (see")[0] for line in lines}
    assert len(reasons) == 1, lines
