"""Pre-shared keys as people write them: ``IDENTITY=HEX`` (``--psk`` of every command)."""

from __future__ import annotations

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
