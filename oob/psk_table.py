"""The server's bounded table of keys handed to it out of band (docs/protocol.md §8).

Anyone allowed to write ``psk/#`` can publish as many valid-looking keys as they like
(on the shipped ACL, every client account). The rules that keep honest clients working
through such a flood (issue 13: evicting the soonest-expiring key let a flood of
far-future keys push honest keys out between "received" and their handshake):

- A key lives at most ``max_lifetime`` seconds, whatever its ``expires_at`` says.
- An identity keeps its first key until that key expires; another key for it is refused.
- A full table evicts nobody: an unexpired key is never dropped to make room. A key that
  does not fit goes to a small ring of recent arrivals (``recent_lifetime`` seconds at
  most), where a client that connects right after publishing still finds it, and a
  handshake already waiting for that identity gets it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
"""Unix seconds (``time.time``); injectable so expiry can be tested without sleeping."""

DEFAULT_MAX_ENTRIES = 1024
DEFAULT_MAX_LIFETIME = 3600.0
"""A ceiling on ``expires_at - now``: a flood cannot hold the table for longer."""
DEFAULT_RECENT = 4096
RECENT_LIFETIME = 30.0
"""Seconds a key that found the table full is kept for the handshake on its way."""


class Admission(enum.Enum):
    """What ``PskTable.add`` did with a key."""

    STORED = "stored"
    RECENT = "kept briefly: the table is full"
    EXPIRED = "already expired"
    CONFLICT = "refused: the identity holds another key"


@dataclass(frozen=True)
class Added:
    """The outcome of ``PskTable.add``: where the key went and until when."""

    admission: Admission
    expires_at: float
    clamped: bool = False
    """``expires_at`` was beyond ``max_lifetime`` and was brought down to it."""

    def __bool__(self) -> bool:
        """True when the key can be used (stored, or kept briefly)."""
        return self.admission in (Admission.STORED, Admission.RECENT)


@dataclass(frozen=True)
class _Entry:
    key: bytes
    expires_at: float


class PskTable:
    """identity -> key until its expiry; at most ``max_entries``, plus a ring of recent ones."""

    def __init__(
        self,
        clock: Clock = time.time,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        *,
        max_lifetime: float = DEFAULT_MAX_LIFETIME,
        recent: int = DEFAULT_RECENT,
        recent_lifetime: float = RECENT_LIFETIME,
    ) -> None:
        if max_entries < 1 or recent < 0:
            raise ValueError("max_entries must be at least 1 (and recent not negative)")
        if max_lifetime <= 0:
            raise ValueError("max_lifetime must be positive")
        self.clock = clock
        self.max_entries = max_entries
        self.max_lifetime = max_lifetime
        self.recent_size = recent
        self.recent_lifetime = recent_lifetime
        self._entries: dict[str, _Entry] = {}
        self._soonest = math.inf  # no entry expires before this: most purges cost nothing
        self._recent: OrderedDict[str, _Entry] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[bytes]]] = {}

    def __len__(self) -> int:
        self._purge()
        return len(self._entries)

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, str) and self.lookup(identity) is not None

    @property
    def full(self) -> bool:
        """No room for another key without waiting for one to expire."""
        return len(self) >= self.max_entries

    def add(self, identity: str, key: bytes, expires_at: float) -> Added:
        """Store a key under the rules above; the result says where it went."""
        now = self.clock()
        if expires_at <= now:
            return Added(Admission.EXPIRED, expires_at)
        clamped = expires_at > now + self.max_lifetime
        expires_at = min(expires_at, now + self.max_lifetime)
        self._purge(now)
        held = self._find(identity, now)
        if held is not None:
            if not hmac.compare_digest(held.key, key):
                return Added(Admission.CONFLICT, held.expires_at, clamped)
            if identity in self._entries:  # the same key again: it may live longer
                expires_at = max(expires_at, held.expires_at)
                self._entries[identity] = _Entry(key, expires_at)
                return Added(Admission.STORED, expires_at, clamped)
        if identity in self._entries or len(self._entries) < self.max_entries:
            self._recent.pop(identity, None)
            self._entries[identity] = entry = _Entry(key, expires_at)
            self._soonest = min(self._soonest, expires_at)
            admission = Admission.STORED
        else:
            entry = _Entry(key, min(expires_at, now + self.recent_lifetime))
            self._recent[identity] = entry
            self._recent.move_to_end(identity)
            while len(self._recent) > self.recent_size:
                self._recent.popitem(last=False)
            admission = Admission.RECENT
        for fut in self._waiters.pop(identity, []):
            if not fut.done():
                fut.set_result(key)
        return Added(admission, entry.expires_at, clamped)

    def lookup(self, identity: str) -> bytes | None:
        """The key for ``identity`` if it is known and not expired (fits ``ServerConfig.psk_lookup``)."""
        entry = self._find(identity, self.clock())
        return None if entry is None else entry.key

    def _find(self, identity: str, now: float) -> _Entry | None:
        for place in (self._entries, self._recent):
            entry = place.get(identity)
            if entry is not None:
                if entry.expires_at > now:
                    return entry
                del place[identity]
        return None

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
        if now >= self._soonest:
            for identity in [i for i, e in self._entries.items() if e.expires_at <= now]:
                del self._entries[identity]
            self._soonest = min((e.expires_at for e in self._entries.values()), default=math.inf)
        while self._recent:
            identity, entry = next(iter(self._recent.items()))
            if entry.expires_at > now and len(self._recent) <= self.recent_size:
                break
            del self._recent[identity]
