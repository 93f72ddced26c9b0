"""What both bench programs share: stdin as an asyncio stream, file-descriptor limits."""

from __future__ import annotations

import asyncio
import resource
import sys


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
