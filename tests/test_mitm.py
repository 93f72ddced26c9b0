"""``kexlab mitm`` against real ``kexlab server`` and ``kexlab client`` processes (issue 10).

The outcome matrix of the man-in-the-middle lesson, one test per row: the attacker wins
exactly where the theory says it should, and each defence catches it everywhere else.
Every row is asserted from both endpoints' output and exit codes and from the attacker's
verdict line. Loopback only; brokers are Mosquitto processes on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kxp_sessions import tshark_fields
from oob_brokers import CLIENT_USER, SERVER_USER, Mosquitto, running
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    KEXLAB,
    PSK_HEX,
    ServerProcess,
    free_port,
    home_fingerprint,
    home_fixture,
    one_error_line,
    run_client,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("home")]
SAS = re.compile(r"SAS ((?:[0-9a-f]{4} ){3}[0-9a-f]{4})")
SID = "lab"


class MitmProcess(ServerProcess):
    """``kexlab mitm --listen 127.0.0.1:PORT ARGS`` as a process."""

    COMMAND = (KEXLAB, "mitm")
    READY = r"mitm listening on \S+:(\d+)"

    def __init__(self, *args: str, port: int | None = None, **kw: object) -> None:
        self._port = port or free_port()
        super().__init__(*args, **kw)  # type: ignore[arg-type]

    def port_args(self) -> list[str]:
        """A free port (the attacker's listen address is a usage-checked HOST:PORT)."""
        return ["--listen", f"127.0.0.1:{self._port}"]

    def verdicts(self) -> list[str]:
        """The verdict line of every connection so far."""
        return [
            line.split("] ", 1)[1]
            for line in self.lines
            if re.match(r"\[\d+\] (WON|FAILED|DETECTED|PASSED THROUGH):", line)
        ]

    def wait_verdict(self, n: int = 1, timeout: float = 20.0) -> str:
        """The n-th verdict, once it is out."""
        self.wait_for(rf"^\[{n}\] (WON|FAILED|DETECTED|PASSED THROUGH):", timeout)
        return self.verdicts()[n - 1]


@contextlib.contextmanager
def server(*args: str) -> Iterator[ServerProcess]:
    """A real ``kexlab server`` on a free port (the test's KEXLAB_HOME key)."""
    with ServerProcess(*args) as srv:
        yield srv


@contextlib.contextmanager
def attacker(
    srv: ServerProcess | str, *args: str, port: int | None = None
) -> Iterator[MitmProcess]:
    """``kexlab mitm`` in front of ``srv`` (a process, or an address)."""
    upstream = srv if isinstance(srv, str) else srv.address
    with MitmProcess("--upstream", upstream, *args, port=port) as mitm:
        yield mitm


def client(address: str, *args: str) -> tuple[int, str, str]:
    """``kexlab client ADDRESS ARGS``: (exit code, stdout, stderr)."""
    done = run_client(address, *args)
    return done.returncode, done.stdout, done.stderr


def error_of(stderr: str) -> str:
    """The one ``error:`` line of a failed client (notes such as "first use" may precede it)."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert stderr.rstrip().endswith(errors[0]), stderr  # it is the last word
    return errors[0]


def sas_of(text: str) -> str:
    """The SAS in a summary line of ``text``."""
    match = SAS.search(text)
    assert match, text
    return match.group(1)


# --------------------------------------------------------------------------- the attacker wins


@pytest.mark.parametrize("kex", ["dhe", "rsa"])
def test_trust_none_lets_the_attacker_read_and_rewrite(kex: str) -> None:
    with server() as srv, attacker(srv, "--rewrite", "secret=public") as mitm:
        code, out, err = client(
            mitm.address, "--kex", kex, "--trust", "none", "--send", "my secret plan"
        )
        verdict = mitm.wait_verdict()
    assert code == 0, err
    assert out.splitlines()[-1] == "echo: my public plan"  # the echo of what the attacker sent
    assert "warning: trust none" in err
    assert verdict == "WON: read 2 records, rewrote 1 (the client closed (close_notify))"
    assert any(
        'client → server "my secret plan" rewritten to "my public plan"' in line
        for line in mitm.lines
    )
    assert any('server → client "my public plan"' in line for line in mitm.lines)
    client_sas, server_sas = sas_of(out), sas_of(srv.wait_for(r"server: handshake complete").string)
    assert client_sas != server_sas
    assert any(client_sas in line and server_sas in line for line in mitm.lines)


def test_an_anonymous_answer_is_accepted_by_trust_none() -> None:
    with server("--anonymous") as srv, attacker(srv, "--anonymous") as mitm:
        code, out, err = client(mitm.address, "--trust", "none", "--send", "hi")
        verdict = mitm.wait_verdict()
    assert code == 0, err
    assert "server key none (anonymous: not authenticated)" in out
    assert verdict.startswith("WON: read 2 records")
    assert any("anonymous dhe answer" in line for line in mitm.lines)


def test_tofu_first_contact_through_the_attacker_pins_its_key(home: Path) -> None:
    """TOFU's known weakness, shown honestly: whoever answers first is believed."""
    port = free_port()
    with server() as srv, attacker(srv, port=port) as mitm:
        code, _, err = client(f"127.0.0.1:{port}", "--send", "hi")
        verdict = mitm.wait_verdict()
    assert code == 0, err
    assert "first use: recorded server key" in err
    assert verdict.startswith("WON:")
    known = (home / "known_hosts").read_text()
    assert f"127.0.0.1:{port}" in known and home_fingerprint(home) not in known
    # The attacker leaves; the real server answers on that address from now on.
    with _server_on(port) as real:
        code, _out, err = client(f"127.0.0.1:{port}", "--send", "hi")
    assert code == 1
    line = error_of(err)
    assert "possible man in the middle" in line and "bad_certificate" in line
    assert "client sent alert bad_certificate" in real.output


@contextlib.contextmanager
def _server_on(port: int) -> Iterator[ServerProcess]:
    """A real server on a given port (the one the attacker held before)."""

    class Fixed(ServerProcess):
        def port_args(self) -> list[str]:
            return ["--port", str(port)]

    with Fixed() as srv:
        yield srv


# --------------------------------------------------------------------------- the attacker is caught


def test_tofu_with_the_key_known_refuses_the_attacker() -> None:
    port = free_port()
    with _server_on(port):
        code, _, err = client(f"127.0.0.1:{port}", "--send", "hi")  # first use: the real key
    assert code == 0, err
    with server() as srv, attacker(srv, port=port) as mitm:
        code, _, err = client(f"127.0.0.1:{port}", "--send", "hi")
        verdict = mitm.wait_verdict()
    assert code == 1
    assert "possible man in the middle" in error_of(err)
    assert verdict == "FAILED: client refused our key (bad_certificate)"
    assert not any("handshake complete" in line for line in srv.lines)  # never reached


@pytest.mark.parametrize("kex", ["dhe", "rsa"])
def test_a_pinned_key_refuses_the_attacker(home: Path, kex: str) -> None:
    with server() as srv, attacker(srv) as mitm:
        code, _, err = client(
            mitm.address, "--kex", kex, "--trust", f"pin:{home_fingerprint(home)}", "--send", "x"
        )
        verdict = mitm.wait_verdict()
    assert code == 1
    assert "does not match the pinned" in error_of(err)
    assert verdict == "FAILED: client refused our key (bad_certificate)"


def test_a_psk_handed_over_by_hand_defeats_the_attacker() -> None:
    psk = f"alice={PSK_HEX}"
    with server("--psk", psk) as srv, attacker(srv) as mitm:
        code, _, err = client(mitm.address, "--psk", psk, "--send", "x")
        verdict = mitm.wait_verdict()
    assert code == 1
    line = error_of(err)
    assert "decrypt_error" in line
    assert verdict == "FAILED: client refused our FINISHED: we do not hold the PSK (decrypt_error)"


# --------------------------------------------------------------------------- over MQTT


@pytest.fixture
async def open_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """Mosquitto with the open lab config: anyone may read and write kexlab/#."""
    async with running(Mosquitto(tmp_path)) as broker:
        yield broker


@pytest.fixture
async def hardened_broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """Mosquitto with the password file and ACL of oob/mosquitto/hardened.conf."""
    async with running(Mosquitto(tmp_path, "hardened.conf")) as broker:
        yield broker


def _as(broker: Mosquitto, user: str) -> list[str]:
    return [
        "--mqtt-username",
        user,
        "--mqtt-password-file",
        str(broker.tmp / f"{user}.password"),
    ]


async def test_psk_over_an_open_broker_is_read_by_the_attacker(open_broker: Mosquitto) -> None:
    oob = ["--oob", open_broker.url, "--server-id", SID]
    srv = await asyncio.to_thread(ServerProcess, *oob)
    try:
        srv.wait_for(r"subscribed to kexlab/v1/lab/psk/\+")
        mitm = await asyncio.to_thread(MitmProcess, "--upstream", srv.address, *oob)
        try:
            mitm.wait_for("listening on the broker for PSKs")
            code, out, err = await asyncio.to_thread(
                client, mitm.address, "--kex", "psk", *oob, "--send", "psk secret"
            )
            verdict = await asyncio.to_thread(mitm.wait_verdict)
        finally:
            await asyncio.to_thread(mitm.__exit__, None, None, None)
    finally:
        await asyncio.to_thread(srv.__exit__, None, None, None)
    assert code == 0, err
    assert out.splitlines()[-1] == "echo: psk secret"
    assert verdict.startswith("WON: read 2 records")
    assert any("sniffed on the broker" in line for line in mitm.lines)
    assert any('client → server "psk secret"' in line for line in mitm.lines)


async def test_psk_over_the_hardened_broker_stays_out_of_reach(
    hardened_broker: Mosquitto,
) -> None:
    oob = ["--oob", hardened_broker.url, "--server-id", SID]
    srv = await asyncio.to_thread(ServerProcess, *oob, *_as(hardened_broker, SERVER_USER))
    try:
        srv.wait_for(r"subscribed to kexlab/v1/lab/psk/\+")
        # The attacker has an ordinary account (or none): the ACL gives it no psk/#.
        mitm = await asyncio.to_thread(
            MitmProcess, "--upstream", srv.address, *oob, *_as(hardened_broker, "guest")
        )
        try:
            code, _, err = await asyncio.to_thread(
                client,
                mitm.address,
                "--kex",
                "psk",
                *oob,
                *_as(hardened_broker, CLIENT_USER),
                "--send",
                "x",
            )
            verdict = await asyncio.to_thread(mitm.wait_verdict)
        finally:
            await asyncio.to_thread(mitm.__exit__, None, None, None)
    finally:
        await asyncio.to_thread(srv.__exit__, None, None, None)
    assert code == 1
    assert err.startswith("published PSK")  # the client says only that the broker took it
    assert "decrypt_error" in error_of(err)
    assert verdict == "FAILED: client refused our FINISHED: we do not hold the PSK (decrypt_error)"


@pytest.mark.parametrize("kex", ["dhe", "rsa"])
async def test_sas_compared_over_an_honest_broker_catches_the_attacker(
    open_broker: Mosquitto, kex: str
) -> None:
    oob = ["--oob", open_broker.url, "--server-id", SID, "--verify-sas", "mqtt"]
    srv = await asyncio.to_thread(ServerProcess, *oob)
    try:
        mitm = await asyncio.to_thread(MitmProcess, "--upstream", srv.address)
        try:
            code, _, err = await asyncio.to_thread(
                client, mitm.address, "--kex", kex, "--trust", "none", *oob, "--send", "x"
            )
            verdict = await asyncio.to_thread(mitm.wait_verdict)
            srv.wait_for("SAS mismatch")
        finally:
            await asyncio.to_thread(mitm.__exit__, None, None, None)
    finally:
        await asyncio.to_thread(srv.__exit__, None, None, None)
    assert code == 1
    assert "SAS mismatch: possible man in the middle" in error_of(err)
    # Whichever end compares first aborts; the other leg is then closed under it.
    assert re.fullmatch(
        r"FAILED: caught before a record crossed \((client|server) leg ended: .*\)", verdict
    ), verdict
    assert not any("verified" in line for line in srv.lines)


@pytest.mark.parametrize("kex", ["dhe", "rsa"])
async def test_sas_over_an_open_broker_the_attacker_answers_is_never_called_verified(
    open_broker: Mosquitto, kex: str
) -> None:
    """The attacker publishes each leg's SAS as the other side: both ends see a match, and
    neither may call it verified without saying, in the same line, who may publish there."""
    oob = ["--oob", open_broker.url, "--server-id", SID]
    srv = await asyncio.to_thread(ServerProcess, *oob, "--verify-sas", "mqtt")
    try:
        mitm = await asyncio.to_thread(MitmProcess, "--upstream", srv.address, *oob, "--forge-sas")
        try:
            mitm.wait_for("forging SAS answers")
            code, out, err = await asyncio.to_thread(
                client, mitm.address, "--kex", kex, "--trust", "none", *oob,
                "--verify-sas", "mqtt", "--send", "wire 5000 to mallory",
            )  # fmt: skip
            verdict = await asyncio.to_thread(mitm.wait_verdict)
            matched = srv.wait_for(
                r"SAS (NOT verified|verified|matched) over MQTT|SAS NOT verified"
            ).string
        finally:
            await asyncio.to_thread(mitm.__exit__, None, None, None)
    finally:
        await asyncio.to_thread(srv.__exit__, None, None, None)
    assert code == 0, err
    assert out.splitlines()[-1] == "echo: wire 5000 to mallory"
    assert verdict.startswith("WON: read 2 records")
    assert any('client → server "wire 5000 to mallory"' in line for line in mitm.lines)
    client_line = next(line for line in out.splitlines() if "SAS" in line and "MQTT" in line)
    for line in (client_line, matched):  # each end's line about the comparison
        assert "SAS verified" not in line  # never a bare claim
        assert "publish" in line  # who may publish there, in the same line
    assert client_line.startswith("SAS NOT verified")
    assert "this broker let us publish on the server's topic too" in client_line
    assert "NOT verified" in matched and "let us publish on the client's topic too" in matched
    assert sum("published the" in line for line in mitm.lines) == 2  # one answer per leg


# --------------------------------------------------------------------------- tampering while relaying


# A file upload sends records back to back (no echo in between): the record layer sees
# the gap, the replay or the swap at once. FILE stands for that upload.
FILE = ["--send-file", "FILE"]


@pytest.mark.parametrize(
    ("tamper", "client_args", "who", "expect"),
    [
        (
            ["--flip"],
            ["--send", "a"],
            "server",
            "bad_record_mac (20): record seq 0 fails authentication",
        ),
        (
            ["--drop"],
            FILE,
            "server",
            "unexpected_message (10): record lost or dropped: seq 1, expected 0",
        ),
        (
            ["--replay"],
            FILE,
            "server",
            "unexpected_message (10): replayed record: seq 0, expected 1",
        ),
        (
            ["--reorder"],
            FILE,
            "server",
            "unexpected_message (10): record lost or dropped: seq 1, expected 0",
        ),
        (
            ["--downgrade", "suite"],
            ["--send", "a"],
            "client",
            "illegal_parameter (47): SERVER_HELLO does not echo",
        ),
        (
            ["--downgrade", "anonymous"],
            ["--trust", "none", "--send", "a"],
            "client",
            "decrypt_error (51): server FINISHED does not verify",
        ),
        (
            ["--downgrade", "anonymous"],
            ["--send", "a"],
            "client",
            "bad_certificate (42): server sent no identity key",
        ),
    ],
)
def test_tampering_is_detected(
    tmp_path: Path, tamper: list[str], client_args: list[str], who: str, expect: str
) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(bytes(range(256)) * 1024)
    args = [str(upload) if a == "FILE" else a for a in client_args]
    with server() as srv, attacker(srv, "--relay", *tamper) as mitm:
        code, _, err = client(mitm.address, *args)
        verdict = mitm.wait_verdict()
    assert code == 1
    line = error_of(err)
    assert verdict.startswith("DETECTED: ")
    if who == "server":
        srv.wait_for(re.escape(f"connection failed: sent alert {expect}"))
        # The server's alert races the client's upload: when the server closes while the
        # client is still writing, TCP may reset the connection and drop the alert unread.
        assert re.search(r"server sent alert|closed the connection|connection .* lost", line), line
    else:
        assert f"{who} sent alert {expect}" in verdict
        assert expect.split(" (")[0] in line


# --------------------------------------------------------------------------- bad input


def test_an_unreachable_upstream_costs_one_connection() -> None:
    with attacker(f"127.0.0.1:{free_port()}") as mitm:
        code, _, err = client(mitm.address, "--trust", "none", "--send", "x")
        verdict = mitm.wait_verdict()
        assert mitm.proc.poll() is None  # the attacker is still there
    assert code == 1
    assert "upstream unavailable" in error_of(err)
    assert verdict.startswith("FAILED: upstream 127.0.0.1:")


def test_garbage_and_silence_cost_one_connection_each() -> None:
    with server() as srv, attacker(srv, "--timeout", "1") as mitm:
        with socket.create_connection(("127.0.0.1", mitm.port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            sock.recv(100)
        with socket.create_connection(("127.0.0.1", mitm.port)):
            verdict_silent = mitm.wait_verdict(2, timeout=10)
        code, _, err = client(mitm.address, "--trust", "none", "--send", "still here")
        won = mitm.wait_verdict(3)
    assert mitm.verdicts()[0].startswith("FAILED: ")
    assert "handshake timeout" in verdict_silent or "FAILED" in verdict_silent
    assert code == 0, err
    assert won.startswith("WON:")


def test_mitm_usage_mistakes_exit_2() -> None:
    for args, message in [
        (["--flip"], "add --relay"),
        (["--relay", "--flip", "--drop"], "one tampering at a time"),
        (["--relay", "--rewrite", "a=b"], "--relay holds no keys"),
        (["--downgrade", "group", "--relay"], "unknown downgrade"),
        (["--rewrite", "=x"], "is not OLD=NEW"),
        (["--upstream", "127.0.0.1:0"], "port '0' is not a number from 1 to 65535"),
        (["--forge-sas"], "'--forge-sas': needs the MQTT out-of-band channel"),
        (["--oob", "mqtt://127.0.0.1:1", "--forge-sas", "--relay"], "knows no SAS to forge"),
    ]:
        done = subprocess.run([KEXLAB, "mitm", *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, (args, done.stderr)
        assert message in one_error_line(done.stderr)


def test_the_summary_table_counts_every_verdict() -> None:
    with server() as srv:
        mitm = MitmProcess("--upstream", srv.address)
        client(mitm.address, "--trust", "none", "--send", "x")
        mitm.wait_verdict()
        client(mitm.address, "--trust", f"pin:{'00' * 32}", "--send", "x")
        mitm.wait_verdict(2)
        code, _ = mitm.stop()
    assert code == 0
    assert "connections: 1 FAILED, 1 WON" in mitm.output


# --------------------------------------------------------------------------- both legs on the wire


def test_both_legs_in_one_capture_each_opened_by_its_own_key(home: Path, tmp_path: Path) -> None:
    """--pcap records both legs: the dissector names two handshakes with one client_random;
    each leg opens with the RSA key of the side that held it (the attacker's, the server's),
    and one key log holding both endpoints' lines opens both (same client_random, two sets)."""
    capture = tmp_path / "mitm.pcap"
    client_log, server_log = tmp_path / "client.keys", tmp_path / "server.keys"
    with server("--keylog", str(server_log)) as srv, attacker(srv, "--pcap", str(capture)) as mitm:
        code, _, err = client(
            mitm.address, "--kex", "rsa", "--trust", "none", "--keylog", str(client_log),
            "--send", "pin 0451",
        )  # fmt: skip
        mitm.wait_verdict()
    assert code == 0, err
    rows = tshark_fields(capture, ["tcp.stream", "kxp.type", "kxp.hello.random"], tmp_path / "ws")
    hellos = [r for r in rows if r[1].split(",")[0] in ("1", "0x01", "CLIENT_HELLO")]
    assert len({r[0] for r in hellos}) == 2, rows  # two TCP connections, a CLIENT_HELLO each
    assert len({r[2] for r in hellos}) == 1  # with the same random: the attacker copied it
    opened = {}
    both = tmp_path / "both.keys"
    both.write_text(client_log.read_text() + server_log.read_text())
    for name, args in (
        ("attacker", ["--rsa-key", str(home / "mitm" / "server-rsa.pem")]),
        ("server", ["--rsa-key", str(home / "server-rsa.pem")]),
        ("both key logs", ["--keylog", str(both)]),
    ):
        done = subprocess.run(
            [KEXLAB, "decrypt", str(capture), *args, "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        sessions = json.loads(done.stdout)["sessions"]
        assert len(sessions) == 2
        opened[name] = [s["decrypted"] for s in sessions]
        assert any(
            r["plaintext"] == "pin 0451" for s in sessions if s["decrypted"] for r in s["records"]
        )
    assert opened["attacker"] == [not x for x in opened["server"]]  # one leg each
    assert opened["both key logs"] == [True, True]
