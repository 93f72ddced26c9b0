"""``kexlab keygen`` through typer's CliRunner, mounted on a throwaway app as cli/main.py mounts it."""

from __future__ import annotations

import hashlib
import re
import stat
import subprocess
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from external_tools import require_tool
from typer.testing import CliRunner, Result

import cli.keygen as keygen_module
from cli.keygen import keygen
from keystore import fingerprint, load_private_key, load_public_key


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A group, so the command is reached by name as in `kexlab keygen`."""

    app.command("keygen")(keygen)
    return app


def run(*args: str) -> Result:
    return CliRunner().invoke(make_app(), ["keygen", *args])


def usage_text(result: Result) -> str:
    """stderr with typer's error box and line wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.stderr).split())


def printed_fingerprint(stdout: str) -> str:
    found = re.findall(r"^fingerprint: SHA256:([0-9a-f]{64})$", stdout, re.MULTILINE)
    assert len(found) == 1, stdout
    return str(found[0])


@pytest.mark.parametrize(
    ("args", "kind"),
    [(["--type", "rsa"], rsa.RSAPrivateKey), (["--type", "ed25519"], ed25519.Ed25519PrivateKey)],
    ids=["rsa", "ed25519"],
)
def test_keygen_writes_key_pair_and_prints_fingerprint(
    tmp_path: Path, args: list[str], kind: type
) -> None:
    out = tmp_path / "server.pem"
    result = run(*args, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pub = tmp_path / "server.pem.pub"
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    key = load_private_key(out)
    assert isinstance(key, kind)
    if isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == 2048
    assert (
        printed_fingerprint(result.stdout) == fingerprint(key) == fingerprint(load_public_key(pub))
    )
    assert f"private key: {out}" in result.stdout
    assert f"public key:  {pub}" in result.stdout


def test_keygen_output_read_by_openssl(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    out = tmp_path / "k.pem"
    result = run("--type", "rsa", "--out", str(out))
    assert result.exit_code == 0
    checked = subprocess.run(
        [openssl, "pkey", "-in", str(out), "-noout"], capture_output=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stderr
    der = subprocess.run(
        [openssl, "pkey", "-pubin", "-in", f"{out}.pub", "-outform", "DER"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert der.returncode == 0, der.stderr
    assert hashlib.sha256(der.stdout).hexdigest() == printed_fingerprint(result.stdout)


def test_keygen_bits_3072(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    result = run("--type", "rsa", "--bits", "3072", "--out", str(out))
    assert result.exit_code == 0, result.output
    key = load_private_key(out)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert "RSA-3072" in result.stdout


def test_keygen_bits_4096_reaches_the_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real 4096-bit key takes seconds; that it is made right is keystore's test. Here: the option.
    asked: list[tuple[str, int]] = []

    def fake(kind: str, bits: int = 2048) -> ed25519.Ed25519PrivateKey:
        asked.append((kind, bits))
        return ed25519.Ed25519PrivateKey.generate()

    monkeypatch.setattr(keygen_module, "generate_private_key", fake)
    result = run("--type", "RSA", "--bits", "4096", "--out", str(tmp_path / "k.pem"))
    assert result.exit_code == 0, result.output
    assert asked == [("rsa", 4096)]


@pytest.mark.parametrize("bits", ["1024", "2047", "8192", "0"])
def test_keygen_bad_bits_is_a_usage_error(tmp_path: Path, bits: str) -> None:
    out = tmp_path / "k.pem"
    result = run("--type", "rsa", "--bits", bits, "--out", str(out))
    assert result.exit_code == 2
    assert f"{bits} is not one of 2048, 3072, 4096" in usage_text(result)
    assert result.stdout == ""
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type", "ed25519", "--bits", "2048"], "applies to rsa keys only"),
        (["--type", "dsa"], "'dsa' is not one of"),
        (["--type", "rsa", "--bits", "many"], "Invalid value for '--bits'"),
    ],
)
def test_keygen_other_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "k.pem"
    result = run(*args, "--out", str(out))
    assert result.exit_code == 2
    assert message in usage_text(result)
    assert not out.exists()


@pytest.mark.parametrize(("args", "missing"), [(["--type", "rsa"], "--out"), ([], "--type")])
def test_keygen_required_options(tmp_path: Path, args: list[str], missing: str) -> None:
    extra = [] if missing == "--out" else ["--out", str(tmp_path / "k.pem")]
    result = run(*args, *extra)
    assert result.exit_code == 2
    assert f"Missing option '{missing}'" in usage_text(result)


def test_keygen_refuses_to_overwrite_then_force(tmp_path: Path) -> None:
    out = tmp_path / "k.pem"
    assert run("--type", "ed25519", "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    again = run("--type", "ed25519", "--out", str(out))
    assert again.exit_code == 1
    assert (
        again.stderr == f"error: {out} already exists; not overwriting it (--force replaces it)\n"
    )
    assert again.stdout == ""
    assert out.read_bytes() == before
    forced = run("--type", "ed25519", "--out", str(out), "--force")
    assert forced.exit_code == 0
    assert out.read_bytes() != before
    assert printed_fingerprint(forced.stdout) == fingerprint(load_private_key(out))


def test_keygen_missing_folder_is_one_error_line(tmp_path: Path) -> None:
    result = run("--type", "ed25519", "--out", str(tmp_path / "no" / "k.pem"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: cannot write ")
    assert "Traceback" not in result.output


def test_keygen_help_lists_options() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for option in ("--type", "--bits", "--out", "--force", "rsa", "ed25519"):
        assert option in result.stdout
