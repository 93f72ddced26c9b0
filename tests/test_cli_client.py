"""``kexlab client`` through CliRunner against a server running in a thread: every option."""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    PSK_HEX,
    ThreadServer,
    free_port,
    home_fingerprint,
    home_fixture,
    home_key,
)
from typer.testing import CliRunner

from cli.client_command import client as client_command
from cli.client_command import python_m_app
from cli.main import app
from cli.psk_options import ON_THE_COMMAND_LINE as PSK_WARNING
from keystore import fingerprint, generate_private_key, short_fingerprint, write_private_key
from protocol import CipherSuite, Frame, FrameDecoder, FrameType, Kex, encode_frame, parse_keylog
from protocol.constants import SUITES
from protocol.kex import spki
from protocol.messages import ClientHello, ServerHello
from server.server import ServerOptions

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()
PSK_ARG = f"alice={PSK_HEX}"


@pytest.fixture
def srv(home: Path) -> Iterator[ThreadServer]:
    key = home_key(home)
    options = ServerOptions(
        rsa_key=key, sign_key=key, psks={"alice": bytes.fromhex(PSK_HEX)}, inbox=home / "inbox"
    )
    with ThreadServer(options) as server:
        yield server


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["client", *args], input=input, env=env)


def summary(output: str) -> str:
    [line] = [ln for ln in output.splitlines() if "handshake complete" in ln]
    return line


def error_of(result) -> str:  # type: ignore[no-untyped-def]
    """The single stderr line of a failed run (and never a traceback)."""
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and ln != PSK_WARNING]
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------- sessions


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--kex", "rsa"], "rsa/aes256"),
        (["--kex", "dhe"], "dhe/x25519/aes256/rsa_pss_rsae_sha256"),
        ([], "dhe/x25519/aes256/rsa_pss_rsae_sha256"),
        (["--psk", PSK_ARG], "psk/aes256"),
        (["--kex", "psk", "--psk", PSK_ARG, "--suite", "aes128"], "psk/aes128"),
    ],
)
def test_send_prints_each_echo_and_the_summary(
    srv: ThreadServer, home: Path, args: list[str], expect: str
) -> None:
    result = invoke(srv.address, *args, "--send", "hello", "--send", "second message")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    line = summary(result.stdout)
    assert line.startswith(f"client: handshake complete: {expect}, ")
    assert re.search(r"SAS [0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4}, \d+\.\d ms$", line)
    if "psk" not in expect:
        assert short_fingerprint(home_fingerprint(home)) in line
    assert lines[-2:] == ["echo: hello", "echo: second message"]
    server_sas = srv.recorder.handshakes[-1].sas_display
    assert f"SAS {server_sas}," in line  # both sides print the same SAS


@pytest.mark.parametrize("group", ["x25519", "secp256r1", "secp384r1", "ffdhe2048", "p256"])
@pytest.mark.parametrize("suite", ["aes128", "aes256"])
def test_groups_and_suites(srv: ThreadServer, group: str, suite: str) -> None:
    result = invoke(srv.address, "--group", group, "--suite", suite, "--send", "g")
    assert result.exit_code == 0, result.output
    name = {"p256": "secp256r1"}.get(group, group)
    assert f"dhe/{name}/{suite}/" in summary(result.stdout)


def test_ffdhe3072(srv: ThreadServer) -> None:
    result = invoke(srv.address, "--group", "ffdhe3072", "--send", "g")
    assert result.exit_code == 0, result.output
    assert "dhe/ffdhe3072/" in summary(result.stdout)


def test_stdin_lines_are_messages(srv: ThreadServer) -> None:
    result = invoke(srv.address, input="first\n\nthird line\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-3:] == ["echo: first", "echo: ", "echo: third line"]
    assert srv.recorder.handshakes


def test_send_file_shows_progress_and_the_receipt(
    srv: ThreadServer, home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(b"0123456789" * 50000)
    result = invoke(srv.address, "--send-file", str(src))
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert (
        f"file sent: notes.txt stored as notes.txt, 500000 bytes, SHA-256 {digest}" in result.stdout
    )
    assert "sending notes.txt" in result.stderr  # the progress bar
    assert (home / "inbox" / "notes.txt").read_bytes() == src.read_bytes()


def test_send_and_send_file_together(srv: ThreadServer, tmp_path: Path) -> None:
    src = tmp_path / "a.bin"
    src.write_bytes(b"\x00\x01")
    result = invoke(srv.address, "--send", "msg", "--send-file", str(src))
    assert result.exit_code == 0, result.output
    assert "echo: msg" in result.stdout.splitlines() and "file sent: a.bin" in result.stdout


def test_explain_prints_annotated_frames(srv: ThreadServer) -> None:
    result = invoke(srv.address, "--explain", "--send", "explained")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for title in (
        "C → S  CLIENT_HELLO",
        "S → C  SERVER_HELLO",
        "S → C  SERVER_SIGNATURE",
        "FINISHED",
        "RECORD (application_data)",
    ):
        assert title in out
    for field in ("offset", "magic", "key_share", "server_key", "verify_data", "ciphertext"):
        assert field in out
    assert "session secrets" not in out and "c_ap_0" not in out


def test_show_secrets_prints_the_secrets(srv: ThreadServer) -> None:
    result = invoke(srv.address, "--show-secrets", "--send", "s")
    assert result.exit_code == 0, result.output
    assert "session secrets" in result.stdout
    for name in ("shared_secret", "master", "c_ap_0", "s_ap_0", "c_ap_0.key", "s_ap_0.iv"):
        assert name in result.stdout
    # Secrets only: no frame tables without --explain.
    assert "CLIENT_HELLO" not in result.stdout


@pytest.mark.parametrize("via_env", [False, True])
def test_keylog_file_has_the_sessions_secrets(
    srv: ThreadServer, tmp_path: Path, via_env: bool
) -> None:
    keylog = tmp_path / "keys.log"
    if via_env:
        result = invoke(srv.address, "--send", "k", env={"KEXLAB_KEYLOGFILE": str(keylog)})
    else:
        result = invoke(srv.address, "--keylog", str(keylog), "--send", "k")
    assert result.exit_code == 0, result.output
    text = keylog.read_text()
    hc = srv.recorder.handshakes[-1]
    assert text == hc.keylog  # the server's view of the same connection
    assert re.fullmatch(
        r"CLIENT_TRAFFIC_SECRET_0 [0-9a-f]{64} [0-9a-f]{96}\nSERVER_TRAFFIC_SECRET_0 [0-9a-f]{64} [0-9a-f]{96}\n",
        text,
    )
    parsed = parse_keylog(text)[hc.client_random]
    assert parsed["SERVER_TRAFFIC_SECRET_0"] == hc.secrets.s_ap_0


# --------------------------------------------------------------------------- trust


def test_tofu_records_on_first_use_then_accepts(srv: ThreadServer, home: Path) -> None:
    result = invoke(srv.address, "--send", "x")
    assert result.exit_code == 0, result.output
    fp = home_fingerprint(home)
    assert (home / "known_hosts").read_text() == f"{srv.address} {fp}\n"
    assert f"first use: recorded server key SHA256:{fp} for {srv.address}" in result.stderr
    again = invoke(srv.address, "--trust", "tofu", "--send", "x")
    assert again.exit_code == 0 and again.stderr == ""


def test_tofu_refuses_a_changed_key_with_bad_certificate(srv: ThreadServer, home: Path) -> None:
    known = "ab" * 32
    (home / "known_hosts").write_text(f"{srv.address} {known}\n")
    result = invoke(srv.address, "--send", "x")
    assert result.exit_code == 1
    line = error_of(result)
    fp = home_fingerprint(home)
    assert line == (
        f"error: server key changed for {srv.address}: possible man in the middle"
        f" (known SHA256:{known}, got SHA256:{fp}) (sent alert bad_certificate (42));"
        f" if the server's key changed on purpose: kexlab known-hosts forget {srv.address}"
        f" (line 1 of {home / 'known_hosts'})"
    )
    fields = srv.recorder.wait_for("error")  # the alert went over the wire
    assert (fields["received_alert"], fields["code"]) == ("bad_certificate", 42)
    assert "possible man in the middle" in fields["reason"]


@pytest.mark.parametrize("kex", ["rsa", "dhe"])
def test_pin_by_fingerprint_and_by_file(srv: ThreadServer, home: Path, kex: str) -> None:
    fp = home_fingerprint(home)
    for pin in (f"pin:{fp}", f"pin:SHA256:{fp}", f"pin:{home / 'server-rsa.pem.pub'}"):
        result = invoke(srv.address, "--kex", kex, "--trust", pin, "--send", "p")
        assert result.exit_code == 0, (pin, result.output)
    assert not (home / "known_hosts").exists()


def test_pin_mismatch_is_refused(srv: ThreadServer, home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    write_private_key(generate_private_key("ed25519"), other)
    result = invoke(srv.address, "--trust", f"pin:{other}.pub", "--send", "p")
    assert result.exit_code == 1
    line = error_of(result)
    assert "does not match the pinned" in line and "bad_certificate (42)" in line
    assert srv.recorder.wait_for("error")["received_alert"] == "bad_certificate"


def test_trust_none_warns(srv: ThreadServer, home: Path) -> None:
    result = invoke(srv.address, "--trust", "none", "--send", "n")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: trust none: nothing authenticates the server")
    assert not (home / "known_hosts").exists()


@pytest.mark.parametrize("spec", ["bogus", "pin:abc", "pin:/does/not/exist", "mqtt"])
def test_bad_trust_specs_are_usage_errors(srv: ThreadServer, spec: str) -> None:
    result = invoke(srv.address, "--trust", spec, "--send", "x")
    assert result.exit_code == 2
    assert error_of(result).startswith("kexlab client: error: Invalid value for '--trust':")


def test_anonymous_server_needs_trust_none(home: Path) -> None:
    options = ServerOptions(kex_methods=frozenset({Kex.DHE}), sign_key=None, inbox=home / "inbox")
    with ThreadServer(options) as anon:
        refused = invoke(anon.address, "--send", "x")
        assert refused.exit_code == 1
        assert "anonymous dhe" in error_of(refused) and "bad_certificate (42)" in error_of(refused)
        ok = invoke(anon.address, "--trust", "none", "--send", "x")
        assert ok.exit_code == 0, ok.output
        assert "server key none (anonymous" in summary(ok.stdout)


# --------------------------------------------------------------------------- errors


def test_server_alert_is_one_line_with_name_code_and_reason(home: Path) -> None:
    options = ServerOptions(kex_methods=frozenset({Kex.PSK}), inbox=home / "inbox")
    with ThreadServer(options) as psk_only:
        result = invoke(psk_only.address, "--send", "x")
    assert result.exit_code == 1
    assert error_of(result) == (
        "error: server sent alert handshake_failure (40): kex dhe (2) not supported; this server supports psk"
    )


def test_unknown_psk_identity(srv: ThreadServer) -> None:
    result = invoke(srv.address, "--psk", f"mallory={PSK_HEX}", "--send", "x")
    assert result.exit_code == 1
    assert (
        error_of(result)
        == "error: server sent alert unknown_psk_identity (115): unknown psk identity 'mallory'"
    )


def test_wrong_psk_is_decrypt_error(srv: ThreadServer) -> None:
    result = invoke(srv.address, "--psk", "alice=" + "ff" * 32, "--send", "x")
    assert result.exit_code == 1
    assert error_of(result) == (
        "error: server FINISHED does not verify: the two sides most likely hold different keys"
        " for PSK identity 'alice' (sent alert decrypt_error (51))"
    )


def test_connection_refused() -> None:
    port = free_port()
    result = invoke(f"127.0.0.1:{port}", "--send", "x")
    assert result.exit_code == 1
    assert error_of(result) == (
        f"error: cannot connect to 127.0.0.1:{port}: connection refused;"
        f" is a kexlab server running with --port {port}?"
    )


def test_timeout_against_a_silent_server() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = invoke(f"127.0.0.1:{port}", "--timeout", "0.3", "--send", "x")
    assert result.exit_code == 1
    assert error_of(result) == "error: handshake timeout (sent alert handshake_failure (40))"


def test_no_reply_within_the_timeout(home: Path) -> None:
    key = home_key(home)
    options = ServerOptions(rsa_key=key, sign_key=key, app="chat", inbox=home / "inbox")
    with ThreadServer(options) as chat:  # chat never echoes
        pin = f"pin:{home_fingerprint(home)}"
        result = invoke(chat.address, "--trust", pin, "--timeout", "0.3", "--send", "x")
    assert result.exit_code == 1
    assert error_of(result) == "error: no reply within 0.3 s"


def test_stdin_mode_fails_cleanly_when_no_reply_comes(home: Path) -> None:
    key = home_key(home)
    options = ServerOptions(rsa_key=key, sign_key=key, app="chat", inbox=home / "inbox")
    with ThreadServer(options) as chat:
        pin = f"pin:{home_fingerprint(home)}"
        result = invoke(chat.address, "--trust", pin, "--timeout", "0.2", input="a\nb\n" * 100)
    assert result.exit_code == 1
    assert error_of(result) == "error: no reply within 0.2 s"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Missing argument 'HOST[:PORT]'."),
        (["127.0.0.1:0"], "port '0' is not a number from 1 to 65535"),
        (["[::1"], "missing ']'"),
        (["h", "--kex", "ecdh"], "unknown key exchange 'ecdh': use rsa, dhe, psk"),
        (["h", "--group", "p521"], "unknown group 'p521'"),
        (["h", "--suite", "chacha"], "unknown cipher suite 'chacha': use aes128, aes256"),
        (["h", "--kex", "psk"], "--kex psk needs --psk IDENTITY=HEX"),
        (["h", "--kex", "dhe", "--psk", PSK_ARG], "--psk is for --kex psk, not dhe"),
        (["h", "--psk", "nokey"], "'nokey' is not IDENTITY=HEX"),
        (["h", "--psk", "a=zz"], "the key for 'a' is not hex"),
        (["h", "--psk", "a=0011"], "the key for 'a' is 2 bytes; a PSK is at least 16"),
        (["h", "--psk", f"a/b={PSK_HEX}"], "may not contain '/'"),
        (["h", "--send-file", "/no/such/file"], "'--send-file': /no/such/file: no such file"),
        (["h", "--send", "x" * 65537], "a message is at most 65536 bytes"),
        (["h", "--timeout", "0"], "'--timeout'"),
        (["h", "--frobnicate"], "No such option: --frobnicate"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    line = error_of(result)
    assert line.startswith("kexlab client: error: ") and message in line
    assert line.endswith("(see 'kexlab client --help')")


def test_python_m_client_is_the_same_command(srv: ThreadServer) -> None:
    [command] = python_m_app.registered_commands
    assert command.callback is client_command
    result = runner.invoke(python_m_app, [srv.address, "--send", "via -m"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "echo: via -m"
    bad = runner.invoke(python_m_app, [srv.address, "--kex", "nope"])
    assert bad.exit_code == 2 and "unknown key exchange 'nope'" in bad.stderr
    # client/__main__.py runs exactly that app, under its own name.
    usage = subprocess.run(
        [sys.executable, "-m", "client", "--kex", "nope", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert usage.returncode == 2
    assert usage.stderr.startswith("python -m client: error: "), usage.stderr


def test_the_server_sees_close_notify(srv: ThreadServer) -> None:
    result = invoke(srv.address, "--send", "bye")
    assert result.exit_code == 0
    srv.recorder.wait_for("closed")
    assert not srv.recorder.named("error")


def test_many_sequential_runs_share_one_known_hosts(srv: ThreadServer, home: Path) -> None:
    codes = [
        invoke(srv.address, "--kex", kex, "--send", "r").exit_code for kex in ("rsa", "dhe", "rsa")
    ]
    assert codes == [0, 0, 0]
    assert len((home / "known_hosts").read_text().splitlines()) == 1


# --------------------------------------------------------------------------- tofu after the proof


class ImpostorServer:
    """Answers one rsa CLIENT_HELLO with a key of its own and a FINISHED it cannot compute.

    What an attacker without the server's private key can do: it may show any key, but
    it cannot produce the FINISHED that proves it. A socket server in a thread, loopback.
    """

    def __init__(self) -> None:
        self.key = generate_private_key("rsa", 2048)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> ImpostorServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)
        self.sock.close()
        assert self.error is None, self.error

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(10)
                decoder = FrameDecoder()
                hello = self._next(conn, decoder)
                ch = ClientHello.decode(hello.payload)
                sh = ServerHello(bytes(32), ch.kex, ch.cipher_suite, ch.group, b"", spki(self.key))
                conn.sendall(encode_frame(FrameType.SERVER_HELLO, sh.encode()))
                self._next(conn, decoder)  # KEY_TRANSPORT
                self._next(conn, decoder)  # the client's FINISHED
                hash_len = SUITES[CipherSuite(ch.cipher_suite)].hash_len
                conn.sendall(encode_frame(FrameType.FINISHED, bytes(hash_len)))
                with contextlib.suppress(OSError):
                    conn.recv(4096)  # the client's alert, then its close
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    @staticmethod
    def _next(conn: socket.socket, decoder: FrameDecoder) -> Frame:
        while (frame := decoder.next_frame()) is None:
            data = conn.recv(65536)
            assert data, "client closed early"
            decoder.feed(data)
        return frame


def test_a_failed_handshake_pins_no_key(srv: ThreadServer, home: Path) -> None:
    """TOFU records a key only after FINISHED proves it (issue: a made-up key was pinned)."""
    known_hosts = home / "known_hosts"
    with ImpostorServer() as impostor:
        result = invoke(f"127.0.0.1:{impostor.port}", "--kex", "rsa", "--send", "x")
    assert result.exit_code == 1
    assert "server FINISHED does not verify" in error_of(result)
    assert "decrypt_error" in error_of(result)
    entries = known_hosts.read_text() if known_hosts.exists() else ""
    assert fingerprint(impostor.key) not in entries
    assert "first use" not in result.output
    # The real server on the same address is still a first use, not "possible man in the middle".
    impostor_address = f"127.0.0.1:{impostor.port}"
    assert impostor_address not in entries
    first = invoke(srv.address, "--kex", "rsa", "--send", "x")
    assert first.exit_code == 0, first.output
    assert f"first use: recorded server key SHA256:{home_fingerprint(home)}" in first.stderr
