"""``kexlab mitm``: accept clients, intercept (or tamper with) each one, tally the verdicts.

Each accepted connection costs the attacker one task and nothing else: a client or an
upstream that speaks garbage, closes early or stalls ends that connection's verdict,
never the process.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from capture.tap import tap_connection
from explain.console import describe_error
from protocol import ServerConnection
from transport import KxpStream, start_server

from .attack import Interception, MitmOptions, Report, Verdict, close_quietly
from .relay import Tamper, TamperingRelay

LISTEN_BACKLOG = 128


@dataclass
class Tally:
    """Every verdict so far, for the table printed at the end."""

    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def counts(self) -> Counter[str]:
        """How many connections ended each way (WON, FAILED, DETECTED, PASSED THROUGH)."""
        return Counter(v.line.split(":", 1)[0] for v in self.verdicts)


class MitmProxy:
    """Listen on ``listen``; each client is intercepted towards ``options.upstream``."""

    def __init__(
        self,
        listen: tuple[str, int],
        options: MitmOptions,
        report: Report,
        tamper: Tamper | None = None,
    ) -> None:
        self.listen = listen
        self.options = options
        self.report = report
        self.tamper = tamper
        self.tally = Tally()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._count = 0

    async def start(self) -> tuple[str, int]:
        """Bind; returns the address actually bound."""
        host, port = self.listen
        if self.tamper is not None:  # keyless: raw streams, frames cut by the relay
            self._server = await asyncio.start_server(
                self._relay, host, port, reuse_address=True, backlog=LISTEN_BACKLOG
            )
        else:  # each client meets the core's own ServerConnection, with our keys
            config = Interception.server_config(self.options)
            self._server = await start_server(
                self._intercept,
                host,
                port,
                lambda: ServerConnection(config),
                reuse_address=True,
                backlog=LISTEN_BACKLOG,
            )
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def stop(self) -> None:
        """Stop accepting and end every interception in progress."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.tamper is not None
        number = self._arrived(writer.get_extra_info("peername"))
        relay = TamperingRelay(
            number,
            self.options.upstream,
            self.tamper,
            self.report,
            self.options.timeout,
            self.options.pcap,
        )
        try:
            await self._verdict(number, relay.run(reader, writer))
        finally:
            writer.close()

    async def _intercept(self, stream: KxpStream) -> None:
        number = self._arrived(stream.extra("peername"))
        interception = Interception(number, stream, self.options, self.report)
        stream.psk_provider = interception.psk_for  # every PSK identity is asked of the attacker
        tap = tap_connection(self.options.pcap, stream.extra, initiated_by_local=False)
        if tap is not None:
            stream.on_bytes = tap.on_bytes
        interception.taps.append(tap)
        try:
            await self._verdict(number, interception.run())
        finally:
            await close_quietly(interception.server_leg)
            await close_quietly(stream)
            for each in interception.taps:
                if each is not None:
                    each.close()  # no byte crosses after this: the legs are closed

    def _arrived(self, peer: tuple[str, int] | None) -> int:
        self._count += 1
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.report(f"[{self._count}] client {where} connected")
        return self._count

    async def _verdict(self, number: int, attack: Coroutine[Any, Any, Verdict]) -> None:
        """Run one connection's attack as a task of ours; its verdict, whatever happens."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            verdict = await attack
        except asyncio.CancelledError:
            verdict = Verdict(False, "FAILED: stopped before the end")
        except Exception as exc:  # a bug costs this connection, never the attacker
            verdict = Verdict(False, f"FAILED: {describe_error(exc, 'peer')}")
        finally:
            self._tasks.discard(task)
        self.tally.verdicts.append(verdict)
        self.report(f"[{number}] {verdict.line}")
