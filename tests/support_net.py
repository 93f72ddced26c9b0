"""Helpers for the server/client tests: a data dir per test, servers in a thread or a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cli.psk_options import ON_THE_COMMAND_LINE as PSK_WARNING
from keystore import fingerprint, load_private_key, write_private_key
from protocol import HandshakeComplete
from server.server import KexlabServer, ServerObserver, ServerOptions

BIN = Path(sys.executable).parent
KEXLAB = str(BIN / "kexlab") if (BIN / "kexlab").exists() else (shutil.which("kexlab") or "kexlab")
REPO = Path(__file__).resolve().parent.parent
PSK_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

_KEY_CACHE: dict[str, Path] = {}


def cached_rsa_key(tmp_factory: pytest.TempPathFactory) -> Path:
    """One RSA-2048 key file (0600) for the whole test session: key generation is slow."""
    if "rsa" not in _KEY_CACHE:
        from keystore import generate_private_key

        path = tmp_factory.mktemp("keys") / "server-rsa.pem"
        write_private_key(generate_private_key("rsa", 2048), path)
        _KEY_CACHE["rsa"] = path
    return _KEY_CACHE["rsa"]


@pytest.fixture(name="home")
def home_fixture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """KEXLAB_HOME for this test, seeded with the session's server key (no keygen per test)."""
    data = tmp_path / "home"
    data.mkdir(mode=0o700)
    src = cached_rsa_key(tmp_path_factory)
    dst = data / "server-rsa.pem"
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o600)
    shutil.copyfile(src.with_name(src.name + ".pub"), data / "server-rsa.pem.pub")
    monkeypatch.setenv("KEXLAB_HOME", str(data))
    monkeypatch.delenv("KEXLAB_KEYLOGFILE", raising=False)
    return data


def home_key(home: Path) -> rsa.RSAPrivateKey:
    """The server key seeded into ``home``."""
    key = load_private_key(home / "server-rsa.pem")
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def home_fingerprint(home: Path) -> str:
    """Hex SHA-256 of the seeded server key."""
    return fingerprint(home_key(home))


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- in a thread


@dataclass
class Recorder(ServerObserver):
    """Collects what a server reports (called from the server's thread)."""

    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    handshakes: list[HandshakeComplete] = field(default_factory=list)

    def log(self, event: str, peer: str, fields: dict[str, Any]) -> None:
        """Keep every log event."""
        self.events.append((event, peer, fields))

    def handshake(self, peer: str, hc: HandshakeComplete, ms: float) -> None:
        """Keep every completed handshake."""
        self.handshakes.append(hc)

    def named(self, event: str) -> list[dict[str, Any]]:
        """The fields of every event called ``event``."""
        return [f for (e, _p, f) in list(self.events) if e == event]

    def wait_for(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        """Block until ``event`` was logged; its fields."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.named(event)
            if found:
                return found[-1]
            time.sleep(0.01)
        raise AssertionError(f"no {event!r} event in {self.events}")

    async def event(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        """Wait (without blocking the loop) until ``event`` was logged; its fields."""
        async with asyncio.timeout(timeout):
            while not self.named(event):
                await asyncio.sleep(0.01)
        return self.named(event)[-1]

    async def handshakes_done(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` handshakes completed. On the server's loop, an app has then
        taken each session in (the server reports a handshake and enters the app without an
        await in between, when no SAS check runs)."""
        async with asyncio.timeout(timeout):
            while len(self.handshakes) < count:
                await asyncio.sleep(0.005)


class ThreadServer:
    """A KexlabServer on its own event loop in a background thread (for CliRunner clients)."""

    def __init__(self, options: ServerOptions) -> None:
        options.host, options.port = "127.0.0.1", 0
        self.recorder = Recorder()
        self.loop = asyncio.new_event_loop()
        self.server = KexlabServer(options, self.recorder)
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        _host, self.port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(
            5
        )
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(grace=1.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    @property
    def address(self) -> str:
        """127.0.0.1:PORT."""
        return f"127.0.0.1:{self.port}"


# --------------------------------------------------------------------------- in a process


class ServerProcess:
    """``kexlab server`` as a real process; its stdout lines are collected as they come."""

    COMMAND = (KEXLAB, "server")
    READY = r"listening: address=\S+:(\d+)"
    """The line that says the program is up, its group 1 the port."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, cmd: list[str] | None = None
    ) -> None:
        full_env = {**os.environ, **(env or {})}
        argv = [*(cmd or self.COMMAND), *self.port_args(), *args]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full_env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        match = self.wait_for(self.READY, timeout=15)
        self.port = int(match.group(1))

    def port_args(self) -> list[str]:
        """Where to listen: any free port."""
        return ["--port", "0"]

    @property
    def output(self) -> str:
        """Every stdout line so far."""
        return "\n".join(self.lines)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def address(self) -> str:
        """127.0.0.1:PORT."""
        return f"127.0.0.1:{self.port}"

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Block until a stdout line matches ``pattern``."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(f"no line matching {pattern!r} in {self.lines} {err}")

    def stop(self, sig: int | None = signal.SIGINT, timeout: float = 10.0) -> tuple[int, str]:
        """Signal the server (None: it was signalled already) and return (exit code, stderr)."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.proc.returncode, err

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def run_client(
    *args: str,
    input: str | None = None,
    timeout: float = 30.0,
    cmd: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``kexlab client ARGS`` as a real process."""
    return subprocess.run(
        [*(cmd or [KEXLAB, "client"]), *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def one_error_line(stderr: str) -> str:
    """Assert stderr is exactly one line and no traceback; return it.

    The warning that ``--psk`` puts the key in the process list is not counted: tests
    that use ``--psk`` for brevity get it (test_redteam_files.py checks it).
    """
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip() and line != PSK_WARNING]
    assert len(lines) == 1, stderr
    return lines[0]


def iter_lines(text: str) -> Iterator[str]:
    """Non-empty lines."""
    return (line for line in text.splitlines() if line.strip())


@contextlib.asynccontextmanager
async def server_maker(home: Path, psks: dict[str, bytes]) -> AsyncIterator[Callable[..., Any]]:
    """``make(**options)`` starts an in-process KexlabServer on a free loopback port (keys in
    ``home``) and returns it with its Recorder; every server is shut down on exit."""
    servers: list[KexlabServer] = []

    async def make(**kw: object) -> tuple[KexlabServer, Recorder]:
        key = home_key(home)
        options = ServerOptions(
            host="127.0.0.1", port=0, rsa_key=key, sign_key=key, psks=psks, inbox=home / "inbox"
        )
        for k, v in kw.items():
            setattr(options, k, v)
        recorder = Recorder()
        srv = KexlabServer(options, recorder)
        await srv.start()
        servers.append(srv)
        return srv, recorder

    try:
        yield make
    finally:
        for srv in servers:
            await srv.shutdown(grace=1.0)
