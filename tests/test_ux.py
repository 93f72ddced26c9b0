"""What a careful user trips over: narrow terminals, Ctrl-C, closed stdin, odd options and files.

Each test here pins a fix made while following the README and the lessons as a user would.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import load_vector
from rich.console import Console
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    KEXLAB,
    PSK_HEX,
    ThreadServer,
    home_fixture,
    home_key,
    one_error_line,
)
from typer.testing import CliRunner

from cli.demo import RUNS
from cli.main import app
from client.terminal import HELP_LINE
from explain.annotate import annotate_frame
from explain.render import MIN_MEANING_WIDTH, STACKED_HEADER, WIDE_MIN_WIDTH, render_frame
from protocol import HandshakeComplete, Kex, ServerConfig, ServerConnection
from server.server import ServerOptions

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()
PSK_ARG = f"alice={PSK_HEX}"
FINISHED_MEANING = "HMAC-SHA-384(finished_key,"


@pytest.fixture
def srv(home: Path) -> Iterator[ThreadServer]:
    key = home_key(home)
    options = ServerOptions(
        rsa_key=key, sign_key=key, psks={"alice": bytes.fromhex(PSK_HEX)}, inbox=home / "inbox"
    )
    with ThreadServer(options) as server:
        yield server


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env)


def usage_line(result) -> str:  # type: ignore[no-untyped-def]
    """The one stderr line of a usage error (exit 2)."""
    assert result.exit_code == 2, result.output
    return one_error_line(result.stderr)


def squeeze(text: str) -> str:
    """``text`` without any whitespace: what survives a table wrapping it anywhere."""
    return re.sub(r"\s+", "", text)


# --------------------------------------------------------------------------- --explain widths


def _frame_text(width: int, frame_index: int = 1) -> tuple[str, list[str]]:
    vec = load_vector("dhe-x25519-0x1302-rsa-pss.json")
    frame = bytes.fromhex(vec["frames"][frame_index]["hex"])
    rows = annotate_frame(frame)
    console = Console(file=io.StringIO(), width=width, color_system=None, record=True)
    render_frame(console, "received", rows, "S → C")
    return console.export_text(), [row.meaning for row in rows]


def test_explain_at_80_columns_stacks_the_meaning_under_the_bytes() -> None:
    text, meanings = _frame_text(80)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert STACKED_HEADER in text
    flat = squeeze(text)
    for meaning in meanings:  # nothing cut, whatever the wrapping
        assert squeeze(meaning) in flat
    # Words stay whole: the meaning gets a real column, not six characters.
    assert any("server random: 32 fresh bytes" in line for line in lines)
    assert any("server's ephemeral x25519 public key" in line for line in lines)


def test_explain_wide_keeps_four_columns_and_the_meaning_has_room() -> None:
    text, meanings = _frame_text(WIDE_MIN_WIDTH)
    header = next(line for line in text.splitlines() if "offset" in line)
    assert header.split() == ["offset", "field", "bytes", "meaning"]
    meaning_at = header.index("meaning")
    assert WIDE_MIN_WIDTH - meaning_at >= MIN_MEANING_WIDTH
    column = squeeze("".join(line[meaning_at:] for line in text.splitlines()))
    for meaning in meanings:
        assert squeeze(meaning) in column
    narrower, _ = _frame_text(WIDE_MIN_WIDTH - 1)
    assert STACKED_HEADER in narrower


def test_finished_meaning_reads_in_one_piece_at_80_columns() -> None:
    text, _ = _frame_text(80, frame_index=3)
    assert any(FINISHED_MEANING in line for line in text.splitlines()), text


def test_client_explain_piped_at_80_columns(srv: ThreadServer) -> None:
    result = invoke("client", srv.address, "--explain", "--send", "hi", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    long = [ln for ln in lines if len(ln.rstrip()) > 80 and "handshake complete" not in ln]
    assert not long
    assert any("client random: 32 fresh bytes" in line for line in lines)
    assert any(FINISHED_MEANING in line for line in lines)


# --------------------------------------------------------------------------- option combinations


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kex", "rsa", "--group", "secp384r1"], "--group is for --kex dhe: rsa uses no"),
        (["--psk", PSK_ARG, "--group", "x25519"], "--group is for --kex dhe: psk uses no"),
        (["--psk", PSK_ARG, "--trust", "none"], "with psk there is none"),
        (["--kex", "psk", "--psk", PSK_ARG, "--trust", "tofu"], "with psk there is none"),
    ],
)
def test_options_that_the_method_would_ignore_are_usage_errors(
    srv: ThreadServer, args: list[str], message: str
) -> None:
    line = usage_line(invoke("client", srv.address, *args, "--send", "x"))
    assert line.startswith("kexlab client: error: Invalid value for ") and message in line
    assert not srv.recorder.events  # refused before connecting


def test_the_defaults_still_apply(srv: ThreadServer) -> None:
    result = invoke("client", srv.address, "--send", "x")
    assert result.exit_code == 0, result.output
    assert "handshake complete: dhe/x25519/" in result.stdout
    assert "first use: recorded server key" in result.stderr  # tofu


def test_client_help_states_the_defaults() -> None:
    result = invoke("client", "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for default in ("Default: x25519.", "Default: tofu.", "[default: aes256]", "Default: dhe"):
        assert default in text


# --------------------------------------------------------------------------- files


def test_send_file_directory_is_a_usage_error(srv: ThreadServer, tmp_path: Path) -> None:
    line = usage_line(invoke("client", srv.address, "--send-file", str(tmp_path)))
    assert line.endswith(f"'--send-file': {tmp_path}: a directory (see 'kexlab client --help')")
    assert not srv.recorder.events


def test_unreadable_send_file_is_refused_before_connecting(
    srv: ThreadServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "secret.txt"
    src.write_text("x")
    real_open = Path.open

    def no_permission(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if self == src:  # chmod 000 does not stop root, so refuse the read here
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", no_permission)
    line = usage_line(invoke("client", srv.address, "--send-file", str(src)))
    assert f"'--send-file': {src}: permission denied" in line
    assert not srv.recorder.events


def test_unwritable_keylog_fails_before_connecting(srv: ThreadServer, tmp_path: Path) -> None:
    keylog = tmp_path / "no" / "such" / "keys.log"
    result = invoke("client", srv.address, "--keylog", str(keylog), "--send", "x")
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"error: cannot write the key log {keylog}: no such file or directory"
    )
    assert not srv.recorder.events


# --------------------------------------------------------------------------- error lines


def _serve_once(reply: bytes) -> tuple[socket.socket, threading.Thread]:
    """A loopback listener that answers one connection with ``reply`` and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return listener, thread


def test_a_server_that_is_not_kxp_is_named() -> None:
    listener, thread = _serve_once(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    with listener:
        port = listener.getsockname()[1]
        result = invoke("client", f"127.0.0.1:{port}", "--send", "x")
        thread.join(5)
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"error: 127.0.0.1:{port} does not speak KXP/1: bad magic 4854"
        " (sent alert decode_error (50))"
    )


def _handshake_then_vanish(listener: socket.socket, config: ServerConfig) -> None:
    """Complete a psk handshake, read the first record, then drop the socket (no close_notify)."""
    sock, _ = listener.accept()
    conn = ServerConnection(config)
    done = got_record = False
    with sock:
        while not got_record:
            data = sock.recv(65536)
            if not data:
                return
            conn.receive_data(data)
            while (event := conn.next_event()) is not None:
                got_record |= done  # anything after the handshake is the client's message
                done |= isinstance(event, HandshakeComplete)
            sock.sendall(conn.data_to_send())


def test_a_server_that_vanishes_mid_session_is_named() -> None:
    key = bytes.fromhex(PSK_HEX)
    config = ServerConfig(
        kex_methods=frozenset({Kex.PSK}),
        psk_lookup=lambda identity: key if identity == "alice" else None,
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        thread = threading.Thread(target=_handshake_then_vanish, args=(listener, config))
        thread.start()
        port = listener.getsockname()[1]
        result = invoke("client", f"127.0.0.1:{port}", "--psk", PSK_ARG, "--send", "x")
        thread.join(5)
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        "error: server closed the connection without close_notify"
    )


# --------------------------------------------------------------------------- real processes


def _client(*args: str, **popen: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([KEXLAB, "client", *args], **popen)  # type: ignore[call-overload]


def _read_until(fd: int, buf: bytearray, pattern: bytes, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while pattern not in buf:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, (pattern, bytes(buf))
        chunk = os.read(fd, 4096)
        assert chunk, (pattern, bytes(buf))
        buf.extend(chunk)


def test_ctrl_c_during_the_handshake_is_one_line_and_exit_1() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts, never answers
        listener.settimeout(20)
        port = listener.getsockname()[1]
        proc = _client(
            f"127.0.0.1:{port}",
            "--send",
            "x",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(10)
                assert conn.recv(4096).startswith(b"KX")  # its CLIENT_HELLO: mid-handshake
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=15)
                rest = conn.recv(4096)
                while chunk := conn.recv(4096):  # the client hangs up: no half-open socket
                    rest += chunk
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1
    assert one_error_line(err.decode()) == (
        "error: interrupted (Ctrl-C) before the handshake completed"
    )
    assert out == b""
    assert rest.startswith(b"KX")  # close_notify on its way out


def test_ctrl_c_at_the_prompt_closes_politely(srv: ThreadServer) -> None:
    master, slave = pty.openpty()
    proc = _client(srv.address, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    err = bytearray()
    try:
        assert proc.stderr is not None
        _read_until(proc.stderr.fileno(), err, HELP_LINE.encode())
        proc.send_signal(signal.SIGINT)
        _out, rest = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    err.extend(rest)
    lines = err.decode().splitlines()
    # Issue 12 item 3: a clean close the user asked for is not an error (was exit 1, "error:").
    assert proc.returncode == 0
    assert "Traceback" not in err.decode() and "never retrieved" not in err.decode()
    assert lines[-1] == "closed (Ctrl-C): the session ended with close_notify"
    srv.recorder.wait_for("closed")
    assert not srv.recorder.named("error")  # close_notify, not a dropped socket


def test_text_typed_before_ctrl_d_is_sent(srv: ThreadServer) -> None:
    master, slave = pty.openpty()
    proc = _client(srv.address, stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    err = bytearray()
    try:
        assert proc.stderr is not None
        _read_until(proc.stderr.fileno(), err, HELP_LINE.encode())
        os.write(master, b"no newline\x04")  # Ctrl-D after text hands the text over...
        time.sleep(0.3)
        os.write(master, b"\x04")  # ...and Ctrl-D on an empty line is the end
        out, _err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0, err
    assert out.decode().splitlines()[-1] == "received: no newline"  # the echo, marked
    srv.recorder.wait_for("closed")


def test_a_closed_stdin_is_like_an_empty_one(srv: ThreadServer) -> None:
    result = subprocess.run(
        ["sh", "-c", 'exec "$0" client "$1" <&-', KEXLAB, srv.address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr
    assert "handshake complete" in result.stdout
    srv.recorder.wait_for("closed")


# --------------------------------------------------------------------------- keygen and demo


def test_keygen_type_errors_are_plain(tmp_path: Path) -> None:
    bad = usage_line(invoke("keygen", "--type", "dsa", "--out", str(tmp_path / "k.pem")))
    assert bad == (
        "kexlab keygen: error: Invalid value for '--type' / '-t': 'dsa' is not one of"
        " rsa, ed25519 (see 'kexlab keygen --help')"
    )
    missing = usage_line(invoke("keygen", "--out", str(tmp_path / "k.pem")))
    assert "\t" not in missing and "Missing option '--type'" in missing


def test_keygen_points_at_force(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    assert invoke("keygen", "--type", "ed25519", "--out", str(out)).exit_code == 0
    again = invoke("keygen", "--type", "ed25519", "--out", str(out))
    assert again.exit_code == 1
    assert one_error_line(again.stderr).endswith("not overwriting it (--force replaces it)")


def test_demo_fits_80_columns_without_cutting_titles_or_keys() -> None:
    assert all(len(run.title) + 4 <= 80 for run in RUNS)  # a Rule needs "─ " on both sides
    result = invoke("demo", "--no-explain", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert not [ln for ln in lines if ln.startswith("─") and "…" in ln]
    assert any(
        re.fullmatch(r"server key \(RSA-2048, made just now\): SHA256:[0-9a-f]{64}", ln)
        for ln in lines
    )
    assert any(re.search(r"identity 'demo-psk', key [0-9a-f]{64} \(32", ln) for ln in lines)
