"""The orchestrator: start the peers, send the client one job per measurement, keep the best run.

Measurements of kexlab, TLS and TCP for the same item run back to back (and, with
repeats, alternate), so that the ratios compare runs taken moments apart on a
machine whose load changes under us.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import keys
from .kxp import BenchError
from .plan import Plan
from .scenarios import (
    BULK_SIZES,
    CROWD_CLIENTS,
    CROWD_MESSAGES,
    DATA_PAIRING,
    MALLOC_ENV,
    PAIRING_BY_NAME,
)
from .summary import summarise

Progress = Callable[[str], None]
Result = dict[str, Any]

WARM_CONNECTIONS = 16
"""Idle connections opened and closed before the memory baseline is read (imports, caches)."""
START_TIMEOUT = 60.0


def child_env() -> dict[str, str]:
    """The environment of every peer: ours, glibc's allocator thresholds fixed, bench importable."""
    env = dict(os.environ)
    env.update(MALLOC_ENV)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process in KiB (Linux /proc), None where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Child:
    """One peer process, spoken to in JSON lines over its stdin and stdout."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self._stderr: IO[str] = open(workdir / f"{name}.stderr", "w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        """The process id (for its RSS)."""
        return self.proc.pid

    def read(self, timeout: float) -> Result:
        """The next JSON line; BenchError if the process dies, is silent too long, or reports one."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name} gave no answer within {timeout:.0f} s") from None
        if line is None:
            raise BenchError(f"{self.name} exited: {self._last_error()}")
        result: Result = json.loads(line)
        if "error" in result:
            raise BenchError(f"{self.name}: {result['error']}")
        return result

    def ask(self, job: Result, timeout: float) -> Result:
        """Send one job, wait for its result."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
        except OSError:
            raise BenchError(f"{self.name} exited: {self._last_error()}") from None
        return self.read(timeout)

    def _last_error(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        lines = [x for x in self._stderr.read().splitlines() if x.strip()]
        return lines[-1] if lines else f"exit status {self.proc.poll()}"

    def stop(self) -> None:
        """Close stdin (the peer's signal to go) and reap it; kill it if it lingers."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@dataclass
class Session:
    """The peers of one run and where they listen."""

    workdir: Path
    env: dict[str, str]
    plan: Plan
    progress: Progress
    loop: str = "asyncio"
    servers: dict[str, Child] = field(default_factory=dict)
    ports: dict[str, dict[str, int]] = field(default_factory=dict)
    client: Child | None = None

    def start_server(self, impl: str) -> tuple[Child, dict[str, int]]:
        """A fresh server process for ``impl`` and the ports it listens on."""
        child = Child(
            f"{impl} server ({self.loop})",
            ["bench.server", "--impl", impl, "--dir", str(self.workdir), "--loop", self.loop],
            self.env,
            self.workdir,
        )
        return child, child.read(START_TIMEOUT)["ports"]

    def server(self, impl: str) -> Child:
        """The long-lived server process of ``impl`` (started on first use)."""
        if impl not in self.servers:
            # The memory figure's fresh servers come and go: only this one's ports are kept.
            self.servers[impl], self.ports[impl] = self.start_server(impl)
        return self.servers[impl]

    def port(self, impl: str, pairing: str) -> int:
        """Where ``impl`` serves ``pairing`` (kexlab and TCP have one port for all)."""
        self.server(impl)
        return _port(self.ports[impl], impl, pairing)

    def ask(self, job: Result) -> Result:
        """Run one job on the client process; measured jobs get the CPU both peers spent per op."""
        if self.client is None:
            args = ["bench.client", "--dir", str(self.workdir), "--loop", self.loop]
            self.client = Child(f"client ({self.loop})", args, self.env, self.workdir)
            self.client.read(START_TIMEOUT)
        timeout = 60.0 + 10 * (float(job.get("duration", 0)) + float(job.get("warmup", 0)))
        server = self.servers.get(job.get("impl", ""))
        pids = (self.client.pid, server.pid if server else None)
        before = [cpu_seconds(p) if p else None for p in pids]
        result = self.client.ask(job, timeout)
        after = [cpu_seconds(p) if p else None for p in pids]
        ops = result.get("ops")
        if ops:
            # Linux counts CPU in clock ticks (10 ms): a figure over a few hundred ms is sound.
            for side, b, a in zip(("client", "server"), before, after, strict=True):
                if a is not None and b is not None:
                    result[f"{side}_cpu_us"] = round((a - b) / ops * 1e6, 2)
        return result

    def close(self) -> None:
        """Stop every peer."""
        for child in [*([self.client] if self.client else []), *self.servers.values()]:
            child.stop()


def _port(ports: dict[str, int], impl: str, pairing: str) -> int:
    """TLS listens once per pairing; kexlab and TCP have one port for everything."""
    return ports[pairing] if impl == "tls" else next(iter(ports.values()))


def _best(runs: list[Result], key: str) -> Result:
    return max(runs, key=lambda r: float(r[key]))


def _cpu(runs: list[Result]) -> Result:
    """The least CPU per operation of each peer over the runs (contention only ever adds)."""
    out: Result = {}
    for side in ("client", "server"):
        values = [r[f"{side}_cpu_us"] for r in runs if f"{side}_cpu_us" in r]
        out[f"{side}_cpu_us"] = min(values) if values else None
    return out


def _handshakes(s: Session, name: str) -> Result:
    pairing = PAIRING_BY_NAME[name]
    impls = ["kexlab", "tls"] if pairing.tls_key else ["kexlab"]
    out: Result = {"pairing": name, "kexlab": pairing.kexlab_label, "tls": pairing.tls_label}
    for mode, concurrency in (("sequential", 1), ("concurrent", s.plan.concurrency)):
        runs: dict[str, list[Result]] = {impl: [] for impl in impls}
        for _ in range(s.plan.repeats):
            for impl in impls:
                job = {
                    "job": "handshake",
                    "impl": impl,
                    "port": s.port(impl, name),
                    "pairing": name,
                    "concurrency": concurrency,
                    "duration": s.plan.duration,
                    "warmup": s.plan.warmup,
                }
                runs[impl].append(s.ask(job))
        row: Result = {"concurrency": concurrency}
        for impl in impls:
            best = _best(runs[impl], "rate")
            row[impl] = {k: round(best[k], 3) for k in ("rate", "p50_ms", "p99_ms")}
            row[impl]["count"] = best["count"]
            row[impl].update(_cpu(runs[impl]))
            s.progress(f"handshake {name} {mode}: {impl} {best['rate']:,.0f}/s")
        out[mode] = row
    return out


def _bulk(s: Session, size_name: str) -> Result:
    size = BULK_SIZES[size_name]
    runs: dict[str, list[Result]] = {impl: [] for impl in ("kexlab", "tls", "tcp")}
    for _ in range(s.plan.repeats):
        for impl in runs:
            job = {
                "job": "bulk",
                "impl": impl,
                "port": s.port(impl, DATA_PAIRING),
                "pairing": DATA_PAIRING,
                "size": size,
                "duration": s.plan.duration,
                "warmup": s.plan.warmup,
            }
            runs[impl].append(s.ask(job))
    out: Result = {"size": size, "cpu_us_per_message": {}}
    for impl, impl_runs in runs.items():
        out[impl] = round(_best(impl_runs, "mb_s")["mb_s"], 2)
        out["cpu_us_per_message"][impl] = _cpu(impl_runs)
        s.progress(f"bulk {size_name}: {impl} {out[impl]:,.0f} MB/s")
    return out


def _pingpong(s: Session) -> Result:
    runs: dict[str, list[Result]] = {impl: [] for impl in ("kexlab", "tls", "tcp")}
    for _ in range(s.plan.repeats):
        for impl in runs:
            job = {
                "job": "pingpong",
                "impl": impl,
                "port": s.port(impl, DATA_PAIRING),
                "pairing": DATA_PAIRING,
                "duration": s.plan.duration,
                "warmup": s.plan.warmup,
            }
            runs[impl].append(s.ask(job))
    out: Result = {"cpu_us_per_round_trip": {}}
    for impl, impl_runs in runs.items():
        out[impl] = round(_best(impl_runs, "rate")["rate"], 1)
        out["cpu_us_per_round_trip"][impl] = _cpu(impl_runs)
        s.progress(f"ping-pong: {impl} {out[impl]:,.0f} round trips/s")
    return out


def _memory(s: Session) -> Result:
    out: Result = {"connections": s.plan.connections}
    for impl in ("kexlab", "tls", "tcp"):
        server, ports = s.start_server(impl)  # fresh: memory freed earlier would hide growth
        try:
            port = _port(ports, impl, DATA_PAIRING)
            base_job = {"impl": impl, "port": port, "pairing": DATA_PAIRING}
            s.ask({**base_job, "job": "open", "connections": WARM_CONNECTIONS})
            s.ask({"job": "release"})
            time.sleep(0.2)
            before = rss_kib(server.pid)
            opened = s.ask({**base_job, "job": "open", "connections": s.plan.connections})["opened"]
            time.sleep(0.2)
            after = rss_kib(server.pid)
            s.ask({"job": "release"})
        finally:
            server.stop()
        if before is None or after is None:
            out[impl] = None
            s.progress(f"memory: {impl} not measurable here (no /proc)")
            continue
        out[impl] = round((after - before) / opened, 2)
        s.progress(f"memory: {impl} {out[impl]:,.1f} KiB per idle connection")
    return out


def _crowd(s: Session) -> Result:
    """1,000 clients at once, each a handshake and 100 echoes: every one must complete, in order."""
    out: Result = {"clients": CROWD_CLIENTS, "messages": CROWD_MESSAGES}
    for impl in ("kexlab", "tls"):
        job = {
            "job": "crowd",
            "impl": impl,
            "port": s.port(impl, DATA_PAIRING),
            "pairing": DATA_PAIRING,
            "clients": CROWD_CLIENTS,
            "messages": CROWD_MESSAGES,
        }
        r = s.ask(job)
        out[impl] = {
            k: r[k] for k in ("clients", "completed", "lost", "reordered", "errors", "elapsed")
        } | {
            "handshake_p50_ms": _round(r["handshake_p50_ms"]),
            "handshake_p99_ms": _round(r["handshake_p99_ms"]),
            **_cpu([r]),
        }
        s.progress(
            f"crowd: {impl} {r['completed']:,}/{r['clients']:,} completed, "
            f"handshake p50 {out[impl]['handshake_p50_ms']} ms, p99 {out[impl]['handshake_p99_ms']} ms"
        )
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _measure(session: Session) -> Result:
    """Every planned measurement on one kind of event loop."""
    results: Result = {
        "handshakes": [],
        "bulk": [],
        "pingpong": None,
        "memory": None,
        "crowd": None,
    }
    for item in session.plan.items:
        kind, _, arg = item.partition("-")
        if kind == "handshake":
            results["handshakes"].append(_handshakes(session, arg))
        elif kind == "bulk":
            results["bulk"].append(_bulk(session, arg))
        elif kind == "pingpong":
            results["pingpong"] = _pingpong(session)
        elif kind == "memory":
            results["memory"] = _memory(session)
        elif kind == "crowd":
            results["crowd"] = _crowd(session)
    return results


def run(plan: Plan, progress: Progress) -> Result:
    """Generate keys, start the peers, run every planned measurement; the full result as a dict."""
    started = time.time()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    results: Result = {}
    with tempfile.TemporaryDirectory(prefix="kexlab-bench-") as tmp:
        workdir = Path(tmp)
        keys.generate(workdir)
        for loop in plan.loops:
            session = Session(workdir, child_env(), plan, progress, loop)
            try:
                measured = _measure(session)
            finally:
                session.close()
            if loop == "asyncio":
                results.update(measured)
            else:
                results[loop] = measured
    results["load_before"] = [round(x, 2) for x in load] if load else None
    return summarise(results, plan, time.time() - started)
