"""docs/wireshark.md followed literally: install the plugin as it says, run its examples.

Issue 12 item 7: after the doc's own install step its examples (still with
`-X lua_script:`) failed with "there cannot be two protocols with the same description",
and the text promised names where `-T fields` prints numbers. Here the install commands
run as written (in a HOME of the test's own), every `$ tshark ...` example runs on a
capture of the sessions the doc describes, and what the doc shows must be what tshark
prints (frame numbers and times aside).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from external_tools import require_tool
from support_net import PSK_HEX, REPO, ServerProcess, run_client

DOC = REPO / "docs" / "wireshark.md"
WRONG = "ff" * 32


def examples(text: str) -> list[tuple[str, list[str]]]:
    """Every ``$ command`` in the doc's code blocks, with the output lines shown under it."""
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = lines[i][2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + lines[i].strip()
            i += 1
            output = []
            while i < len(lines) and not lines[i].startswith("$ "):
                output.append(lines[i])
                i += 1
            found.append((command, output))
    return found


def install_commands(text: str) -> str:
    """The sh block of the Install section, as a student pastes it."""
    section = text.split("## Install", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)  # type: ignore[union-attr]


def normal(line: str) -> str:
    """A line without what changes on every run: frame number, time, random bytes."""
    line = re.sub(r"^\s*\d+\s+\d+\.\d+\s+", "", line)
    line = re.sub(r"\b[0-9a-f]{32,}\b", "HEX", line)
    return " ".join(line.split())


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME with the plugin installed as the doc says, and lo.pcap: the doc's sessions."""
    require_tool("tshark", "the doc's examples")
    lab = tmp_path_factory.mktemp("wireshark-doc")
    env = {**os.environ, "HOME": str(lab), "XDG_CONFIG_HOME": str(lab / ".config")}
    subprocess.run(["sh", "-e", "-c", install_commands(DOC.read_text())], cwd=REPO, env=env,
                   check=True)  # fmt: skip
    home = {"KEXLAB_HOME": str(lab / "kexlab")}
    with ServerProcess(
        "--psk", f"alice={PSK_HEX}", "--pcap", str(lab / "lo.pcap"), env=home
    ) as srv:
        bad = run_client(srv.address, "--psk", f"alice={WRONG}", "--send", "x")
        assert "decrypt_error" in bad.stderr
        good = run_client(srv.address, "--psk", f"alice={PSK_HEX}", "--send", "hi")
        assert good.returncode == 0, good.stderr
        srv.stop()
    return lab


def tshark(lab: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(lab), "XDG_CONFIG_HOME": str(lab / ".config")}
    return subprocess.run(command, shell=True, cwd=lab, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_the_doc_has_examples_to_run() -> None:
    commands = [c for c, _ in examples(DOC.read_text())]
    assert len(commands) >= 5
    assert all(c.startswith("tshark -r lo.pcap") for c in commands), commands


@pytest.mark.parametrize(("command", "shown"), examples(DOC.read_text()), ids=lambda v: str(v)[:60])
def test_each_example_prints_what_the_doc_shows(lab: Path, command: str, shown: list[str]) -> None:
    result = tshark(lab, command)
    assert result.returncode == 0, result.stderr
    assert "Lua" not in result.stderr, result.stderr
    printed = [normal(line) for line in result.stdout.splitlines()]
    expected = [normal(line) for line in shown]
    # "…" stands for lines the doc leaves out: each run of shown lines is in order.
    position = 0
    for line in expected:
        if line == "…":
            continue
        assert line in printed[position:], (line, result.stdout)
        position = printed.index(line, position) + 1


def test_loading_it_twice_fails_as_the_doc_warns(lab: Path) -> None:
    result = tshark(lab, f"tshark -X lua_script:{REPO}/wireshark/kexlab.lua -r lo.pcap -Y kxp")
    assert "there cannot be two protocols with the same description" in result.stderr
    assert "there cannot be two protocols with the same description" in DOC.read_text()


def test_not_installed_the_x_option_loads_it(lab: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config")}
    result = subprocess.run(
        ["tshark", "-X", f"lua_script:{REPO}/wireshark/kexlab.lua", "-r", str(lab / "lo.pcap"),
         "-Y", "kxp.type == CLIENT_HELLO"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and "Lua" not in result.stderr, result.stderr
    assert result.stdout.count("CLIENT_HELLO (psk, aes256, identity=alice)") == 2
