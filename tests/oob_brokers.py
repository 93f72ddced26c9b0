"""Real MQTT brokers for the oob tests: Mosquitto in a process, the embedded amqtt broker in-process.

Both expose the same small interface (``url``, ``settings()``, ``stop()``, ``start()``)
so that every scenario runs against both. Mosquitto gets a config written to tmp from
the shipped ones in ``oob/mosquitto/`` (only the listener and file paths changed), so the
shipped ACL is what the hardened tests exercise.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from external_tools import require_tool

from oob import EmbeddedBroker, MqttSettings
from oob.settings import connect

REPO = Path(__file__).resolve().parent.parent
MOSQUITTO_DIR = REPO / "oob" / "mosquitto"
START_TIMEOUT = 5.0

# Accounts of the hardened config (passwords made up per test run).
SERVER_USER = "kexlab-server"
CLIENT_USER = "kexlab-client"
GUEST_USER = "guest"  # logs in, but the ACL grants it nothing


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_port(port: int, timeout: float = START_TIMEOUT) -> None:
    """Poll until something accepts on 127.0.0.1:port (Mosquitto has no readiness signal)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        return


class Mosquitto:
    """A Mosquitto process on a free loopback port, from a shipped config."""

    kind = "mosquitto"

    def __init__(self, tmp: Path, config: str = "open.conf", tls: tuple[Path, Path] | None = None):
        self.binary = require_tool("mosquitto")
        self.tmp = tmp
        self.port = free_port()
        self.passwords: dict[str, str] = {}
        self.log = tmp / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        text = (MOSQUITTO_DIR / config).read_text(encoding="utf-8")
        text = re.sub(r"(?m)^listener .*$", f"listener {self.port} 127.0.0.1", text, count=1)
        if "password_file" in text:
            text = self._hardened(text)
        if tls is not None:
            cert, key = tls
            text += f"\ncertfile {cert}\nkeyfile {key}\n"
        # Mosquitto started as root drops to the "mosquitto" user, which cannot read tmp.
        text += f"\nuser {getpass.getuser()}\n"
        self.config = tmp / f"test-{config}"
        self.config.write_text(text, encoding="utf-8")

    def _hardened(self, text: str) -> str:
        passwd = self.tmp / "passwd"
        tool = require_tool("mosquitto_passwd")
        for user in (SERVER_USER, CLIENT_USER, GUEST_USER):
            self.passwords[user] = os.urandom(9).hex()
            args = [tool, "-b", *([] if passwd.exists() else ["-c"])]
            subprocess.run([*args, str(passwd), user, self.passwords[user]], check=True)
            (self.tmp / f"{user}.password").write_text(self.passwords[user] + "\n")
        acl = MOSQUITTO_DIR / "kexlab.acl"
        text = re.sub(r"(?m)^password_file .*$", f"password_file {passwd}", text)
        return re.sub(r"(?m)^acl_file .*$", f"acl_file {acl}", text)

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:PORT."""
        return f"mqtt://127.0.0.1:{self.port}"

    def settings(self, user: str | None = None) -> MqttSettings:
        """Settings for this broker, logged in as ``user`` (hardened config) or anonymous."""
        if user is None:
            return MqttSettings.from_url(self.url, env={})
        return MqttSettings.from_url(
            self.url, username=user, password_file=self.tmp / f"{user}.password", env={}
        )

    async def start(self) -> None:
        """Start the process and wait until it accepts connections."""
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            await wait_port(self.port)
        except TimeoutError:
            await self.stop()
            raise AssertionError(f"mosquitto did not start:\n{self.log.read_text()}") from None

    async def stop(self) -> None:
        """Terminate the process (its clients see the connection drop)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


class Amqtt:
    """The embedded broker (``oob.EmbeddedBroker``) on a fixed free port, so it can return."""

    kind = "amqtt"

    def __init__(self) -> None:
        self.port = free_port()
        self._broker: EmbeddedBroker | None = None

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:PORT."""
        return f"mqtt://127.0.0.1:{self.port}"

    def settings(self, user: str | None = None) -> MqttSettings:
        """Anonymous settings (the embedded broker has no accounts)."""
        assert user is None, "the embedded broker is the open lab broker"
        return MqttSettings.from_url(self.url, env={})

    async def start(self) -> None:
        """Start listening (again) on the same port."""
        self._broker = EmbeddedBroker("127.0.0.1", self.port)
        await self._broker.start()

    async def stop(self) -> None:
        """Shut down: clients are disconnected, retained messages are lost."""
        broker, self._broker = self._broker, None
        if broker is not None:
            async with asyncio.timeout(10):  # a hang here is a bug to report, not to wait out
                await broker.stop()


LabBroker = Mosquitto | Amqtt


@contextlib.asynccontextmanager
async def running(broker: LabBroker) -> AsyncIterator[LabBroker]:
    """Start ``broker`` for the duration of a with block."""
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


def make_broker(kind: str, tmp: Path) -> LabBroker:
    """An open broker of either kind (not started)."""
    return Mosquitto(tmp) if kind == "mosquitto" else Amqtt()


async def assert_no_stray_tasks() -> None:
    """Every task an oob object started has ended (after a few loop turns for callbacks)."""
    current = asyncio.current_task()
    for _ in range(20):
        stray = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not stray:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"tasks left running: {stray}")


@contextlib.asynccontextmanager
async def subscriber(settings: MqttSettings, topic: str = "kexlab/#") -> AsyncIterator[list[Any]]:
    """A plain MQTT subscriber (an eavesdropper, or a wire check): the messages it got."""
    received: list[Any] = []
    async with connect(settings) as client:
        await client.subscribe(topic, qos=1)

        async def pump() -> None:
            async for message in client.messages:
                received.append(message)

        task = asyncio.create_task(pump())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
