"""The out-of-band channel between real ``kexlab server`` / ``kexlab client`` processes (issue 4).

Every scenario runs against a real Mosquitto and against the embedded amqtt broker (the
ACL scenario needs Mosquitto: amqtt has no ACL). The broker lives in the test's event loop
(amqtt) or in its own process (Mosquitto); processes are waited on in worker threads so
that the embedded broker keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from oob_brokers import (
    CLIENT_USER,
    GUEST_USER,
    SERVER_USER,
    LabBroker,
    Mosquitto,
    assert_no_stray_tasks,
    make_broker,
    running,
)
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    KEXLAB,
    ServerProcess,
    free_port,
    home_fingerprint,
    home_fixture,
    one_error_line,
)

from client.session import ClientOptions, ClientSession
from keystore import short_fingerprint
from oob import REFUSED_PUBLISH_HINT, Fingerprint, fingerprint_topic
from oob.settings import connect
from protocol import (
    ClientConfig,
    ClientConnection,
    Kex,
    PeerAlert,
    ServerConfig,
    ServerConnection,
    TrustVerdict,
)
from transport import KxpStream, start_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("home")]
SID = "lab"
KINDS = ["mosquitto", "amqtt"]
SUBSCRIBED = r"^oob: MQTT: subscribed to kexlab/v1/lab/psk/\+ on "
IDENTITY = re.compile(r"psk identity (psk-[0-9a-f]{16})")
SAS = re.compile(r"SAS ((?:[0-9a-f]{4} ){3}[0-9a-f]{4})")


@pytest.fixture(params=KINDS)
async def lab(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LabBroker]:
    """An open broker of each kind, running."""
    async with running(make_broker(request.param, tmp_path)) as broker:
        yield broker
    await assert_no_stray_tasks()


@contextlib.asynccontextmanager
async def serving(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[ServerProcess]:
    """``kexlab server --port 0 ARGS`` as a process; stopped (SIGINT) at the end."""
    srv = await asyncio.to_thread(ServerProcess, *args, env=env)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.__exit__, None, None, None)


async def line(srv: ServerProcess, pattern: str, timeout: float = 10.0) -> re.Match[str]:
    """Wait (in a thread) for a server output line matching ``pattern``."""
    return await asyncio.to_thread(srv.wait_for, pattern, timeout)


async def stop(srv: ServerProcess) -> str:
    """SIGINT the server; assert a clean exit; its stderr."""
    code, err = await asyncio.to_thread(srv.stop)
    assert code == 0, err
    assert "Traceback" not in err
    return err


async def client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``kexlab client ARGS`` as a process (in a thread)."""
    return await asyncio.to_thread(
        subprocess.run,
        [KEXLAB, "client", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def mqtt_args(broker: LabBroker) -> list[str]:
    """--oob URL --server-id lab."""
    return ["--oob", broker.url, "--server-id", SID]


def ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Assert exit 0 without a traceback; the stdout lines."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.splitlines()


async def seen_at(srv: ServerProcess, pattern: str) -> float:
    """When (time.monotonic) a server line matching ``pattern`` came in; start before it can."""
    await line(srv, pattern)
    return time.monotonic()


def count(srv: ServerProcess, pattern: str) -> int:
    """How many server output lines match ``pattern``."""
    return sum(1 for text in list(srv.lines) if re.search(pattern, text))


# --------------------------------------------------------------------------- the happy path


async def test_psk_fingerprint_and_sas_over_mqtt(lab: LabBroker, home: Path) -> None:
    fp = home_fingerprint(home)
    async with serving(*mqtt_args(lab), "--verify-sas", "mqtt") as srv:
        await line(srv, SUBSCRIBED)
        announced = (await line(srv, r"^mqtt: broker=")).string
        assert f"announces=sign key SHA256:{fp}" in announced

        psk = await client(
            srv.address, *mqtt_args(lab), "--kex", "psk", "--verify-sas", "mqtt",
            "--send", "hello over mqtt",
        )  # fmt: skip
        out = ok(psk)
        identity = IDENTITY.search(out[0])
        assert identity and out[0].startswith("client: handshake complete: psk/aes256")
        # An open broker: the client's own probe on the server's topic came back, so a
        # match there proves nothing against a man in the middle, and it says so.
        open_broker = "this broker let us publish on the server's topic too"
        assert out[1].startswith("SAS NOT verified: the server's SAS over MQTT matches ours")
        assert open_broker in out[1] and "compare the SAS aloud" in out[1]
        assert out[2:] == ["echo: hello over mqtt"]
        # It says what it knows (the broker's PUBACK), never that the server got the key.
        assert f"published PSK '{identity.group(1)}'" in psk.stderr
        assert "does not prove that the server can read it" in psk.stderr
        assert "deliver" not in psk.stderr
        await line(srv, rf"^oob: MQTT: PSK for identity '{identity.group(1)}' received")
        matched = await line(srv, r"\] SAS NOT verified: the client's SAS over MQTT matches ours")
        client_sas = SAS.search(out[0])
        assert client_sas and f"({client_sas.group(1)} …)" in matched.string
        assert count(srv, "verified over MQTT") == 0

        dhe = await client(
            srv.address, *mqtt_args(lab), "--trust", "mqtt", "--verify-sas", "mqtt", "--send", "x"
        )
        out = ok(dhe)
        assert out[0].startswith("client: handshake complete: dhe/x25519/aes256")
        assert short_fingerprint(fp) in out[0]
        assert out[1].startswith("SAS NOT verified") and open_broker in out[1]
        pinned = one_error_line(dhe.stderr)
        assert pinned.startswith(f"pinned server key SHA256:{fp} read from {lab.url}")
        assert "only as trustworthy as the broker's write permissions" in pinned
        await stop(srv)
    # Nothing was remembered on disk: the pin came from the broker, not from tofu.
    assert not (home / "known_hosts").exists()


async def test_a_forged_fingerprint_pins_the_client_to_the_wrong_key(
    lab: LabBroker, home: Path
) -> None:
    """§8: whoever may write ``fingerprint`` decides which key ``--trust mqtt`` accepts."""
    async with serving() as srv:  # no --oob: the forger is the only announcer
        forged = Fingerprint(SID, "ee" * 32, srv.address)
        async with connect(lab.settings()) as forger:
            await forger.publish(fingerprint_topic(SID), forged.encode(), qos=1, retain=True)
        result = await client(srv.address, *mqtt_args(lab), "--trust", "mqtt", "--send", "x")
        assert result.returncode == 1
        error = one_error_line(result.stderr)
        assert error.startswith(f"error: server key SHA256:{home_fingerprint(home)} does not match")
        assert f"pinned SHA256:{'ee' * 32} (from {lab.url} kexlab/v1/lab/fingerprint)" in error
        await line(srv, r"client sent alert bad_certificate \(42\)")
        await stop(srv)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", KINDS)
async def test_broker_down_at_start_then_up(kind: str, tmp_path: Path) -> None:
    broker = make_broker(kind, tmp_path)  # not started yet
    async with serving("--oob", broker.url, "--server-id", SID) as srv:
        outage = await line(srv, r"^oob: MQTT broker .* unavailable: .*retrying in the background")
        assert broker.url in outage.string

        started = time.monotonic()
        psk = await client(srv.address, *mqtt_args(broker), "--kex", "psk", "--send", "x")
        assert time.monotonic() - started < 5
        assert psk.returncode == 1
        assert one_error_line(psk.stderr).startswith(f"error: MQTT broker {broker.url} unavailable")

        await broker.start()
        try:
            # rsa and dhe never needed the broker.
            for method in ("rsa", "dhe"):
                out = ok(await client(srv.address, "--kex", method, "--send", method))
                assert out[0].startswith(f"client: handshake complete: {method}/")
                assert out[1:] == [f"echo: {method}"]
            await line(srv, r"^oob: MQTT: reconnected to .* and resubscribed")
            out = ok(await client(srv.address, *mqtt_args(broker), "--kex", "psk", "--send", "y"))
            assert out[0].startswith("client: handshake complete: psk/") and out[1:] == ["echo: y"]
            await stop(srv)
        finally:
            await broker.stop()
    await assert_no_stray_tasks()


async def test_broker_stops_and_returns_while_the_server_runs(lab: LabBroker) -> None:
    async with serving(*mqtt_args(lab)) as srv:
        await line(srv, SUBSCRIBED)
        options = ClientOptions(port=srv.port, trust=lambda i: TrustVerdict(True), timeout=5)
        session = await ClientSession.open(options)
        try:
            assert await session.request(b"before") == b"before"
            await lab.stop()
            await line(srv, r"^oob: MQTT broker .* unavailable: .*retrying in the background")
            await lab.start()
            await line(srv, r"^oob: MQTT: reconnected to .* and resubscribed")
            # The TCP session established before the outage never noticed it.
            assert await session.request(b"after") == b"after"
        finally:
            await session.close()
        psk = await client(srv.address, *mqtt_args(lab), "--kex", "psk", "--send", "new key")
        assert ok(psk)[1:] == ["echo: new key"]
        # amqtt forgets retained messages when it stops: the server announced again.
        pinned = await client(srv.address, *mqtt_args(lab), "--trust", "mqtt", "--send", "z")
        assert ok(pinned)[1:] == ["echo: z"]
        assert count(srv, r"connection failed") == 0
        await stop(srv)


MALFORMED: list[tuple[str, object]] = [
    ("notjson", b"this is not json"),
    ("badb64", {"identity": "badb64", "key": "***", "expires_at": 4e9}),
    ("short", {"identity": "short", "key": "AAAAAAAAAAAAAAAAAAAA", "expires_at": 4e9}),
    ("expired", {"identity": "expired", "key": "A" * 44, "expires_at": 1000}),
    ("slash", {"identity": "a/b", "key": "A" * 44, "expires_at": 4e9}),
    ("plus", {"identity": "a+b", "key": "A" * 44, "expires_at": 4e9}),
    ("hash", {"identity": "a#b", "key": "A" * 44, "expires_at": 4e9}),
]


async def test_malformed_payloads_are_logged_once_and_ignored(lab: LabBroker) -> None:
    async with serving(*mqtt_args(lab), "--psk-wait", "0.5") as srv:
        await line(srv, SUBSCRIBED)
        async with connect(lab.settings()) as attacker:
            for _ in range(3):  # bad messages again and again: one log line per kind a minute
                for name, body in MALFORMED:
                    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                    await attacker.publish(f"kexlab/v1/{SID}/psk/{name}", payload, qos=1)
        out = ok(await client(srv.address, *mqtt_args(lab), "--kex", "psk", "--send", "fine"))
        assert out[1:] == ["echo: fine"]
        await line(srv, r"PSK for identity 'psk-[0-9a-f]{16}' received")
        # Three kinds (not JSON, a bad member, expired): the first of each is logged, the
        # other 18 messages are counted for the summary at the end of the minute.
        assert count(srv, r"^oob: MQTT: ignored a malformed message on ") == 3
        assert count(srv, r"ignored a malformed message on .*/psk/notjson: .*not UTF-8 JSON") == 1
        assert count(srv, r"ignored a malformed message on .*/psk/badb64: .*base64") == 1
        assert count(srv, r"ignored a malformed message on .*/psk/expired: key expired") == 1
        # None of them became a key: a client naming one is refused after the wait.
        expired = await client(
            srv.address, "--kex", "psk", "--psk", f"expired={'00' * 32}", "--send", "x"
        )
        assert "unknown_psk_identity (115)" in one_error_line(expired.stderr)
        await stop(srv)


async def test_acl_denied_publish_is_not_claimed_as_delivered(tmp_path: Path, home: Path) -> None:
    """Mosquitto with the shipped hardened config: a guest's PSK is dropped, silently."""

    def creds(user: str) -> dict[str, str]:
        return {
            "KEXLAB_MQTT_USERNAME": user,
            "KEXLAB_MQTT_PASSWORD_FILE": str(tmp_path / f"{user}.password"),
        }

    async with running(Mosquitto(tmp_path, "hardened.conf")) as hardened:
        args = mqtt_args(hardened)
        async with serving(*args, "--psk-wait", "1", env=creds(SERVER_USER)) as srv:
            await line(srv, SUBSCRIBED)
            guest = ["--mqtt-username", GUEST_USER, "--mqtt-password-file"]
            connected = asyncio.create_task(seen_at(srv, r"\] connect$"))
            alerted = asyncio.create_task(seen_at(srv, r"sent alert unknown_psk_identity"))
            denied = await client(
                srv.address, *args, *guest, str(tmp_path / f"{GUEST_USER}.password"),
                "--kex", "psk", "--send", "x",
            )  # fmt: skip
            # The server waited --psk-wait (1 s), not the default 3 s, for the key: timed between
            # its own log lines (no process start-up inside), and only to tell 1 s from 3 s apart.
            waited = await alerted - await connected
            assert 0.5 < waited < 2.5, waited
            assert denied.returncode == 1
            notice, error = denied.stderr.splitlines()
            assert notice.startswith("published PSK") and "does not prove" in notice
            assert error.startswith("error: the server does not know PSK identity 'psk-")
            assert REFUSED_PUBLISH_HINT in error
            assert "unknown_psk_identity (115)" in error
            await line(srv, r"sent alert unknown_psk_identity \(115\)")
            assert count(srv, r"PSK for identity .* received") == 0

            # The client account may write keys and read the fingerprint; the server's
            # SAS topic is its own. Everything works for the accounts the ACL names.
            allowed = await client(
                srv.address, *args, "--kex", "psk", "--send", "ok", env=creds(CLIENT_USER)
            )
            assert ok(allowed)[1:] == ["echo: ok"]
            pinned = await client(
                srv.address, *args, "--trust", "mqtt", "--send", "ok", env=creds(CLIENT_USER)
            )
            assert ok(pinned)[1:] == ["echo: ok"]
            await stop(srv)


# --------------------------------------------------------------------------- SAS mismatch


class Mitm:
    """A man in the middle: anonymous dhe towards the client, a trusting client towards the server.

    It reuses the client's client_random upstream, so both real peers publish their SAS on
    the same ``sas/<client_random>`` topics, where the two different values meet.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.endings: list[BaseException | bytes | None] = []
        self._server: asyncio.Server | None = None
        self._done = asyncio.Event()

    async def start(self) -> int:
        self._server = await start_server(
            self._relay,
            "127.0.0.1",
            0,
            lambda: ServerConnection(ServerConfig(kex_methods=frozenset({Kex.DHE}))),
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def wait(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await self._done.wait()

    async def _relay(self, down: KxpStream) -> None:
        up: KxpStream | None = None
        try:
            hc = await down.do_handshake(5)
            first = [hc.client_random]

            def rng(n: int) -> bytes:
                return first.pop() if first and n == 32 else os.urandom(n)

            config = ClientConfig(
                kex=Kex.DHE,
                cipher_suite=hc.cipher_suite,
                group=hc.group,
                trust=lambda i: TrustVerdict(True),
                rng=rng,
            )
            up = await KxpStream.connect("127.0.0.1", self.upstream_port, ClientConnection(config))
            await up.do_handshake(5)
            self.endings = list(
                await asyncio.gather(down.recv(), up.recv(), return_exceptions=True)
            )
        finally:
            for stream in (down, up):
                if stream is not None:
                    await stream.wait_closed()
            self._done.set()


async def test_sas_mismatch_aborts_both_sides(lab: LabBroker) -> None:
    async with serving(*mqtt_args(lab), "--verify-sas", "mqtt") as srv:
        await line(srv, SUBSCRIBED)
        mitm = Mitm(srv.port)
        port = await mitm.start()
        try:
            result = await client(
                f"127.0.0.1:{port}", *mqtt_args(lab), "--trust", "none", "--verify-sas", "mqtt",
                "--send", "x",
            )  # fmt: skip
            await mitm.wait(10)
        finally:
            await mitm.stop()
        assert result.returncode == 1
        lines = result.stderr.splitlines()
        assert lines[0].startswith("warning: trust none")
        assert lines[1:] == [
            "error: SAS mismatch: possible man in the middle (sent alert handshake_failure (40))"
        ]
        await line(
            srv,
            r"connection failed: sent alert handshake_failure \(40\): "
            r"SAS mismatch: possible man in the middle$",
        )
        # The man in the middle got the same alert from both of its victims.
        assert len(mitm.endings) == 2
        for ending in mitm.endings:
            assert isinstance(ending, PeerAlert) and ending.code == 40
            assert ending.reason == "SAS mismatch: possible man in the middle"
        await stop(srv)
