"""Captures of real ``kexlab server`` / ``kexlab client`` processes, read back by tshark and decrypt.

One scenario, run once for the module: a Mosquitto broker and a ``kexlab server`` on
free loopback ports, both recorded by ``tcpdump -i lo --immediate-mode -U``;
``kexlab psk send`` publishes a PSK on the open broker; the server is started with
that key (``--psk ID=HEX``) and ``--pcap``; one ``kexlab client --pcap`` per method
(rsa, dhe, psk) sends three messages and reads their echoes. Every capture (tcpdump's,
the server's, each client's) must then show the right frames and handshake fields in
tshark with the dissector, and ``kexlab decrypt`` must recover the exact plaintexts
with each key source, or say that the dhe session is forward secret.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpkt  # type: ignore[import-untyped]
import pytest
import typer
from external_tools import require_tool
from kxp_sessions import Rows, tcpdump, tshark_fields
from oob_brokers import Mosquitto
from support_net import KEXLAB, ServerProcess, cached_rsa_key, free_port, home_key
from typer.testing import CliRunner

from capture.pcap import PcapWriter
from capture.tap import PcapTap
from cli.decrypt import decrypt
from protocol import parse_keylog
from protocol.kex import spki

pytestmark = [pytest.mark.slow]

IDENTITY = "stolen-1"
METHODS = ("rsa", "dhe", "psk")
KEX_CODE = {"rsa": "1", "dhe": "2", "psk": "3"}
MESSAGES = {
    name: (f"{name}: hello over a real socket", name[0] * 4000, f"{name}: last message ✓")
    for name in METHODS
}
CLIENT_ARGS = {
    "rsa": ["--kex", "rsa"],
    "dhe": ["--kex", "dhe", "--group", "secp256r1", "--suite", "aes128"],
    "psk": ["--suite", "aes256"],  # and --psk IDENTITY=HEX, once kexlab psk send made it
}
FIELDS = [
    "tcp.stream",
    "tcp.srcport",
    "tcp.dstport",
    "kxp.type",
    "kxp.kex",
    "kxp.cipher_suite",
    "kxp.group",
    "kxp.hello.random",
    "kxp.key_share",
    "kxp.psk_identity",
    "kxp.server_key",
    "kxp.encrypted_secret",
    "kxp.sig.scheme",
    "kxp.verify_data",
    "kxp.record.seq",
    "kxp.record.ciphertext_len",
    "_ws.lua.error",
    "_ws.malformed",
]
CAPTURES = ("tcpdump", "server", "client-rsa", "client-dhe", "client-psk")


@dataclass
class Lab:
    """The captures of one scenario and what is needed to check them."""

    tmp: Path
    home: Path
    port: int
    """The kexlab server's port (the broker's is another)."""
    psk_hex: str
    client_ports: dict[str, int]
    """Each method's client port, as the server logged it."""
    client_keylog: Path
    server_keylog: Path

    def capture(self, name: str) -> Path:
        """tcpdump | server | client-<method>: the pcap file."""
        return self.tmp / f"{name}.pcap"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KEXLAB_KEYLOGFILE"}
    return {**env, "KEXLAB_HOME": str(home), "COLUMNS": "200"}  # rich tables unwrapped


def _kexlab(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEXLAB, *args], env=_env(home), capture_output=True, text=True, timeout=30, check=False
    )


def _scenario(tmp: Path, home: Path) -> tuple[Lab, int | None]:
    """Run the whole scenario once; returns it and the packets tcpdump's kernel buffer dropped."""
    broker = Mosquitto(tmp)
    asyncio.run(broker.start())
    port = free_port()  # tcpdump must know it before the server, which needs the PSK first
    lab = Lab(tmp, home, port, "", {}, tmp / "client-keys.log", tmp / "server-keys.log")
    try:
        with tcpdump(lab.capture("tcpdump"), broker.port, port) as run:
            psk_send = ["psk", "send", "--server-id", "lab", "--oob", broker.url]
            sent = _kexlab(home, *psk_send, "--identity", IDENTITY)
            assert sent.returncode == 0, sent.stderr
            identity, _, lab.psk_hex = sent.stdout.strip().partition("=")
            assert identity == IDENTITY and len(lab.psk_hex) == 64, sent.stdout
            args = ["--port", str(port), "--psk", f"{IDENTITY}={lab.psk_hex}"]
            args += ["--pcap", str(lab.capture("server"))]
            args += ["--keylog", str(lab.server_keylog)]
            with ServerProcess(*args, env={"KEXLAB_HOME": str(home)}) as srv:
                for name in METHODS:
                    _client(lab, name)
                    line = srv.wait_for(
                        rf"\[127\.0\.0\.1:(\d+)\] server: handshake complete: {name}/"
                    )
                    lab.client_ports[name] = int(line.group(1))
                    srv.wait_for(rf"\[127\.0\.0\.1:{lab.client_ports[name]}\] closed$")
                code, err = srv.stop(signal.SIGINT)
            assert code == 0 and "Traceback" not in err, err
            assert srv.lines[-1] == "stopped: connections_closed=True"
    finally:
        asyncio.run(broker.stop())
    return lab, run.dropped


def _client(lab: Lab, name: str) -> None:
    args = ["client", f"127.0.0.1:{lab.port}", *CLIENT_ARGS[name]]
    args += [arg for msg in MESSAGES[name] for arg in ("--send", msg)]
    if name == "psk":
        args += ["--psk", f"{IDENTITY}={lab.psk_hex}"]
    args += ["--pcap", str(lab.capture(f"client-{name}")), "--keylog", str(lab.client_keylog)]
    result = _kexlab(lab.home, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"client: handshake complete: {name}/"), result.stdout
    assert lines[1:] == [f"echo: {m}" for m in MESSAGES[name]]  # the echoes, exactly


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """The scenario, run again if the kernel dropped packets on tcpdump (a busy machine)."""
    require_tool("tshark")
    require_tool("tcpdump")
    key = cached_rsa_key(tmp_path_factory)
    dropped: int | None = None
    for attempt in range(2):
        tmp = tmp_path_factory.mktemp(f"capture-e2e-{attempt}")
        home = tmp / "home"
        home.mkdir(mode=0o700)
        shutil.copyfile(key, home / "server-rsa.pem")
        os.chmod(home / "server-rsa.pem", 0o600)
        shutil.copyfile(key.with_name(key.name + ".pub"), home / "server-rsa.pem.pub")
        result, dropped = _scenario(tmp, home)
        if not dropped:
            return result
    raise AssertionError(f"tcpdump dropped packets twice (last run: {dropped})")


# --------------------------------------------------------------------------- the pcap files


def _tcp_segments(path: Path) -> list[dpkt.tcp.TCP]:
    out = []
    with path.open("rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                assert ip.src == ip.dst == bytes([127, 0, 0, 1])
                out.append(ip.data)
    return out


@pytest.mark.parametrize("name", CAPTURES[1:])
def test_pcap_flows_have_the_real_ports_and_a_whole_tcp_life(lab: Lab, name: str) -> None:
    flows: dict[int, list[dpkt.tcp.TCP]] = defaultdict(list)
    for seg in _tcp_segments(lab.capture(name)):
        client = seg.sport if seg.dport == lab.port else seg.dport
        assert lab.port in (seg.sport, seg.dport)
        flows[client].append(seg)
    wanted = METHODS if name == "server" else (name.removeprefix("client-"),)
    assert sorted(flows) == sorted(lab.client_ports[m] for m in wanted)
    for client_port, segs in flows.items():
        syn = segs[0]  # the client's SYN opens each flow, even in the server's file
        assert (syn.sport, syn.dport, syn.flags) == (client_port, lab.port, dpkt.tcp.TH_SYN)
        assert segs[1].flags == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK
        fins = [s for s in segs if s.flags & dpkt.tcp.TH_FIN]
        assert len(fins) == 2 and segs[-1].flags == dpkt.tcp.TH_ACK
        # seq numbers follow the bytes: each data segment starts where the last one ended
        for port in (client_port, lab.port):
            mine = [s for s in segs[2:] if s.sport == port and s.data]
            for before, after in itertools.pairwise(mine):
                assert after.seq == (before.seq + len(before.data)) & 0xFFFFFFFF


def test_tcpdump_saw_the_same_connections_and_the_broker(lab: Lab) -> None:
    ports = {seg.sport for seg in _tcp_segments(lab.capture("tcpdump"))}
    assert set(lab.client_ports.values()) <= ports
    assert len(ports - {lab.port} - set(lab.client_ports.values())) >= 2  # broker + psk send


# --------------------------------------------------------------------------- tshark


def _conversations(lab: Lab, name: str) -> dict[str, Rows]:
    rows = tshark_fields(lab.capture(name), FIELDS, lab.tmp / "wireshark-home")
    streams: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        record = dict(zip(FIELDS, row, strict=True))
        assert record["_ws.lua.error"] == "" and record["_ws.malformed"] == "", record
        streams[record["tcp.stream"]].append(record)
    out = {}
    for stream_rows in streams.values():
        conv = Rows(
            [r for r in stream_rows if r["tcp.dstport"] == str(lab.port)],
            [r for r in stream_rows if r["tcp.srcport"] == str(lab.port)],
        )
        (kex,) = conv.values("client", "kxp.kex")
        method = {v: k for k, v in KEX_CODE.items()}[kex]
        assert method not in out
        out[method] = conv
    return out


@pytest.mark.parametrize("name", CAPTURES)
def test_tshark_shows_each_methods_frames_and_fields(lab: Lab, name: str) -> None:
    convs = _conversations(lab, name)
    wanted = METHODS if name in ("tcpdump", "server") else (name.removeprefix("client-"),)
    assert sorted(convs) == sorted(wanted)
    server_key = spki(home_key(lab.home)).hex()
    randoms = {cr.hex() for cr in parse_keylog(lab.client_keylog.read_text())}
    for method, conv in convs.items():
        c, s = conv.values, conv.values
        assert c("client", "kxp.kex") == s("server", "kxp.kex") == [KEX_CODE[method]]
        (client_random,) = c("client", "kxp.hello.random")
        assert client_random in randoms  # the same session the key log speaks of
        if method == "rsa":
            assert c("client", "kxp.type")[:3] == ["0x01", "0x03", "0x05"]
            assert s("server", "kxp.type")[:2] == ["0x02", "0x05"]
            assert c("client", "kxp.cipher_suite") == ["0x1302"]
            assert c("client", "kxp.group") == ["0x0000"]
            assert s("server", "kxp.server_key") == [server_key]
            assert [len(v) for v in c("client", "kxp.encrypted_secret")] == [2 * 256]
            assert [len(v) for v in c("client", "kxp.verify_data")] == [2 * 48]
        elif method == "dhe":
            assert c("client", "kxp.type")[:2] == ["0x01", "0x05"]
            assert s("server", "kxp.type")[:3] == ["0x02", "0x04", "0x05"]
            assert c("client", "kxp.cipher_suite") == s("server", "kxp.cipher_suite") == ["0x1301"]
            assert c("client", "kxp.group") == s("server", "kxp.group") == ["0x0017"]
            assert [len(v) for v in c("client", "kxp.key_share")] == [2 * 65]
            assert [len(v) for v in s("server", "kxp.key_share")] == [2 * 65]
            assert s("server", "kxp.sig.scheme") == ["0x0804"]
            assert s("server", "kxp.server_key") == [server_key]
            assert [len(v) for v in s("server", "kxp.verify_data")] == [2 * 32]
        else:
            assert c("client", "kxp.type")[:2] == ["0x01", "0x05"]
            assert s("server", "kxp.type")[:2] == ["0x02", "0x05"]
            assert c("client", "kxp.psk_identity") == [IDENTITY]
            assert c("client", "kxp.cipher_suite") == ["0x1302"]
            assert s("server", "kxp.server_key") == s("server", "kxp.sig.scheme") == []
        # three messages and close_notify each way; a record's inner plaintext is 1 + content
        lengths = [str(len(m.encode()) + 1) for m in MESSAGES[method]]
        for side in ("client", "server"):
            assert conv.values(side, "kxp.record.seq") == ["0", "1", "2", "3"]
            assert conv.values(side, "kxp.record.ciphertext_len")[:3] == lengths


# --------------------------------------------------------------------------- kexlab decrypt


def _decrypt(lab: Lab, name: str, *args: str) -> dict[str, Any]:
    """``kexlab decrypt CAPTURE ARGS --json`` (the command, in-process): sessions by method."""
    app = typer.Typer()
    app.command()(decrypt)
    result = CliRunner().invoke(app, [str(lab.capture(name)), *args, "--json"])
    assert result.exit_code == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    assert doc["warnings"] == []
    by_kex = {s["kex"]: s for s in doc["sessions"]}
    assert len(by_kex) == len(doc["sessions"])
    doc["by_kex"] = by_kex
    return doc


def _plaintexts(session: dict[str, Any], direction: str) -> list[str]:
    return [
        bytes.fromhex(r["plaintext_hex"]).decode()
        for r in session["records"]
        if r["direction"] == direction and r["content_type"] == "application_data"
    ]


def _assert_exact(session: dict[str, Any], method: str) -> None:
    assert session["decrypted"] is True and session["reason"] == "", session["reason"]
    assert _plaintexts(session, "client->server") == list(MESSAGES[method])
    assert _plaintexts(session, "server->client") == list(MESSAGES[method])  # the echoes
    assert all(r["plaintext_hex"] is not None for r in session["records"])


@pytest.mark.parametrize("name", CAPTURES)
def test_key_log_decrypts_every_session_exactly(lab: Lab, name: str) -> None:
    keylog = lab.server_keylog if name == "server" else lab.client_keylog
    sessions = _decrypt(lab, name, "--keylog", str(keylog))["by_kex"]
    assert sorted(sessions) == sorted(
        METHODS if name in ("tcpdump", "server") else (name.removeprefix("client-"),)
    )
    for method, session in sessions.items():
        assert session["method"] == "key log"
        assert session["handshake_complete"] is True
        port = lab.client_ports[method]
        assert session["client"] == f"127.0.0.1:{port}"
        assert session["server"] == f"127.0.0.1:{lab.port}"
        _assert_exact(session, method)


@pytest.mark.parametrize("name", ["tcpdump", "server", "client-rsa", "client-dhe"])
def test_leaked_rsa_key_opens_rsa_but_dhe_stays_forward_secret(lab: Lab, name: str) -> None:
    sessions = _decrypt(lab, name, "--rsa-key", str(lab.home / "server-rsa.pem"))["by_kex"]
    if "rsa" in sessions:
        assert sessions["rsa"]["method"].startswith("RSA private key")
        _assert_exact(sessions["rsa"], "rsa")
    if "dhe" in sessions:
        dhe = sessions["dhe"]
        assert dhe["decrypted"] is False and dhe["forward_secret"] is True
        assert dhe["reason"].startswith("forward secret")
        assert {r["content_type"] for r in dhe["records"]} == {"encrypted"}
    assert "rsa" in sessions or "dhe" in sessions


@pytest.mark.parametrize("name", ["server", "client-psk"])
def test_psk_argument_opens_the_psk_session(lab: Lab, name: str) -> None:
    sessions = _decrypt(lab, name, "--psk", f"{IDENTITY}={lab.psk_hex}")["by_kex"]
    assert sessions["psk"]["method"] == f"PSK {IDENTITY!r} from --psk"
    _assert_exact(sessions["psk"], "psk")
    if "rsa" in sessions:
        assert sessions["rsa"]["decrypted"] is False


def test_psk_published_on_mqtt_is_found_in_the_tcpdump_capture_and_used(lab: Lab) -> None:
    doc = _decrypt(lab, "tcpdump")  # no key at all: only what crossed the wire
    (leak,) = doc["psks_found"]
    assert leak["identity"] == IDENTITY and leak["key"] == lab.psk_hex
    assert leak["topic"] == f"kexlab/v1/lab/psk/{IDENTITY}"
    psk = doc["by_kex"]["psk"]
    assert "found in an MQTT PUBLISH on kexlab/v1/lab/psk/" in psk["method"]
    _assert_exact(psk, "psk")
    assert doc["by_kex"]["rsa"]["decrypted"] is False
    assert "RSA private key" in doc["by_kex"]["rsa"]["reason"]
    assert doc["by_kex"]["dhe"]["forward_secret"] is True


def test_kexlab_decrypt_process_calls_dhe_forward_secret_and_shows_the_leak(lab: Lab) -> None:
    result = _kexlab(lab.home, "decrypt", str(lab.capture("tcpdump")))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert f"PSK found on MQTT: identity {IDENTITY!r}" in text
    assert "not decrypted, forward secret: the session key came from ephemeral secp256r1" in text
    assert f"decrypted with PSK {IDENTITY!r} found in an MQTT PUBLISH" in text
    assert MESSAGES["psk"][0] in text
    assert MESSAGES["rsa"][0] not in text and MESSAGES["dhe"][0] not in text


# --------------------------------------------------------------------------- --pcap errors


def test_an_unwritable_pcap_is_one_line_and_exit_1(lab: Lab) -> None:
    missing = lab.tmp / "no-such-dir" / "x.pcap"
    client = _kexlab(lab.home, "client", f"127.0.0.1:{free_port()}", "--pcap", str(missing))
    assert client.returncode == 1 and client.stdout == ""
    assert (
        client.stderr == f"error: cannot write the capture {missing}: no such file or directory\n"
    )
    # A folder named as the output file is a usage mistake (exit 2), as `keygen -o DIR` is.
    server = _kexlab(lab.home, "server", "--port", "0", "--pcap", str(lab.tmp))
    assert server.returncode == 2
    assert server.stderr == (
        f"kexlab server: error: Invalid value for '--pcap': {lab.tmp}: a directory"
        " (see 'kexlab server --help')\n"
    )
    assert "listening" not in server.stdout


def test_a_capture_that_fails_midway_stops_once_and_spares_the_connection() -> None:
    errors: list[str] = []
    writer = PcapWriter("/dev/full")  # every flush fails: no space left on device
    tap = PcapTap(
        writer,
        ("127.0.0.1", 50000),
        ("127.0.0.1", 9700),
        initiated_by_local=True,
        on_error=errors.append,
    )
    tap.on_bytes("sent", b"KX\x01\x01")
    tap.on_bytes("received", b"more")
    tap.close()
    assert errors == ["capture stopped: no space left on device"]
    assert writer.closed
