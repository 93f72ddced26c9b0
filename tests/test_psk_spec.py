"""keystore.read_psk_spec: a PSK as hex or as base64, and which of the two it was read as."""

from __future__ import annotations

import base64

import pytest

from keystore import psk_note, read_psk_spec

KEY = bytes(range(32))


def test_hex_and_base64_give_the_same_key() -> None:
    as_hex = read_psk_spec(f"alice={KEY.hex()}")
    as_b64 = read_psk_spec(f"alice={base64.b64encode(KEY).decode()}")
    unpadded = read_psk_spec(f"alice={base64.b64encode(KEY).decode().rstrip('=')}")
    assert as_hex.key == as_b64.key == unpadded.key == KEY
    assert (as_hex.encoding, as_b64.encoding, unpadded.encoding) == ("hex", "base64", "base64")
    assert psk_note(as_hex) is None
    assert (
        psk_note(as_b64)
        == "note: --psk alice=...: read the key as base64 (32 bytes, hex 00010203…)"
    )


def test_text_that_is_both_is_hex() -> None:
    text = "ab" * 16  # 32 hex digits: also valid base64 (24 bytes)
    assert read_psk_spec(f"a={text}").encoding == "hex"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a=zz", "the key for 'a' is not hex, and as base64 1 bytes; a PSK is at least 16 bytes"),
        ("a=0011", "the key for 'a' is 2 bytes; a PSK is at least 16 bytes"),
        ("a=####", "the key for 'a' is not hex, nor base64"),
        ("a=" + "A" * 22 + "===", "the key for 'a' is not hex, nor base64"),
        ("nokey", "'nokey' is not IDENTITY=HEX"),
    ],
)
def test_bad_keys(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_psk_spec(spec)
