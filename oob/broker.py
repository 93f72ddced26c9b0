"""The embedded MQTT broker (amqtt) for machines without Mosquitto: ``kexlab broker``, tests, demo.

It is the open lab broker: anonymous, no ACL, no TLS. Anyone who can reach it can read
every key that crosses it, which is the lesson; ``oob/mosquitto/`` shows the fix.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from amqtt.broker import Broker  # type: ignore[import-untyped]
from amqtt.errors import BrokerError  # type: ignore[import-untyped]

from .internals import abort_broker_clients, broker_port
from .settings import OobError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1883

# Only the anonymous-auth plugin: amqtt's defaults also load packet loggers and a $SYS
# publisher, which a lab broker does not need.
_PLUGINS = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: addresses no other machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _SnapshotDict(dict[str, Any]):
    """A dict whose iteration walks a copy.

    amqtt walks its subscription table across awaits (replaying retained messages to a
    client that connects, broadcasting a message); a client subscribing to a new topic
    meanwhile raised "dictionary changed size during iteration" and killed the other
    client's session. Two peers comparing their SAS connect and subscribe at the same
    moment, so this happened in practice.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        """A copy of the items."""
        return list(super().items())


class _Broker(Broker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _SnapshotDict(self._subscriptions)  # type: ignore[has-type]

    async def stream_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        try:
            await super().stream_connected(reader, writer, listener_name)
        finally:
            # amqtt leaves the socket open when a client connects and never sends CONNECT
            # (a port probe, a health check): close it, or it leaks until GC.
            writer.close()


def _drop_startup_traceback(record: logging.LogRecord) -> bool:
    # amqtt logs a full traceback before it raises on a failed bind; our caller reports
    # the reason as one line instead.
    return record.getMessage() != "Broker startup failed"


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` (loopback by default; amqtt's own default is 0.0.0.0).

    ``async with EmbeddedBroker(port=0) as broker:`` picks a free port (``broker.port``).
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        if not 0 <= port <= 65535:
            raise OobError(f"bad port {port}")
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` of the running broker."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtt://{host}:{self.port}"

    async def start(self) -> None:
        """Open the listener; ``OobError`` (one line) if it cannot."""
        if self._broker is not None:
            raise OobError("the embedded broker is already running")
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        config = {
            "listeners": {"default": {"type": "tcp", "bind": bind}},
            "plugins": _PLUGINS,
        }
        broker = _Broker(config)
        amqtt_log = logging.getLogger("amqtt.broker")
        amqtt_log.addFilter(_drop_startup_traceback)
        try:
            await broker.start()
        except BrokerError as exc:
            cause = exc.__cause__ or exc
            raise OobError(f"cannot start the MQTT broker on {bind}: {_reason(cause)}") from None
        finally:
            amqtt_log.removeFilter(_drop_startup_traceback)
        self._broker = broker
        if self.port == 0:
            self.port = broker_port(broker)

    async def stop(self) -> None:
        """Disconnect every client and close the listener."""
        broker, self._broker = self._broker, None
        if broker is not None:
            abort_broker_clients(broker)
            await broker.shutdown()

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _reason(exc: BaseException) -> str:
    """Why a listen failed, in words ("[Errno 98]" and asyncio's address tuple left out)."""
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, OSError) and exc.errno:
        reason = os.strerror(exc.errno).lower()
        if exc.errno == errno.EADDRINUSE:
            reason += " (another broker, Mosquitto perhaps, holds that port: stop it or use --port)"
        return reason
    return str(exc)
