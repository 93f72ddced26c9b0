"""Published vectors and rules for the primitives KXP/1 composes: RFC 8448, 5869, 7748, 7919."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import load_vector
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from protocol.alerts import AlertCode, RemoteProtocolError
from protocol.config import ServerConfig
from protocol.constants import CipherSuite, FrameType, Group, Kex
from protocol.frames import FrameDecoder, encode_frame
from protocol.kex import FFDHE2048_P, GROUPS, FFDHEGroup, RandomSource
from protocol.keyschedule import hkdf_expand_label, hkdf_extract
from protocol.messages import Alert, ClientHello
from protocol.server_connection import ServerConnection

RFC8448_STEPS: list[dict[str, Any]] = load_vector("rfc8448-key-schedule.json")["steps"]

# RFC 7748 §6.1 (Curve25519 Diffie-Hellman).
ALICE_PRIVATE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PRIVATE = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

# u-coordinates of small order (0, 1, a point of order 8, p-1) whose x25519 output is all zero.
SMALL_ORDER = {
    "zero": "00" * 32,
    "one": "01" + "00" * 31,
    "order8": "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "p-1": "ec" + "ff" * 30 + "7f",
}


def scripted(value: bytes) -> RandomSource:
    """An rng that hands out exactly ``value`` once, for a draw of exactly its length."""
    values = [value]

    def rng(n: int) -> bytes:
        assert values, "drew twice"
        assert n == len(value), f"drew {n} bytes, expected {len(value)}"
        return values.pop()

    return rng


def _step_id(step: dict[str, Any]) -> str:
    return f"{step['op']}-{step.get('name') or step['label']}".replace(" ", "_")


@pytest.mark.parametrize("step", RFC8448_STEPS, ids=[_step_id(s) for s in RFC8448_STEPS])
def test_rfc8448_key_schedule(step: dict[str, Any]) -> None:
    """RFC 8448 §3 (simple 1-RTT handshake): HKDF-Extract and HKDF-Expand-Label with "tls13 "."""
    if step["op"] == "extract":
        out = hkdf_extract(hashes.SHA256(), bytes.fromhex(step["salt"]), bytes.fromhex(step["ikm"]))
    else:
        assert step["op"] == "expand_label"
        out = hkdf_expand_label(
            hashes.SHA256(),
            bytes.fromhex(step["secret"]),
            step["label"].encode("ascii"),
            bytes.fromhex(step["context"]),
            step["length"],
            prefix=b"tls13 ",
        )
    assert out.hex() == step["out"]


def test_rfc8448_file_covers_both_operations() -> None:
    """RFC 8448 §3: the file exercises Extract and Expand-Label, with and without a context."""
    ops = {s["op"] for s in RFC8448_STEPS}
    assert ops == {"extract", "expand_label"}
    contexts = {bool(s["context"]) for s in RFC8448_STEPS if s["op"] == "expand_label"}
    assert contexts == {True, False}


def test_rfc8448_prefix_matters() -> None:
    """RFC 8446 §7.1 vs docs/protocol.md §5: the default "kexlab " prefix gives another output."""
    step = next(s for s in RFC8448_STEPS if s["op"] == "expand_label")
    out = hkdf_expand_label(
        hashes.SHA256(),
        bytes.fromhex(step["secret"]),
        step["label"].encode("ascii"),
        bytes.fromhex(step["context"]),
        step["length"],
    )
    assert len(out) == step["length"] and out.hex() != step["out"]


def test_rfc5869_test_case_1() -> None:
    """RFC 5869 Appendix A.1 (test case 1, HKDF-SHA256): PRK by hkdf_extract, OKM by HKDFExpand."""
    ikm = bytes([0x0B] * 22)
    salt = bytes(range(0x00, 0x0D))
    info = bytes(range(0xF0, 0xFA))
    prk = hkdf_extract(hashes.SHA256(), salt, ikm)
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = HKDFExpand(hashes.SHA256(), 42, info).derive(prk)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_rfc7748_x25519() -> None:
    """RFC 7748 §6.1: Alice's and Bob's public keys and their shared secret, through GROUPS."""
    group = GROUPS[Group.X25519]
    assert group.share_len == 32
    alice = group.generate(scripted(bytes.fromhex(ALICE_PRIVATE)))
    bob = group.generate(scripted(bytes.fromhex(BOB_PRIVATE)))
    assert alice.public.hex() == ALICE_PUBLIC
    assert bob.public.hex() == BOB_PUBLIC
    assert alice.exchange(bob.public).hex() == SHARED
    assert bob.exchange(alice.public).hex() == SHARED


@pytest.mark.parametrize("point", list(SMALL_ORDER.values()), ids=list(SMALL_ORDER))
def test_rfc7748_small_order_share_is_illegal_parameter(point: str) -> None:
    """RFC 7748 §6.1 (all-zero output check) and docs/protocol.md §2: a small-order x25519 share
    gives the all-zero secret and is refused with illegal_parameter."""
    alice = GROUPS[Group.X25519].generate(scripted(bytes.fromhex(ALICE_PRIVATE)))
    with pytest.raises(RemoteProtocolError) as exc:
        alice.exchange(bytes.fromhex(point))
    assert exc.value.alert is AlertCode.ILLEGAL_PARAMETER


def test_all_zero_share_in_client_hello_is_refused_on_the_wire() -> None:
    """RFC 7748 §6.1 and docs/protocol.md §2, §7: a server sent an all-zero x25519 share answers
    with a plaintext ALERT illegal_parameter."""
    cfg = ServerConfig(
        kex_methods=frozenset({Kex.DHE}),
        cipher_suites=(CipherSuite.AES_128_GCM_SHA256,),
        groups=(Group.X25519,),
    )
    server = ServerConnection(cfg)
    hello = ClientHello(bytes(32), Kex.DHE, CipherSuite.AES_128_GCM_SHA256, Group.X25519, bytes(32))
    server.receive_data(encode_frame(FrameType.CLIENT_HELLO, hello.encode()))
    with pytest.raises(RemoteProtocolError) as exc:
        server.next_event()
    assert exc.value.alert is AlertCode.ILLEGAL_PARAMETER
    decoder = FrameDecoder()
    decoder.feed(server.data_to_send())
    frame = decoder.next_frame()
    assert frame is not None and frame.type is FrameType.ALERT and decoder.buffered == 0
    assert Alert.decode(frame.payload).code == AlertCode.ILLEGAL_PARAMETER


FFDHE_EXPONENT_BITS = {Group.FFDHE2048: 225, Group.FFDHE3072: 275}


@pytest.mark.parametrize("group", list(FFDHE_EXPONENT_BITS), ids=lambda g: g.name.lower())
def test_rfc7919_short_exponent(group: Group) -> None:
    """RFC 7919 §5.2 and docs/protocol.md §2: the private exponent has 225 (ffdhe2048) or 275
    (ffdhe3072) random bits, drawn as whole bytes and masked; the share is 2^x mod p."""
    impl = GROUPS[group]
    assert isinstance(impl, FFDHEGroup)
    bits = FFDHE_EXPONENT_BITS[group]
    draw = (bits + 7) // 8
    alice = impl.generate(scripted(b"\xff" * draw))  # every bit set: masked to 2^bits - 1
    x = (1 << bits) - 1
    assert alice.public == pow(2, x, impl.p).to_bytes(impl.share_len, "big")
    bob = impl.generate(scripted(bytes(range(1, draw + 1))))
    y = int.from_bytes(bytes(range(1, draw + 1)), "big") & ((1 << bits) - 1)
    assert bob.public == pow(2, y, impl.p).to_bytes(impl.share_len, "big")
    shared = pow(2, x * y, impl.p).to_bytes(impl.share_len, "big")
    assert alice.exchange(bob.public) == bob.exchange(alice.public) == shared


def test_rfc7919_exponent_is_rejection_sampled() -> None:
    """An exponent under 2 is drawn again (x = 1, then x = 0, then x = 5)."""
    impl = GROUPS[Group.FFDHE2048]
    draws = [(1).to_bytes(29, "big"), bytes(29), (5).to_bytes(29, "big")]

    def rng(n: int) -> bytes:
        assert n == 29
        return draws.pop(0)

    key = impl.generate(rng)
    assert draws == []
    assert key.public == pow(2, 5, int(FFDHE2048_P, 16)).to_bytes(256, "big")


def test_full_length_exponent_group_draws_the_share_length() -> None:
    """Without exponent_bits the exponent is as long as the prime (how the vectors were made)."""
    impl = FFDHEGroup(Group.FFDHE2048, FFDHE2048_P)
    assert impl.exponent_bits == 2048
    x = int(FFDHE2048_P, 16) - 2
    key = impl.generate(scripted(x.to_bytes(256, "big")))
    assert key.public == pow(2, x, int(FFDHE2048_P, 16)).to_bytes(256, "big")
