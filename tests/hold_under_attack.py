"""Measure what issue 13's attacks do to a kexlab server: the figures behind docs/hardening.md.

    .venv/bin/python tests/hold_under_attack.py [SCENARIO ...] [--source DIR] [--seconds N]

Every attack runs on loopback against ``python -m server`` started from ``--source``
(default: this checkout; give it an older checkout to measure the "before"). This is a
measurement, not a test: it prints numbers (latencies, CPU, RSS, log lines), it asserts
nothing, and it runs as long as asked (the tests run the same attacks, bounded).

One scenario per attack, each read on its own: longer than most files for that reason.

Scenarios: figure1 (1,000 idle connections and 500 hellos/s from 127.0.0.1, 20 honest
clients from 127.0.0.2), flood (hellos/s from one address, CPU and honest latency), slots
(idle connections and a reconnect storm: honest clients, log lines and bytes), keyupdate
(RSS through a key_update flood), psk (RSS through PSK announcements, honest psk clients),
inbox (RSS, files stored and the name-clash cost through a many-file upload), bomb (a
retained nesting bomb on the broker, then honest psk-over-MQTT clients), sas (a man in
the middle with an ordinary MQTT client against --verify-sas mqtt: what each end prints),
files (items 8, 9, 10 and 12 once each: does the attack get through, yes or no).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from oob_brokers import Mosquitto, running  # noqa: E402
from redteam import (  # noqa: E402
    HelloFlood,
    Holder,
    handshaken,
    honest_round,
    key_update_flood,
    median,
    mitm,
    sample_rss,
    sas_forger,
)

from oob.settings import connect  # noqa: E402
from protocol import AlertCode, FrameType, encode_frame  # noqa: E402
from protocol.messages import Alert  # noqa: E402
from transport.control import OP_FILE, encode_control  # noqa: E402

HONEST = "127.0.0.2"
_FLOOD_CONNECT = re.compile(r"\[127\.0\.0\.1:\d+\] connect$")
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Server:
    """``python -m server`` from a source tree, its stdout counted as it comes."""

    def __init__(self, source: Path, home: Path, *args: str) -> None:
        self.home = home
        env = {**os.environ, "PYTHONPATH": str(source), "KEXLAB_HOME": str(home)}
        argv = [sys.executable, "-m", "server", "--port", "0", *args]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=source, env=env
        )
        self.lines = 0
        self.bytes = 0
        self.flood_served = 0
        """Connections from 127.0.0.1 the server took into a handshake ("connect" lines)."""
        self.sample: list[str] = []
        self.port = 0
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._count(line)
            m = re.search(r"listening: address=\S+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break

    def _count(self, line: str) -> None:
        self.lines += 1
        self.bytes += len(line.encode())
        if _FLOOD_CONNECT.match(line):
            self.flood_served += 1
        if len(self.sample) < 4000:
            self.sample.append(line.rstrip("\n"))

    async def drain(self) -> None:
        """Keep reading stdout (a full pipe would stall the server) until it ends."""
        assert self.proc.stdout is not None
        while line := await asyncio.to_thread(self.proc.stdout.readline):
            self._count(line)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_from(source: Path, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m client|server ARGS`` from ``source`` (a short-lived program)."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    argv = [sys.executable, "-m", program, *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=source, env=env, timeout=60)


@contextlib.asynccontextmanager
async def serving(source: Path, *args: str) -> AsyncIterator[Server]:
    with tempfile.TemporaryDirectory() as home:
        srv = await asyncio.to_thread(Server, source, Path(home), *args)
        draining = asyncio.create_task(srv.drain())
        try:
            yield srv
        finally:
            await asyncio.to_thread(srv.stop)
            await asyncio.wait({draining}, timeout=5)


@contextlib.asynccontextmanager
async def mosquitto() -> AsyncIterator[Mosquitto]:
    """An open Mosquitto on a free loopback port, for the MQTT scenarios."""
    with tempfile.TemporaryDirectory() as tmp:
        async with running(Mosquitto(Path(tmp))) as broker:
            yield broker


def report(title: str, rows: dict[str, object]) -> None:
    print(f"\n## {title}")
    for key, value in rows.items():
        print(f"- {key}: {value}")
    sys.stdout.flush()


async def rounds(port: int, n: int, deadline: float = 10.0) -> tuple[int, list[float]]:
    ok, times = 0, []
    for _ in range(n):
        try:
            times.append(await honest_round(port, HONEST, deadline))
            ok += 1
        except Exception:  # a refusal or a timeout: counted as a failure
            await asyncio.sleep(0.05)
    return ok, times


def latency(times: list[float]) -> str:
    if not times:
        return "-"
    return f"median {median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"


# --------------------------------------------------------------------------- scenarios


async def figure1(source: Path, seconds: float) -> None:
    async with serving(source) as srv:
        holder = Holder(srv.port, 1000, reconnect_delay=1.0)
        flood = HelloFlood(srv.port, rate=500)
        holder.start()
        flood.start()
        await asyncio.sleep(3)
        cpu0, t0 = srv.cpu_seconds(), time.monotonic()
        ok, times = await rounds(srv.port, 20)
        cpu = (srv.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        await flood.stop()
        await holder.stop()
    report(
        "figure 1: 1,000 idle + 500 hellos/s from 127.0.0.1, 20 honest rounds from 127.0.0.2",
        {
            "honest handshake+echo completed": f"{ok}/20",
            "honest latency": latency(times),
            "under 1 s": f"{sum(t < 1 for t in times)}/20",
            "server CPU during the rounds": f"{cpu * 100:.0f} %",
            "idle connections opened / dropped": f"{holder.opened} / {holder.dropped}",
            "hellos sent / answered": f"{flood.sent} / {flood.answered}",
            "server log lines": srv.lines,
        },
    )


async def flood(source: Path, seconds: float) -> None:
    for rate in (1500,):
        async with serving(source) as srv:
            _, base_times = await rounds(srv.port, 10)
            attack = HelloFlood(srv.port, rate=rate)
            attack.start()
            await asyncio.sleep(2)
            cpu0, t0 = srv.cpu_seconds(), time.monotonic()
            ok, times = await rounds(srv.port, 20)
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
            cpu = (srv.cpu_seconds() - cpu0) / (time.monotonic() - t0)
            await attack.stop()
        report(
            f"hello flood: {rate}/s from 127.0.0.1 for {seconds:.0f} s",
            {
                "honest latency without the flood": latency(base_times),
                "honest completed under the flood": f"{ok}/20",
                "honest latency under the flood": latency(times),
                "server CPU under the flood": f"{cpu * 100:.0f} %",
                "hellos sent / answered": f"{attack.sent} / {attack.answered}",
                "flood connections served (signed)": srv.flood_served,
                "server log": f"{srv.lines} lines, {srv.bytes / 1e6:.2f} MB",
            },
        )


async def slots(source: Path, seconds: float) -> None:
    async with serving(source) as srv:
        holder = Holder(srv.port, 600, reconnect_delay=0.0)
        holder.start()
        await asyncio.sleep(2)
        lines0, bytes0, t0 = srv.lines, srv.bytes, time.monotonic()
        ok, times = await rounds(srv.port, 10, deadline=5)
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        elapsed = time.monotonic() - t0
        lines, written = srv.lines - lines0, srv.bytes - bytes0
        await holder.stop()
    report(
        f"idle connections: 600 held from 127.0.0.1, reconnecting at once, {elapsed:.0f} s",
        {
            "honest clients from 127.0.0.2 served": f"{ok}/10",
            "honest latency": latency(times),
            "connections opened / dropped by the server": f"{holder.opened} / {holder.dropped}",
            "server log": f"{lines} lines, {written / 1e6:.2f} MB in {elapsed:.0f} s",
        },
    )


async def keyupdate(source: Path, seconds: float) -> None:
    async with serving(source) as srv:
        rss: list[float] = []
        sampler = asyncio.create_task(sample_rss(srv.proc.pid, 1.0, rss))
        await asyncio.sleep(1.5)
        attacker = await handshaken(srv.port)
        sent, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            sent += await key_update_flood(attacker, 20_000)
            if attacker.transport.get_write_buffer_size() > 8 << 20:
                await asyncio.sleep(0.2)  # the server stopped reading: wait, keep asking
        await asyncio.sleep(1.5)
        sampler.cancel()
        attacker.transport.abort()
    report(
        f"key_update flood: {seconds:.0f} s of request_update=1, never reading",
        {
            "requests written": sent,
            "server RSS": f"start {rss[0]:.1f} MB, max {max(rss):.1f} MB, end {rss[-1]:.1f} MB",
            "growth": f"{max(rss) - rss[0]:+.1f} MB",
        },
    )


async def psk(source: Path, seconds: float) -> None:
    async with mosquitto() as broker:
        settings = broker.settings()
        async with serving(source, "--oob", broker.url, "--server-id", "lab") as srv:
            rss: list[float] = []
            sampler = asyncio.create_task(sample_rss(srv.proc.pid, 1.0, rss))
            await asyncio.sleep(2)
            body = '{{"expires_at": 1e15, "identity": "f{0}", "key": "{1}"}}'
            key = "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U="

            async def announce() -> int:
                async with connect(settings) as attacker:
                    for i in range(100_000):
                        payload = body.format(i, key).encode()
                        await attacker.publish(f"kexlab/v1/lab/psk/f{i}", payload, qos=1)
                return 100_000

            flooding = asyncio.create_task(announce())
            ok = tried = 0
            errors: list[str] = []
            failed: list[str] = []
            while not flooding.done():
                tried += 1
                # `kexlab client --kex psk --oob` of the source under test, as a process.
                done = await asyncio.to_thread(
                    run_from, source, "client", f"127.0.0.1:{srv.port}", "--kex", "psk",
                    "--oob", broker.url, "--server-id", "lab", "--send", "honest",
                )  # fmt: skip
                if done.returncode == 0:
                    ok += 1
                else:
                    errors.append(done.stderr.strip().splitlines()[-1][:200])
                    failed.extend(re.findall(r"psk-[0-9a-f]{16}", done.stderr))
                await asyncio.sleep(1.0)
            await flooding
            await asyncio.sleep(2)
            sampler.cancel()
        dropped = sum("dropped" in ln for ln in broker.log.read_text().splitlines())
    report(
        "PSK flood: 100,000 valid announcements (expires_at 1e15) on an open Mosquitto",
        {
            "honest psk-over-MQTT handshakes during the flood": f"{ok}/{tried}",
            "their failures": sorted(set(errors)) or "-",
            "the server's lines on them": [ln for ln in srv.sample if any(f in ln for f in failed)]
            or "-",
            "server RSS": f"start {rss[0]:.1f} MB, max {max(rss):.1f} MB, end {rss[-1]:.1f} MB",
            "server log lines": srv.lines,
            "broker dropped messages for a slow subscriber": dropped,
        },
    )


async def inbox(source: Path, seconds: float) -> None:
    async with serving(source) as srv:
        rss: list[float] = []
        sampler = asyncio.create_task(sample_rss(srv.proc.pid, 1.0, rss))
        await asyncio.sleep(1.5)
        _, base = await rounds(srv.port, 10)
        attacker = await handshaken(srv.port)
        stop = asyncio.Event()
        answers = ok = 0

        async def upload(name: str) -> bool:
            await attacker.send(encode_control(OP_FILE, name=name, size=0, sha256=EMPTY_SHA256))
            reply = await attacker.recv()
            return reply is not None and b'"file-ok"' in reply

        async def flood() -> None:
            nonlocal answers, ok
            for i in range(100_000):
                if stop.is_set():
                    break
                ok += await upload(f"f{i}.bin")
                answers += 1

        uploading = asyncio.create_task(flood())
        t0 = time.monotonic()
        times: list[float] = []
        while time.monotonic() - t0 < seconds and not uploading.done():
            with contextlib.suppress(Exception):
                times.append(await honest_round(srv.port, HONEST, 30))
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait({uploading}, timeout=60)
        flood_s = time.monotonic() - t0
        # The name-clash search: 20,000 files named like the next upload already there.
        box = srv.home / "inbox"
        await asyncio.to_thread(_plant, box, 20_000)
        clash = await handshaken(srv.port)
        attacker.transport.abort()
        attacker = clash
        t1 = time.monotonic()
        for _ in range(5):
            await upload("clash.bin")
        per_upload = (time.monotonic() - t1) / 5
        sampler.cancel()
        attacker.transport.abort()
    report(
        f"inbox flood: one session uploads empty files for {seconds:.0f} s (up to 100,000)",
        {
            "uploads answered / files stored": f"{answers} / {ok} in {flood_s:.0f} s",
            "honest echo latency before": latency(base),
            "honest echo latency during": latency(times),
            "one upload whose name 20,000 files already use": f"{per_upload * 1000:.1f} ms",
            "server RSS": f"start {rss[0]:.1f} MB, max {max(rss):.1f} MB, end {rss[-1]:.1f} MB",
        },
    )


def _plant(box: Path, n: int) -> None:
    box.mkdir(parents=True, exist_ok=True)
    for name in ["clash.bin", *(f"clash-{i}.bin" for i in range(1, n + 1))]:
        (box / name).touch()


async def bomb(source: Path, seconds: float) -> None:
    async with mosquitto() as broker:
        async with connect(broker.settings()) as attacker:
            bomb = b"[" * 1500 + b"]" * 1500  # 3 KB
            await attacker.publish("kexlab/v1/lab/psk/x", bomb, qos=1, retain=True)
        async with serving(source, "--oob", broker.url, "--server-id", "lab") as srv:
            ok = tried = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < seconds:
                tried += 1
                done = await asyncio.to_thread(
                    run_from, source, "client", f"127.0.0.1:{srv.port}", "--kex", "psk",
                    "--oob", broker.url, "--server-id", "lab", "--send", "honest",
                )  # fmt: skip
                ok += done.returncode == 0
            await asyncio.sleep(0.5)
            restarts = sum("subscriber failed" in ln for ln in srv.sample)
    report(
        "a retained 3 KB nesting bomb on psk/x, then honest psk-over-MQTT clients",
        {
            "honest clients that got in": f"{ok}/{tried}",
            "subscriber restarts logged": restarts,
            "server log": f"{srv.lines} lines, {srv.bytes / 1e6:.2f} MB",
        },
    )


async def sas(source: Path, seconds: float) -> None:
    async with mosquitto() as broker:
        mqtt = ["--oob", broker.url, "--server-id", "lab", "--verify-sas", "mqtt"]
        async with serving(source, *mqtt) as srv:
            async with mitm(srv.port) as (port, legs), sas_forger(broker.settings(), legs):
                done = await asyncio.to_thread(
                    run_from, source, "client", f"127.0.0.1:{port}", "--trust", "none",
                    *mqtt, "--send", "the secret",
                )  # fmt: skip
            await asyncio.sleep(1)
            server_says = [ln for ln in srv.sample if "SAS" in ln and "handshake" not in ln]
    client_says = [ln for ln in done.stdout.splitlines() if "SAS" in ln and "handshake" not in ln]
    report(
        "a man in the middle and an ordinary MQTT client on an open broker, --verify-sas mqtt",
        {
            "the attacker read": [r.decode() for r in legs[0].plaintext] if legs else "-",
            "the client printed": client_says or done.stderr.strip(),
            "the server printed": server_says or "-",
        },
    )


async def files(source: Path, seconds: float) -> None:
    """Items 8-10 and 12, once each: what the attacker gets, yes or no."""
    key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
    rows: dict[str, object] = {}
    async with serving(source, "--psk", f"lab={key}") as srv:
        rows["8: --psk key in /proc/PID/cmdline"] = key in Path(
            f"/proc/{srv.proc.pid}/cmdline"
        ).read_bytes().decode(errors="replace")
        port, home = srv.port, srv.home
        # 9: a pin of another key, followed by a comment: refused, line kept?
        known = home / "known_hosts"
        line = f"127.0.0.1:{port} {'ab' * 32} # pinned by the operator\n"
        known.write_text(line)
        done = await asyncio.to_thread(run_from_home, source, home, f"127.0.0.1:{port}")
        rows["9: commented pin of another key: client exit code"] = done.returncode
        rows["9: the operator's line kept"] = known.read_text() == line
        known.unlink()
        # 10: an existing 0644 key log, and a symlink to a 0666 file
        log = home / "keys.log"
        log.write_text("")
        log.chmod(0o644)
        await asyncio.to_thread(
            run_from_home, source, home, f"127.0.0.1:{port}", "--keylog", str(log)
        )
        rows["10: key log mode after a session"] = oct(log.stat().st_mode & 0o777)
        target, link = home / "target", home / "link.log"
        target.write_text("")
        target.chmod(0o666)
        link.symlink_to(target)
        await asyncio.to_thread(
            run_from_home, source, home, f"127.0.0.1:{port}", "--keylog", str(link)
        )
        rows["10: secrets written through a symlink"] = target.stat().st_size > 0
        # 12: an unauthenticated ALERT whose reason forges a log line
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        forged = (
            "x\n[127.0.0.1:1] server: handshake complete: psk/aes256, psk identity admin\x1b[2J"
        )
        writer.write(
            encode_frame(FrameType.ALERT, Alert(AlertCode.HANDSHAKE_FAILURE, forged).encode())
        )
        await reader.read()
        writer.close()
        await asyncio.sleep(0.5)
        lines = list(srv.sample)
    rows["12: forged log line present"] = any(
        ln.startswith("[127.0.0.1:1] server:") for ln in lines
    )
    rows["12: raw ESC in the server log"] = any("\x1b" in ln for ln in lines)
    report("files, secrets and injection (items 8, 9, 10, 12)", rows)


def run_from_home(source: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m client ARGS --send x`` from ``source`` with KEXLAB_HOME=home."""
    env = {**os.environ, "PYTHONPATH": str(source), "KEXLAB_HOME": str(home)}
    argv = [sys.executable, "-m", "client", *args, "--send", "x"]
    return subprocess.run(argv, capture_output=True, text=True, cwd=source, env=env, timeout=60)


SCENARIOS = {
    "figure1": figure1,
    "flood": flood,
    "slots": slots,
    "keyupdate": keyupdate,
    "psk": psk,
    "inbox": inbox,
    "bomb": bomb,
    "sas": sas,
    "files": files,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=", ".join(SCENARIOS) + " (default: all)")
    parser.add_argument("--source", type=Path, default=HERE.parent, help="checkout to attack")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each attack")
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}")
    print(f"# {args.source} ({time.strftime('%Y-%m-%d %H:%M')})")
    for name in args.scenarios or SCENARIOS:
        asyncio.run(SCENARIOS[name](args.source.resolve(), args.seconds))


if __name__ == "__main__":
    main()
