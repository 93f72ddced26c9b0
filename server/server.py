"""The asyncio KXP server: one task per connection, each with its own timeouts.

A connection's task owns everything about it (handshake, app, upload), so a stalled
or hostile client can only ever cost its own task: the handshake timeout cuts a
client that stops mid-handshake, the idle timeout one that stops talking, and the
chat app drops a member that stops reading instead of waiting on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from capture.pcap import PcapWriter
from capture.tap import PcapTap, tap_connection
from protocol import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PORT,
    AlertCode,
    CipherSuite,
    Event,
    FrameTraced,
    Group,
    HandshakeComplete,
    Kex,
    PeerAlert,
    ProtocolError,
    ServerConfig,
    ServerConnection,
    alert_name,
    check_server_config,
)
from protocol.kex import RandomSource, ServerPrivateKey, available_groups
from transport import ConnectionLost, KxpStream, PskProvider, start_server
from transport.keylog import append_keylog

from .apps import APPS, App, Session
from .inbox import Inbox, Quota
from .limits import (
    ALERT_REASONS,
    BUSY,
    DEFAULT_HANDSHAKE_RATE,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_PER_ADDRESS,
    RATE,
    STOPPING,
    AddressLimits,
    Limits,
    RefusalLog,
    address_key,
)

DEFAULT_IDLE_TIMEOUT = 600.0
"""Seconds a session may stay silent: idle sessions must not hold slots forever."""
LISTEN_BACKLOG = 1024
SHUTDOWN_GRACE = 2.0
"""Seconds the server waits for clients to answer its close_notify when it stops."""


@dataclass(frozen=True)
class SasOutcome:
    """A session's SAS compared with the client's out of band."""

    failure: str | None
    """Why the session must end (a mismatch, no answer); None: it may go on."""
    line: str = ""
    """What the comparison showed and what it cannot prove, for the log."""


SasCheck = Callable[[HandshakeComplete], Awaitable[SasOutcome]]
"""Compare a session's SAS with the client's out of band (``--verify-sas mqtt``)."""


@dataclass
class ServerOptions:
    """Everything ``kexlab server`` can be told (keys already loaded)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    kex_methods: frozenset[Kex] = frozenset(Kex)
    cipher_suites: tuple[CipherSuite, ...] = tuple(CipherSuite)
    groups: tuple[Group, ...] = field(default_factory=lambda: tuple(available_groups()))
    rsa_key: rsa.RSAPrivateKey | None = None
    """The RSA transport key (required when rsa is enabled)."""
    sign_key: ServerPrivateKey | None = None
    """dhe identity key; None serves dhe anonymously."""
    psks: dict[str, bytes] = field(default_factory=dict)
    psk_lookup: Callable[[str], bytes | None] | None = None
    """Keys handed over out of band (the MQTT channel's table), asked after ``psks``."""
    psk_provider: PskProvider | None = None
    """Waits a bounded time for an identity nobody knows yet (``--psk-wait``)."""
    sas_check: SasCheck | None = None
    """Run after each handshake, before the app (``--verify-sas mqtt``)."""
    app: str = "echo"
    inbox: Path = Path("inbox")
    inbox_quota: Quota = field(default_factory=Quota)
    keylog: Path | None = None
    explain: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS
    """Connections from one address (IPv6: one /64); 0: no limit."""
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES
    """Handshakes in progress at once (one address gets half)."""
    handshake_rate: float = DEFAULT_HANDSHAKE_RATE
    """Handshakes per second per address after a burst of twice as many; 0: no limit."""
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    """None (or 0): sessions may stay silent forever."""
    pcap: PcapWriter | None = None
    """Where every connection's bytes are recorded (``--pcap``); the caller closes it."""
    rng: RandomSource | None = None
    """Where every connection draws its randomness (``--deterministic``); None: the OS."""
    trace: bool = False
    """Trace frames to the observer even without ``explain`` (the session pages)."""


class Refused(Exception):
    """A connection turned away by a limit (its alert sent, its line logged rate-limited)."""


class ServerObserver:
    """What the server reports; the command line prints it (text or JSON), tests collect it."""

    def log(self, event: str, peer: str, fields: dict[str, Any]) -> None:
        """A structured log event ("connect", "handshake-failed", "upload-done", ...)."""

    def handshake(self, peer: str, hc: HandshakeComplete, ms: float) -> None:
        """A handshake completed in ``ms`` milliseconds."""

    def frame(self, peer: str, event: FrameTraced) -> None:
        """A frame crossed the wire (only with ``explain``)."""


class KexlabServer:
    """Accepts TCP connections and serves each as a KXP server connection."""

    def __init__(self, options: ServerOptions, observer: ServerObserver | None = None) -> None:
        self.options = options
        self.observer = observer or ServerObserver()
        self.config = ServerConfig(
            kex_methods=options.kex_methods,
            cipher_suites=options.cipher_suites,
            groups=options.groups,
            rsa_key=options.rsa_key,
            sign_key=options.sign_key,
            psk_lookup=self._lookup_psk,
            trace=options.explain or options.trace,
        )
        if options.rng is not None:
            self.config.rng = options.rng
        check_server_config(
            self.config
        )  # ValueError: a configuration that cannot serve what it enables
        self.app: App = APPS[options.app](options.idle_timeout or None)
        self.inbox = Inbox(options.inbox, options.inbox_quota)
        self.limits = AddressLimits(
            Limits(
                max_connections=options.max_connections,
                max_per_address=options.max_per_address,
                max_handshakes=options.max_handshakes,
                handshake_rate=options.handshake_rate,
            )
        )
        self.refusals = RefusalLog(lambda event, peer, **kw: self._log(event, peer, **kw))
        self.streams: set[KxpStream] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._stopping = False

    async def start(self) -> tuple[str, int]:
        """Bind and listen; returns the address actually bound (port 0 picks a free one)."""
        self._server = await start_server(
            self._accept,
            self.options.host,
            self.options.port,
            lambda: ServerConnection(self.config),
            reuse_address=True,
            # A burst of clients must not overflow the accept queue (asyncio's default is 100).
            backlog=LISTEN_BACKLOG,
        )
        return self.address

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the first listening socket."""
        assert self._server is not None
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def serve_until(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down cleanly."""
        await stop.wait()
        await self.shutdown()

    async def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop accepting, send close_notify to every client, wait ``grace`` s, drop the rest."""
        self._stopping = True
        self.refusals.close()
        if self._server is not None:
            self._server.close()
        for stream in list(self.streams):
            stream.send_close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # A connection accepted just before close() starts its task after the loop above;
        # it closes itself (see _serve), and is waited for like the others.
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        pending = set(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------ one connection

    async def _accept(self, stream: KxpStream) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(stream)
        except asyncio.CancelledError:
            # Only shutdown cancels a connection task, and it has been dropped by then.
            pass
        finally:
            self._tasks.discard(task)

    async def _serve(self, stream: KxpStream) -> None:
        peer = stream.peer
        stream.on_event = lambda ev: self._on_event(peer, ev)
        stream.psk_provider = self.options.psk_provider
        tap = self._tap(stream, peer)
        if tap is not None:
            stream.on_bytes = tap.on_bytes
        peername = stream.extra("peername")
        key = address_key(peername[0]) if peername else peer
        refusal = STOPPING if self._stopping else self.limits.admit(key)
        if refusal is not None:
            await self._refuse(stream, peer, key, refusal, tap)
            return
        self.streams.add(stream)
        try:
            await self._session(stream, peer, key)
        except Refused:
            pass  # already told (rate-limited), and the client got its alert
        except PeerAlert as exc:  # the client ended it: nothing was sent back (§7)
            self._log("error", peer, received_alert=exc.name, code=exc.code, reason=exc.reason)
        except ProtocolError as exc:
            alert = alert_name(exc.alert)
            self._log("error", peer, sent_alert=alert, code=int(exc.alert), reason=exc.reason)
        except ConnectionLost as exc:
            if stream.close_sent and stream.handshake is None:
                # Only shutdown sends close_notify to a client still in its handshake.
                self._log("closed", peer, reason="server stopping during the handshake")
            else:
                self._log("error", peer, reason=str(exc))
        except asyncio.CancelledError:
            stream.abort(AlertCode.INTERNAL_ERROR, "server shutting down", hard=True)
            self._log(
                "error", peer, reason="server stopping: no close_notify answer in time, dropped"
            )
            raise
        except Exception as exc:  # a bug costs its own connection, never the server
            fields: dict[str, Any] = {}
            if not stream.closed and not stream.close_sent:
                stream.abort(AlertCode.INTERNAL_ERROR, "internal error")
                fields = {"sent_alert": "internal_error", "code": int(AlertCode.INTERNAL_ERROR)}
            self._log(
                "error", peer, **fields, reason=f"internal error: {type(exc).__name__}: {exc}"
            )
        finally:
            self.streams.discard(stream)
            self.limits.release(key)
            if tap is not None:
                tap.close()  # no byte crosses after this: the session is over
            await stream.wait_closed()

    async def _refuse(
        self, stream: KxpStream, peer: str, key: str, kind: str, tap: PcapTap | None
    ) -> None:
        """Turn a connection away before its handshake costs anything; log it rate-limited."""
        if kind == STOPPING:
            stream.send_close()
        else:
            stream.abort(AlertCode.HANDSHAKE_FAILURE, ALERT_REASONS[kind])
        self.refusals.note(peer, key, kind)
        if tap is not None:
            tap.close()
        await stream.wait_closed()

    def _refused(self, stream: KxpStream, peer: str, key: str, kind: str) -> Refused:
        stream.abort(AlertCode.HANDSHAKE_FAILURE, ALERT_REASONS[kind])
        self.refusals.note(peer, key, kind)
        return Refused(kind)

    async def _paced_handshake(self, stream: KxpStream, peer: str, key: str) -> HandshakeComplete:
        """Wait for this address's turn and a handshake slot, then run the handshake.

        The handshake timeout counts from the connection, waits included: a paced client
        is served within the time it was promised, or refused.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.handshake_timeout
        wait = self.limits.pace(key)
        if wait is None:
            raise self._refused(stream, peer, key, RATE)
        if wait:
            await asyncio.sleep(wait)
        try:
            # At most half the handshake timeout in the queue: the rest is the handshake's.
            async with asyncio.timeout_at(deadline - self.options.handshake_timeout / 2):
                await self.limits.acquire_handshake(key)
        except TimeoutError:
            raise self._refused(stream, peer, key, BUSY) from None
        # Logged only now: a flood turned away by its pace leaves no line per connection.
        self._log("connect", peer)
        try:
            return await stream.do_handshake(max(0.0, deadline - loop.time()))
        finally:
            self.limits.release_handshake(key)

    async def _session(self, stream: KxpStream, peer: str, key: str) -> None:
        started = time.perf_counter()
        hc = await self._paced_handshake(stream, peer, key)
        ms = (time.perf_counter() - started) * 1000.0
        if self.options.keylog is not None:
            try:
                warning = append_keylog(self.options.keylog, hc.keylog)
            except OSError as exc:
                self._log("keylog-error", peer, path=str(self.options.keylog), reason=str(exc))
            else:
                if warning is not None:
                    self._log("keylog-warning", peer, reason=warning)  # once: now 0600
        with contextlib.suppress(Exception):  # a broken log sink must not kill a connection
            self.observer.handshake(peer, hc, ms)
        if self.options.sas_check is not None:
            await self._check_sas(stream, peer, hc)
        name = hc.psk_identity or peer
        session = Session(stream, name, self.inbox, lambda ev, **kw: self._log(ev, peer, **kw))
        await self.app.run(session)
        self._log("closed", peer)

    def _tap(self, stream: KxpStream, peer: str) -> PcapTap | None:
        """This connection's flow in the ``--pcap`` file (the client sent the SYN)."""
        return tap_connection(
            self.options.pcap,
            stream.extra,
            initiated_by_local=False,
            on_error=lambda reason: self._log("pcap-error", peer, reason=reason),
        )

    async def _check_sas(self, stream: KxpStream, peer: str, hc: HandshakeComplete) -> None:
        """Hold the app until the client's SAS matched ours; abort the connection if not."""
        assert self.options.sas_check is not None
        outcome = await self.options.sas_check(hc)
        if outcome.failure is not None:
            # The handshake itself succeeded, but nobody can vouch for the key it produced.
            raise stream.abort(AlertCode.HANDSHAKE_FAILURE, outcome.failure)
        # Never "verified": a client's SAS over MQTT proves only who may write its topic.
        self._log("sas-matched", peer, sas=hc.sas_display, detail=outcome.line)

    def _lookup_psk(self, identity: str) -> bytes | None:
        """``--psk`` keys first, then keys received out of band."""
        key = self.options.psks.get(identity)
        if key is None and self.options.psk_lookup is not None:
            key = self.options.psk_lookup(identity)
        return key

    def _on_event(self, peer: str, event: Event) -> None:
        if isinstance(event, FrameTraced):
            with contextlib.suppress(Exception):  # as in _log
                self.observer.frame(peer, event)

    def _log(self, event: str, peer: str, **fields: Any) -> None:
        with contextlib.suppress(Exception):  # a broken log sink must not kill a connection
            self.observer.log(event, peer, fields)
