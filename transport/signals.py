"""Ctrl-C and ``kill``: how a long-running program (server, broker, mitm) is told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``stop`` instead of raising or killing.

    Only the main thread may handle signals; elsewhere (tests run commands in threads)
    nothing is installed and the caller stops by setting ``stop`` itself. On the way out
    the signals go back to Python's defaults (KeyboardInterrupt, termination).
    """
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
