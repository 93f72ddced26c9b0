"""The Wireshark dissector (wireshark/kexlab.lua), checked through tshark on real captures.

Captures come from in-memory sessions of each method written with ``PcapWriter``
and from a real loopback session recorded with tcpdump. tshark runs with an
empty configuration (``WIRESHARK_CONFIG_DIR`` and ``HOME``); because it exits 0
after a Lua error, every run also checks stderr and asks for ``_ws.lua.error``.
Assertions are on fields, never on whole-text snapshots.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from external_tools import require_tool
from kxp_sessions import (
    DISSECTOR,
    PSK_IDENTITY,
    LabKeys,
    LiveResult,
    Recorded,
    Rows,
    assert_no_lua_error,
    client_config,
    lab_keys,
    live_sessions,
    record_session,
    server_config,
    tshark_env,
    tshark_fields,
)

from capture.pcap import PcapWriter
from protocol import CipherSuite, Group, Kex
from protocol.frames import encode_frame
from protocol.kex import spki
from protocol.messages import ClientHello


@pytest.fixture(autouse=True, scope="module")
def _tshark() -> None:
    """Every test here runs tshark (module scope: checked before the module's captures are made)."""
    require_tool("tshark")


FIELDS = [
    "tcp.srcport",
    "tcp.dstport",
    "kxp.type",
    "kxp.length",
    "kxp.kex",
    "kxp.cipher_suite",
    "kxp.group",
    "kxp.hello.random",
    "kxp.key_share",
    "kxp.psk_identity",
    "kxp.server_key",
    "kxp.encrypted_secret",
    "kxp.sig.scheme",
    "kxp.sig.signature",
    "kxp.verify_data",
    "kxp.alert.code",
    "kxp.alert.reason",
    "kxp.record.seq",
    "kxp.record.ciphertext_len",
    "_ws.col.Info",
]
CLIENT_MESSAGES = (b"hello over kxp", b"z" * 70000, b"bye")
SERVER_MESSAGES = (b"server says hi",)
# Ports of the in-memory sessions (client side); the server is on 9700 unless noted.
PORTS = {"rsa": 50001, "dhe": 50002, "psk": 50003, "dhe384": 50004, "alert": 50005}
HEURISTIC_PORT = 4433
HEURISTIC_CLIENT = 50006
OTHER_PORT = 4434


def session_rows(rows: list[list[str]], client_port: int) -> Rows:
    """The rows of the session whose client uses ``client_port``."""
    dicts = [dict(zip(FIELDS, row, strict=True)) for row in rows]
    return Rows(
        [d for d in dicts if d["tcp.srcport"] == str(client_port)],
        [d for d in dicts if d["tcp.dstport"] == str(client_port)],
    )


def record_lengths(messages: tuple[bytes, ...]) -> list[int]:
    """ciphertext_len of the records carrying ``messages`` (content type + content)."""
    out = []
    for msg in messages:
        for start in range(0, len(msg), 65536):
            out.append(len(msg[start : start + 65536]) + 1)
    return out


def no_lua_errors(capture: Path, home: Path, extra: tuple[str, ...] = ()) -> None:
    """No packet carries a Lua error or a malformed-packet item, and stderr is clean."""
    tshark = require_tool("tshark")
    args = [tshark, "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(capture), *extra]
    args += ["-Y", "_ws.lua.error || _ws.malformed", "-T", "fields", "-e", "frame.number"]
    args += ["-e", "_ws.expert.message"]
    proc = subprocess.run(
        args, env=tshark_env(home), capture_output=True, text=True, timeout=60, check=False
    )
    assert_no_lua_error(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", f"Lua errors or malformed packets:\n{proc.stdout}"


@dataclass
class Lab:
    """The in-memory capture and what its sessions did."""

    path: Path
    home: Path
    keys: LabKeys
    sessions: dict[str, Recorded]
    rows: list[list[str]]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """One pcap with a session of each method, an alert, a heuristic-port session and noise."""
    tmp = tmp_path_factory.mktemp("dissector")
    keys = lab_keys()
    path = tmp / "lab.pcap"
    sessions: dict[str, Recorded] = {}
    with PcapWriter(path) as writer:
        common = dict(
            client_messages=CLIENT_MESSAGES, server_messages=SERVER_MESSAGES, key_update=True
        )
        for name, kex in (("rsa", Kex.RSA), ("dhe", Kex.DHE), ("psk", Kex.PSK)):
            sessions[name] = record_session(
                writer,
                client_config(kex),
                server_config(keys),
                client_addr=("127.0.0.1", PORTS[name]),
                **common,  # type: ignore[arg-type]
            )
        sessions["dhe384"] = record_session(
            writer,
            client_config(Kex.DHE, CipherSuite.AES_256_GCM_SHA384, Group.SECP384R1),
            server_config(keys),
            client_addr=("127.0.0.1", PORTS["dhe384"]),
            client_messages=(b"a",),
        )
        sessions["alert"] = record_session(
            writer,
            client_config(Kex.PSK, psk_identity="nobody"),
            server_config(keys),
            client_addr=("127.0.0.1", PORTS["alert"]),
        )
        sessions["heuristic"] = record_session(
            writer,
            client_config(Kex.DHE),
            server_config(keys),
            client_addr=("127.0.0.1", HEURISTIC_CLIENT),
            server_addr=("127.0.0.1", HEURISTIC_PORT),
            client_messages=(b"on another port",),
        )
        noise = writer.flow(("127.0.0.1", 50007), ("127.0.0.1", OTHER_PORT))
        noise.sent(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
        noise.received(b"HTTP/1.1 200 OK\r\n\r\nKX")
        noise.close()
    home = tmp / "home"
    rows = tshark_fields(path, FIELDS, home)
    return Lab(path, home, keys, sessions, rows)


def test_no_lua_error_on_any_packet(lab: Lab) -> None:
    no_lua_errors(lab.path, lab.home)


def test_rsa_session_fields(lab: Lab) -> None:
    rows = session_rows(lab.rows, PORTS["rsa"])
    done = lab.sessions["rsa"].complete
    assert rows.values("client", "kxp.type")[:3] == ["0x01", "0x03", "0x05"]
    assert rows.values("server", "kxp.type")[:2] == ["0x02", "0x05"]
    assert rows.values("client", "kxp.kex") == ["1"]
    assert rows.values("server", "kxp.kex") == ["1"]
    assert rows.values("client", "kxp.cipher_suite") == ["0x1301"]
    assert rows.values("client", "kxp.group") == ["0x0000"]
    assert rows.values("client", "kxp.hello.random") == [done.client_random.hex()]
    assert rows.values("server", "kxp.hello.random") == [done.server_random.hex()]
    assert rows.values("server", "kxp.server_key") == [spki(lab.keys.rsa).hex()]
    (secret,) = rows.values("client", "kxp.encrypted_secret")
    assert len(secret) == 2 * 256  # RSA-OAEP under a 2048-bit key
    assert rows.values("client", "kxp.key_share") == []
    assert [len(v) for v in rows.values("client", "kxp.verify_data")] == [64]
    assert [len(v) for v in rows.values("server", "kxp.verify_data")] == [64]


def test_record_seq_and_ciphertext_length_follow_the_key_update(lab: Lab) -> None:
    rows = session_rows(lab.rows, PORTS["rsa"])
    # client: hello, 70000 bytes as 65536 + 4464, key_update, then epoch 1: bye, close_notify
    assert rows.values("client", "kxp.record.seq") == ["0", "1", "2", "3", "0", "1"]
    expected = [*record_lengths(CLIENT_MESSAGES[:2]), 2, *record_lengths(CLIENT_MESSAGES[2:]), 3]
    assert rows.values("client", "kxp.record.ciphertext_len") == [str(n) for n in expected]
    # server: key_update answer, then epoch 1: its message, close_notify
    assert rows.values("server", "kxp.record.seq") == ["0", "0", "1"]
    server_lens = [2, *record_lengths(SERVER_MESSAGES), 3]
    assert rows.values("server", "kxp.record.ciphertext_len") == [str(n) for n in server_lens]


def test_a_record_over_many_segments_is_reassembled(lab: Lab) -> None:
    rows = session_rows(lab.rows, PORTS["rsa"])
    big = [r for r in rows.client if "65537" in r["kxp.record.ciphertext_len"].split(",")]
    assert len(big) == 1
    assert big[0]["kxp.length"] == str(8 + 65537 + 16)


def test_dhe_session_fields(lab: Lab) -> None:
    rows = session_rows(lab.rows, PORTS["dhe"])
    done = lab.sessions["dhe"].complete
    assert rows.values("client", "kxp.type")[:2] == ["0x01", "0x05"]
    assert rows.values("server", "kxp.type")[:3] == ["0x02", "0x04", "0x05"]
    assert rows.values("client", "kxp.kex") == ["2"]
    assert rows.values("client", "kxp.group") == ["0x001d"]
    assert rows.values("server", "kxp.group") == ["0x001d"]
    assert [len(v) for v in rows.values("client", "kxp.key_share")] == [64]
    assert [len(v) for v in rows.values("server", "kxp.key_share")] == [64]
    assert rows.values("server", "kxp.server_key") == [spki(lab.keys.ed25519).hex()]
    assert rows.values("server", "kxp.sig.scheme") == ["0x0807"]
    assert [len(v) for v in rows.values("server", "kxp.sig.signature")] == [128]
    assert rows.values("client", "kxp.hello.random") == [done.client_random.hex()]
    assert rows.values("client", "kxp.psk_identity") == []


def test_aes256_verify_data_is_48_bytes(lab: Lab) -> None:
    rows = session_rows(lab.rows, PORTS["dhe384"])
    assert rows.values("client", "kxp.cipher_suite") == ["0x1302"]
    assert rows.values("server", "kxp.group") == ["0x0018"]
    assert [len(v) for v in rows.values("client", "kxp.verify_data")] == [96]
    assert [len(v) for v in rows.values("server", "kxp.verify_data")] == [96]
    assert [len(v) for v in rows.values("client", "kxp.key_share")] == [2 * 97]


def test_psk_session_fields(lab: Lab) -> None:
    rows = session_rows(lab.rows, PORTS["psk"])
    assert rows.values("client", "kxp.type")[:2] == ["0x01", "0x05"]
    assert rows.values("server", "kxp.type")[:2] == ["0x02", "0x05"]
    assert rows.values("client", "kxp.kex") == ["3"]
    assert rows.values("client", "kxp.psk_identity") == [PSK_IDENTITY]
    assert rows.values("server", "kxp.server_key") == []
    assert rows.values("server", "kxp.sig.scheme") == []


def test_plaintext_alert_fields(lab: Lab) -> None:
    rows = session_rows(lab.rows, PORTS["alert"])
    assert rows.values("client", "kxp.type") == ["0x01"]
    assert rows.values("client", "kxp.psk_identity") == ["nobody"]
    assert rows.values("server", "kxp.type") == ["0x15"]
    assert rows.values("server", "kxp.alert.code") == ["115"]
    assert rows.values("server", "kxp.alert.reason") == ["unknown psk identity 'nobody'"]
    assert rows.server[0]["_ws.col.Info"].startswith("ALERT unknown_psk_identity")


def test_names_not_only_numbers(lab: Lab) -> None:
    tshark = require_tool("tshark")
    args = [tshark, "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(lab.path), "-O", "kxp"]
    ports = " || ".join(f"tcp.port == {PORTS[name]}" for name in ("dhe", "alert", "rsa"))
    args += ["-Y", f"kxp && ({ports})"]
    proc = subprocess.run(
        args, env=tshark_env(lab.home), capture_output=True, text=True, timeout=60, check=False
    )
    assert_no_lua_error(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for line in (
        "Frame type: CLIENT_HELLO (0x01)",
        "Frame type: SERVER_SIGNATURE (0x04)",
        "Frame type: RECORD (0x17)",
        "Key exchange (kex): dhe (2)",
        "Key exchange (kex): rsa (1)",
        "Cipher suite: aes128 (AES-128-GCM, SHA-256) (0x1301)",
        "Group: x25519 (0x001d)",
        "Signature scheme: ed25519 (0x0807)",
        "Alert: unknown_psk_identity (115)",
    ):
        assert line in text, f"{line!r} not in the dissection"


def test_info_column_names_each_frame(lab: Lab) -> None:
    rows = session_rows(lab.rows, PORTS["dhe"])
    info = [r["_ws.col.Info"] for r in rows.client + rows.server]
    assert "CLIENT_HELLO (dhe, aes128, x25519)" in info
    assert "SERVER_HELLO (dhe, aes128, x25519), SERVER_SIGNATURE (ed25519), FINISHED" in info
    assert any(i.startswith("RECORD seq=") for i in info)


def test_heuristic_finds_kxp_on_another_port(lab: Lab) -> None:
    rows = session_rows(lab.rows, HEURISTIC_CLIENT)
    assert rows.client and rows.client[0]["tcp.dstport"] == str(HEURISTIC_PORT)
    assert rows.values("client", "kxp.type")[:2] == ["0x01", "0x05"]
    assert rows.values("server", "kxp.type")[:3] == ["0x02", "0x04", "0x05"]
    assert rows.values("client", "kxp.kex") == ["2"]
    assert rows.values("client", "kxp.record.seq")[:1] == ["0"]
    # a non-KXP conversation on another port is left alone
    assert session_rows(lab.rows, 50007).client == []
    assert all(r[1] != str(OTHER_PORT) and r[0] != str(OTHER_PORT) for r in lab.rows)


def test_port_registration_and_heuristic_are_independent(lab: Lab) -> None:
    no_heur = tshark_fields(lab.path, FIELDS, lab.home, ("--disable-heuristic", "kxp_tcp"))
    assert session_rows(no_heur, HEURISTIC_CLIENT).client == []
    assert session_rows(no_heur, PORTS["dhe"]).client != []  # port 9700 still decoded
    moved = tshark_fields(
        lab.path, FIELDS, lab.home, ("--disable-heuristic", "kxp_tcp", "-o", "kxp.port:4433")
    )
    assert session_rows(moved, HEURISTIC_CLIENT).values("client", "kxp.kex") == ["2"]
    assert session_rows(moved, PORTS["dhe"]).client == []


def test_personal_plugins_folder_install(lab: Lab, tmp_path: Path) -> None:
    home = tmp_path / "home"
    plugins = home / ".local" / "lib" / "wireshark" / "plugins"
    plugins.mkdir(parents=True)
    shutil.copy(DISSECTOR, plugins / "kexlab.lua")
    tshark = require_tool("tshark")
    args = [tshark, "-n", "-r", str(lab.path), "-Y", "kxp.type == 0x01", "-T", "fields"]
    args += ["-e", "kxp.kex"]
    proc = subprocess.run(
        args, env=tshark_env(home), capture_output=True, text=True, timeout=60, check=False
    )
    assert_no_lua_error(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "2", "3", "2", "3", "2"]


def test_malformed_frames_become_expert_items(tmp_path: Path) -> None:
    hello = ClientHello(bytes(32), 2, 0x1301, 0x001D, bytes(32), b"").encode()
    path = tmp_path / "bad.pcap"
    with PcapWriter(path) as writer:
        trailing = writer.flow(("127.0.0.1", 50100), ("127.0.0.1", 9700))
        trailing.sent(encode_frame(1, hello + b"xyz"))  # type: ignore[arg-type]
        short = writer.flow(("127.0.0.1", 50101), ("127.0.0.1", 9700))
        short.sent(encode_frame(1, hello[:-10]))  # type: ignore[arg-type]
        version = writer.flow(("127.0.0.1", 50102), ("127.0.0.1", 9700))
        version.sent(b"KX\x02\x01" + len(hello).to_bytes(4, "big") + hello)
        overflow = writer.flow(("127.0.0.1", 50103), ("127.0.0.1", 9700))
        overflow.sent(b"KX\x01\x01" + (16385).to_bytes(4, "big") + b"\x00" * 16)
        unknown = writer.flow(("127.0.0.1", 50104), ("127.0.0.1", 9700))
        unknown.sent(b"KX\x01\x09\x00\x00\x00\x00")
        record = writer.flow(("127.0.0.1", 50105), ("127.0.0.1", 9700))
        record.sent(encode_frame(0x17, b"\x00" * 10))  # type: ignore[arg-type]
    fields = ["tcp.srcport", "kxp.type", "_ws.expert.message"]
    rows = {r[0]: r for r in tshark_fields(path, fields, tmp_path / "home")}
    assert "trailing byte(s)" in rows["50100"][2]
    assert "cut short" in rows["50101"][2]
    assert "Unsupported version" in rows["50102"][2]
    assert "exceeds the frame type's limit" in rows["50103"][2]
    assert "Unknown frame type" in rows["50104"][2]
    assert "under 25 bytes" in rows["50105"][2]
    for row in rows.values():
        assert "Lua Error" not in row[2]


# --------------------------------------------------------------------------- real capture


@dataclass
class Live:
    """A tcpdump capture of real sessions over 127.0.0.1."""

    path: Path
    home: Path
    port: int
    results: dict[str, LiveResult]


LIVE_MESSAGES = (b"ping over loopback", b"y" * 100000, b"last")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Live:
    """One tcpdump run around an rsa, a dhe and a psk session with an echo server."""
    require_tool("tcpdump")
    tmp = tmp_path_factory.mktemp("live")
    path = tmp / "lo.pcap"
    port, results = asyncio.run(live_sessions(path, lab_keys(), LIVE_MESSAGES))
    for result in results.values():
        assert result.echoes == list(LIVE_MESSAGES)
    return Live(path, tmp / "home", port, results)


def test_tcpdump_capture_of_each_method(live: Live) -> None:
    assert live.port != 9700  # only the heuristic can find these sessions
    rows = tshark_fields(live.path, FIELDS, live.home)
    no_lua_errors(live.path, live.home)
    expected = {"rsa": ("1", ["0x02", "0x05"]), "dhe": ("2", ["0x02", "0x04", "0x05"])}
    expected["psk"] = ("3", ["0x02", "0x05"])
    for name, (kex, server_first) in expected.items():
        result = live.results[name]
        s = session_rows(rows, result.client_port)
        assert s.values("client", "kxp.type")[0] == "0x01", name
        assert s.values("client", "kxp.kex") == [kex], name
        assert s.values("client", "kxp.hello.random") == [result.complete.client_random.hex()]
        assert s.values("server", "kxp.type")[: len(server_first)] == server_first, name
        # hello, 100000 bytes as 65536 + 34464, key_update, last, close_notify
        assert s.values("client", "kxp.record.seq") == ["0", "1", "2", "3", "0", "1"], name
        lens = s.values("client", "kxp.record.ciphertext_len")
        assert lens[:3] == ["19", "65537", "34465"], name
    psk = session_rows(rows, live.results["psk"].client_port)
    assert psk.values("client", "kxp.psk_identity") == [PSK_IDENTITY]
    dhe = session_rows(rows, live.results["dhe"].client_port)
    assert dhe.values("client", "kxp.group") == ["0x001d"]
    assert dhe.values("server", "kxp.sig.scheme") == ["0x0807"]
