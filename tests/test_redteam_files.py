"""Issue 13 items 8, 9, 10 and 11 (files and secrets), and issue 12 item 16 (known-hosts).

Each test does what the red team did: read a key from another process's command line,
put a comment after a pin, plant a key log link, answer as an impostor first.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    KEXLAB,
    PSK_HEX,
    PSK_WARNING,
    ServerProcess,
    free_port,
    home_fingerprint,
    home_fixture,
    home_key,
    one_error_line,
    run_client,
)
from typer.testing import CliRunner

from cli.main import app
from keystore import generate_private_key
from protocol import FrameDecoder, FrameType, encode_frame
from protocol.kex import spki
from protocol.messages import ClientHello, ServerHello
from server.server import KexlabServer, ServerOptions

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()


def key_file(tmp_path: Path, line: str = f"lab={PSK_HEX}", mode: int = 0o600) -> Path:
    path = tmp_path / "lab.psk"
    path.write_text(f"# the lab's key\n{line}\n")
    path.chmod(mode)
    return path


def cmdline(pid: int) -> bytes:
    """What every local user reads of a process (/proc/PID/cmdline is world-readable)."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


# --------------------------------------------------------------------------- item 8


def test_a_psk_given_on_the_command_line_is_in_the_process_list_and_warned(tmp_path: Path) -> None:
    with ServerProcess("--psk", f"lab={PSK_HEX}") as srv:
        assert PSK_HEX.encode() in cmdline(srv.proc.pid)  # the attack: any local user reads it
        result = run_client(srv.address, "--psk", f"lab={PSK_HEX}", "--send", "x")
        _code, err = srv.stop()
    assert result.returncode == 0
    assert result.stderr.splitlines() == [PSK_WARNING]
    assert PSK_WARNING in err.splitlines()


def test_a_key_file_or_the_environment_keeps_it_out(tmp_path: Path) -> None:
    keys = key_file(tmp_path)
    with ServerProcess("--psk-file", str(keys)) as srv:
        assert PSK_HEX.encode() not in cmdline(srv.proc.pid)
        by_file = run_client(srv.address, "--psk-file", str(keys), "--send", "file")
        assert (by_file.returncode, by_file.stderr) == (0, ""), by_file.stderr
        assert by_file.stdout.splitlines()[1:] == ["echo: file"]
        env = {**os.environ, "KEXLAB_PSK": f"lab={PSK_HEX}"}
        by_env = run_client(srv.address, "--kex", "psk", "--send", "env", env=env)
        assert (by_env.returncode, by_env.stderr) == (0, ""), by_env.stderr
        srv.stop()
    with ServerProcess(env={"KEXLAB_PSK_FILE": str(keys)}) as srv:
        assert "psk_identities=lab" in srv.wait_for(r"^listening: ").string
        assert PSK_HEX.encode() not in cmdline(srv.proc.pid)
        # The environment is readable by the same user only (and root).
        assert stat.S_IMODE(os.stat(f"/proc/{srv.proc.pid}/environ").st_mode) == 0o400
        srv.stop()


def test_key_file_mistakes_name_the_line_never_the_key(tmp_path: Path) -> None:
    bad = key_file(tmp_path, line=PSK_HEX)  # the key without its identity
    result = run_client("127.0.0.1:1", "--psk-file", str(bad))
    assert result.returncode == 2
    assert PSK_HEX not in result.stderr
    assert f"{bad} line 2 is not IDENTITY=HEX" in result.stderr
    loose = key_file(tmp_path, mode=0o644)
    with ServerProcess("--psk-file", str(loose)) as srv:
        _code, err = srv.stop()
    assert f"warning: {loose} is readable or writable by others (mode 0644)" in err


# --------------------------------------------------------------------------- item 9


@pytest.fixture
def real_server(home: Path) -> ServerProcess:
    srv = ServerProcess()
    yield srv
    srv.__exit__(None, None, None)


def test_a_pin_with_a_comment_is_still_a_pin(real_server: ServerProcess, home: Path) -> None:
    """Before: the commented line was skipped, the client took the host for a first use,
    accepted the attacker's key and rewrote the file without the operator's line."""
    known = home / "known_hosts"
    pinned = f"{real_server.address} {'ab' * 32}  # pinned by the operator\n"
    known.write_text("# lab servers\n" + pinned)
    result = run_client(real_server.address, "--send", "x")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "possible man in the middle" in line and "first use" not in result.stderr
    assert f"kexlab known-hosts forget {real_server.address} (line 2 of {known})" in line
    assert known.read_text() == "# lab servers\n" + pinned  # every byte kept
    # The right key with a comment is accepted silently, and nothing is rewritten.
    right = f"{real_server.address} {home_fingerprint(home)} # checked aloud\n"
    known.write_text(right)
    result = run_client(real_server.address, "--send", "y")
    assert (result.returncode, result.stderr) == (0, "")
    assert known.read_text() == right


def test_a_line_that_cannot_be_read_fails_closed(real_server: ServerProcess, home: Path) -> None:
    known = home / "known_hosts"
    original = f"{real_server.address} sha256-but-not-quite\n"
    known.write_text(original)
    result = run_client(real_server.address, "--send", "x")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"cannot read line 1 of known hosts file {known}" in line
    assert "kexlab known-hosts list" in line
    assert known.read_text() == original


def test_a_first_use_keeps_every_line_and_warns_of_a_writable_file(
    real_server: ServerProcess, home: Path
) -> None:
    known = home / "known_hosts"
    others = "# kept\n\n10.0.0.1:9700 " + "cd" * 32 + " # another lab\n"
    known.write_text(others)
    known.chmod(0o664)
    result = run_client(real_server.address, "--send", "x")
    assert result.returncode == 0, result.stderr
    assert f"warning: {known} is writable by group (mode 0664)" in result.stderr
    assert known.read_text() == others + f"{real_server.address} {home_fingerprint(home)}\n"


def test_known_hosts_list_and_forget(home: Path) -> None:
    known = home / "known_hosts"
    known.write_text(f"# mine\n127.0.0.1:9700 {'ab' * 32} # lab\n[::1]:9701 {'cd' * 32}\nbroken\n")
    listed = runner.invoke(app, ["known-hosts", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [
        f"# {known}",
        f"127.0.0.1:9700 SHA256:{'ab' * 32} (line 2)",
        f"[::1]:9701 SHA256:{'cd' * 32} (line 3)",
        "line 4: cannot be read ('broken' is not HOST:PORT): broken",
    ]
    forgot = runner.invoke(app, ["known-hosts", "forget", "127.0.0.1"])  # port 9700 by default
    assert forgot.exit_code == 0, forgot.output
    assert forgot.stdout == f"forgot 127.0.0.1:9700: 1 line(s) removed from {known}\n"
    assert known.read_text() == f"# mine\n[::1]:9701 {'cd' * 32}\nbroken\n"
    again = runner.invoke(app, ["known-hosts", "forget", "[::1]:9701"])
    assert again.exit_code == 0 and known.read_text() == "# mine\nbroken\n"
    missing = runner.invoke(app, ["known-hosts", "forget", "127.0.0.1"])
    assert missing.exit_code == 1
    assert "127.0.0.1:9700 is not in" in missing.stderr


# --------------------------------------------------------------------------- item 10


def test_an_existing_key_log_is_made_private(real_server: ServerProcess, tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    keylog.write_text("")
    keylog.chmod(0o644)
    result = run_client(real_server.address, "--keylog", str(keylog), "--send", "x")
    assert result.returncode == 0, result.stderr
    assert f"warning: key log {keylog} was mode 0644, readable by others: now 0600" in result.stderr
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    assert "CLIENT_TRAFFIC_SECRET_0" in keylog.read_text()


def test_a_key_log_link_is_never_followed(home: Path, tmp_path: Path) -> None:
    """Both programs refuse a key log that is a symlink before any session: no secret leaks."""
    target = tmp_path / "world-readable"
    target.write_text("")
    target.chmod(0o666)
    link = tmp_path / "keys.log"
    link.symlink_to(target)
    refused = (
        f"error: cannot write the key log {link}: it is a symbolic link: a key log is never"
        " written through one (the secrets would land wherever it points)"
    )
    server = subprocess.run(
        [KEXLAB, "server", "--port", "0", "--keylog", str(link)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert server.returncode == 1
    assert one_error_line(server.stderr) == refused
    with ServerProcess() as srv:
        result = run_client(srv.address, "--keylog", str(link), "--send", "x")
        assert result.returncode == 1
        assert one_error_line(result.stderr) == refused
        served = run_client(srv.address, "--send", "still served")
        assert served.returncode == 0, served.stderr
    assert target.read_text() == ""  # no secret reached it


# --------------------------------------------------------------------------- item 11


class Impostor:
    """Answers first on the server's address: an rsa SERVER_HELLO with a key of its own,
    then drops the connection once the client sent its key transport (no FINISHED)."""

    def __init__(self, port: int) -> None:
        self.key = generate_private_key("rsa", 2048)
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Impostor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)
        self.sock.close()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            decoder = FrameDecoder()
            hello = self._next(conn, decoder)
            ch = ClientHello.decode(hello.payload)
            sh = ServerHello(bytes(32), ch.kex, ch.cipher_suite, ch.group, b"", spki(self.key))
            conn.sendall(encode_frame(FrameType.SERVER_HELLO, sh.encode()))
            self._next(conn, decoder)  # the key it could unwrap: the attacker stops here

    @staticmethod
    def _next(conn: socket.socket, decoder: FrameDecoder):  # type: ignore[no-untyped-def]
        while (frame := decoder.next_frame()) is None:
            data = conn.recv(65536)
            assert data
            decoder.feed(data)
        return frame


def test_an_impostor_that_answers_first_pins_nothing(home: Path) -> None:
    """Before: the impostor's unproven key went to known_hosts, and the real server on the
    same address was then refused as "possible man in the middle"."""
    port = free_port()
    with Impostor(port):
        result = run_client(f"127.0.0.1:{port}", "--kex", "rsa", "--send", "x", timeout=20)
    assert result.returncode == 1
    assert "first use" not in result.stderr
    assert not (home / "known_hosts").exists()

    async def real_server_then_client() -> str:
        options = ServerOptions(port=port, rsa_key=home_key(home), sign_key=home_key(home))
        srv = KexlabServer(options)
        await srv.start()
        try:
            done = await asyncio.to_thread(
                run_client, f"127.0.0.1:{port}", "--kex", "rsa", "--send", "y"
            )
        finally:
            await srv.shutdown(grace=1.0)
        assert done.returncode == 0, done.stderr
        return done.stderr

    stderr = asyncio.run(real_server_then_client())
    assert f"first use: recorded server key SHA256:{home_fingerprint(home)}" in stderr
