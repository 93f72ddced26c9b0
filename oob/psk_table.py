"""The server's bounded table of keys handed to it out of band (docs/protocol.md §8)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
"""Unix seconds (``time.time``); injectable so expiry can be tested without sleeping."""

DEFAULT_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class _Entry:
    key: bytes
    expires_at: float


class PskTable:
    """identity -> key until ``expires_at``; at most ``max_entries``, soonest-expiring evicted first.

    The bound matters because anyone allowed to write ``psk/#`` can publish as many
    keys as they like; a flood then costs the oldest-expiring keys, not the server's memory.
    """

    def __init__(self, clock: Clock = time.time, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._waiters: dict[str, list[asyncio.Future[bytes]]] = {}

    def __len__(self) -> int:
        self._purge()
        return len(self._entries)

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, str) and self.lookup(identity) is not None

    def add(self, identity: str, key: bytes, expires_at: float) -> bool:
        """Store a key (replacing one of the same identity); False if it has already expired."""
        now = self.clock()
        if expires_at <= now:
            return False
        self._purge(now)
        self._entries.pop(identity, None)
        while len(self._entries) >= self.max_entries:
            victim = min(self._entries, key=lambda i: self._entries[i].expires_at)
            del self._entries[victim]
        self._entries[identity] = _Entry(key, expires_at)
        for fut in self._waiters.pop(identity, []):
            if not fut.done():
                fut.set_result(key)
        return True

    def lookup(self, identity: str) -> bytes | None:
        """The key for ``identity`` if it is known and not expired (fits ``ServerConfig.psk_lookup``)."""
        entry = self._entries.get(identity)
        if entry is None:
            return None
        if entry.expires_at <= self.clock():
            del self._entries[identity]
            return None
        return entry.key

    async def wait_for(self, identity: str, timeout: float) -> bytes | None:
        """The key for ``identity``, waiting up to ``timeout`` seconds for it to arrive."""
        key = self.lookup(identity)
        if key is not None or timeout <= 0:
            return key
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(identity, []).append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(identity)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
                if not waiters:
                    del self._waiters[identity]

    def _purge(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for identity in [i for i, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[identity]
