"""Drive one sans-I/O KXP connection over an asyncio transport: the one pump every program runs.

About 590 lines on purpose: one connection's whole life in the order it happens
(socket callbacks, events, sends, close), so that flow control can be checked in one
sitting; errors and the server helper live in ``errors.py`` and ``server.py``.

``KxpStream`` is the connection's ``asyncio.Protocol``. ``data_received`` hands the
bytes to the core (``receive_data``) and wakes the task reading the stream; that task
takes the core's events (``next_event``; ``recv``, ``do_handshake`` and ``close`` are
built on it) and writes at once whatever the core answers on its own (a handshake
flight, close_notify, a requested key_update). The core is the only read buffer: no
StreamReader, no copy, and a task waits on a future only when no complete frame is in.
Frames are taken one at a time, so records that arrived before a fault are answered
before the fault's alert is sent, and records before a close_notify before ours.

Flow control, both ways:
- reading pauses once READ_LIMIT bytes wait in the core (the reading task is busy or
  absent) and resumes when that task has taken every complete frame;
- if answers were written while the socket's buffer is over its high-water mark, the
  reading task takes no further event until it drains: a peer asking for key updates
  without reading stops being read, and the server's memory stays bounded. Records the
  program sends never stop the reader: a peer that is itself blocked writing to us
  (an echo server) would wait on us for ever.
- ``send`` (and ``drain``, ``key_update``) wait while the transport is paused
  (``pause_writing``); ``send_nowait`` never waits: records sealed in one loop turn
  leave in one write (at the end of the turn, with the next ``send``, before the
  reader waits for the socket, or once COALESCE bytes are waiting).

One task reads a stream; any task may send. A burst of FAIR_BURST events taken without
waiting ends with a yield to the loop, so a peer pipelining tiny records cannot hold
the event loop. Deadlines (``do_handshake``, ``close``) are loop timers that wake the
reader, not task cancellations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from protocol import (
    AlertCode,
    AlertReceived,
    ClientConnection,
    Connection,
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeComplete,
    KexlabError,
    PeerAlert,
    ProtocolError,
    PskNeeded,
    ServerConnection,
    State,
)

from .address import host_port
from .errors import ConnectionLost, TransportError, os_reason

ByteHook = Callable[[str, bytes], None]
"""Called with ("sent" | "received", bytes) for every chunk that crosses the socket."""
EventHook = Callable[[Event], None]
"""Called with every event the core hands out, before the helpers act on it."""
PskProvider = Callable[[str], Awaitable[bytes | None]]
"""Server: find the key of a PSK identity the configuration does not hold (None: unknown)."""
Handler = Callable[["KxpStream"], Coroutine[Any, Any, None]]
"""A server's coroutine for one accepted connection (see ``transport.server``)."""

READ_LIMIT = 262144
"""Unprocessed bytes the core may hold before reading pauses: a 64 KiB record fits 4 times."""
COALESCE = 16384
"""Bytes of sealed records that may wait for the end of the loop turn; more go out at once."""
DEFAULT_CLOSE_WAIT = 2.0
FAIR_BURST = 32
"""Events handed out before the reading task lets others run (see ``next_event``)."""
_OVER = (State.CLOSED, State.ERROR)
_MORE = object()
"""``_take``: no complete frame is in; wait for the socket."""


class KxpStream(asyncio.Protocol):
    """One KXP connection (client or server role) over an asyncio transport."""

    transport: asyncio.Transport | None

    def __init__(
        self,
        conn: Connection,
        *,
        on_bytes: ByteHook | None = None,
        on_event: EventHook | None = None,
        psk_provider: PskProvider | None = None,
        handler: Handler | None = None,
    ) -> None:
        """``handler``: a server's coroutine, run in a task of its own once the socket is connected."""
        self.conn = conn
        self.on_bytes = on_bytes
        self.on_event = on_event
        self.psk_provider = psk_provider
        self.transport = None
        self.handshake: HandshakeComplete | None = None
        self.handshake_ms: float | None = None
        self.peer_alert: AlertReceived | None = None
        self.close_reason = ""
        self._loop = asyncio.get_running_loop()
        self._started = time.perf_counter()
        self._peer = "?"
        self._handler = handler
        self._task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None  # the reader, waiting for bytes
        self._writable: asyncio.Future[None] | None = None  # senders, waiting for a drain
        self._gone: list[asyncio.Future[None]] = []  # wait_closed callers
        self._lost = False  # connection_lost was called
        self._lost_error: ConnectionLost | None = None  # the socket failed: raised once
        self._unread = 0  # bytes fed to the core since it last ran out of frames
        self._read_paused = False
        self._write_paused = False
        self._answered = False  # answers were written while the socket was over its mark
        self._deadline = False  # a do_handshake or close timer fired
        self._socket_closed = False
        self._close_sent = False
        self._psk_wait: asyncio.Future[bytes | None] | None = None
        self._burst = 0
        self._pending: list[bytes] = []  # sealed records taken from the core, not yet written
        self._queued = 0
        self._scheduled = False

    # ------------------------------------------------------------------ opening

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        conn: ClientConnection,
        *,
        timeout: float | None = None,
        on_bytes: ByteHook | None = None,
        on_event: EventHook | None = None,
    ) -> KxpStream:
        """Open a TCP connection to ``host:port`` for a client connection (no handshake yet)."""
        stream = cls(conn, on_bytes=on_bytes, on_event=on_event)
        loop = stream._loop
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: stream, host, port)
        except TimeoutError:
            raise ConnectionLost(f"cannot connect to {host}:{port}: timed out") from None
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {host}:{port}: {os_reason(exc)}") from None
        return stream

    @property
    def peer(self) -> str:
        """The peer's address as host:port (IPv6 in brackets)."""
        return self._peer

    def extra(self, name: str) -> Any:
        """``transport.get_extra_info(name)`` ("sockname", "peername", "socket"), None if unset."""
        return None if self.transport is None else self.transport.get_extra_info(name)

    @property
    def closed(self) -> bool:
        """The connection is over (cleanly or not)."""
        return self.conn.state in _OVER

    @property
    def close_sent(self) -> bool:
        """``send_close`` has sent our close_notify: we send nothing more (§7)."""
        return self._close_sent

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is connected: remember the peer; a server starts the handler's task."""
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.transport = transport  # type: ignore[assignment]
        info = transport.get_extra_info("peername")
        if info:
            host, port = info[0], info[1]
            self._peer = host_port(host, port)
        if self._handler is not None:
            self._task = self._loop.create_task(self._handler(self))
            self._task.add_done_callback(self._handler_done)

    def data_received(self, data: bytes) -> None:
        """Bytes from the peer: into the core; the reader takes the events."""
        if self.on_bytes is not None:
            self.on_bytes("received", data)
        self.conn.receive_data(data)
        self._unread += len(data)
        if self._unread >= READ_LIMIT and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        """The peer closed its side; keep ours open: what it sent may still get answers."""
        self.conn.receive_eof()
        self._wake()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is gone: a failure is raised to the reader once, after buffered events."""
        self._lost = True
        self._socket_closed = True
        if exc is not None and not self.closed:
            self._lost_error = ConnectionLost(f"connection to {self.peer} lost: {os_reason(exc)}")
        elif not self.closed:
            self.conn.receive_eof()  # closed under the core without a close: it says how
        self._wake()
        for fut in (self._writable, *self._gone):
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._gone.clear()

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark."""
        self._write_paused = True

    def resume_writing(self) -> None:
        """The transport's buffer fell under its low-water mark."""
        self._write_paused = False
        fut = self._writable
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        """A server handler that raised (a bug) costs its own connection only."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._loop.call_exception_handler(
                {"message": "KXP connection handler failed", "exception": exc, "protocol": self}
            )
            if self.transport is not None:
                self.transport.abort()

    # ------------------------------------------------------------------ the pump

    async def next_event(self) -> Event | None:
        """The next event, waiting for the socket as needed; None once the connection is over.

        Raises the ``ProtocolError`` that ended the connection (its alert already sent),
        or ``ConnectionLost`` when the socket fails.
        """
        while True:
            if self._burst >= FAIR_BURST or self._answered:
                await self._let_others_run()
            event = self._take()
            if event is not _MORE:
                return event  # type: ignore[return-value]
            waiter = self._waiter = self._loop.create_future()
            await waiter

    def _take(self) -> Event | object | None:
        """One event from the core; None once the connection is over; _MORE: wait for bytes."""
        conn = self.conn
        try:
            event = conn.next_event()
        except ProtocolError:
            self._write(conn.data_to_send())  # the alert
            self._close_socket()
            raise
        # The core may have answered (a handshake flight, close_notify, a requested
        # key_update): it leaves now, ahead of anything the program sends next.
        answer = conn.data_to_send()
        if answer:
            self._write(answer)
            self._answered = self._write_paused
        if event is not None:
            self._burst += 1
            if type(event) is not DataReceived:
                self._note(event)
            if self.on_event is not None:
                self.on_event(event)
            return event
        if conn.state in _OVER:
            self._close_socket()
            return None
        # Every complete frame is out: the core holds at most a partial one.
        self._unread = 0
        if self._read_paused and not self._lost:
            self._read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if self._lost_error is not None:
            err, self._lost_error = self._lost_error, None
            conn.receive_eof()  # later calls end the connection instead of waiting
            raise err
        if self._deadline:
            raise TimeoutError
        self._write_pending()  # a request leaves before we wait for its answer
        self._burst = 0
        return _MORE

    async def _let_others_run(self) -> None:
        if self._burst >= FAIR_BURST:
            # Buffered frames and writes under the high-water mark never suspend, so a
            # peer pipelining tiny records (or key_updates) would otherwise hold the
            # event loop for a whole read. Yielding before taking an event loses none.
            self._burst = 0
            await asyncio.sleep(0)
        if self._answered:
            await self._answers_sent()

    async def _answers_sent(self) -> None:
        """Take no event while our answers wait in a buffer over its high-water mark."""
        self._answered = False
        while self._write_paused and not self._socket_closed and not self.closed:
            if self._deadline:
                raise TimeoutError
            await self._wait_writable()

    def _note(self, event: Event) -> None:
        if isinstance(event, AlertReceived) and event.fatal:
            self.peer_alert = event
        elif isinstance(event, HandshakeComplete):
            self.handshake = event
            self.handshake_ms = (time.perf_counter() - self._started) * 1000.0
        elif isinstance(event, ConnectionClosed):
            self.close_reason = event.reason
            self._close_socket()

    def _ended(self, event: ConnectionClosed) -> KexlabError:
        """The error for a connection that ended without a clean close."""
        if self.peer_alert is not None:
            return PeerAlert(self.peer_alert.code, self.peer_alert.reason)
        return ConnectionLost(event.reason or "connection closed")

    def _set_deadline(self, timeout: float | None) -> asyncio.TimerHandle | None:
        return None if timeout is None else self._loop.call_later(timeout, self._deadline_hit)

    def _deadline_hit(self) -> None:
        self._deadline = True
        if self._psk_wait is not None:
            self._psk_wait.cancel()
        self._wake()
        fut = self._writable
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _clear_deadline(self, timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
        self._deadline = False

    # ------------------------------------------------------------------ handshake and data

    async def do_handshake(self, timeout: float | None) -> HandshakeComplete:
        """Run the handshake to completion within ``timeout`` seconds (§4 handshake timeout)."""
        if isinstance(self.conn, ClientConnection) and self.conn.state is State.START:
            self._started = time.perf_counter()
            self.conn.start()
            self._write(self.conn.data_to_send())
        timer = self._set_deadline(timeout)
        try:
            return await self._handshake_events()
        except TimeoutError:
            err = self.conn.handshake_timeout()
            self._write(self.conn.data_to_send())
            self._close_socket()
            if err is None:  # pragma: no cover - the connection ended as the timer fired
                raise ConnectionLost("connection ended during the handshake") from None
            raise err from None
        finally:
            self._clear_deadline(timer)

    async def _handshake_events(self) -> HandshakeComplete:
        while True:
            event = await self.next_event()
            if event is None:
                raise ConnectionLost(self.close_reason or "connection closed during the handshake")
            if type(event) is HandshakeComplete:
                return event
            if isinstance(event, PskNeeded) and isinstance(self.conn, ServerConnection):
                key = await self._wait_psk(event.identity)
                if self._deadline:
                    raise TimeoutError
                if not self.closed:  # send_close may have ended the wait (and the connection)
                    self.conn.supply_psk(key)
            elif isinstance(event, ConnectionClosed):
                if self.peer_alert is None and event.clean:
                    raise ConnectionLost(
                        "peer closed the connection (close_notify) during the handshake"
                    )
                if self.peer_alert is None and self._close_sent:
                    raise ConnectionLost("closed by us (close_notify) during the handshake")
                raise self._ended(event)

    async def _wait_psk(self, identity: str) -> bytes | None:
        """The provider's key for ``identity``; None if unknown or if ``send_close`` came first."""
        if self.psk_provider is None:
            return None
        wait = asyncio.ensure_future(self.psk_provider(identity))
        self._psk_wait = wait
        try:
            # asyncio.wait, not await: send_close and the deadline cancel ``wait``, which
            # must not look like a cancellation of this task.
            await asyncio.wait({wait})
        except asyncio.CancelledError:
            wait.cancel()
            raise
        finally:
            self._psk_wait = None
        return None if wait.cancelled() else wait.result()

    async def recv(self) -> bytes | None:
        """The next application_data record; None after a clean close (close_notify both ways)."""
        while True:  # next_event, inlined: one coroutine per record fewer
            if self._burst >= FAIR_BURST or self._answered:
                await self._let_others_run()
            event = self._take()
            if type(event) is DataReceived:
                return event.data
            if event is _MORE:
                waiter = self._waiter = self._loop.create_future()
                await waiter
            elif event is None:
                return None
            elif isinstance(event, ConnectionClosed):
                if event.clean:
                    return None
                raise self._ended(event)

    async def send(self, data: bytes) -> None:
        """Send ``data`` as application_data (one record per 65536 bytes) and wait for the socket."""
        # Written at once, not at the end of the turn: the caller usually awaits an answer
        # next, and a deferred write would cost the event loop an extra pass per message.
        self.conn.send_data(data)
        self._write(self.conn.data_to_send())
        if self._write_paused or self._socket_closed:
            await self._wait_writable()

    def send_nowait(self, data: bytes) -> None:
        """Queue ``data`` for the socket without waiting (check ``write_buffer_size``)."""
        conn = self.conn
        conn.send_data(data)
        self._pending.append(conn.data_to_send())
        self._queued += len(data)
        if self._queued >= COALESCE:
            self._write()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._end_of_turn)

    async def drain(self) -> None:
        """Write what is queued and wait while the socket's buffer is over its high-water mark."""
        self._write()
        if self._write_paused or self._socket_closed:
            await self._wait_writable()

    async def key_update(self, request_update: bool = True) -> None:
        """Switch our sending key; with ``request_update`` the peer switches its own too (§6)."""
        self.conn.send_key_update(request_update)
        self._write(self.conn.data_to_send())
        if self._write_paused or self._socket_closed:
            await self._wait_writable()

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the kernel: a peer that does not read grows it."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return 0
        return transport.get_write_buffer_size() + self._queued

    async def _wait_writable(self) -> None:
        """Until the transport takes writes again; ConnectionLost if the socket is gone."""
        while self._write_paused and not self._lost and not self._deadline:
            fut = self._writable
            if fut is None or fut.done():
                fut = self._writable = self._loop.create_future()
            await fut
        if self._socket_closed and not self.closed:
            raise ConnectionLost(self._lost_reason())

    def _lost_reason(self) -> str:
        if self._lost_error is not None:
            return str(self._lost_error)
        return f"connection to {self.peer} lost: connection closed"

    # ------------------------------------------------------------------ ending

    def send_close(self) -> None:
        """Send close_notify without waiting: the task reading this stream sees the answer."""
        if self.closed or self._socket_closed:
            return
        self._close_sent = True
        if self._psk_wait is not None:
            # A server stopping does not wait out --psk-wait for a key it will not use.
            self._psk_wait.cancel()
        self.conn.close()
        self._write(self.conn.data_to_send())
        if self.closed:
            self._close_socket()

    async def close(self, timeout: float = DEFAULT_CLOSE_WAIT) -> None:
        """Send close_notify, wait up to ``timeout`` s for the peer's, then close the socket.

        Only for the task that reads this stream; any other task calls ``send_close``.
        """
        self.send_close()
        if not self.closed and not self._lost:
            timer = self._set_deadline(timeout)
            try:
                while await self.next_event() is not None:
                    pass
            except (TimeoutError, TransportError, ProtocolError):
                pass
            finally:
                self._clear_deadline(timer)
        self._close_socket()
        await self.wait_closed()

    def abort(self, alert: AlertCode, reason: str, *, hard: bool = False) -> ProtocolError:
        """End the connection on our own decision, sending ``alert`` (returns the error).

        ``hard`` drops the socket at once instead of letting queued bytes drain: for a
        peer that does not read, whose buffer would otherwise never empty.
        """
        err = self.conn.abort(alert, reason)
        self._write(self.conn.data_to_send())
        if hard and self.transport is not None:
            self.transport.abort()
        self._close_socket()
        return err

    async def wait_closed(self, timeout: float = DEFAULT_CLOSE_WAIT) -> None:
        """Close the socket and wait up to ``timeout`` s for queued bytes to go, then drop it."""
        self._close_socket()
        transport = self.transport
        if self._lost or transport is None or not transport.get_write_buffer_size():
            return  # nothing queued: the socket closes in this turn of the loop
        gone = self._loop.create_future()
        self._gone.append(gone)
        timer = self._loop.call_later(timeout, transport.abort)
        try:
            await gone
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ bytes out

    def _end_of_turn(self) -> None:
        self._scheduled = False
        self._write()

    def _write_pending(self) -> None:
        if self._pending:
            self._write()

    def _write(self, data: bytes = b"") -> None:
        """Write the queued records, then ``data``, in one ``write``."""
        pending = self._pending
        if pending:
            if data:
                pending.append(data)
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._queued = 0
        transport = self.transport
        if not data or self._socket_closed or transport is None:
            return
        if transport.is_closing():
            # The socket failed under a write from another task (a chat relay) before the
            # task reading this stream saw it: asyncio would log a warning per further write.
            return
        if self.on_bytes is not None:
            self.on_bytes("sent", data)
        transport.write(data)

    def _close_socket(self) -> None:
        if not self._socket_closed:
            self._write_pending()  # records sent this turn go before the socket closes
            self._socket_closed = True
            if self.transport is not None:
                self.transport.close()
