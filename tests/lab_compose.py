"""The docker-compose lab under test: one Compose project on a real Docker engine.

Every compose command goes through ``lab/compose`` (the script ``make lab`` uses), with
the lab's settings in the environment: a project name, subnets and a captures folder of
its own, so a lab a developer left running is never touched. Where no engine, Compose or
base image can be had the tests skip with the reason, except under CI (``CI`` set),
where ``.ci/run`` provides all three and their absence is a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from external_tools import unavailable

REPO = Path(__file__).resolve().parent.parent
COMPOSE = str(REPO / "lab" / "compose")
PROJECT = "kexlabtest"
IMAGE = "kexlab-lab:test"
OFFLINE_BASE = "kexlab-lab-base:bookworm"  # what lab/offline-base.sh makes
LAB_NET, OOB_NET = "10.197.77", "10.197.78"  # not the defaults: a running lab stays apart
FILES = ("-f", str(REPO / "docker-compose.yml"))
ATTACK_FILES = (*FILES, "-f", str(REPO / "lab" / "attack.yml"))
ATTACK_OOB_FILES = (*ATTACK_FILES, "-f", str(REPO / "lab" / "attack-oob.yml"))
ALL_FILES = (*ATTACK_OOB_FILES, "-f", str(REPO / "lab" / "publish.yml"))

# docker-compose 1.29 and Compose v2 report progress on stderr, even with -T, and 1.29
# ends a failed `run` with the exit code on a line of its own; a client's own stderr
# is what is left once these lines are gone.
_PROGRESS = re.compile(
    r"^(?:(?:Creating|Starting|Recreating|Stopping|Removing|Pulling|Building) \S+ \.\.\. ?\S*"
    r'|Creating (?:network|volume) "\S+" with (?:the )?default driver'
    r"|\[\+\] .*| *(?:✔|⠿)? *(?:Container|Network|Volume) \S+ +\S+.*)$"
)
_LOG_PREFIX = re.compile(r"^\S+\s+\| ?")
SAS = re.compile(r"handshake complete: ([a-z]+)[/,].*SAS ([0-9a-f]{4}(?: [0-9a-f]{4}){3})")


def client_stderr(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The client's own stderr lines, without Compose's progress and exit code lines."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _PROGRESS.match(ln)]
    if proc.returncode and lines and lines[-1] == str(proc.returncode):
        lines.pop()
    return lines


@dataclass
class Session:
    """One client run: its output, and the method and SAS of its handshake."""

    proc: subprocess.CompletedProcess[str]
    kex: str = ""
    sas: str = ""

    @property
    def errors(self) -> list[str]:
        return client_stderr(self.proc)


@dataclass
class Lab:
    """A Compose project of the lab, with its captures folder and owner."""

    captures: Path
    uid: int
    gid: int
    base_image: str
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "KEXLAB_IMAGE": IMAGE,
            "BASE_IMAGE": self.base_image,
            "KEXLAB_CAPTURES": str(self.captures),
            "KEXLAB_LAB_NET": LAB_NET,
            "KEXLAB_OOB_NET": OOB_NET,
            "KEXLAB_UID": str(self.uid),
            "KEXLAB_GID": str(self.gid),
            "KEXLAB_BROKER": "open",
            "KEXLAB_SERVER_ARGS": "",
            "KEXLAB_CAPTURE_SECONDS": "600",
            "KEXLAB_CAPTURE_FILES": "24",
        }

    def compose(
        self,
        *args: str,
        files: tuple[str, ...] = FILES,
        timeout: float = 120,
        check: bool = True,
        **env: str,
    ) -> subprocess.CompletedProcess[str]:
        """``lab/compose -p kexlabtest ARGS`` with the lab's environment."""
        no_env_file = self.captures.parent / "empty.env"  # a developer's .env stays out
        no_env_file.touch()
        proc = subprocess.run(
            [COMPOSE, *files, "--env-file", str(no_env_file), "-p", PROJECT, *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"compose {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def up(self, *services: str, **env: str) -> None:
        """``up -d``, then wait until the server is subscribed and healthy, the sniffer listens."""
        self.compose("up", "-d", *services, timeout=300, **env)
        self.wait_log("server", "oob: MQTT: subscribed to", timeout=60)
        self.wait_health("server", timeout=60)  # a ``run`` with deps refuses an unhealthy one
        if not services or "sniffer" in services:
            self.wait_log("sniffer", "listening on any", timeout=60)

    def logs(self, service: str, files: tuple[str, ...] = FILES) -> list[str]:
        """The service's log lines (its current container), without Compose's prefix."""
        out = self.compose("logs", "--no-color", service, files=files).stdout
        return [_LOG_PREFIX.sub("", line, count=1) for line in out.splitlines() if "|" in line]

    def wait_log(
        self,
        service: str,
        text: str,
        count: int = 1,
        timeout: float = 30,
        files: tuple[str, ...] = FILES,
    ) -> list[str]:
        """Wait until ``text`` is in ``count`` lines of the service's log; those lines."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [line for line in self.logs(service, files) if text in line]
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                log = "\n".join(self.logs(service, files)[-30:])
                pytest.fail(f"{service} never logged {text!r} ({count}x):\n{log}")
            time.sleep(0.5)

    def state(self, service: str) -> str:
        """The container's state as docker reports it ("running", "exited 1", ...)."""
        cid = self.compose("ps", "-q", service).stdout.strip()
        if not cid:
            return "absent"
        fmt = "{{.State.Status}} {{.State.ExitCode}}"
        out = subprocess.run(
            ["docker", "inspect", "-f", fmt, cid], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[0] if out[0] == "running" else f"{out[0]} {out[1]}"

    def wait_state(self, service: str, prefix: str, timeout: float = 30) -> str:
        """Wait until the container's state starts with ``prefix``."""
        deadline = time.monotonic() + timeout
        while not (state := self.state(service)).startswith(prefix):
            if time.monotonic() > deadline:
                pytest.fail(f"{service} is {state!r}, never {prefix!r}")
            time.sleep(0.5)
        return state

    def health(self, service: str) -> str:
        """The container's healthcheck status ("starting", "healthy", "unhealthy")."""
        cid = self.compose("ps", "-q", service).stdout.strip()
        fmt = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        return subprocess.run(
            ["docker", "inspect", "-f", fmt, cid], capture_output=True, text=True, check=True
        ).stdout.strip()

    def wait_health(self, service: str, status: str = "healthy", timeout: float = 30) -> None:
        """Wait until Docker's healthcheck gives ``status`` (``run`` refuses while unhealthy)."""
        deadline = time.monotonic() + timeout
        while (health := self.health(service)) != status:
            if time.monotonic() > deadline:
                pytest.fail(f"{service} is {health!r}, never {status!r}")
            time.sleep(0.5)

    def client(
        self, *args: str, deps: bool = True, timeout: float = 90, files: tuple[str, ...] = FILES
    ) -> Session:
        """``run --rm client kexlab client server ARGS``; the handshake's method and SAS."""
        run = ["run", "--rm", "-T"] + ([] if deps else ["--no-deps"])
        proc = self.compose(
            *run,
            "client",
            "kexlab",
            "client",
            "server",
            *args,
            timeout=timeout,
            check=False,
            files=files,
        )
        found = SAS.search(proc.stdout)
        return Session(proc, *(found.groups() if found else ("", "")))

    def psk_client(self, text: str, deps: bool = True, files: tuple[str, ...] = FILES) -> Session:
        """A psk session whose key the client hands over on the lab's broker."""
        oob = ("--oob", "mqtt://broker:1883", "--server-id", "lab")
        return self.client(
            "--kex", "psk", *oob, "--send", text, "--timeout", "5", deps=deps, files=files
        )

    def server_saw(self, session: Session) -> bool:
        """The server logged the same method and SAS as the client."""
        assert session.sas, f"no handshake in the client's output:\n{session.proc.stdout}"
        return any(
            (m := SAS.search(line)) and m.groups() == (session.kex, session.sas)
            for line in self.logs("server")
        )

    def read_file(self, service: str, path: str) -> str:
        """A file from inside a running service's container."""
        return self.compose("exec", "-T", service, "cat", path).stdout

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes the engine still holds for the project."""
        label = f"label=com.docker.compose.project={PROJECT}"
        kinds = {
            "containers": ["docker", "ps", "-aq", "--filter", label],
            "networks": ["docker", "network", "ls", "-q", "--filter", label],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
        }
        return {
            kind: subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
            for kind, cmd in kinds.items()
        }

    def remove_all(self) -> None:
        """``down -v`` with every compose file, then whatever is left, by label."""
        self.compose("down", "-v", "--remove-orphans", files=ALL_FILES, check=False)
        left = self.leftovers()
        for kind, cmd in (
            ("containers", ["docker", "rm", "-f"]),
            ("networks", ["docker", "network", "rm"]),
            ("volumes", ["docker", "volume", "rm", "-f"]),
        ):
            if left[kind]:
                subprocess.run([*cmd, *left[kind]], capture_output=True, check=False)


def engine_ready() -> None:
    """Docker, Compose and a running engine, or skip (fail under CI) with lab/compose's line."""
    proc = subprocess.run([COMPOSE, "--check"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        unavailable(proc.stderr.strip() or "lab/compose --check failed")


def base_image() -> str:
    """KEXLAB_LAB_BASE_IMAGE, else the offline base if built, else python:3.11-slim."""
    if os.environ.get("KEXLAB_LAB_BASE_IMAGE"):
        return os.environ["KEXLAB_LAB_BASE_IMAGE"]
    probe = subprocess.run(["docker", "image", "inspect", OFFLINE_BASE], capture_output=True)
    return OFFLINE_BASE if probe.returncode == 0 else "python:3.11-slim"


def build(lab: Lab) -> None:
    """The wheelhouse and the image, exactly as ``make lab`` makes them."""
    wheels = subprocess.run(
        [str(REPO / "lab" / "wheelhouse.sh"), sys.executable, "lab/wheels"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if wheels.returncode != 0:
        unavailable(f"lab/wheelhouse.sh failed (it needs the package index):\n{wheels.stderr}")
    proc = lab.compose("build", "server", timeout=1200, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        unavailable(f"the lab image does not build on {lab.base_image}:\n{tail}")
