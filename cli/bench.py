"""``kexlab bench``: kexlab against asyncio TLS 1.3 and plain TCP on this machine, side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench import report, runner, scenarios
from bench.kxp import BenchError
from bench.plan import make_plan
from cli.errors import fail
from cli.options import output_file

ONLY_HELP = (
    "Comma list of measurements to run: "
    + ", ".join((*scenarios.GROUPS, *scenarios.ALL_ITEMS))
    + " (default: all)."
)


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="One short run per figure: under a minute.")
    ] = False,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", metavar="FILE", help="Also write every figure to this JSON file."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE",
            help="Write a PNG of throughput against message size (matplotlib).",
        ),
    ] = None,
    only: Annotated[str | None, typer.Option("--only", metavar="LIST", help=ONLY_HELP)] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            min=0.05,
            metavar="SECONDS",
            help="Seconds per measured run (quick 0.4, full 1.5).",
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(
            "--repeats", min=1, metavar="N", help="Runs per figure, best kept (quick 1, full 3)."
        ),
    ] = None,
    connections: Annotated[
        int,
        typer.Option(
            "--connections", min=1, metavar="N", help="Idle connections for the memory figure."
        ),
    ] = scenarios.IDLE_CONNECTIONS,
    uvloop: Annotated[
        bool,
        typer.Option(
            "--uvloop", help="Measure everything again with uvloop as both sides' event loop."
        ),
    ] = False,
) -> None:
    """Measure kexlab against TLS 1.3 and plain TCP. Handshakes, throughput, round trips, memory."""
    try:
        items = scenarios.parse_only(only)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--only'") from None
    for path, option in ((json_file, "--json"), (plot, "--plot")):
        if path is not None:
            _check_writable(output_file(path, option))
    if uvloop:
        try:
            report.check_uvloop()
        except report.MissingExtra as exc:
            fail(str(exc))
    if plot is not None:
        if not any(i.startswith("bulk-") for i in items):
            raise typer.BadParameter(
                "needs at least one bulk measurement (--only bulk)", param_hint="'--plot'"
            )
        try:
            report.check_plot()
        except report.MissingExtra as exc:
            fail(str(exc))
    plan = make_plan(
        items,
        quick=quick,
        duration=duration,
        repeats=repeats,
        connections=connections,
        uvloop=uvloop,
    )
    console = Console()
    if not console.is_terminal:  # a file or a pipe: wide enough for the handshake table
        console = Console(width=max(console.width, 140))
    status = Console(stderr=True)
    try:
        result = runner.run(plan, lambda line: status.print(f"[dim]  {line}[/dim]"))
    except BenchError as exc:
        fail(f"bench: {exc}")
    report.render(console, result)
    if json_file is not None:
        report.write_json(json_file, result)
        console.print(f"JSON written to {json_file}")
    if plot is not None:
        report.write_plot(plot, result)
        console.print(f"plot written to {plot}")


def _check_writable(path: Path) -> None:
    """Fail before measuring for minutes if the result could not be written afterwards."""
    target = path if path.exists() else path.parent
    if not target.is_dir() and not path.exists():
        fail(f"cannot write {path}: folder {target} does not exist")
    if not os.access(target, os.W_OK):
        fail(f"cannot write {path}: permission denied")
