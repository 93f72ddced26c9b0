"""The client at the terminal: bytes as given, marked echoes, the same commands piped or typed.

Issue 12 items 1, 2 and 19, each as a student met it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    KEXLAB,
    ThreadServer,
    home_fixture,
    home_key,
)
from typer.testing import CliRunner

from cli.main import app
from server.server import ServerOptions

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()


@pytest.fixture
def srv(home: Path) -> Iterator[ThreadServer]:
    key = home_key(home)
    with ThreadServer(ServerOptions(rsa_key=key, sign_key=key, inbox=home / "inbox")) as server:
        yield server


def _lines(stdout: str) -> list[str]:
    """stdout without the summary line."""
    return [line for line in stdout.splitlines() if "handshake complete" not in line]


# --------------------------------------------------------------------------- item 1: bytes


def test_piped_bytes_that_are_not_utf8_are_sent_as_they_are(srv: ThreadServer) -> None:
    # Was: internal error: UnicodeEncodeError ... surrogates not allowed.
    result = subprocess.run(
        [KEXLAB, "client", srv.address],
        input=b"ok\n\xff\xfe bad\n",
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    # The echo came back byte for byte: shown as escapes, never replaced by U+FFFD.
    assert _lines(result.stdout.decode()) == ["echo: ok", "echo: \\xff\\xfe bad"]
    assert b"internal error" not in result.stderr


def test_send_argument_that_is_not_utf8_is_sent_as_it_is(srv: ThreadServer) -> None:
    result = subprocess.run(
        [KEXLAB.encode(), b"client", srv.address.encode(), b"--send", b"\xff\xfe", b"--send", b"x"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout.decode()) == ["echo: \\xff\\xfe", "echo: x"]


def test_an_echo_cannot_drive_the_terminal(srv: ThreadServer) -> None:
    result = runner.invoke(app, ["client", srv.address, "--send", "\x1b[2Jgone\rforged"])
    assert result.exit_code == 0, result.output
    assert _lines(result.stdout) == ["echo: \\x1b[2Jgone\\rforged"]


# --------------------------------------------------------------------------- item 2: commands


def test_piped_commands_work_as_at_the_prompt(srv: ThreadServer) -> None:
    # Was: "/rekey" and "/sas" sent to the server as text and echoed back.
    piped = b"before\n/sas\n  /rekey \nafter\n/quit\nnever sent\n"
    result = runner.invoke(app, ["client", srv.address], input=piped)
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert lines[0] == "echo: before"
    assert lines[1].startswith("SAS ") and "(full: " in lines[1]
    assert lines[2].startswith("key_update sent (request_update=1)")
    assert lines[3:] == ["echo: after"]  # new keys both ways, and /quit ended the session
    srv.recorder.wait_for("closed")
    assert not srv.recorder.named("error")


def test_other_slash_lines_are_messages_when_piped(srv: ThreadServer) -> None:
    # A file piped in may hold paths; only the three command words are commands.
    result = runner.invoke(app, ["client", srv.address], input="/etc/hosts\n/\n")
    assert result.exit_code == 0, result.output
    assert _lines(result.stdout) == ["echo: /etc/hosts", "echo: /"]


def test_help_says_where_the_commands_work() -> None:
    result = runner.invoke(app, ["client", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.stdout.split())
    assert "lines piped to stdin are sent the same way" in text
    assert "/rekey, /sas and /quit are commands there, as at the prompt" in text


# --------------------------------------------------------------------------- item 19: echo


def test_send_marks_what_came_back(srv: ThreadServer) -> None:
    result = runner.invoke(app, ["client", srv.address, "--send", "hello"])
    assert result.exit_code == 0, result.output
    assert _lines(result.stdout) == ["echo: hello"]


# --------------------------------------------------------------------------- item 21: labels


def test_show_secrets_names_each_direction(srv: ThreadServer) -> None:
    # Was: "AES-GCM key of client → peer records".
    result = runner.invoke(
        app, ["client", srv.address, "--show-secrets", "--send", "x"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "AES-GCM key of the client → server records" in text
    assert "AES-GCM key of the server → client records" in text
    assert "peer records" not in text
