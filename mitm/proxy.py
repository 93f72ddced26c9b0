"""``kexlab mitm``: accept clients, intercept (or tamper with) each one, tally the verdicts.

Each accepted connection costs the attacker one task and nothing else: a client or an
upstream that speaks garbage, closes early or stalls ends that connection's verdict,
never the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

from explain.console import describe_error
from protocol import ServerConnection
from transport import KxpStream

from .attack import Interception, MitmOptions, Report, Verdict, close_quietly, tap_stream
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
        self._server = await asyncio.start_server(
            self._accept, host, port, reuse_address=True, backlog=LISTEN_BACKLOG
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._count += 1
        number = self._count
        peer = writer.get_extra_info("peername")
        self.report(f"[{number}] client {peer[0]}:{peer[1]} connected")
        try:
            verdict = await self._one(number, reader, writer)
        except asyncio.CancelledError:
            verdict = Verdict(False, "FAILED: stopped before the end")
        except Exception as exc:  # a bug costs this connection, never the attacker
            verdict = Verdict(False, f"FAILED: internal error: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                writer.close()
        finally:
            self._tasks.discard(task)
        self.tally.verdicts.append(verdict)
        self.report(f"[{number}] {verdict.line}")

    async def _one(
        self, number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Verdict:
        if self.tamper is not None:
            relay = TamperingRelay(
                number,
                self.options.upstream,
                self.tamper,
                self.report,
                self.options.timeout,
                self.options.pcap,
            )
            return await relay.run(reader, writer)
        conn = ServerConnection(Interception.server_config(self.options))
        stream = KxpStream(conn, reader, writer)
        interception = Interception(number, stream, self.options, self.report)
        stream.psk_provider = interception.psk_for  # every PSK identity is asked of the attacker
        tap = tap_stream(self.options.pcap, writer, initiated_by_local=False)
        if tap is not None:
            stream.on_bytes = tap.on_bytes
        interception.taps.append(tap)
        try:
            return await interception.run()
        except Exception as exc:
            return Verdict(False, f"FAILED: {describe_error(exc, 'peer')}")
        finally:
            await close_quietly(interception.server_leg)
            await close_quietly(stream)
            for each in interception.taps:
                if each is not None:
                    each.close()  # no byte crosses after this: the legs are closed
