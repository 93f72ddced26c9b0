"""Ratios, targets and the run's circumstances, added to the raw figures (the JSON document)."""

from __future__ import annotations

import datetime
import os
import platform
import ssl
from importlib import metadata
from typing import Any

from .plan import Plan
from .scenarios import BULK_SIZES, MALLOC_ENV, PAIRING_BY_NAME, size_label

Result = dict[str, Any]

BULK_TLS_TARGET = 1.2
BULK_TCP_TARGET = 0.85
BULK_TCP_TARGET_SIZE = BULK_SIZES["64k"]
PINGPONG_TARGET = 1.3
MEMORY_TARGET_KIB = 32.0


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b rounded to 2 places, None when either is missing."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 2)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _target(name: str, value: float | None, goal: float, *, at_most: bool = False) -> Result:
    met = None if value is None else (value <= goal if at_most else value >= goal)
    return {"target": name, "value": value, "goal": goal, "at_most": at_most, "met": met}


def summarise(results: Result, plan: Plan, wall: float) -> Result:
    """Add ratios and the target verdicts; describe the run so the figures can be reproduced.

    The targets are those of the default event loop (asyncio); uvloop rows, when measured,
    get their ratios under ``uvloop`` and no verdicts.
    """
    targets = add_ratios(results)
    if results.get("uvloop") is not None:
        add_ratios(results["uvloop"])
    return {
        "kexlab_bench": 1,
        "run": {
            "mode": "quick" if plan.quick else "full",
            "items": plan.items,
            "loops": list(plan.loops),
            "duration_s": plan.duration,
            "warmup_s": plan.warmup,
            "repeats": plan.repeats,
            "best_of": plan.repeats,
            "concurrency": plan.concurrency,
            "idle_connections": plan.connections,
            "wall_s": round(wall, 1),
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "malloc_env": dict(MALLOC_ENV),
            "processes": "server and client in separate processes, loopback 127.0.0.1",
        },
        "machine": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_before": results.get("load_before"),
            "openssl": ssl.OPENSSL_VERSION,
            "cryptography": _version("cryptography"),
            "uvloop": _version("uvloop") if "uvloop" in plan.loops else None,
            "kexlab": _version("kexlab"),
        },
        **{k: v for k, v in results.items() if k != "load_before"},
        "targets": targets,
    }


def add_ratios(results: Result) -> list[Result]:
    """Ratios of one loop's figures, in place; the target verdicts they give."""
    targets: list[Result] = []
    for row in results["handshakes"]:
        pairing = PAIRING_BY_NAME[row["pairing"]]
        for mode in ("sequential", "concurrent"):
            cell = row[mode]
            tls = cell.get("tls")
            cell["ratio"] = ratio(cell["kexlab"]["rate"], tls["rate"] if tls else None)
            if pairing.target is not None:
                targets.append(
                    _target(
                        f"handshakes/s, {pairing.name} {mode}: kexlab/TLS",
                        cell["ratio"],
                        pairing.target,
                    )
                )
    for row in results["bulk"]:
        row["label"] = size_label(row["size"])
        row["kexlab_vs_tls"] = ratio(row["kexlab"], row["tls"])
        row["kexlab_vs_tcp"] = ratio(row["kexlab"], row["tcp"])
        targets.append(
            _target(f"bulk {row['label']}: kexlab/TLS", row["kexlab_vs_tls"], BULK_TLS_TARGET)
        )
        if row["size"] == BULK_TCP_TARGET_SIZE:
            targets.append(
                _target(f"bulk {row['label']}: kexlab/TCP", row["kexlab_vs_tcp"], BULK_TCP_TARGET)
            )
    ping = results["pingpong"]
    if ping is not None:
        ping["kexlab_vs_tls"] = ratio(ping["kexlab"], ping["tls"])
        ping["kexlab_vs_tcp"] = ratio(ping["kexlab"], ping["tcp"])
        targets.append(_target("ping-pong: kexlab/TLS", ping["kexlab_vs_tls"], PINGPONG_TARGET))
    memory = results["memory"]
    if memory is not None:
        memory["kexlab_vs_tls"] = ratio(memory["kexlab"], memory["tls"])
        targets.append(
            _target(
                "KiB per idle kexlab connection", memory["kexlab"], MEMORY_TARGET_KIB, at_most=True
            )
        )
    crowd = results.get("crowd")
    if crowd is not None:
        cell = crowd["kexlab"]
        failed = cell["clients"] - cell["completed"] + cell["lost"] + cell["reordered"]
        targets.append(
            _target(
                f"{cell['clients']:,} clients x {crowd['messages']} echoes: kexlab failures",
                failed,
                0,
                at_most=True,
            )
        )
    return targets
