"""``transport.signals.stop_on_signals``: how the server, the broker and the mitm stop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest

from transport.signals import stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sets_stop_and_the_default_comes_back(sig: signal.Signals) -> None:
    async def main() -> bool:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            os.kill(os.getpid(), sig)
            await asyncio.wait_for(stop.wait(), 5)
        return stop.is_set()

    assert asyncio.run(main())
    default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
    assert signal.getsignal(sig) == default


def test_outside_the_main_thread_nothing_is_installed_and_nothing_fails() -> None:
    before = signal.getsignal(signal.SIGTERM)
    outcome: list[object] = []

    async def main() -> None:
        stop = asyncio.Event()
        with stop_on_signals(stop):
            stop.set()  # the caller's own way to stop
            await stop.wait()

    def thread() -> None:
        try:
            asyncio.run(main())
            outcome.append("stopped")
        except BaseException as exc:  # pragma: no cover - what the test reports
            outcome.append(exc)

    t = threading.Thread(target=thread)
    t.start()
    t.join(10)
    assert outcome == ["stopped"]
    assert signal.getsignal(signal.SIGTERM) == before
