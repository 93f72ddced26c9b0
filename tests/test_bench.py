"""``kexlab bench``: the selection, the report, and one short real run. Never a performance figure."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from bench import report, runner, scenarios
from bench.plan import make_plan
from bench.scenarios import ALL_ITEMS, MALLOC_ENV, parse_only
from bench.summary import summarise
from cli.bench import bench


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A group, so the command is reached by name as in `kexlab bench`."""

    app.command("bench")(bench)
    return app


def run(*args: str) -> Result:
    return CliRunner().invoke(make_app(), ["bench", *args])


def one_line(text: str) -> str:
    """stderr with typer's error box and line wrapping removed."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# ---------------------------------------------------------------------- selection


def test_only_default_is_everything() -> None:
    """No --only runs every measurement, in the fixed order."""
    assert parse_only(None) == list(ALL_ITEMS)
    assert ALL_ITEMS[0] == "handshake-rsa" and ALL_ITEMS[-1] == "crowd"


def test_only_groups_and_order() -> None:
    """A group name picks its members; the run order is the table order, not the typed one."""
    assert parse_only("memory,bulk") == [
        "bulk-64",
        "bulk-1k",
        "bulk-16k",
        "bulk-64k",
        "bulk-1m",
        "memory",
    ]
    assert parse_only(" Bulk-16K , handshake-dhe,") == ["handshake-dhe", "bulk-16k"]


def test_only_unknown_name() -> None:
    """A name outside the list is refused with the list."""
    with pytest.raises(ValueError, match="unknown measurement 'bulk-2k'; choose from"):
        parse_only("bulk-2k")


def test_plan_quick_and_full() -> None:
    """--quick is one short run per figure; the full run keeps the best of three longer ones."""
    quick = make_plan(["pingpong"], quick=True)
    full = make_plan(["pingpong"], quick=False)
    assert (quick.duration, quick.repeats) == (0.4, 1)
    assert (full.duration, full.repeats) == (1.5, 3)
    assert make_plan(["pingpong"], quick=True, duration=0.1, repeats=3).repeats == 3
    assert full.loops == ("asyncio",)
    assert make_plan(["pingpong"], quick=True, uvloop=True).loops == ("asyncio", "uvloop")


def test_children_get_fixed_malloc_thresholds() -> None:
    """Both peers run with glibc's trim and mmap thresholds fixed."""
    env = runner.child_env()
    for name, value in MALLOC_ENV.items():
        assert env[name] == value
    assert set(MALLOC_ENV) == {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"}


# ---------------------------------------------------------------------- report


def _fake_result() -> dict[str, Any]:
    """Made-up figures in the runner's shape (before ratios)."""
    hs = {
        "rate": 100.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "count": 10,
        "client_cpu_us": 300.0,
        "server_cpu_us": 200.25,
    }
    results = {
        "handshakes": [
            {
                "pairing": "dhe",
                "kexlab": "dhe x25519 + Ed25519",
                "tls": "Ed25519 cert, x25519",
                "sequential": {"concurrency": 1, "kexlab": {**hs, "rate": 300.0}, "tls": hs},
                "concurrent": {"concurrency": 64, "kexlab": hs, "tls": {**hs, "rate": 200.0}},
            },
            {
                "pairing": "psk",
                "kexlab": "psk (32-byte key)",
                "tls": "no PSK in Python's ssl",
                "sequential": {"concurrency": 1, "kexlab": hs},
                "concurrent": {"concurrency": 64, "kexlab": hs},
            },
        ],
        "bulk": [{"size": 65536, "kexlab": 90.0, "tls": 100.0, "tcp": 100.0}],
        "pingpong": {"kexlab": 10.0, "tls": 5.0, "tcp": 20.0},
        "memory": {"connections": 1000, "kexlab": 16.0, "tls": 256.0, "tcp": 4.0},
        "crowd": {
            "clients": 1000,
            "messages": 100,
            "kexlab": {
                "clients": 1000,
                "completed": 999,
                "lost": 0,
                "reordered": 0,
                "errors": {"BenchError": 1},
                "elapsed": 9.5,
                "handshake_p50_ms": 400.0,
                "handshake_p99_ms": 700.0,
            },
        },
    }
    plan = make_plan(["handshake-dhe"], quick=True)
    return summarise(results, plan, 1.0)


def test_summary_ratios_and_targets() -> None:
    """Ratios are kexlab/other; every target the run covered has a verdict, psk none."""
    result = _fake_result()
    dhe = result["handshakes"][0]
    assert dhe["sequential"]["ratio"] == 3.0
    assert dhe["concurrent"]["ratio"] == 0.5
    assert result["handshakes"][1]["sequential"]["ratio"] is None
    verdicts = {t["target"]: t["met"] for t in result["targets"]}
    assert verdicts == {
        "handshakes/s, dhe sequential: kexlab/TLS": True,
        "handshakes/s, dhe concurrent: kexlab/TLS": False,
        "bulk 64 KiB: kexlab/TLS": False,  # 0.9 < 1.2
        "bulk 64 KiB: kexlab/TCP": True,  # 0.9 >= 0.85
        "ping-pong: kexlab/TLS": True,  # 2.0 >= 1.3
        "KiB per idle kexlab connection": True,  # 16 <= 32
        "1,000 clients x 100 echoes: kexlab failures": False,  # one did not complete
    }
    [crowd] = [t for t in result["targets"] if t["target"].startswith("1,000 clients")]
    assert (crowd["value"], crowd["goal"], crowd["at_most"]) == (1, 0, True)
    assert result["run"]["malloc_env"] == MALLOC_ENV


def test_render_tables(capsys: pytest.CaptureFixture[str]) -> None:
    """Every table is printed with its rows; the malloc settings are in the output."""
    from rich.console import Console

    report.render(Console(width=160, force_terminal=False), _fake_result())
    out = capsys.readouterr().out
    for title in ("Handshakes", "Bulk one-way throughput", "Round trips and memory", "Targets"):
        assert title in out
    assert "3.00×" in out and "0.50×" in out  # dhe ratios
    assert "CPU µs" in out and "500" in out  # 300 + 200.25 per handshake
    assert "no PSK in Python's ssl" in out
    assert "64 KiB" in out and "0.90×" in out
    assert "KiB per idle connection (1,000 open)" in out
    assert "1,000 clients at once" in out and "999/1,000" in out and "BenchError x1" in out
    assert "MALLOC_TRIM_THRESHOLD_=" in out and "MALLOC_MMAP_THRESHOLD_=" in out


# ---------------------------------------------------------------------- the command


def test_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--plot without matplotlib stops before measuring, with the install hint."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    result = run("--quick", "--only", "bulk-64", "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 1
    assert "pip install 'kexlab[plot]'" in one_line(result.stderr)
    assert not (tmp_path / "p.png").exists()


def test_uvloop_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """--uvloop without uvloop installed stops before measuring, with the install hint."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    result = run("--quick", "--only", "pingpong", "--uvloop")
    assert result.exit_code == 1
    assert "pip install 'kexlab[uvloop]'" in one_line(result.stderr)


def test_plot_needs_a_bulk_figure(tmp_path: Path) -> None:
    """A plot of throughput needs a throughput measurement."""
    result = run("--only", "pingpong", "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 2
    assert "'--plot': needs at least one bulk measurement" in one_line(result.stderr)


def test_unknown_only_is_a_usage_error() -> None:
    """One line, exit 2."""
    result = run("--only", "handshake-ecdsa")
    assert result.exit_code == 2
    assert "unknown measurement 'handshake-ecdsa'" in one_line(result.stderr)


def test_uvloop_rows_smoke(tmp_path: Path) -> None:
    """--uvloop measures each figure again with uvloop in every peer: its own rows, no verdicts."""
    out = tmp_path / "bench.json"
    result = run(
        "--quick", "--only", "pingpong", "--duration", "0.1", "--uvloop", "--json", str(out)
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "Round trips and memory — uvloop on both sides" in result.stdout
    data = json.loads(out.read_text())
    assert data["run"]["loops"] == ["asyncio", "uvloop"]
    assert data["machine"]["uvloop"] not in (None, "?")
    ping = data["uvloop"]["pingpong"]
    assert all(isinstance(ping[k], float) and ping[k] > 0 for k in ("kexlab", "tls", "tcp"))
    assert isinstance(ping["kexlab_vs_tls"], float)
    assert [t["target"] for t in data["targets"]] == ["ping-pong: kexlab/TLS"]  # asyncio's


def test_crowd_after_memory_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small crowd after the memory figure (whose fresh servers come and go while the
    long-lived ones ping-pong used still run): every client completes its handshake and
    echoes, in order, for kexlab and TLS alike."""
    monkeypatch.setattr(runner, "CROWD_CLIENTS", 20)
    monkeypatch.setattr(runner, "CROWD_MESSAGES", 5)
    out = tmp_path / "bench.json"
    args = ["--only", "pingpong,memory,crowd", "--connections", "10", "--duration", "0.05"]
    result = run("--quick", *args, "--json", str(out))
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "20 clients at once, each a handshake and 5 echoed 64-byte messages" in result.stdout
    crowd = json.loads(out.read_text())["crowd"]
    for impl in ("kexlab", "tls"):
        cell = crowd[impl]
        assert (cell["completed"], cell["lost"], cell["reordered"], cell["errors"]) == (
            20,
            0,
            0,
            {},
        )
        assert 0 < cell["handshake_p50_ms"] <= cell["handshake_p99_ms"]


def test_quick_subset_smoke(tmp_path: Path) -> None:
    """A real run (separate server and client processes) on two figures: table and JSON shape."""
    out = tmp_path / "bench.json"
    result = run(
        "--quick", "--only", "handshake-dhe,bulk-16k", "--duration", "0.2", "--json", str(out)
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    text = result.stdout
    assert "Handshakes (connect, handshake, close)" in text
    assert "Bulk one-way throughput" in text
    assert "Targets" in text
    assert "MALLOC_TRIM_THRESHOLD_=" in text
    rows = [line for line in text.splitlines() if line.startswith("│ 16 KiB ")]
    assert len(rows) == 1 and rows[0].count("×") == 2, text
    assert "Round trips and memory" not in text  # not selected

    data = json.loads(out.read_text())
    assert data["run"]["mode"] == "quick"
    assert data["run"]["items"] == ["handshake-dhe", "bulk-16k"]
    assert data["run"]["malloc_env"] == scenarios.MALLOC_ENV
    assert data["pingpong"] is None and data["memory"] is None and data["crowd"] is None
    assert data["run"]["loops"] == ["asyncio"] and "uvloop" not in data
    (hs,) = data["handshakes"]
    assert hs["pairing"] == "dhe"
    for mode in ("sequential", "concurrent"):
        for impl in ("kexlab", "tls"):
            cell = hs[mode][impl]
            assert set(cell) == {
                "rate",
                "p50_ms",
                "p99_ms",
                "count",
                "client_cpu_us",
                "server_cpu_us",
            }
            assert cell["count"] >= 1 and cell["p50_ms"] <= cell["p99_ms"]
            assert isinstance(cell["client_cpu_us"], float)  # Linux: read from /proc
        assert isinstance(hs[mode]["ratio"], float)
    (bulk,) = data["bulk"]
    assert bulk["size"] == 16384 and bulk["label"] == "16 KiB"
    for key in ("kexlab", "tls", "tcp", "kexlab_vs_tls", "kexlab_vs_tcp"):
        assert isinstance(bulk[key], float) and bulk[key] > 0
    assert set(bulk["cpu_us_per_message"]) == {"kexlab", "tls", "tcp"}
    assert [t["target"] for t in data["targets"]] == [
        "handshakes/s, dhe sequential: kexlab/TLS",
        "handshakes/s, dhe concurrent: kexlab/TLS",
        "bulk 16 KiB: kexlab/TLS",
    ]
    assert all(isinstance(t["met"], bool) for t in data["targets"])
