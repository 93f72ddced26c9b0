"""Log lines a stranger can trigger, at most a few per minute per kind; the rest counted.

A reconnect storm or a broker flood must not turn the log into the attack's amplifier
(issue 13: 128k "refused" lines, 7.6 MB in 30 s). ``LogThrottle`` lets the first line(s)
of each kind through, counts the others in the same window, and hands out one summary
per kind when the window ends (with the most frequent details, such as the addresses).
It reads no clock of its own unless given one, so tests drive it without sleeping.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_INTERVAL = 60.0
"""Seconds per window: hostile input of one kind is logged at most once a minute."""
TOP_DETAILS = 3


@dataclass(frozen=True)
class Summary:
    """What was held back of one kind during one window."""

    kind: str
    count: int
    seconds: float
    top: list[tuple[str, int]]
    """The most frequent details (an address, a topic) and their counts, most first."""

    def tail(self) -> str:
        """``"N more in the last S s (most from A: n, B: m)"``: the common end of a summary line."""
        text = f"{self.count} more in the last {self.seconds:.0f} s"
        named = [(d, n) for d, n in self.top if d]
        if named:
            text += " (most from " + ", ".join(f"{d}: {n}" for d, n in named) + ")"
        return text


@dataclass
class _Window:
    start: float
    lines: int = 0
    held: int = 0
    details: Counter[str] = field(default_factory=Counter)


class LogThrottle:
    """At most ``burst`` lines per kind per ``interval`` seconds; the rest become one summary."""

    def __init__(
        self,
        interval: float = DEFAULT_INTERVAL,
        *,
        burst: int = 1,
        bursts: dict[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or burst < 1:
            raise ValueError("interval must be positive and burst at least 1")
        self.interval = interval
        self.burst = burst
        self.bursts = dict(bursts or {})
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def allow(self, kind: str, detail: str = "") -> bool:
        """True if a line of ``kind`` may be written now; else it is counted (with ``detail``)."""
        now = self.clock()
        window = self._windows.get(kind)
        if window is None or (now - window.start >= self.interval and not window.held):
            window = self._windows[kind] = _Window(now)
        elif now - window.start >= self.interval:
            return self._count(window, detail)  # its summary is due first: see summaries()
        if window.lines < self.bursts.get(kind, self.burst):
            window.lines += 1
            return True
        return self._count(window, detail)

    @staticmethod
    def _count(window: _Window, detail: str) -> bool:
        window.held += 1
        # Bounded: a flood of distinct details (spoofed topics) keeps only the frequent ones.
        if detail in window.details or len(window.details) < 256:
            window.details[detail] += 1
        return False

    def summaries(self, *, force: bool = False) -> list[Summary]:
        """One summary per kind whose window has ended (or any, with ``force``: at shutdown)
        with lines held back; those windows are then forgotten."""
        now = self.clock()
        out = []
        for kind, window in list(self._windows.items()):
            if now - window.start < self.interval and not (force and window.held):
                continue
            if window.held:
                top = window.details.most_common(TOP_DETAILS)
                out.append(Summary(kind, window.held, now - window.start, top))
            del self._windows[kind]
        return out

    def next_due(self) -> float | None:
        """Seconds until the next summary is due (None if nothing is held back)."""
        now = self.clock()
        due = [w.start + self.interval - now for w in self._windows.values() if w.held]
        return max(0.0, min(due)) if due else None
