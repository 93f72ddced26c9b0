"""``kexlab server`` through CliRunner: every option, its errors, and serving until SIGTERM.

A serving run happens in the test's main thread (as a user's would); a driver thread
first waits until the server has *answered* a probe (so its signal handlers are in
place), runs the client side, then sends SIGTERM to this process, which the server
turns into close_notify for everyone and exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    PSK_HEX,
    free_port,
    home_fingerprint,
    home_fixture,
    home_key,
)
from typer.testing import CliRunner

from cli.main import app
from cli.server_command import python_m_app
from cli.server_command import server as server_command
from client.session import ClientOptions, ClientSession
from keystore import NonePolicy, generate_private_key, write_private_key
from protocol import DEFAULT_HANDSHAKE_TIMEOUT, Kex, PeerAlert, SignatureScheme, TrustVerdict
from protocol.frames import FrameDecoder
from protocol.messages import Alert

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()
Client = Callable[[int], Awaitable[None]]


def _probe(host: str, port: int, deadline: float) -> bool:
    """True once the server has answered (garbage in, decode_error alert out)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.sendall(b"probe!!!")
                s.settimeout(2)
                if s.recv(64).startswith(b"KX"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False


def serve(
    args: list[str],
    client: Client | None = None,
    *,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    cli=app,
    prefix: tuple[str, ...] = ("server",),
    client_signals: bool = False,
):  # type: ignore[no-untyped-def]
    """Run ``kexlab server ARGS`` until ``client(port)`` is done, then SIGTERM it.

    Exactly one SIGTERM per run (``client_signals``: the client sends it itself): a
    second one could land after the server removed its handler, killing pytest.
    """
    port = free_port()
    errors: list[BaseException] = []

    def drive() -> None:
        if not _probe(host, port, time.monotonic() + 15):
            return  # the server failed to start: invoke() returns by itself
        try:
            if client is not None:
                asyncio.run(client(port))
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)
        finally:
            if not client_signals:
                os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    result = runner.invoke(cli, [*prefix, "--host", host, "--port", str(port), *args], env=env)
    driver.join(15)
    if errors:
        raise errors[0]
    return result, port


async def session(port: int, kex: Kex = Kex.DHE, **kw: object) -> ClientSession:
    options = ClientOptions(
        port=port, kex=kex, trust=lambda i: TrustVerdict(True), allow_anonymous=True, timeout=5
    )
    for k, v in kw.items():
        setattr(options, k, v)
    return await ClientSession.open(options)


async def echo_each_method(port: int) -> None:
    for kex in (Kex.RSA, Kex.DHE):
        s = await session(port, kex)
        assert await s.request(b"ping") == b"ping"
        await s.close()


def lines_of(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.strip()]


def error_of(result) -> str:  # type: ignore[no-untyped-def]
    assert "Traceback" not in result.output
    lines = lines_of(result.stderr)
    assert len(lines) == 1, result.stderr
    return lines[0]


# --------------------------------------------------------------------------- serving


def test_serves_until_sigterm_and_logs_in_text(home: Path) -> None:
    result, port = serve([], echo_each_method)
    assert result.exit_code == 0, result.output
    out = result.stdout
    fp = home_fingerprint(home)
    assert f"key: role=rsa SHA256:{fp} path={home / 'server-rsa.pem'}" in out
    assert f"listening: address=127.0.0.1:{port} kex=rsa,dhe,psk app=echo" in out
    handshakes = [ln for ln in lines_of(out) if "server: handshake complete" in ln]
    assert len(handshakes) == 2
    assert "rsa/aes256" in handshakes[0] and "dhe/x25519/aes256" in handshakes[1]
    assert out.count("] closed") == 2
    assert lines_of(out)[-1] == "stopped: connections_closed=True"
    assert result.stderr == ""


def test_first_run_creates_the_server_key(home: Path) -> None:
    for f in home.iterdir():
        f.unlink()
    result, _ = serve(["--kex", "rsa"], echo_each_method_rsa)
    assert result.exit_code == 0, result.output
    key = home / "server-rsa.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert f"key-created: path={key} SHA256:{home_fingerprint(home)}" in result.stdout
    # The second run reuses it.
    again, _ = serve(["--kex", "rsa"], echo_each_method_rsa)
    assert "key-created" not in again.stdout and home_fingerprint(home) in again.stdout


async def echo_each_method_rsa(port: int) -> None:
    s = await session(port, Kex.RSA)
    assert await s.request(b"r") == b"r"
    await s.close()


def test_json_log(home: Path) -> None:
    result, port = serve(["--log-format", "json"], echo_each_method)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in lines_of(result.stdout)]
    events = [r["event"] for r in records]
    assert events[0] == "key" and "listening" in events and events[-1] == "stopped"
    [listening] = [r for r in records if r["event"] == "listening"]
    assert listening["address"] == f"127.0.0.1:{port}"
    hs = [r for r in records if r["event"] == "handshake"]
    assert [h["summary"].split("/")[0] for h in hs] == ["rsa", "dhe"]
    assert all(len(h["sas"]) == 19 and h["server_key_sha256"] == home_fingerprint(home) for h in hs)


def test_explain_and_show_secrets(home: Path) -> None:
    result, _ = serve(["--explain", "--show-secrets"], echo_each_method_rsa)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for title in (
        "C → S  CLIENT_HELLO",
        "S → C  SERVER_HELLO",
        "C → S  KEY_TRANSPORT",
        "RECORD (application_data)",
    ):
        assert title in out
    assert "session secrets" in out and "c_ap_0" in out and "master" in out


def test_explain_in_json_gives_rows(home: Path) -> None:
    result, _ = serve(["--explain", "--log-format", "json"], echo_each_method_rsa)
    assert result.exit_code == 0, result.output
    frames = [r for r in map(json.loads, lines_of(result.stdout)) if r["event"] == "frame"]
    hello = next(f for f in frames if "CLIENT_HELLO" in f["title"])  # frames[0]: the probe's alert
    assert hello["title"] == "C → S  CLIENT_HELLO, 48 bytes"
    assert hello["rows"][0] == {"offset": 0, "field": "magic", "bytes": "4b58", "meaning": '"KX"'}


def test_psk_and_kex_list() -> None:
    async def client(port: int) -> None:
        s = await session(port, Kex.PSK, psk_identity="alice", psk=bytes.fromhex(PSK_HEX))
        assert await s.request(b"psk") == b"psk"
        await s.close()
        with pytest.raises(PeerAlert, match="handshake_failure"):
            await session(port, Kex.DHE)

    result, _ = serve(
        ["--kex", "psk", "--psk", f"alice={PSK_HEX}", "--psk", f"bob={PSK_HEX}"], client
    )
    assert result.exit_code == 0, result.output
    assert "kex=psk" in result.stdout and "psk_identities=alice,bob" in result.stdout
    assert (
        "connection failed: sent alert handshake_failure (40): kex dhe (2) not supported"
        in result.stdout
    )


def test_anonymous_dhe() -> None:
    async def client(port: int) -> None:
        s = await session(port, Kex.DHE, trust=NonePolicy().decide, allow_anonymous=True)
        assert s.handshake.server_key == b"" and s.handshake.signature_scheme is None
        await s.close()

    result, _ = serve(["--kex", "dhe", "--anonymous"], client)
    assert result.exit_code == 0, result.output
    assert "anonymous=True" in result.stdout and "key:" not in result.stdout


def test_sign_key_ed25519(tmp_path: Path) -> None:
    sign = tmp_path / "id.pem"
    key = generate_private_key("ed25519")
    write_private_key(key, sign)

    async def client(port: int) -> None:
        s = await session(port, Kex.DHE)
        assert s.handshake.signature_scheme == SignatureScheme.ED25519
        await s.close()

    result, _ = serve(["--kex", "dhe", "--sign-key", str(sign)], client)
    assert result.exit_code == 0, result.output
    assert "key: role=sign SHA256:" in result.stdout


def test_rsa_key_option(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "my-rsa.pem"
    write_private_key(generate_private_key("rsa"), path)

    async def client(port: int) -> None:
        s = await session(port, Kex.RSA)
        from keystore import fingerprint, load_private_key

        assert s.handshake.server_key_sha256 == fingerprint(load_private_key(path))
        await s.close()

    result, _ = serve(["--rsa-key", str(path)], client)
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout


@pytest.mark.parametrize("via_env", [False, True])
def test_keylog(tmp_path: Path, via_env: bool) -> None:
    keylog = tmp_path / "server.keys"
    seen = []

    async def client(port: int) -> None:
        s = await session(port, Kex.DHE)
        seen.append(s.handshake.keylog)
        await s.close()

    args, env = (
        ([], {"KEXLAB_KEYLOGFILE": str(keylog)}) if via_env else (["--keylog", str(keylog)], None)
    )
    result, _ = serve(args, client, env=env)
    assert result.exit_code == 0, result.output
    assert keylog.read_text() == seen[0]


def test_inbox_option(tmp_path: Path) -> None:
    inbox = tmp_path / "drop"
    src = tmp_path / "f.txt"
    src.write_text("file body")

    async def client(port: int) -> None:
        s = await session(port)
        receipt = await s.send_file(src)
        assert receipt.name == "f.txt"
        await s.close()

    result, _ = serve(["--inbox", str(inbox)], client)
    assert result.exit_code == 0, result.output
    assert (inbox / "f.txt").read_text() == "file body"
    assert "upload-done" in result.stdout


def test_chat_app() -> None:
    async def client(port: int) -> None:
        alice = await session(port, Kex.PSK, psk_identity="alice", psk=bytes.fromhex(PSK_HEX))
        bob = await session(port)
        # Bob's message reaching alice shows both are in the room (a member joins before its
        # first read), so alice's answer cannot go out before bob can get it.
        await bob.send(b"hi all")
        assert (await alice.receive(5) or b"").endswith(b": hi all")
        await alice.send(b"hello bob")
        assert await bob.receive(5) == b"alice: hello bob"
        await alice.close()
        await bob.close()

    result, _ = serve(["--app", "chat", "--psk", f"alice={PSK_HEX}"], client)
    assert result.exit_code == 0, result.output
    assert "app=chat" in result.stdout


def test_max_connections() -> None:
    async def client(port: int) -> None:
        first = await session(port)
        with pytest.raises(PeerAlert, match="server busy"):
            await session(port)
        await first.close()

    result, _ = serve(["--max-connections", "1"], client)
    assert result.exit_code == 0, result.output
    assert "refused: reason=max connections reached" in result.stdout


def test_handshake_timeout_cuts_a_stalled_client() -> None:
    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"KX\x01\x01")  # half a header, then nothing
        start = time.monotonic()
        # Cut well before the 10 s default, so the 0.3 s option is in force; no tighter upper
        # bound, since two busy cores can add whole seconds.
        data = await asyncio.wait_for(reader.read(), DEFAULT_HANDSHAKE_TIMEOUT * 0.8)
        assert time.monotonic() - start > 0.2  # not before the timeout
        writer.close()
        await writer.wait_closed()
        dec = FrameDecoder()
        dec.feed(data)
        frame = dec.next_frame()
        assert frame is not None and Alert.decode(frame.payload).reason == "handshake timeout"

    result, _ = serve(["--handshake-timeout", "0.3"], client)
    assert result.exit_code == 0, result.output
    assert (
        "connection failed: sent alert handshake_failure (40): handshake timeout" in result.stdout
    )


def test_idle_timeout() -> None:
    async def client(port: int) -> None:
        s = await session(port)
        assert await s.receive(5) is None  # the server closed with close_notify
        await s.stream.wait_closed()

    result, _ = serve(["--idle-timeout", "0.3"], client)
    assert result.exit_code == 0, result.output
    assert "idle-timeout: seconds=0.3" in result.stdout


def test_other_loopback_host() -> None:
    async def client(port: int) -> None:
        s = await session(port, host="127.0.0.2")
        assert await s.request(b"h") == b"h"
        await s.close()

    result, port = serve([], client, host="127.0.0.2")
    assert result.exit_code == 0, result.output
    assert f"address=127.0.0.2:{port}" in result.stdout


def test_sigterm_sends_close_notify_to_connected_clients() -> None:
    ended: list[object] = []

    async def client(port: int) -> None:
        try:
            s = await session(port)
        finally:  # exactly once, while this client is connected and waiting
            os.kill(os.getpid(), signal.SIGTERM)
        ended.append(await s.receive(10))
        await s.stream.wait_closed()

    result, _ = serve([], client, client_signals=True)
    assert result.exit_code == 0, result.output
    assert ended == [None]  # a clean close_notify, not a dropped socket


def test_python_m_server_is_the_same_command() -> None:
    [command] = python_m_app.registered_commands
    assert command.callback is server_command
    result, _ = serve(["--kex", "rsa"], echo_each_method_rsa, cli=python_m_app, prefix=())
    assert result.exit_code == 0, result.output
    assert "server: handshake complete: rsa/aes256" in result.stdout


# --------------------------------------------------------------------------- errors


def test_key_file_errors_are_one_line_exit_1(tmp_path: Path) -> None:
    # A missing file is a usage mistake (exit 2, tests/test_cli_usage.py); what is in one is not.
    loose = tmp_path / "loose.pem"
    write_private_key(generate_private_key("rsa"), loose)
    os.chmod(loose, 0o644)
    result = runner.invoke(app, ["server", "--rsa-key", str(loose)])
    assert result.exit_code == 1
    assert (
        error_of(result)
        == f"error: Permissions 0644 for '{loose}' are too open: run chmod 600 {loose}"
    )

    ed = tmp_path / "ed.pem"
    write_private_key(generate_private_key("ed25519"), ed)
    result = runner.invoke(app, ["server", "--rsa-key", str(ed)])
    assert result.exit_code == 1
    assert "is not an RSA key" in error_of(result)

    small = tmp_path / "small.pem"
    write_private_key(rsa.generate_private_key(public_exponent=65537, key_size=1024), small)
    result = runner.invoke(app, ["server", "--rsa-key", str(small)])
    assert result.exit_code == 1
    assert error_of(result) == "error: RSA key of 1024 bits is under 2048"

    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    os.chmod(garbage, 0o600)
    result = runner.invoke(app, ["server", "--sign-key", str(garbage)])
    assert result.exit_code == 1
    assert "is not a private key" in error_of(result)


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = runner.invoke(app, ["server", "--port", str(port)])
    assert result.exit_code == 1
    line = error_of(result)
    assert line.startswith("error: ") and "address already in use" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kex", "ecdh"], "unknown key exchange 'ecdh'"),
        (["--kex", ","], "name at least one method"),
        (["--app", "ftp"], "unknown app 'ftp': use echo, chat"),
        (["--log-format", "xml"], "unknown log format 'xml'"),
        (["--psk", "alice"], "'alice' is not IDENTITY=HEX"),
        (["--psk", "alice=00"], "is 1 bytes; a PSK is at least 16"),
        (["--port", "70000"], "'--port'"),
        (["--max-connections", "0"], "'--max-connections'"),
        (["--handshake-timeout", "0"], "'--handshake-timeout'"),
        (["--idle-timeout", "-1"], "'--idle-timeout'"),  # 0: never
        (["--anonymous", "--sign-key", "x.pem"], "--anonymous and --sign-key exclude each other"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["server", *args])
    assert result.exit_code == 2, result.output
    line = error_of(result)
    assert line.startswith("kexlab server: error: ") and message in line


def test_rsa_enabled_without_rsa_is_impossible_but_psk_only_needs_no_key(home: Path) -> None:
    for f in home.iterdir():
        f.unlink()

    async def client(port: int) -> None:
        s = await session(port, Kex.PSK, psk_identity="alice", psk=bytes.fromhex(PSK_HEX))
        await s.close()

    result, _ = serve(["--kex", "psk", "--psk", f"alice={PSK_HEX}"], client)
    assert result.exit_code == 0, result.output
    assert not (home / "server-rsa.pem").exists()  # no key made when no method needs one
