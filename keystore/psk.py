"""Pre-shared keys as people write them: ``IDENTITY=HEX`` (``--psk``), alone or in a key file."""

from __future__ import annotations

import stat
from pathlib import Path

from protocol import check_psk_identity
from protocol.constants import MIN_PSK_LEN


def parse_psk_spec(spec: str) -> tuple[str, bytes]:
    """``IDENTITY=HEX`` -> (identity, key): a §3 identity and at least 16 bytes; ValueError."""
    identity, sep, hex_key = spec.partition("=")
    if not sep:
        raise ValueError(f"{spec!r} is not IDENTITY=HEX")
    identity = check_psk_identity(identity.encode("utf-8"))
    try:
        key = bytes.fromhex(hex_key.strip())
    except ValueError:
        raise ValueError(f"the key for {identity!r} is not hex") from None
    if len(key) < MIN_PSK_LEN:
        raise ValueError(
            f"the key for {identity!r} is {len(key)} bytes; a PSK is at least {MIN_PSK_LEN}"
            " bytes, random (e.g. openssl rand -hex 32)"
        )
    return identity, key


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
