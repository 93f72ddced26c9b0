"""Issue 13 item 12: what a peer says is shown, never obeyed.

Before: an unauthenticated ALERT's reason added forged lines to the server's text log
(``... handshake complete ... psk identity admin``) and ANSI escapes; the client printed
alert reasons and records raw; in chat one member could clear another's screen and print
a fake "SAS verified" line under nobody's name.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    PSK_HEX,
    ServerProcess,
    home_fixture,
    one_error_line,
    run_client,
    server_maker,
)

from client.session import ClientOptions, ClientSession
from protocol import AlertCode, FrameDecoder, FrameType, Kex, encode_frame
from protocol.messages import Alert

pytestmark = pytest.mark.usefixtures("home")
FORGED = "[127.0.0.1:1] server: handshake complete: psk/aes256, psk identity admin"
REASON = f"bye\n{FORGED}\x1b[2J\x1b[31m"
ESC = "\x1b"


def alert_frame(reason: str, code: AlertCode = AlertCode.HANDSHAKE_FAILURE) -> bytes:
    """A plaintext ALERT: before a handshake, anyone may send one."""
    return encode_frame(FrameType.ALERT, Alert(code, reason).encode())


def test_an_alert_reason_cannot_forge_a_server_log_line() -> None:
    with ServerProcess() as srv:
        with socket.create_connection(("127.0.0.1", srv.port)) as sock:
            sock.sendall(alert_frame(REASON))
            sock.recv(100)
        srv.wait_for(r"client sent alert handshake_failure")
        srv.stop()
    assert not [ln for ln in srv.lines if ln.startswith(FORGED)]
    assert not [ln for ln in srv.lines if ESC in ln]
    (failed,) = [ln for ln in srv.lines if "client sent alert" in ln]
    assert failed.endswith(f"bye\\n{FORGED}\\x1b[2J\\x1b[31m")


def test_a_hostile_servers_alert_reaches_the_client_as_one_escaped_line() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def hostile() -> None:
        conn, _ = server.accept()
        with conn:
            decoder = FrameDecoder()
            while decoder.next_frame() is None:
                decoder.feed(conn.recv(4096))
            conn.sendall(alert_frame(REASON))

    thread = threading.Thread(target=hostile, daemon=True)
    thread.start()
    try:
        result = run_client(f"127.0.0.1:{port}", "--send", "x")
    finally:
        thread.join(5)
        server.close()
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert ESC not in result.stderr and line.count("\n") == 0
    assert f"bye\\n{FORGED}\\x1b[2J" in line


def test_records_are_printed_escaped_by_the_client() -> None:
    with ServerProcess() as srv:
        result = run_client(srv.address, input="x\x1b[2Jy\x07\n")
        srv.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["echo: x\\x1b[2Jy\\x07"]
    assert ESC not in result.stdout


def test_a_psk_identity_is_logged_escaped() -> None:
    identity = "ad\x1b[8mmin"
    with ServerProcess("--psk", f"{identity}={PSK_HEX}") as srv:
        result = run_client(srv.address, "--psk", f"{identity}={PSK_HEX}", "--send", "x")
        srv.stop()
    assert result.returncode == 0, result.stderr
    assert not [ln for ln in srv.lines if ESC in ln]
    assert [ln for ln in srv.lines if "psk identity ad\\x1b[8mmin" in ln]


async def test_in_chat_no_member_can_speak_for_another_or_clear_screens(home: Path) -> None:
    async with server_maker(
        home, {"alice": bytes.fromhex(PSK_HEX), "bob": bytes.fromhex(PSK_HEX)}
    ) as make:
        srv, _rec = await make(app="chat")

        async def member(name: str) -> ClientSession:
            options = ClientOptions(
                port=srv.address[1], kex=Kex.PSK, psk_identity=name,
                psk=bytes.fromhex(PSK_HEX), timeout=5,
            )  # fmt: skip
            return await ClientSession.open(options)

        alice, bob = await member("alice"), await member("bob")
        await asyncio.sleep(0.1)  # both in the room
        await alice.send(b"hi\n\x1b[2J\x1b[Hbob: SAS verified over MQTT \xff")
        got = await bob.receive(5)
        assert got == b"alice: hi\\n\\x1b[2J\\x1b[Hbob: SAS verified over MQTT \\xff"
        assert b"\n" not in got and b"\x1b" not in got  # one line, under alice's name
        for s in (alice, bob):
            await s.close()
