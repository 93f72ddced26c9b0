"""Pre-shared keys as people write them: ``IDENTITY=KEY`` (``--psk`` of every command).

KEY is hex (``openssl rand -hex 32``, what ``kexlab psk send`` prints) or base64 (what
the MQTT payload of §8 carries, so what an eavesdropper copies): both are read, and
``PskSpec.encoding`` says which was, for the line that tells the user.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

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
