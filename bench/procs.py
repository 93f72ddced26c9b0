"""What both bench programs share: the event loop, stdin as an asyncio stream, fd limits."""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Coroutine
from typing import Any

LOOPS = ("asyncio", "uvloop")


def run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run ``main`` on a new event loop of the kind named (uvloop must be installed)."""
    if loop == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main)
    else:
        asyncio.run(main)


def raise_fd_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE towards ``wanted`` (as far as the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def stdin_lines() -> asyncio.StreamReader:
    """stdin as a StreamReader, so the event loop keeps serving while a job waits."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader
