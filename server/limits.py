"""What one address may claim of a server: connections, handshakes in progress, handshake rate.

Every slot a stranger can claim needs a limit (issue 13): 512 idle connections from one
address refused every honest client, and 1,478 hellos a second from one address (each
costing the server a signature) put it at 99 % CPU. So each address gets a share of the
connections and of the handshakes in progress, and its handshakes are paced (a token
bucket, as GCRA): a burst is served at once, more wait their turn a bounded time, and
beyond that are refused at once, before any signature, so the cost falls on the flooder.

An address is an IPv4 address, or an IPv6 /64 (one host's share on most networks).
Many addresses acting together are not stopped here; see docs/hardening.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from explain.throttle import LogThrottle

DEFAULT_MAX_CONNECTIONS = 512
DEFAULT_MAX_PER_ADDRESS = 256
"""Half the connections: one address can never hold every slot."""
DEFAULT_MAX_HANDSHAKES = 256
"""Handshakes in progress at once (an address gets half)."""
DEFAULT_HANDSHAKE_RATE = 50.0
"""Handshakes per second per address, after a burst of twice as many."""
MAX_QUEUE_WAIT = 5.0
"""Longest a paced handshake waits for its turn before it is refused instead."""
_SWEEP_AT = 4096

# Why a connection was refused: the kinds of the server's rate-limited "refused" lines.
STOPPING = "server stopping"
FULL = "max connections reached"
ADDRESS_FULL = "max connections per address reached"
RATE = "handshake rate per address exceeded"
BUSY = "max handshakes in progress reached"

# What the refused client reads in its handshake_failure alert.
ALERT_REASONS = {
    FULL: "server busy: too many connections",
    ADDRESS_FULL: "server busy: too many connections from your address",
    RATE: "server busy: too many handshakes from your address; try again later",
    BUSY: "server busy: too many handshakes in progress",
}


@dataclass(frozen=True)
class Limits:
    """The limits of one server; 0 turns a per-address limit off."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES
    handshake_rate: float = DEFAULT_HANDSHAKE_RATE

    @property
    def handshakes_per_address(self) -> int:
        """Half the handshakes in progress (at least one)."""
        return max(1, self.max_handshakes // 2)


def address_key(host: str) -> str:
    """The address a limit counts by: IPv4 as is, IPv6 by its /64 (IPv4-mapped as IPv4)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Address:
    """One address's share: its connections, its handshake slots and its pacing."""

    def __init__(self, handshakes: int) -> None:
        self.connections = 0
        self.tat = -math.inf  # GCRA's theoretical arrival time of the next handshake
        self.slots = asyncio.Semaphore(handshakes)


class AddressLimits:
    """Admits connections and paces handshakes under ``Limits``."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self.connections = 0
        self._slots = asyncio.Semaphore(max(1, limits.max_handshakes))
        self._addresses: dict[str, _Address] = {}

    def admit(self, key: str) -> str | None:
        """Count a new connection from ``key``; None, or the kind of refusal (not counted)."""
        if self.connections >= self.limits.max_connections:
            return FULL
        state = self._addresses.get(key)
        if state is None:
            if len(self._addresses) >= _SWEEP_AT:
                self._sweep()
            state = self._addresses[key] = _Address(self.limits.handshakes_per_address)
        cap = self.limits.max_per_address
        if cap and state.connections >= cap:
            return ADDRESS_FULL
        state.connections += 1
        self.connections += 1
        return None

    def release(self, key: str) -> None:
        """A connection from ``key`` ended."""
        self.connections -= 1
        state = self._addresses.get(key)
        if state is not None:
            state.connections -= 1
            if state.connections <= 0 and state.tat <= self.clock():
                del self._addresses[key]  # its pace is forgotten only once it is spent

    def pace(self, key: str) -> float | None:
        """Seconds this handshake waits for its turn, or None: refuse it (too many too fast)."""
        rate = self.limits.handshake_rate
        state = self._addresses.get(key)
        if rate <= 0 or state is None:
            return 0.0
        interval = 1.0 / rate
        tolerance = (2 * rate - 1) * interval  # a burst of twice the rate goes at once
        now = self.clock()
        tat = max(state.tat, now)
        start = max(now, tat - tolerance)
        if start - now > MAX_QUEUE_WAIT:
            return None
        state.tat = tat + interval
        wait = start - now
        return wait if wait > 1e-6 else 0.0  # float dust is no reason to sleep

    async def acquire_handshake(self, key: str) -> None:
        """Take one of the address's and one of the server's handshake slots (in that order)."""
        mine = self._addresses[key].slots  # admitted, so it is there until released
        await mine.acquire()
        try:
            await self._slots.acquire()
        except BaseException:
            mine.release()
            raise

    def release_handshake(self, key: str) -> None:
        """Give back the slots ``acquire_handshake`` took."""
        self._slots.release()
        self._addresses[key].slots.release()

    def _sweep(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._addresses.items() if s.connections <= 0 and s.tat <= now]:
            del self._addresses[key]


class RefusalLog:
    """The server's "refused" lines: the first of each kind a minute, then one summary.

    A reconnect storm wrote 128k "refused" lines (7.6 MB) in 30 s (issue 13); now it
    writes one line per kind, and a minute later how many more there were and from where.
    """

    def __init__(self, log: Callable[..., None]) -> None:
        self.log = log
        """log(event, peer, **fields): the server's structured log."""
        self._throttle = LogThrottle()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def note(self, peer: str, key: str, kind: str) -> None:
        """One refusal of ``kind`` for ``peer`` (counted by its address ``key``)."""
        self._flush()
        if self._throttle.allow(kind, key):
            self.log("refused", peer, reason=kind)
        else:
            self._schedule()

    def close(self) -> None:
        """The server stops: say now what was held back."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        for summary in self._throttle.summaries(force=force):
            fields: dict[str, Any] = {
                "reason": summary.kind,
                "more": summary.count,
                "seconds": round(summary.seconds),
                "most_from": ", ".join(f"{addr} ({n})" for addr, n in summary.top),
            }
            self.log("refused-summary", "", **fields)
        self._schedule()

    def _schedule(self) -> None:
        due = self._throttle.next_due()
        if due is not None and self._timer is None and not self._closed:
            self._timer = asyncio.get_running_loop().call_later(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._flush()
