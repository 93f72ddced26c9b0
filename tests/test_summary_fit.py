"""Issue 12 item 20: the handshake summary and the server's log at 80 columns.

A terminal cuts a long line wherever the column ends: inside a word, through the
fingerprint a student must compare. On a terminal the lines break between their parts;
to a file or a pipe each stays one line for scripts. Both sides show one fingerprint form.
"""

from __future__ import annotations

import hashlib
import io
import os

from conftest import load_vector
from rich.console import Console

from explain.render import SUMMARY_INDENT, render_summary_line, summary_line
from protocol import CipherSuite, Group, HandshakeComplete, Kex
from protocol.events import HandshakeSecrets
from server.log import ServerLog

VEC = load_vector("dhe-x25519-0x1302-rsa-pss.json")
FP = hashlib.sha256(b"a server key").hexdigest()
DONE = HandshakeComplete(
    kex=Kex.DHE,
    cipher_suite=CipherSuite(int(VEC["cipher_suite"], 16)),
    group=Group(int(VEC["group"], 16)),
    server_key=b"a server key",
    server_key_sha256=FP,
    signature_scheme=0x0804,
    psk_identity="",
    client_random=bytes.fromhex(VEC["inputs"]["client_random"]),
    server_random=bytes.fromhex(VEC["inputs"]["server_random"]),
    sas=bytes.fromhex(VEC["sas"]["bytes"]),
    secrets=HandshakeSecrets(*(b"\0" * 48 for _ in range(6))),
)
SAS = f"SAS {VEC['sas']['display']}"
SHORT_FP = f"SHA256:{FP[:16]}…"


def _terminal(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)


def test_client_summary_breaks_between_parts_on_a_terminal() -> None:
    console = _terminal(80)
    printed = render_summary_line(console, DONE, 9.9, "client")
    lines = printed.splitlines()
    assert len(lines) == 2
    assert all(len(line) <= 80 for line in lines)
    assert lines[0] == "client: handshake complete: dhe/x25519/aes256/rsa_pss_rsae_sha256,"
    assert lines[1] == f"{SUMMARY_INDENT}server key {SHORT_FP}, {SAS}, 9.9 ms"
    assert console.file.getvalue() == printed + "\n"  # type: ignore[attr-defined]


def test_the_same_summary_is_one_line_in_a_pipe() -> None:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    printed = render_summary_line(console, DONE, 9.9, "client")
    assert "\n" not in printed and len(printed) > 80
    assert printed == summary_line(DONE, 9.9, "client")


def test_no_part_is_ever_split() -> None:
    whole = summary_line(DONE, 9.9, "client")
    for width in range(20, len(whole) + 1):
        fitted = summary_line(DONE, 9.9, "client", width=width)
        assert SHORT_FP in fitted and SAS in fitted, width
        assert " ".join(fitted.split()) == " ".join(whole.split()), width
        if width >= 70:  # wide enough for every part: no line is longer than the terminal
            assert max(len(line) for line in fitted.splitlines()) <= width, (width, fitted)


def test_the_comma_of_a_broken_line_fits_too() -> None:
    # A line exactly as wide as the terminal, then its comma: the comma wrapped alone.
    head = summary_line(DONE, 9.9, "client").split(", SAS")[0]
    fitted = summary_line(DONE, 9.9, "client", width=len(head))
    assert all(len(line) <= len(head) for line in fitted.splitlines()), fitted


def test_server_log_at_80_columns(capsys) -> None:  # type: ignore[no-untyped-def]
    log = ServerLog("text", explain=False, show_secrets=False)
    log.console = _terminal(80)
    log.emit("key", role="rsa", fingerprint=f"SHA256:{FP}", path="/tmp/lab/home/server-rsa.pem")
    log.handshake("127.0.0.1:45792", DONE, 7.5)
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    # The full fingerprint stays whole on its line, in the client's form.
    assert f"{SUMMARY_INDENT}SHA256:{FP}" in lines
    assert lines[0] == "key: role=rsa"
    text = "\n".join(lines)
    assert SHORT_FP in text and SAS in text
    assert lines[3] == "[127.0.0.1:45792] server: handshake complete:"


def test_server_log_to_a_file_is_one_line_per_event(capsys) -> None:  # type: ignore[no-untyped-def]
    log = ServerLog("text", explain=False, show_secrets=False)
    log.console = Console(file=io.StringIO(), width=80, color_system=None)
    log.emit("key", role="rsa", fingerprint=f"SHA256:{FP}", path="/p")
    log.handshake("127.0.0.1:45792", DONE, 7.5)
    assert capsys.readouterr().out.splitlines() == [
        f"key: role=rsa SHA256:{FP} path=/p",
        f"[127.0.0.1:45792] {summary_line(DONE, 7.5, 'server')}",
    ]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_note_breaks_between_words_on_a_terminal(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import sys

    from explain.console import note_line

    note = f"first use: recorded server key SHA256:{FP} for 127.0.0.1:9700 in /tmp/lab/known_hosts"
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(
        shutil, "get_terminal_size", lambda fallback=(0, 0): os.terminal_size((80, 24))
    )
    note_line(note)
    lines = terminal.getvalue().splitlines()
    assert [line.strip() for line in lines] == [
        "first use: recorded server key",
        f"SHA256:{FP} for",
        "127.0.0.1:9700 in /tmp/lab/known_hosts",
    ]
    assert all(len(line) <= 80 for line in lines)
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    note_line(note)
    assert piped.getvalue() == note + "\n"  # one line for scripts
