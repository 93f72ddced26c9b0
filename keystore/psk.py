"""Pre-shared keys as people write them: ``IDENTITY=KEY`` (``--psk``), alone or in a key file.

KEY is hex (``openssl rand -hex 32``, what ``kexlab psk send`` prints) or base64 (what
the MQTT payload of §8 carries, so what an eavesdropper copies): both are read, and
``PskSpec.encoding`` says which was, for the line that tells the user.
"""

from __future__ import annotations

import base64
import binascii
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from protocol import check_psk_identity
from protocol.constants import MIN_PSK_LEN

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True)
class PskSpec:
    """A parsed ``--psk``: the identity, the key, and how the key was written."""

    identity: str
    key: bytes
    encoding: str
    """"hex" or "base64"."""


def read_psk_spec(spec: str) -> PskSpec:
    """``IDENTITY=HEX`` or ``IDENTITY=BASE64`` -> PskSpec: a §3 identity, >= 16 bytes; ValueError.

    Hex wins when the text is both (an even run of hex digits): base64 of random bytes
    almost never is, and ``kexlab psk send`` prints hex.
    """
    identity, sep, text = spec.partition("=")
    if not sep:
        raise ValueError(f"{spec!r} is not IDENTITY=HEX")
    identity = check_psk_identity(identity.encode("utf-8"))
    text = text.strip()
    if _HEX.fullmatch(text):
        key, encoding = bytes.fromhex(text), "hex"
    elif _BASE64.fullmatch(text):
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error:
            raise ValueError(_neither(identity)) from None
        encoding = "base64"
    else:
        raise ValueError(_neither(identity))
    if len(key) < MIN_PSK_LEN:
        size = (
            f"{len(key)} bytes" if encoding == "hex" else f"not hex, and as base64 {len(key)} bytes"
        )
        raise ValueError(
            f"the key for {identity!r} is {size}; a PSK is at least {MIN_PSK_LEN} bytes,"
            " random (e.g. openssl rand -hex 32)"
        )
    return PskSpec(identity, key, encoding)


def parse_psk_spec(spec: str) -> tuple[str, bytes]:
    """``IDENTITY=KEY`` -> (identity, key), KEY in hex or base64 (``read_psk_spec``); ValueError."""
    parsed = read_psk_spec(spec)
    return parsed.identity, parsed.key


def psk_note(spec: PskSpec) -> str | None:
    """The line that says a key was read as base64 (hex, the usual form, goes without saying)."""
    if spec.encoding == "hex":
        return None
    return (
        f"note: --psk {spec.identity}=...: read the key as base64 ({len(spec.key)} bytes,"
        f" hex {spec.key.hex()[:8]}…)"
    )


def _neither(identity: str) -> str:
    return (
        f"the key for {identity!r} is not hex, nor base64 (hex as openssl rand -hex 32"
        " prints it, base64 as the MQTT payload carries it)"
    )


def read_psk_file(path: Path) -> list[tuple[str, bytes]]:
    """Every ``IDENTITY=HEX`` line of a key file (blank lines and ``#`` comments skipped).

    A file keeps the key out of the process list, where ``--psk`` puts it for every local
    user to read (``ps``, ``/proc/PID/cmdline``). Errors name the line, never its key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(f"cannot read the PSK file {path}: {reason}") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"{path} line {number} is not IDENTITY=HEX")
        try:
            keys.append(parse_psk_spec(line))
        except ValueError as exc:
            raise ValueError(f"{path} line {number}: {exc}") from None
    if not keys:
        raise ValueError(f"{path} holds no IDENTITY=HEX line")
    return keys


def loose_key_file(path: Path) -> str | None:
    """Why a key file can be read by others (who then hold the key), or None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o077:
        return (
            f"{path} is readable or writable by others (mode {mode:04o}): whoever reads it"
            f" holds the key; chmod 600 {path}"
        )
    return None
