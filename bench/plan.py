"""How long and how often each measurement of ``kexlab bench`` runs."""

from __future__ import annotations

from dataclasses import dataclass

from .scenarios import CONCURRENCY, IDLE_CONNECTIONS


@dataclass(frozen=True)
class Plan:
    """How long and how often each measurement runs."""

    items: list[str]
    duration: float
    warmup: float
    repeats: int
    connections: int = IDLE_CONNECTIONS
    concurrency: int = CONCURRENCY
    quick: bool = False
    loops: tuple[str, ...] = ("asyncio",)
    """Event loops to measure on, each on both sides of every ratio: asyncio, then uvloop."""


def make_plan(
    items: list[str],
    *,
    quick: bool,
    duration: float | None = None,
    repeats: int | None = None,
    connections: int = IDLE_CONNECTIONS,
    concurrency: int = CONCURRENCY,
    uvloop: bool = False,
) -> Plan:
    """Quick: one 0.4 s run per figure (well under a minute); full: best of three 1.5 s runs."""
    base = 0.4 if quick else 1.5
    d = base if duration is None else duration
    return Plan(
        items=items,
        duration=d,
        warmup=min(0.3, max(0.05, d / 4)),
        repeats=(1 if quick else 3) if repeats is None else repeats,
        connections=connections,
        concurrency=concurrency,
        quick=quick,
        loops=("asyncio", "uvloop") if uvloop else ("asyncio",),
    )
