"""Issue 12 item 5: a server whose broker keeps failing says why, each time the reason changes.

Seen: the broker switched to the hardened config while the server ran; the server logged
"Disconnected during message iteration; retrying" once and then nothing for 30 s and more,
while the real reason, "login refused", showed only in a freshly started server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

import oob.subscriber as subscriber
from oob import MqttSettings, ServerChannel
from oob.settings import BrokerUnavailable

DROPPED = "MQTT broker mqtt://127.0.0.1:1883 unavailable: Disconnected during message iteration"
REFUSED = "MQTT broker mqtt://127.0.0.1:1883 unavailable: login refused ([code:135] Not authorized)"


def scripted(reasons: list[str], attempts: list[int]):  # type: ignore[no-untyped-def]
    """A stand-in for oob.settings.connect that fails with each reason in turn, then the last."""

    @contextlib.asynccontextmanager
    async def connect(_settings: MqttSettings, _timeout: float) -> AsyncIterator[None]:
        attempts.append(1)
        raise BrokerUnavailable(reasons[min(len(attempts), len(reasons)) - 1])
        yield  # pragma: no cover

    return connect


async def run_channel(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, repeat: float, seconds: float
) -> tuple[list[str], int]:
    attempts: list[int] = []
    monkeypatch.setattr(subscriber, "connect", scripted([DROPPED, REFUSED], attempts))
    caplog.set_level(logging.DEBUG, logger="kexlab.oob")
    channel = ServerChannel(
        MqttSettings(), "lab", backoff_initial=0.005, backoff_max=0.01, outage_repeat=repeat
    )
    async with channel:
        await asyncio.sleep(seconds)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return warnings, len(attempts)


async def test_a_new_reason_is_said_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    warnings, attempts = await run_channel(monkeypatch, caplog, repeat=3600, seconds=0.3)
    assert attempts > 5  # it kept retrying...
    assert warnings == [  # ...and said each reason once, the login refusal included
        f"{DROPPED}; retrying in the background",
        f"{REFUSED}; retrying in the background",
    ]


async def test_a_lasting_reason_is_repeated_rate_limited(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    warnings, attempts = await run_channel(monkeypatch, caplog, repeat=0.1, seconds=0.55)
    still = [w for w in warnings if w == f"{REFUSED} (still); retrying in the background"]
    # Repeated while it lasts, but at most once per 0.1 s, not once per attempt (every ~10 ms).
    assert 1 <= len(still) <= 0.55 / 0.1 + 1, warnings
    assert attempts > len(warnings) * 3
