"""`kexlab decrypt` on captures a student makes: real server and client processes.

Issue 12 items 6 (a wrong --psk is named; a failed handshake is called one), 9 (the
key as the eavesdropper shows it, base64, is accepted and said to be) and 22 (each
session's verdict under its own heading).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    KEXLAB,
    PSK_HEX,
    ServerProcess,
    home_fixture,
    run_client,
)

pytestmark = pytest.mark.usefixtures("home")
WRONG_HEX = "ff" * 32
PSK_B64 = base64.b64encode(bytes.fromhex(PSK_HEX)).decode()


def decrypt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEXLAB, "decrypt", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server's own capture: a psk session that fails (the client's key differs), then a
    good psk session, then a dhe session."""
    home = tmp_path_factory.mktemp("home")
    env = {"KEXLAB_HOME": str(home)}
    path = tmp_path_factory.mktemp("cap") / "lab.pcap"
    with ServerProcess("--psk", f"alice={PSK_HEX}", "--pcap", str(path), env=env) as srv:
        bad = run_client(srv.address, "--psk", f"alice={WRONG_HEX}", "--send", "x")
        assert bad.returncode == 1 and "decrypt_error" in bad.stderr
        good = run_client(srv.address, "--psk", f"alice={PSK_HEX}", "--send", "the vault code")
        assert good.returncode == 0, good.stderr
        dhe = run_client(srv.address, "--trust", "none", "--send", "sealed")
        assert dhe.returncode == 0, dhe.stderr
        srv.stop()
    return path


def sections(stdout: str) -> dict[str, str]:
    """Each session's text, from its heading to the next one."""
    parts = re.split(r"^(session \d+: .*)$", stdout, flags=re.MULTILINE)
    return {parts[i].split(":")[0]: parts[i] + parts[i + 1] for i in range(1, len(parts), 2)}


def test_each_verdict_is_under_its_own_heading(capture: Path) -> None:
    # Was: the verdict printed above "session N:", so it sat under the previous table.
    result = decrypt(str(capture), "--psk", f"alice={PSK_HEX}")
    assert result.returncode == 0, result.stderr
    found = sections(result.stdout)
    assert list(found) == ["session 1", "session 2", "session 3"]
    assert found["session 1"].splitlines()[1].startswith("handshake failed: ")
    assert found["session 2"].splitlines()[1].startswith("decrypted with PSK 'alice' from --psk")
    assert "the vault code" in found["session 2"]
    assert found["session 3"].splitlines()[1].startswith("not decrypted, forward secret")
    # The heading is one line, whatever the method's length (it was the table's title).
    assert re.search(
        r"^session 3: 127\.0\.0\.1:\d+ → 127\.0\.0\.1:\d+  dhe/x25519/aes256$",
        result.stdout,
        re.MULTILINE,
    )


def test_a_handshake_that_failed_is_called_so(capture: Path) -> None:
    # Was: "not decrypted: 1 PSK(s) ... were tried and none matches the server's FINISHED".
    for args in ([], ["--psk", f"alice={PSK_HEX}"], ["--psk", f"alice={WRONG_HEX}"]):
        result = decrypt(str(capture), *args)
        first = sections(result.stdout)["session 1"]
        assert "handshake failed: the client sent alert decrypt_error" in first, (
            args,
            result.stdout,
        )
        assert "no session keys were agreed" in " ".join(first.split())
    # The server's key matches its own FINISHED: the client was the one with another key.
    result = decrypt(str(capture), "--psk", f"alice={PSK_HEX}")
    first = " ".join(sections(result.stdout)["session 1"].split())
    assert (
        "note: the PSK 'alice' from --psk matches the server's FINISHED: the server held" in first
    )


def test_a_wrong_psk_is_named(capture: Path) -> None:
    result = decrypt(str(capture), "--psk", f"alice={WRONG_HEX}")
    second = " ".join(sections(result.stdout)["session 2"].split())
    assert (
        "not decrypted: no PSK for identity 'alice' matches the server's FINISHED:"
        " tried PSK 'alice' from --psk" in second
    )


def test_the_key_in_base64_as_the_eavesdropper_saw_it(capture: Path) -> None:
    # Was: "the key is not hex", with nothing saying how to convert.
    result = decrypt(str(capture), "--psk", f"alice={PSK_B64}")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"note: --psk alice=...: read the key as base64 (32 bytes, hex {PSK_HEX[:8]}…)"
    ]
    assert "the vault code" in sections(result.stdout)["session 2"]


def test_client_and_server_take_base64_too(tmp_path: Path) -> None:
    with ServerProcess("--psk", f"alice={PSK_B64}") as srv:
        srv.wait_for("psk_identities=alice")
        result = run_client(srv.address, "--psk", f"alice={PSK_B64}", "--send", "b64")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "echo: b64"
        assert "read the key as base64 (32 bytes" in result.stderr
        code, err = srv.stop()
    assert code == 0
    assert "note: --psk alice=...: read the key as base64" in err
