"""The docker-compose lab end to end, on a real Docker engine (docker-compose.yml, lab/).

One project is built and brought up once for the module; each test leaves it up and
healthy for the next (and brings it up itself if needed, so any one test runs alone).
Sessions go from the ``client`` container to the server by service name, over the
lab's own internal networks; the only host-side connection is the published-port test,
on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from external_tools import require_tool
from kxp_sessions import DISSECTOR, assert_no_lua_error, tshark_env
from lab_compose import (
    ALL_FILES,
    ATTACK_FILES,
    ATTACK_OOB_FILES,
    LAB_NET,
    OOB_NET,
    PROJECT,
    SAS,
    Lab,
    Session,
    base_image,
    build,
    engine_ready,
    unavailable,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(1200)]

KEY = "/var/lib/kexlab/home/server-rsa.pem"
SENT = {"rsa": "my card is 4111 1111 1111 1111", "dhe": "meet me at nine", "psk": "vault 0451"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The lab, built from this tree and up with the open broker; everything removed after."""
    engine_ready()
    captures = tmp_path_factory.mktemp("captures")
    # The host user owns the captures; as root, a user of its own shows that it is chosen.
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() else (4242, 4242)
    os.chown(captures, uid, gid)
    lab = Lab(captures, uid, gid, base_image())
    lab.remove_all()  # an earlier run that was killed
    build(lab)
    try:
        yield lab
    finally:
        lab.remove_all()
        subprocess.run(
            ["docker", "image", "prune", "-f", "--filter", "label=org.kexlab.lab"],
            capture_output=True,
            check=False,
        )


@pytest.fixture(scope="module")
def sessions(lab: Lab) -> dict[str, Session]:
    """One rsa, one dhe and one psk-over-MQTT session from the client container."""
    lab.up()
    return {
        "rsa": lab.client("--kex", "rsa", "--send", SENT["rsa"]),
        "dhe": lab.client("--kex", "dhe", "--send", SENT["dhe"]),
        "psk": lab.psk_client(SENT["psk"]),
    }


def one_error_line(session: Session) -> str:
    """The run failed with exactly one line on stderr and no traceback."""
    assert session.proc.returncode == 1, session.proc
    assert "Traceback" not in session.proc.stderr
    assert len(session.errors) == 1, session.errors
    return session.errors[0]


def test_client_before_the_server_is_up_gets_one_line(lab: Lab) -> None:
    lab.compose("stop", "sniffer", "server")
    early = lab.client("--kex", "dhe", "--send", "hi", "--timeout", "3", deps=False)
    assert one_error_line(early).startswith("error: cannot connect to server:9700")


def test_rsa_dhe_and_psk_over_mqtt_same_sas_both_sides(
    lab: Lab, sessions: dict[str, Session]
) -> None:
    for kex, session in sessions.items():
        assert session.proc.returncode == 0, session.proc
        assert session.kex == kex
        assert SENT[kex] in session.proc.stdout  # the echo came back
        assert lab.server_saw(session), f"{kex}: SAS {session.sas} not in the server log"
    peers = [ln for ln in lab.logs("server") if "handshake complete" in ln]
    assert all(ln.startswith(f"[{LAB_NET}.") for ln in peers), peers  # over the lab network
    assert "first use: recorded server key" in sessions["rsa"].proc.stderr


def test_networks_are_internal_and_the_host_holds_no_address(lab: Lab) -> None:
    lab.up()
    ip = require_tool("ip", "the host's addresses")
    for name in ("lab", "oob"):
        fmt = "{{.Id}} {{.Internal}} {{(index .IPAM.Config 0).Subnet}}"
        net = subprocess.run(
            ["docker", "network", "inspect", "-f", fmt, f"{PROJECT}_{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert net[1:] == ["true", f"{LAB_NET if name == 'lab' else OOB_NET}.0/24"], net
        bridge = f"br-{net[0][:12]}"  # the bridge driver's name for it, on this host
        if not Path("/sys/class/net", bridge).exists():
            unavailable("the engine's bridges are not on this host (a VM or remote engine)")
        addr = subprocess.run(
            [ip, "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True
        )
        assert addr.returncode == 0 and addr.stdout == "", addr  # inhibit_ipv4: not even the host


def test_eve_reads_the_psk_on_the_open_broker(lab: Lab, sessions: dict[str, Session]) -> None:
    identity = re.search(r"psk identity (\S+),", sessions["psk"].proc.stdout)
    assert identity, sessions["psk"].proc.stdout
    topic = f"kexlab/v1/lab/psk/{identity[1]} "
    line = lab.wait_log("eve", topic)[0]
    key = base64.b64decode(json.loads(line.split(topic, 1)[1])["key"])
    assert len(key) == 32


def test_sniffer_capture_dissected_and_decrypted(
    lab: Lab, sessions: dict[str, Session], tmp_path: Path
) -> None:
    wire = sorted(lab.captures.glob("wire-*.pcap"))
    assert wire, "the sniffer wrote no capture"
    for path in [*wire, *lab.captures.glob("server-*.pcap")]:
        assert path.stat().st_uid == lab.uid and path.stat().st_gid == lab.gid, path
    frames = set()
    for path in wire:
        args = [
            require_tool("tshark"),
            "-n",
            "-X",
            f"lua_script:{DISSECTOR}",
            "-r",
            str(path),
            "-Y",
            "kxp",
        ]
        proc = subprocess.run(
            [*args, "-T", "fields", "-e", "_ws.col.Info"],
            env=tshark_env(tmp_path / "ws"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert_no_lua_error(proc.stderr)
        for info in proc.stdout.split():
            frames.update(re.findall(r"\b[A-Z][A-Z_]+[A-Z]\b", info))
    assert {"CLIENT_HELLO", "SERVER_HELLO", "KEY_TRANSPORT", "SERVER_SIGNATURE"} <= frames
    assert {"FINISHED", "RECORD"} <= frames

    key = tmp_path / "leaked.pem"
    key.write_text(lab.read_file("server", KEY))
    found = {}
    for path in wire:
        out = decrypt(path, "--rsa-key", str(key))
        for session in out["sessions"]:
            found[session["kex"]] = session
        assert all(p["topic"].startswith("kexlab/v1/lab/psk/") for p in out["psks_found"])
    plain = {kex: [r["plaintext"] for r in s["records"]] for kex, s in found.items()}
    assert found["rsa"]["decrypted"] and SENT["rsa"] in plain["rsa"]
    assert not found["dhe"]["decrypted"] and found["dhe"]["forward_secret"]
    assert found["psk"]["decrypted"] and SENT["psk"] in plain["psk"]  # PSK read off MQTT
    # The server's own --pcap holds the same rsa session.
    own = decrypt(next(lab.captures.glob("server-*.pcap")), "--rsa-key", str(key))
    assert any(SENT["rsa"] in [r["plaintext"] for r in s["records"]] for s in own["sessions"])


def decrypt(capture: Path, *args: str) -> dict:  # type: ignore[type-arg]
    """``kexlab decrypt --json`` on the host."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "decrypt", str(capture), "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict = json.loads(proc.stdout)  # type: ignore[type-arg]
    return result


def verdicts(log: list[str]) -> list[str]:
    """mallory's verdict lines, WON cut to the word (the record counts vary)."""
    found = [line.split("] ", 1)[1] for line in log if re.match(r"\[\d+\] (WON|FAILED)", line)]
    return ["WON" if v.startswith("WON") else v for v in found]


def test_mallory_wins_where_the_client_lets_it_and_is_caught_by_a_known_key(
    lab: Lab, tmp_path: Path
) -> None:
    """lab/attack.yml: the client's name "server" leads to mallory, its command unchanged."""
    lab.up()
    direct = lab.client("--kex", "dhe", "--send", "direct")  # the real key is known from here on
    assert direct.proc.returncode == 0, direct.proc
    lab.compose("up", "-d", "mallory", files=ATTACK_FILES, timeout=300)
    lab.wait_log("mallory", "mitm listening on 0.0.0.0:9700", timeout=60, files=ATTACK_FILES)
    try:
        won = lab.client("--trust", "none", "--send", SENT["dhe"], files=ATTACK_FILES)
        assert won.proc.returncode == 0, won.proc
        caught = lab.client("--kex", "rsa", "--send", "x", files=ATTACK_FILES)
        assert "possible man in the middle" in one_error_line(caught)
        # psk: by hand it is safe; over the broker it is safe until mallory joins the channel.
        psk_alone = lab.psk_client("x", deps=False, files=ATTACK_FILES)
        assert "decrypt_error" in psk_alone.errors[-1]
        assert verdicts(lab.logs("mallory", files=ATTACK_FILES)) == [
            "WON",
            "FAILED: client refused our key (bad_certificate)",
            "FAILED: client refused our FINISHED: we do not hold the PSK (decrypt_error)",
        ]
        lab.compose("up", "-d", "mallory", files=ATTACK_OOB_FILES, timeout=300)  # a new mallory
        lab.wait_log(
            "mallory", "listening on the broker for PSKs", timeout=60, files=ATTACK_OOB_FILES
        )
        psk_read = lab.psk_client(SENT["psk"], deps=False, files=ATTACK_OOB_FILES)
        assert psk_read.proc.returncode == 0, psk_read.proc
        log = lab.logs("mallory", files=ATTACK_OOB_FILES)
        assert verdicts(log) == ["WON"]
        assert any(f'client → server "{SENT["psk"]}"' in line for line in log), log
        assert not lab.server_saw(won)  # the server's session was mallory's, with another SAS
        legs = sorted(lab.captures.glob("mallory-*.pcap"))
        assert legs, "mallory wrote no capture"
        streams = set()
        for path in legs:
            proc = subprocess.run(
                [require_tool("tshark"), "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(path),
                 "-Y", "kxp.type == 1", "-T", "fields", "-e", "tcp.stream", "-e", "ip.dst"],
                env=tshark_env(tmp_path / "ws"), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert_no_lua_error(proc.stderr)
            streams |= {(path.name, *line.split()) for line in proc.stdout.splitlines()}
        destinations = {dst for _, _, dst in streams}
        assert {f"{LAB_NET}.66", f"{LAB_NET}.5"} <= destinations  # both legs, one capture
    finally:
        lab.compose("rm", "-sf", "mallory", files=ATTACK_OOB_FILES, check=False)


def test_captures_rotate_and_old_ones_go(lab: Lab, sessions: dict[str, Session]) -> None:
    fast = {"KEXLAB_CAPTURE_SECONDS": "1", "KEXLAB_CAPTURE_FILES": "2"}
    before = set(lab.captures.glob("wire-*.pcap"))
    lab.compose("up", "-d", "--no-deps", "sniffer", **fast)
    lab.wait_log("sniffer", "listening on any")
    seen: set[Path] = set()
    for n in range(4):
        assert lab.client("--kex", "dhe", "--send", f"tick {n}").proc.returncode == 0
        seen |= set(lab.captures.glob("wire-*.pcap")) - before
    assert len(seen) >= 4, seen  # a new file for each session, a second apart
    assert len(list(lab.captures.glob("wire-*.pcap"))) <= 2  # older ones (and before) deleted
    lab.compose("up", "-d", "--no-deps", "sniffer")  # back to the defaults
    lab.wait_log("sniffer", "listening on any")


def test_broker_stopped_and_started_psk_works_again(lab: Lab) -> None:
    lab.up()  # the server healthy: past its start period, failures count from here on
    lost = len([ln for ln in lab.logs("server") if "unavailable" in ln])
    back = len([ln for ln in lab.logs("server") if "reconnected to mqtt://broker:1883" in ln])
    lab.compose("stop", "broker")
    lab.wait_log("server", "unavailable", count=lost + 1)
    error = one_error_line(lab.psk_client("no broker", deps=False))
    assert error.startswith("error:") and "broker:1883" in error, error
    lab.wait_health("server", "unhealthy")  # `docker compose ps` shows a server without broker
    lab.compose("start", "broker")
    lab.wait_log("server", "reconnected to mqtt://broker:1883", count=back + 1)
    # Reconnected is not yet healthy: until the next healthcheck (2 s) a ``run`` with its
    # dependencies refuses with "Container ... is unhealthy", as the lesson says.
    lab.wait_health("server")
    lab.wait_health("broker")
    again = lab.psk_client("broker is back")
    assert again.proc.returncode == 0, again.proc
    assert lab.server_saw(again)


def test_hardened_broker_eve_sees_nothing(lab: Lab) -> None:
    lab.up()
    reconnects = len([ln for ln in lab.logs("server") if "reconnected to" in ln])
    try:
        lab.compose("up", "-d", "broker", KEXLAB_BROKER="hardened")
        lab.wait_log("broker", "broker: hardened")
        lab.wait_log("server", "reconnected to mqtt://broker:1883", count=reconnects + 1)
        lab.wait_log("broker", "u'eve'")  # eve is back, logged in with her account
        session = lab.psk_client("hardened")
        assert session.proc.returncode == 0, session.proc
        assert lab.server_saw(session)  # the server read the key ...
        identity = re.search(r"psk identity (\S+),", session.proc.stdout)
        assert identity
        assert not [ln for ln in lab.logs("eve") if identity[1] in ln]  # ... eve did not
        anonymous = lab.compose(
            "run", "--rm", "-T", "--no-deps", "client",
            "mosquitto_sub", "-h", "broker", "-t", "kexlab/#", "-C", "1", "-W", "5",
            check=False,
        )  # fmt: skip
        assert "not authorised" in anonymous.stderr, anonymous
    finally:
        lab.compose("up", "-d", "broker", KEXLAB_BROKER="open")
        lab.wait_log("broker", "broker: open")


def test_captures_not_writable_sniffer_says_so_lab_runs(lab: Lab) -> None:
    lab.up()
    os.chmod(lab.captures, 0o555)
    try:
        lab.compose("up", "-d", "--no-deps", "--force-recreate", "sniffer")
        assert lab.wait_state("sniffer", "exited") == "exited 1"
        assert any("cannot write to captures/" in ln for ln in lab.logs("sniffer"))
        assert lab.state("server") == "running"
        session = lab.client("--kex", "dhe", "--send", "still here")
        assert session.proc.returncode == 0 and lab.server_saw(session)
    finally:
        os.chmod(lab.captures, 0o755)
    lab.up("sniffer")


def test_published_port_only_when_asked(lab: Lab, tmp_path: Path) -> None:
    lab.up()
    assert "127.0.0.1:" not in lab.compose("port", "server", "9700", check=False).stdout
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    lab.compose("up", "-d", files=ALL_FILES, KEXLAB_PUBLISH_PORT=str(port))
    lab.wait_log("server", "oob: MQTT: subscribed to")
    proc = subprocess.run(
        [sys.executable, "-m", "client", f"127.0.0.1:{port}", "--kex", "dhe", "--send", "from the host"],
        env={**os.environ, "KEXLAB_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = SAS.search(proc.stdout)
    assert found and lab.server_saw(Session(proc, *found.groups()))


def test_keys_survive_down_and_up(lab: Lab) -> None:
    lab.up()
    created = [ln for ln in lab.logs("server") if ln.startswith(("key-created:", "key: role=rsa"))]
    fingerprint = re.search(r"SHA256:([0-9a-f]{64})", created[0])
    assert fingerprint, created
    lab.compose("down", files=ALL_FILES)
    lab.up()
    log = lab.logs("server")
    assert not [ln for ln in log if ln.startswith("key-created:")]
    assert f"key: role=rsa SHA256:{fingerprint[1]} " in "\n".join(log)
    session = lab.client("--kex", "dhe", "--send", "same key")  # tofu: known_hosts must match
    assert session.proc.returncode == 0, session.proc
    assert "first use" not in session.proc.stderr and lab.server_saw(session)


def test_down_v_leaves_nothing_behind(lab: Lab) -> None:
    lab.up()
    assert all(lab.leftovers().values())
    lab.compose("down", "-v", "--remove-orphans", files=ALL_FILES)
    assert lab.leftovers() == {"containers": [], "networks": [], "volumes": []}
