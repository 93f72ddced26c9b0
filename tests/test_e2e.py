"""End to end: ``kexlab server`` and ``kexlab client`` as real processes on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from external_tools import require_tool
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    KEXLAB,
    PSK_HEX,
    ServerProcess,
    home_fingerprint,
    home_fixture,
    one_error_line,
    run_client,
)

from client.session import ClientOptions, ClientSession
from keystore import short_fingerprint
from protocol import (
    AlertCode,
    ContentType,
    Group,
    Kex,
    RemoteProtocolError,
    TrustVerdict,
    parse_keylog,
)
from protocol.constants import SUITES
from protocol.frames import FrameDecoder
from protocol.keyschedule import KeySchedule
from protocol.records import RecordReceiver

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("home")]
SAS = r"SAS ([0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4} [0-9a-f]{4})"


def summary_sas(text: str) -> str:
    m = re.search(SAS, text)
    assert m, text
    return m.group(1)


@pytest.mark.parametrize(
    ("args", "method"),
    [
        (["--kex", "rsa"], "rsa/aes256"),
        (
            ["--kex", "dhe", "--group", "secp256r1", "--suite", "aes128"],
            "dhe/secp256r1/aes128/rsa_pss_rsae_sha256",
        ),
        (["--psk", f"lab={PSK_HEX}"], "psk/aes256"),
    ],
)
def test_each_method_end_to_end(home: Path, args: list[str], method: str) -> None:
    with ServerProcess("--psk", f"lab={PSK_HEX}") as srv:
        result = run_client(
            srv.address, *args, "--send", "hello from a real process", "--send", "two"
        )
        assert result.returncode == 0, result.stderr
        out = result.stdout.splitlines()
        assert out[0].startswith(f"client: handshake complete: {method}, ")
        assert out[1:] == ["echo: hello from a real process", "echo: two"]
        if method.startswith("psk"):
            assert "psk identity lab" in out[0]
        else:
            assert short_fingerprint(home_fingerprint(home)) in out[0]
        server_line = srv.wait_for(r"server: handshake complete: .*").group(0)
        assert method in server_line
        assert summary_sas(server_line) == summary_sas(out[0])
        srv.wait_for(r"\] closed$")
        code, err = srv.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in err
    assert srv.lines[-1] == "stopped: connections_closed=True"


def test_stdin_pipe_and_python_m_modules(home: Path) -> None:
    with ServerProcess(cmd=[sys.executable, "-m", "server"]) as srv:
        result = run_client(
            srv.address, input="line one\nline two\n", cmd=[sys.executable, "-m", "client"]
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1:] == ["echo: line one", "echo: line two"]
        code, _ = srv.stop(signal.SIGTERM)
    assert code == 0


def test_sigint_closes_connected_clients_with_close_notify(home: Path) -> None:
    with ServerProcess() as srv:

        async def client() -> object:
            options = ClientOptions(port=srv.port, trust=lambda i: TrustVerdict(True), timeout=5)
            session = await ClientSession.open(options)
            srv.proc.send_signal(signal.SIGINT)
            got = await session.receive(10)
            await session.stream.wait_closed()
            return got

        assert asyncio.run(client()) is None  # close_notify, not a reset
        code, err = srv.stop(sig=None)  # it exits by itself
    assert code == 0 and err == ""


# --------------------------------------------------------------------------- trust


def test_changed_server_key_is_refused_with_bad_certificate_on_the_wire(home: Path) -> None:
    with ServerProcess() as srv:
        first = run_client(srv.address, "--send", "x")
        assert first.returncode == 0
        assert "first use: recorded server key" in first.stderr
        real = home_fingerprint(home)
        assert (home / "known_hosts").read_text() == f"{srv.address} {real}\n"
        fake = "cd" * 32  # as if an attacker's key had been recorded, or the key changed
        (home / "known_hosts").write_text(f"{srv.address} {fake}\n")
        result = run_client(srv.address, "--send", "x")
        assert result.returncode == 1
        line = one_error_line(result.stderr)
        assert "possible man in the middle" in line
        assert f"known SHA256:{fake}" in line and f"got SHA256:{real}" in line
        assert result.stdout == ""  # nothing was sent
        srv.wait_for(
            r"connection failed: client sent alert bad_certificate \(42\): server key changed"
        )
        pinned = run_client(srv.address, "--trust", f"pin:{real}", "--send", "pinned")
        assert pinned.returncode == 0 and pinned.stdout.splitlines()[-1] == "echo: pinned"
        none = run_client(srv.address, "--trust", "none", "--send", "unauthenticated")
        assert none.returncode == 0 and none.stderr.startswith("warning: trust none")


# --------------------------------------------------------------------------- load and isolation


def test_200_concurrent_clients_all_get_their_echoes(home: Path) -> None:
    with ServerProcess("--psk", f"lab={PSK_HEX}") as srv:

        async def one(i: int) -> tuple[bytes, ...]:
            kex = (Kex.RSA, Kex.DHE, Kex.PSK)[i % 3]
            options = ClientOptions(
                port=srv.port,
                kex=kex,
                group=Group.X25519,
                psk_identity="lab" if kex is Kex.PSK else "",
                psk=bytes.fromhex(PSK_HEX) if kex is Kex.PSK else b"",
                trust=lambda ident: TrustVerdict(True),
                timeout=30,
            )
            session = await ClientSession.open(options)
            replies = (
                await session.request(f"client {i} first".encode()),
                await session.request(f"client {i} second".encode() * (i % 7 + 1)),
            )
            await session.close()
            return replies

        async def main() -> list[tuple[bytes, ...]]:
            return await asyncio.gather(*(one(i) for i in range(200)))

        start = time.monotonic()
        results = asyncio.run(main())
        elapsed = time.monotonic() - start
        for i, (first, second) in enumerate(results):
            assert first == f"client {i} first".encode()
            assert second == f"client {i} second".encode() * (i % 7 + 1)
        code, _ = srv.stop()
    assert code == 0
    assert sum("server: handshake complete" in ln for ln in srv.lines) == 200
    open_now = peak = 0
    for ln in srv.lines:  # connections open at once, as the server's log tells it
        open_now += ln.endswith("] connect") - ln.endswith("] closed")
        peak = max(peak, open_now)
    assert peak >= 100
    assert not [ln for ln in srv.lines if "connection failed" in ln]
    assert elapsed < 30


def test_a_stalled_client_is_cut_at_the_timeout_while_others_proceed(home: Path) -> None:
    with ServerProcess("--handshake-timeout", "1.5") as srv:

        async def main() -> tuple[float, bytes, list[float], bytes]:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            stall_r, stall_w = await asyncio.open_connection("127.0.0.1", srv.port)
            stall_w.write(b"KX\x01\x01\x00\x00\x00\x48" + b"\x00" * 10)  # a CLIENT_HELLO cut short
            bad_r, bad_w = await asyncio.open_connection("127.0.0.1", srv.port)
            bad_w.write(b"\xde\xad\xbe\xef" * 4)  # and a client speaking nonsense

            async def good(i: int) -> float:
                options = ClientOptions(
                    port=srv.port, trust=lambda ident: TrustVerdict(True), timeout=5
                )
                session = await ClientSession.open(options)
                assert await session.request(b"%d" % i) == b"%d" % i
                await session.close()
                return loop.time() - t0

            done = await asyncio.gather(*(good(i) for i in range(20)))
            garbage_answer = await asyncio.wait_for(bad_r.read(), 5)
            stalled = await asyncio.wait_for(stall_r.read(), 5)
            cut = loop.time() - t0
            for w in (stall_w, bad_w):
                w.close()
                await w.wait_closed()
            return cut, stalled, done, garbage_answer

        cut, stalled, done, garbage_answer = asyncio.run(main())
        srv.wait_for(r"connection failed: sent alert handshake_failure \(40\): handshake timeout")
        srv.stop()
    # Everyone else finished well before the stalled client was cut at 1.5 s.
    assert max(done) < 1.4 <= cut < 4.0
    dec = FrameDecoder()
    dec.feed(stalled)
    frame = dec.next_frame()
    assert frame is not None and frame.payload == b"\x28\x11handshake timeout"  # alert 40
    assert garbage_answer[:4] == b"KX\x01\x15"  # an ALERT (decode_error) for the nonsense


def test_a_20_mib_file_arrives_intact(home: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    inbox = tmp_path / "inbox"
    with ServerProcess("--inbox", str(inbox)) as srv:
        result = run_client(srv.address, "--send-file", str(big), timeout=60)
        assert result.returncode == 0, result.stderr
        assert (
            f"file sent: big.bin stored as big.bin, 20971520 bytes, SHA-256 {digest}"
            in result.stdout
        )
        srv.wait_for(rf"upload-done: file=\S+big.bin size=20971520 sha256={digest}")
        srv.stop()
    assert hashlib.sha256((inbox / "big.bin").read_bytes()).hexdigest() == digest
    assert "sending big.bin" in result.stderr  # the progress bar


# --------------------------------------------------------------------------- keys and key logs


def test_an_openssl_genpkey_key_serves_as_rsa_key(home: Path, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    key = tmp_path / "openssl.pem"
    subprocess.run(
        [
            openssl,
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            str(key),
        ],
        check=True,
        capture_output=True,
    )
    os.chmod(key, 0o644)
    refused = subprocess.run(
        [KEXLAB, "server", "--rsa-key", str(key)], capture_output=True, text=True, timeout=20
    )
    assert refused.returncode == 1
    assert (
        one_error_line(refused.stderr)
        == f"error: Permissions 0644 for '{key}' are too open: run chmod 600 {key}"
    )
    os.chmod(key, 0o600)
    der = subprocess.run(
        [openssl, "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    openssl_fp = hashlib.sha256(der).hexdigest()
    with ServerProcess("--rsa-key", str(key)) as srv:
        result = run_client(
            srv.address, "--kex", "rsa", "--trust", f"pin:{openssl_fp}", "--send", "openssl"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "echo: openssl"
        srv.stop()
    assert f"SHA256:{openssl_fp}" in "\n".join(srv.lines)


def test_key_log_matches_section_9_and_the_connections_secrets(home: Path, tmp_path: Path) -> None:
    server_log = tmp_path / "server.keys"
    client_log = tmp_path / "client.keys"
    with ServerProcess("--keylog", str(server_log)) as srv:
        result = run_client(
            srv.address, "--suite", "aes128", "--keylog", str(client_log), "--send", "k"
        )
        assert result.returncode == 0, result.stderr

        # In-process too, capturing the bytes, to decrypt the server's record with the key log.
        captured: list[bytes] = []

        async def main() -> bytes:
            options = ClientOptions(
                port=srv.port, trust=lambda i: TrustVerdict(True), keylog=client_log
            )
            session = await ClientSession.open(options)
            # From here on the server sends only records, starting at seq 0 under s_ap_0.
            session.stream.on_bytes = lambda d, b: captured.append(b) if d == "received" else None
            assert await session.request(b"secret message") == b"secret message"
            await session.close()
            return session.handshake.client_random

        client_random = asyncio.run(main())
        srv.wait_for(r"closed")
        srv.stop()
    line = re.compile(r"(CLIENT|SERVER)_TRAFFIC_SECRET_0 [0-9a-f]{64} [0-9a-f]{64,96}")
    text = client_log.read_text()
    assert all(line.fullmatch(ln) for ln in text.splitlines()) and len(text.splitlines()) == 4
    assert server_log.read_text() == text  # both sides logged the same secrets, in order
    assert server_log.stat().st_mode & 0o777 == 0o600
    secrets = parse_keylog(text)[client_random]
    receiver = RecordReceiver(
        KeySchedule(SUITES[ClientOptions().suite]), secrets["SERVER_TRAFFIC_SECRET_0"]
    )
    dec = FrameDecoder()
    dec.feed(b"".join(captured))
    contents = []
    while (frame := dec.next_frame()) is not None:
        contents.append(receiver.open(frame.payload))
    assert (ContentType.APPLICATION_DATA, b"secret message") in contents


# --------------------------------------------------------------------------- the terminal


def test_interactive_prompt_in_a_terminal(home: Path) -> None:
    with ServerProcess() as srv:
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [KEXLAB, "client", srv.address, "--trust", "none"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
        )
        os.close(slave)
        screen = bytearray()

        def wait_for(pattern: bytes, count: int = 1, timeout: float = 10) -> None:
            deadline = time.monotonic() + timeout
            while screen.count(pattern) < count:
                ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
                assert ready, (pattern, bytes(screen))
                try:
                    screen.extend(os.read(master, 4096))
                except OSError:  # the child closed the terminal
                    break
            assert screen.count(pattern) >= count, (pattern, bytes(screen))

        try:
            wait_for(b"/rekey /sas /quit")
            assert b"handshake complete" in screen
            os.write(master, b"typed by a person\n")
            wait_for(b"typed by a person", 2)  # the terminal's echo, then the server's
            os.write(master, b"/sas\n")
            wait_for(b"(full: ")
            os.write(master, b"/rekey\n")
            wait_for(b"key_update sent")
            os.write(master, b"after the rekey\n")
            wait_for(b"after the rekey", 2)
            os.write(master, b"/quit\n")
            assert proc.wait(10) == 0
            while select.select([master], [], [], 0.2)[0]:  # what it printed on the way out
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                screen.extend(chunk)
            assert screen.rstrip().endswith(b"/quit")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(master)
        srv.wait_for(r"\] closed$")
        srv.stop()
    sas = re.search(rb"SAS ([0-9a-f ]{19})  \(full: ([0-9a-f]+)\)", bytes(screen))
    assert sas and sas.group(2).startswith(sas.group(1).replace(b" ", b""))
    assert b"Traceback" not in screen
    assert b"server closed the session" not in screen  # we closed it, with /quit


def test_errors_from_a_real_process_are_one_line(home: Path) -> None:
    with ServerProcess("--kex", "rsa") as srv:
        result = run_client(srv.address, "--kex", "dhe", "--send", "x")
        srv.stop()
    assert result.returncode == 1
    assert one_error_line(result.stderr) == (
        "error: server sent alert handshake_failure (40): kex dhe (2) not supported; this server supports rsa"
    )
    usage = run_client("127.0.0.1", "--group", "curve448")
    assert usage.returncode == 2
    assert one_error_line(usage.stderr).startswith(
        "kexlab client: error: Invalid value for '--group'"
    )


def test_a_wrong_psk_fails_with_decrypt_error_on_both_sides(home: Path) -> None:
    with ServerProcess("--psk", f"lab={PSK_HEX}") as srv:

        async def main() -> None:
            options = ClientOptions(
                port=srv.port,
                kex=Kex.PSK,
                psk_identity="lab",
                psk=b"\x01" * 32,
                trust=lambda i: TrustVerdict(True),
            )
            with pytest.raises(RemoteProtocolError) as info:
                await ClientSession.open(options)
            assert info.value.alert is AlertCode.DECRYPT_ERROR
            assert info.value.reason == "server FINISHED does not verify"

        asyncio.run(main())
        srv.wait_for(r"client sent alert decrypt_error \(51\): server FINISHED does not verify")
        srv.stop()
