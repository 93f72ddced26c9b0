"""oob/mosquitto/make-lab-broker.sh: a hardened Mosquitto with TLS in a folder, without root.

Issue 12 item 11: the README had no commands for the CA and the certificate, the TLS
listener had no bind address, and a missing --mqtt-ca ended in the raw
"[SSL: CERTIFICATE_VERIFY_FAILED] ... (_ssl.c:1006)". Run as the README says, then
connect as a student would, right and wrong.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from external_tools import require_tool
from oob_brokers import MOSQUITTO_DIR, free_port
from support_net import KEXLAB

SCRIPT = MOSQUITTO_DIR / "make-lab-broker.sh"


@dataclass
class Lab:
    folder: Path
    plain: int
    tls: int
    other: int  # a TLS listener on 127.0.0.2, a name the certificate does not hold
    output: str

    def psk_send(self, url: str, *args: str) -> subprocess.CompletedProcess[str]:
        user = "kexlab-client"
        return subprocess.run(
            [KEXLAB, "psk", "send", "--server-id", "lab", "--oob", url, "--mqtt-username", user,
             "--mqtt-password-file", str(self.folder / f"{user}.password"), *args],
            capture_output=True, text=True, timeout=30, env={**os.environ, "KEXLAB_MQTT_CA": ""},
        )  # fmt: skip


def _wait(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    mosquitto = require_tool("mosquitto")
    folder = tmp_path_factory.mktemp("lab") / "broker"
    made = subprocess.run(
        ["sh", str(SCRIPT), str(folder)], capture_output=True, text=True, timeout=60
    )
    assert made.returncode == 0, made.stderr
    plain, tls, other = free_port(), free_port(), free_port()
    conf = folder / "hardened.conf"
    text = conf.read_text()
    # The shipped ports are in use on a shared machine: the test moves them, nothing else.
    text = text.replace("listener 1883 127.0.0.1", f"listener {plain} 127.0.0.1")
    text = text.replace("listener 8883 127.0.0.1", f"listener {tls} 127.0.0.1")
    text += (
        f"\nlistener {other} 127.0.0.2\ncertfile {folder}/broker.crt\nkeyfile {folder}/broker.key\n"
    )
    conf.write_text(text)
    log = (folder / "mosquitto.log").open("wb")
    proc = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=log, stderr=log)
    try:
        _wait(plain)
        _wait(tls)
        _wait(other, "127.0.0.2")
        yield Lab(folder, plain, tls, other, made.stdout)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_the_script_makes_every_file_private(lab: Lab) -> None:
    names = {p.name for p in lab.folder.iterdir()} - {"mosquitto.log"}
    assert names == {
        "ca.crt", "ca.key", "broker.crt", "broker.key", "passwd", "kexlab.acl", "hardened.conf",
        "kexlab-server.password", "kexlab-client.password",
    }  # fmt: skip
    for name in names:
        assert stat.S_IMODE((lab.folder / name).stat().st_mode) == 0o600, name
    conf = (lab.folder / "hardened.conf").read_text()
    assert f"password_file {lab.folder}/passwd" in conf
    assert "/etc/mosquitto" not in conf
    assert f"--mqtt-ca {lab.folder}/ca.crt" in lab.output


def test_shipped_tls_listener_is_loopback_like_the_plain_one() -> None:
    conf = (MOSQUITTO_DIR / "hardened.conf").read_text()
    assert re.search(r"(?m)^# listener 8883 127\.0\.0\.1$", conf)
    assert re.search(r"(?m)^listener 1883 127\.0\.0\.1$", conf)


def test_mqtts_with_the_lab_ca_works(lab: Lab) -> None:
    for host in ("localhost", "127.0.0.1"):
        result = lab.psk_send(f"mqtts://{host}:{lab.tls}", "--mqtt-ca", str(lab.folder / "ca.crt"))
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"psk-[0-9a-f]{16}=[0-9a-f]{64}\n", result.stdout)


def test_without_the_ca_the_error_names_the_option(lab: Lab) -> None:
    result = lab.psk_send(f"mqtts://localhost:{lab.tls}")
    assert result.returncode == 1
    assert result.stderr == (
        f"error: MQTT broker mqtts://localhost:{lab.tls} as 'kexlab-client' unavailable: the"
        " broker's TLS certificate is not signed by a CA this machine trusts"
        " (CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate): give the CA"
        " that signed it with --mqtt-ca FILE (or KEXLAB_MQTT_CA)\n"
    )


def test_a_name_the_certificate_does_not_hold(lab: Lab) -> None:
    result = lab.psk_send(f"mqtts://127.0.0.2:{lab.other}", "--mqtt-ca", str(lab.folder / "ca.crt"))
    assert result.returncode == 1
    assert "the broker's TLS certificate is not for '127.0.0.2' (CERTIFICATE_VERIFY_FAILED:" in (
        result.stderr
    )
    assert "connect with a name the certificate holds" in result.stderr


def test_mqtts_on_the_plain_port_says_which_port_is_which(lab: Lab) -> None:
    result = lab.psk_send(f"mqtts://localhost:{lab.plain}", "--mqtt-ca", str(lab.folder / "ca.crt"))
    assert result.returncode == 1
    assert f"connection reset by peer: is port {lab.plain} a TLS listener?" in result.stderr


def test_the_plain_listener_still_wants_the_login(lab: Lab) -> None:
    ok = lab.psk_send(f"mqtt://127.0.0.1:{lab.plain}")
    assert ok.returncode == 0, ok.stderr
    anonymous = subprocess.run(
        [KEXLAB, "psk", "send", "--server-id", "lab", "--oob", f"mqtt://127.0.0.1:{lab.plain}"],
        capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("KEXLAB_MQTT")},
    )  # fmt: skip
    assert anonymous.returncode == 1
    assert "login refused" in anonymous.stderr
