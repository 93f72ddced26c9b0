"""`kexlab local-lab`: the out-of-band lab on one machine, without Docker (issue 12 wish list).

One process runs a real broker, a real eavesdropper (mosquitto_sub), a real server and
the client script, labels every line with who printed it, and stops all of them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from external_tools import require_tool
from oob_brokers import free_port
from support_net import KEXLAB

from cli.local_lab import Lab, port_free, tmux_panes


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], int, int]:
    require_tool("mosquitto")
    require_tool("mosquitto_sub", "the eavesdropper")
    folder = tmp_path_factory.mktemp("local-lab")
    port, broker_port = free_port(), free_port()
    result = subprocess.run(
        [KEXLAB, "local-lab", "--once", "--port", str(port), "--broker-port", str(broker_port),
         "--dir", str(folder)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    return result, port, broker_port


def lines(result: subprocess.CompletedProcess[str], label: str) -> list[str]:
    return [
        line.split(" | ", 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith(f"{label:<6} | ")
    ]


def test_every_line_says_who_printed_it(run) -> None:  # type: ignore[no-untyped-def]
    result, _port, _broker = run
    assert result.returncode == 0, result.stdout + result.stderr
    labels = {line.split(" | ", 1)[0].strip() for line in result.stdout.splitlines()}
    assert labels == {"lab", "broker", "eve", "server", "client"}, labels


def test_the_script_shows_the_key_go_by_and_be_used(run) -> None:  # type: ignore[no-untyped-def]
    result, port, _broker = run
    eve = lines(result, "eve")
    leak = [line for line in eve if re.match(r"kexlab/v1/lab/psk/psk-[0-9a-f]{16} \{", line)]
    assert len(leak) == 1, eve  # the PSK in the clear on the open broker
    client = lines(result, "client")
    assert "echo: the vault code is 0451" in client
    assert "echo: meet me at 9" in client
    assert any(line.startswith("pinned server key SHA256:") for line in client)
    server = lines(result, "server")
    assert f"listening: address=127.0.0.1:{port}" in " ".join(server)
    assert "stopped: connections_closed=True" in server
    # No stranger's connection: the lab waits for each program's word, it does not probe.
    assert not [line for line in server if "connection failed" in line], server
    # What eve does with it: the recorded psk session opens with the key she read.
    text = "\n".join(eve)
    assert re.search(r"decrypted with PSK 'psk-[0-9a-f]{16}' from --psk", text)
    assert "the vault code is 0451" in text.split("session 2")[0]
    assert "not decrypted, forward secret" in text  # the dhe session stays sealed


def test_nothing_outlives_the_lab(run) -> None:  # type: ignore[no-untyped-def]
    _result, port, broker_port = run
    assert port_free(port) and port_free(broker_port)


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [KEXLAB, "local-lab", "--once", "--port", str(port)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr == f"error: port {port} is in use on 127.0.0.1: choose another with --port\n"
    )


def test_without_mosquitto_the_embedded_broker_stands_in(tmp_path: Path) -> None:
    lab = Lab(tmp_path, 9700, 1883)
    lab.mosquitto = None
    assert lab.broker() == [sys.executable, "-m", "cli.main", "broker", "--port", "1883"]


def test_tmux_layout(tmp_path: Path) -> None:
    panes = tmux_panes(Lab(tmp_path, 9700, 1883))
    assert list(panes) == ["broker", "eve", "server", "client"]
    assert "mosquitto" in str(panes["broker"][0]) or "cli.main broker" in str(panes["broker"][0])
    assert "trap" in str(panes["broker"][0])  # mosquitto stops with its pane (it reloads on HUP)
    assert "kexlab/#" in str(panes["eve"][0])
    assert "cli.main server --port 9700 --oob mqtt://127.0.0.1:1883" in str(panes["server"][0])
    command, keys = panes["client"]
    assert command is None  # a shell, for the student
    # The client pane gets the first command typed in, not run: Enter is the student's.
    last, enter = keys[-1]
    assert last.startswith("kexlab client 127.0.0.1:9700 --kex psk") and not enter
    assert all(enter for _text, enter in keys[:-1])


def test_tmux_for_real(tmp_path: Path) -> None:
    require_tool("tmux", "kexlab local-lab --tmux")
    port, broker_port = free_port(), free_port()
    session = f"kexlab-lab-{port}"
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    result = subprocess.run(
        [KEXLAB, "local-lab", "--tmux", "--port", str(port), "--broker-port", str(broker_port),
         "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert result.returncode == 0, result.stderr
        assert f"tmux attach -t {session}" in result.stdout
        panes = subprocess.run(
            ["tmux", "list-panes", "-t", session, "-F", "#{pane_id}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert len(panes) == 4
        deadline = time.monotonic() + 15
        while port_free(port) and time.monotonic() < deadline:  # the server pane serves
            time.sleep(0.1)
        assert not port_free(port) and not port_free(broker_port)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    # Closing the session stops everything in it: Mosquitto too, which reloads on SIGHUP.
    deadline = time.monotonic() + 10
    while not (port_free(port) and port_free(broker_port)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_free(port) and port_free(broker_port)
