"""The bench result as rich tables, as a JSON file, and as a PNG of throughput against message size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from protocol import KexlabError

from .scenarios import PAIRING_BY_NAME
from .summary import BULK_TCP_TARGET, BULK_TLS_TARGET, PINGPONG_TARGET

Result = dict[str, Any]

PLOT_HINT = "--plot needs matplotlib: pip install 'kexlab[plot]'"
UVLOOP_HINT = "--uvloop needs uvloop: pip install 'kexlab[uvloop]'"


class MissingExtra(KexlabError):
    """An optional package the command asked for (matplotlib, uvloop) is not installed."""


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None, goal: float | None = None, *, at_most: bool = False) -> Text:
    if value is None:
        return Text("—", style="dim")
    text = Text(f"{value:.2f}×")
    if goal is not None:
        met = value <= goal if at_most else value >= goal
        text.stylize("green" if met else "red")
    return text


def _cpu(cell: Result) -> float | None:
    """Client + server CPU per operation, when both were measured."""
    client, server = cell.get("client_cpu_us"), cell.get("server_cpu_us")
    return None if client is None or server is None else client + server


def handshake_table(result: Result, loop: str = "") -> Table:
    """One row per peer of each pairing: rates, latency, and kexlab/TLS."""
    conc = result["run"]["concurrency"]
    table = Table(title=f"Handshakes (connect, handshake, close){loop}", title_justify="left")
    table.add_column("pairing")
    table.add_column("peer")
    table.add_column("configuration")
    table.add_column("sequential/s", justify="right")
    table.add_column(f"{conc} clients/s", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("CPU µs", justify="right")
    table.add_column("×TLS seq", justify="right")
    table.add_column(f"×TLS {conc}", justify="right")
    for row in result["handshakes"]:
        goal = PAIRING_BY_NAME[row["pairing"]].target
        seq, con = row["sequential"], row["concurrent"]
        table.add_row(
            row["pairing"],
            "kexlab",
            row["kexlab"],
            _num(seq["kexlab"]["rate"]),
            _num(con["kexlab"]["rate"]),
            _num(seq["kexlab"]["p50_ms"], 2),
            _num(seq["kexlab"]["p99_ms"], 2),
            _num(_cpu(con["kexlab"])),
            _ratio(seq["ratio"], goal),
            _ratio(con["ratio"], goal),
        )
        tls_seq, tls_con = seq.get("tls"), con.get("tls")
        if tls_seq is None or tls_con is None:
            table.add_row("", Text("TLS 1.3", style="dim"), Text(row["tls"], style="dim"))
            continue
        table.add_row(
            "",
            "TLS 1.3",
            row["tls"],
            _num(tls_seq["rate"]),
            _num(tls_con["rate"]),
            _num(tls_seq["p50_ms"], 2),
            _num(tls_seq["p99_ms"], 2),
            _num(_cpu(tls_con)),
        )
    table.caption = (
        "p50/p99: latency of the sequential run (under load: in the JSON); "
        f"CPU µs: client + server CPU per handshake in the {conc}-client run"
    )
    return table


CAPTION = "kexlab: transport.KxpStream, the pump `kexlab server` and `kexlab client` run"


def bulk_table(result: Result, loop: str = "") -> Table:
    """MB/s per message size for kexlab, TLS and plain TCP, and kexlab's ratios."""
    table = Table(title=f"Bulk one-way throughput (MB/s, 10^6 bytes){loop}", title_justify="left")
    for name in ("message", "kexlab", "TLS 1.3", "TCP", "kexlab/TLS", "kexlab/TCP"):
        table.add_column(name, justify="left" if name == "message" else "right")
    for row in result["bulk"]:
        table.add_row(
            row["label"],
            _num(row["kexlab"]),
            _num(row["tls"]),
            _num(row["tcp"]),
            _ratio(row["kexlab_vs_tls"], BULK_TLS_TARGET),
            _ratio(row["kexlab_vs_tcp"], BULK_TCP_TARGET if row["size"] == 65536 else None),
        )
    table.caption = CAPTION
    return table


def other_table(result: Result, loop: str = "") -> Table:
    """Ping-pong round trips and memory per idle connection."""
    table = Table(title=f"Round trips and memory{loop}", title_justify="left")
    for name in ("measure", "kexlab", "TLS 1.3", "TCP", "kexlab/TLS"):
        table.add_column(name, justify="left" if name == "measure" else "right")
    ping = result.get("pingpong")
    if ping is not None:
        table.add_row(
            "64-byte ping-pong, round trips/s",
            _num(ping["kexlab"]),
            _num(ping["tls"]),
            _num(ping["tcp"]),
            _ratio(ping["kexlab_vs_tls"], PINGPONG_TARGET),
        )
    memory = result.get("memory")
    if memory is not None:
        table.add_row(
            f"KiB per idle connection ({memory['connections']:,} open)",
            _num(memory["kexlab"], 1),
            _num(memory["tls"], 1),
            _num(memory["tcp"], 1),
            _ratio(memory["kexlab_vs_tls"]),
        )
    return table


PERFORMANCE_DOC = "docs/performance.md"
WHY_SECTION = "What limits each figure"
"""The section of ``PERFORMANCE_DOC`` that explains each figure (tests/test_bench_report.py)."""
WHY_NOT_MET = (
    f"not met: why each figure stands where it does (what the time goes to, measured) is in"
    f' {PERFORMANCE_DOC}, "{WHY_SECTION}": handshakes, bulk, ping-pong, memory.'
)


def crowd_table(result: Result, loop: str = "") -> Table:
    """The crowd row: every client's handshake and echoes, and the handshake latency."""
    crowd = result["crowd"]
    table = Table(
        title=f"{crowd['clients']:,} clients at once, each a handshake and "
        f"{crowd['messages']} echoed 64-byte messages{loop}",
        title_justify="left",
    )
    for name in ("peer", "completed", "lost", "reordered", "handshake p50 ms", "p99 ms", "s"):
        table.add_column(name, justify="left" if name == "peer" else "right")
    for impl, label in (("kexlab", "kexlab"), ("tls", "TLS 1.3")):
        cell = crowd.get(impl)
        if cell is None:
            continue
        table.add_row(
            label,
            f"{cell['completed']:,}/{cell['clients']:,}",
            _num(cell["lost"]),
            _num(cell["reordered"]),
            _num(cell["handshake_p50_ms"], 1),
            _num(cell["handshake_p99_ms"], 1),
            _num(cell["elapsed"], 1),
        )
    errors = {
        k: v for impl in ("kexlab", "tls") for k, v in crowd.get(impl, {}).get("errors", {}).items()
    }
    if errors:
        table.caption = "errors: " + ", ".join(f"{k} x{v}" for k, v in errors.items())
    return table


def target_table(result: Result) -> Table:
    """Each target this run measured, and whether it is met."""
    table = Table(title="Targets", title_justify="left")
    table.add_column("target")
    table.add_column("measured", justify="right")
    table.add_column("goal", justify="right")
    table.add_column("met")
    for t in result["targets"]:
        unit = "" if t["at_most"] else "×"
        goal = f"{'≤' if t['at_most'] else '≥'} {t['goal']:g}{unit}"
        if t["value"] is None:
            value = "—"
        elif isinstance(t["value"], int):  # a count (failures)
            value = f"{t['value']:,}"
        else:
            value = f"{t['value']:.2f}{unit}"
        met = (
            Text("—", style="dim")
            if t["met"] is None
            else (Text("yes", style="green") if t["met"] else Text("no", style="red"))
        )
        table.add_row(t["target"], value, goal, met)
    return table


def why_not_met(result: Result) -> Text | None:
    """The line under the targets when one is not met: where the reasons are explained."""
    if not any(t["met"] is False for t in result["targets"]):
        return None
    return Text(WHY_NOT_MET, style="red")


def conditions(result: Result) -> Text:
    """The line that says how the figures were taken (malloc settings and load included)."""
    run, machine = result["run"], result["machine"]
    malloc = " ".join(f"{k}={v}" for k, v in run["malloc_env"].items())
    load = machine.get("load_before")
    loops = " and ".join(run.get("loops", ["asyncio"]))
    uvloop = f", uvloop {machine['uvloop']}" if machine.get("uvloop") else ""
    return Text(
        f"{run['mode']} run, best of {run['repeats']} × {run['duration_s']:g} s per figure, "
        f"{run['processes']}, event loop {loops}; Python {machine['python']}, "
        f"{machine['openssl']}, cryptography {machine['cryptography']}{uvloop}, "
        f"{machine['cpus']} CPUs"
        + (
            f", load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the start"
            if load
            else ""
        )
        + f"; glibc malloc fixed in both peers: {malloc}; {run['wall_s']:g} s in all",
        style="dim",
    )


def render(console: Console, result: Result) -> None:
    """Print every table that has rows (uvloop's after asyncio's), then the conditions line."""
    parts: list[Any] = []
    views = [(result, "")]
    if result.get("uvloop") is not None:
        views.append(({**result, **result["uvloop"]}, " — uvloop on both sides"))
    for view, loop in views:
        if view["handshakes"]:
            parts.append(handshake_table(view, loop))
        if view["bulk"]:
            parts.append(bulk_table(view, loop))
        if view.get("pingpong") is not None or view.get("memory") is not None:
            parts.append(other_table(view, loop))
        if view.get("crowd") is not None:
            parts.append(crowd_table(view, loop))
    if result["targets"]:
        parts.append(target_table(result))
        why = why_not_met(result)
        if why is not None:
            parts.append(why)
    parts.append(conditions(result))
    console.print(Group(*parts))


def write_json(path: Path, result: Result) -> None:
    """The whole result, indented."""
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def check_plot() -> None:
    """MissingExtra unless matplotlib can be imported."""
    try:
        import matplotlib  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        raise MissingExtra(PLOT_HINT) from None


def check_uvloop() -> None:
    """MissingExtra unless uvloop can be imported."""
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        raise MissingExtra(UVLOOP_HINT) from None


def write_plot(path: Path, result: Result) -> None:
    """Throughput against message size (log scale) for kexlab, TLS and TCP, as a PNG."""
    check_plot()
    import matplotlib  # type: ignore[import-not-found,unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found,unused-ignore]

    rows = result["bulk"]
    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for key, label, style in (
        ("kexlab", "kexlab (KXP/1, AES-256-GCM)", "o-"),
        ("tls", "TLS 1.3 over asyncio (ssl)", "s--"),
        ("tcp", "plain TCP", "^:"),
    ):
        ax.plot(sizes, [r[key] for r in rows], style, label=label)
    uv_rows = (result.get("uvloop") or {}).get("bulk") or []
    if [r["size"] for r in uv_rows] == sizes:
        for key, label, style in (
            ("kexlab", "kexlab, uvloop", "o-"),
            ("tls", "TLS 1.3, uvloop", "s--"),
        ):
            ax.plot(sizes, [r[key] for r in uv_rows], style, label=label, alpha=0.5)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # 64-byte figures are ~100x below 64 KiB ones
    ax.set_xticks(sizes, [r["label"] for r in rows])
    ax.set_xlabel("message size")
    ax.set_ylabel("MB/s (10^6 bytes)")
    ax.set_title("kexlab bench: one-way throughput on loopback")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
