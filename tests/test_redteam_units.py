"""The pure pieces of issue 13's fixes: bounded JSON, the log throttle, visible escapes, limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explain.console import printable
from explain.throttle import LogThrottle
from protocol.json_payload import (
    KIND_DEPTH,
    KIND_JSON,
    KIND_SIZE,
    JsonPayloadError,
    load_object,
    nesting_depth,
)
from server.limits import ADDRESS_FULL, FULL, AddressLimits, Limits, address_key

BOMB = b"[" * 3000 + b"]" * 3000  # 6 KB; the red team's 3 KB one is half of it
OBJECT_BOMB = b'{"a":' * 1500 + b"1" + b"}" * 1500


# --------------------------------------------------------------------------- bounded JSON


def test_a_nesting_bomb_is_one_more_malformed_payload() -> None:
    with pytest.raises(RecursionError):
        json.loads(BOMB)  # what the red team found: not a ValueError
    for bomb in (BOMB, OBJECT_BOMB, b'{"x": ' + b"[" * 2000 + b"]" * 2000 + b"}"):
        with pytest.raises(JsonPayloadError) as info:
            load_object(bomb, max_bytes=1 << 20)
        assert info.value.kind == KIND_DEPTH
        assert "levels deep, over 8" in str(info.value)


def test_size_is_checked_before_anything_is_decoded() -> None:
    with pytest.raises(JsonPayloadError) as info:
        load_object(b"\xff" * 5000, max_bytes=4096)
    assert info.value.kind == KIND_SIZE
    assert str(info.value) == "payload of 5000 bytes is over 4096"


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"not json", b"[1, 2]", b'"string"', b"", b"{", b'{"a": 1', b"1e999999"],
)
def test_what_is_not_a_json_object(payload: bytes) -> None:
    with pytest.raises(JsonPayloadError) as info:
        load_object(payload, max_bytes=4096)
    assert info.value.kind == KIND_JSON


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = '{"a": "[[[[[[[[[[{{{{{{{{{{", "b": "\\\\\\"[[[[[[[[[[", "c": [[1]]}'
    assert nesting_depth(text) == 3
    assert load_object(text.encode(), max_bytes=4096)["c"] == [[1]]
    assert nesting_depth("") == 0 and nesting_depth("{}") == 1


@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c, max_size=3)))
def test_depth_scan_agrees_with_the_parser(value: object) -> None:
    text = json.dumps({"v": value})

    def depth(v: object) -> int:
        return 1 + max((depth(x) for x in v), default=0) if isinstance(v, list) else 0

    assert nesting_depth(text) == 1 + depth(value)


@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_the_one_error(data: bytes) -> None:
    try:
        assert isinstance(load_object(data, max_bytes=256), dict)
    except JsonPayloadError as exc:
        assert exc.kind in (KIND_SIZE, KIND_DEPTH, KIND_JSON)


# --------------------------------------------------------------------------- the log throttle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_kind_a_minute_then_one_summary() -> None:
    clock = Clock()
    throttle = LogThrottle(clock=clock)
    assert throttle.allow("refused", "127.0.0.1")
    assert throttle.allow("bomb", "")  # another kind has its own minute
    held = [throttle.allow("refused", f"127.0.0.{1 + i % 2}") for i in range(128_000)]
    assert not any(held)
    assert throttle.summaries() == []  # the minute is not over
    assert throttle.next_due() == pytest.approx(60)
    clock.now += 61
    (summary,) = throttle.summaries()
    assert (summary.kind, summary.count, summary.seconds) == ("refused", 128_000, 61)
    assert summary.top == [("127.0.0.1", 64_000), ("127.0.0.2", 64_000)]
    assert summary.tail() == (
        "128000 more in the last 61 s (most from 127.0.0.1: 64000, 127.0.0.2: 64000)"
    )
    assert throttle.next_due() is None
    assert throttle.allow("refused")  # a new minute


def test_bursts_per_kind_and_forced_summaries() -> None:
    clock = Clock()
    throttle = LogThrottle(clock=clock, bursts={"received": 3})
    assert [throttle.allow("received") for _ in range(5)] == [True] * 3 + [False] * 2
    (summary,) = throttle.summaries(force=True)  # at shutdown, before the minute is over
    assert summary.count == 2
    with pytest.raises(ValueError):
        LogThrottle(interval=0)


def test_a_flood_of_distinct_details_keeps_the_throttle_small() -> None:
    throttle = LogThrottle(clock=Clock())
    for i in range(10_000):
        throttle.allow("topic", f"kexlab/v1/x/psk/{i}")
    (window,) = throttle._windows.values()
    assert window.held == 9_999 and len(window.details) <= 256


# --------------------------------------------------------------------------- visible escapes


def test_control_characters_are_shown_not_obeyed() -> None:
    forged = "x\n[127.0.0.1:1] server: handshake complete, psk identity admin\x1b[2J\x07"
    assert printable(forged) == (
        "x\\n[127.0.0.1:1] server: handshake complete, psk identity admin\\x1b[2J\\x07"
    )
    assert printable("\u202eevil\u200b\x9b\r\t") == "\\u202eevil\\u200b\\x9b\\r\\t"
    assert printable(b"bad \xff".decode("utf-8", "surrogateescape")) == "bad \\xff"
    assert (
        printable("plain ASCII, é, ✓, 漢字 and emoji 🙂") == "plain ASCII, é, ✓, 漢字 and emoji 🙂"
    )


@given(st.text())
def test_printable_output_is_always_printable(text: str) -> None:
    assert printable(text).isprintable()


# --------------------------------------------------------------------------- per-address limits


def test_one_address_never_holds_every_slot() -> None:
    limits = AddressLimits(Limits(max_connections=10, max_per_address=5))
    assert [limits.admit("127.0.0.1") for _ in range(7)] == [None] * 5 + [ADDRESS_FULL] * 2
    assert [limits.admit("127.0.0.2") for _ in range(5)] == [None] * 5
    assert limits.admit("127.0.0.3") == FULL
    limits.release("127.0.0.1")
    assert limits.admit("127.0.0.3") is None


def test_handshakes_are_paced_per_address() -> None:
    clock = Clock()
    limits = AddressLimits(Limits(handshake_rate=10), clock=clock)
    limits.admit("a")
    limits.admit("b")
    waits = [limits.pace("a") for _ in range(80)]
    assert waits[:20] == [0.0] * 20  # a burst of twice the rate goes at once
    assert waits[20] == pytest.approx(0.1) and waits[21] == pytest.approx(0.2)
    assert waits[68] == pytest.approx(4.9) and waits[70:] == [None] * 10  # beyond 5 s: refused
    assert limits.pace("b") == 0.0  # another address is not slowed down
    clock.now += 100
    assert limits.pace("a") == 0.0


def test_addresses_are_counted_by_host_or_ipv6_prefix() -> None:
    assert address_key("127.0.0.1") == "127.0.0.1"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("?") == "?"
