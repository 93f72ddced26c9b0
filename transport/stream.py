"""Drive one sans-I/O KXP connection over an asyncio stream pair.

The pump is the one the core asks for: read -> ``receive_data`` -> drain
``next_event`` -> write ``data_to_send``. It knows nothing of terminals, apps or
files, so the server, the client, a man-in-the-middle proxy (two of these back to
back) and an eavesdropper all use it as it is.

One task reads a stream (``next_event`` and the helpers built on it); any task may
send. ``writer.write`` is synchronous and the core hands out its bytes in order, so
writes from several tasks never interleave inside a frame.

Records queued with ``send_nowait`` in one turn of the event loop leave in one
``write`` (at the end of the turn, with the next ``send``, before the reader waits for
the socket, or once COALESCE bytes are waiting), so small messages do not cost a
system call each; ``send`` writes at once. Sent records are taken out of the core
at once: whatever the reader then finds in ``data_to_send`` is its own answer
(a handshake flight, close_notify, a requested key_update), the only bytes it waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable

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

ByteHook = Callable[[str, bytes], None]
"""Called with ("sent" | "received", bytes) for every chunk that crosses the socket."""
EventHook = Callable[[Event], None]
"""Called with every event the core hands out, before the helpers act on it."""
PskProvider = Callable[[str], Awaitable[bytes | None]]
"""Server: find the key of a PSK identity the configuration does not hold (None: unknown)."""

READ_SIZE = 262144
"""Bytes asked of the socket per read: a full 64 KiB record plus its frame fits one read."""
COALESCE = 16384
"""Bytes of sealed records that may wait for the end of the loop turn; more go out at once."""
DEFAULT_CLOSE_WAIT = 2.0
ANSWER_BACKLOG = 65536
"""Bytes of the reader's own answers written unread before it waits for the socket to take them."""
FAIR_BURST = 32
"""Events handed out before the reading task lets others run (see ``next_event``)."""


class TransportError(KexlabError):
    """A connection ended for a reason outside the protocol's alerts; ``str()`` is one human line."""


class ConnectionLost(TransportError):
    """The socket failed or the peer went away without a fatal alert."""

    def describe(self, peer: str = "peer") -> str:
        """The line, with the peer named ("server closed the connection ...")."""
        text = str(self)
        return peer + text[4:] if text.startswith("peer ") else text


class KxpStream:
    """One KXP connection (client or server role) over an asyncio StreamReader/StreamWriter."""

    def __init__(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_bytes: ByteHook | None = None,
        on_event: EventHook | None = None,
        psk_provider: PskProvider | None = None,
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.on_bytes = on_bytes
        self.on_event = on_event
        self.psk_provider = psk_provider
        self.handshake: HandshakeComplete | None = None
        self.handshake_ms: float | None = None
        self.peer_alert: AlertReceived | None = None
        self.close_reason = ""
        self._started = time.perf_counter()
        self._socket_closed = False
        self._close_sent = False
        self._psk_wait: asyncio.Future[bytes | None] | None = None
        self._burst = 0
        self._pending: list[bytes] = []  # sealed records taken from the core, not yet written
        self._queued = 0
        self._scheduled = False
        self._replied = False  # the reader wrote answers of its own since its last read
        self._answered = 0  # bytes of such answers since the socket last had nothing queued

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
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise ConnectionLost(f"cannot connect to {host}:{port}: timed out") from None
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {host}:{port}: {_os_reason(exc)}") from None
        return cls(conn, reader, writer, on_bytes=on_bytes, on_event=on_event)

    @property
    def peer(self) -> str:
        """The peer's address as host:port (IPv6 in brackets)."""
        info = self.writer.get_extra_info("peername")
        if not info:
            return "?"
        host, port = info[0], info[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def closed(self) -> bool:
        """The connection is over (cleanly or not)."""
        return self.conn.state in (State.CLOSED, State.ERROR)

    @property
    def close_sent(self) -> bool:
        """``send_close`` has sent our close_notify: we send nothing more (§7)."""
        return self._close_sent

    # ------------------------------------------------------------------ the pump

    async def next_event(self) -> Event | None:
        """The next event, reading the socket as needed; None once the connection is over.

        Raises the ``ProtocolError`` that ended the connection (its alert already sent),
        or ``ConnectionLost`` when the socket fails.
        """
        while True:
            if self._burst >= FAIR_BURST:
                # Reading buffered data and writing below the high-water mark never suspend,
                # so a peer pipelining tiny records (or key_updates) would otherwise hold the
                # event loop for a whole read, stalling every other connection. Yielding
                # before taking an event means a cancellation here loses none.
                self._burst = 0
                await asyncio.sleep(0)
            conn = self.conn
            try:
                event = conn.next_event()
            except ProtocolError:
                await self._flush(quiet=True)
                self._close_socket()
                raise
            # The core may have queued an answer (a handshake flight, close_notify, a requested
            # key_update): it is written now, and only then does the reader wait for the socket,
            # once, before its next read. Waiting on backpressure from another task's sends
            # would stop it reading, and a peer doing the same (an echo server blocked on its
            # own writes) would then wait on us forever.
            answer = conn.data_to_send()
            if answer:
                self._replied = True
                self._answered += len(answer)
                self._write_quietly(answer)
            if event is not None:
                self._note(event)
                if self.on_event is not None:
                    self.on_event(event)
                self._burst += 1
                return event
            if self.closed:
                self._close_socket()
                return None
            self._write_quietly()  # a request leaves before we wait for its answer
            if self._replied:
                self._replied = False
                # A peer asking for answers (key_update with request_update=1) faster than
                # it reads them would grow our buffer without end (issue 13): once our own
                # answers pile up, stop reading until the socket takes them.
                await self._flush(backpressure=self._answered > ANSWER_BACKLOG)
                if self.writer.transport.get_write_buffer_size() == 0:
                    self._answered = 0
            await self._read()

    async def _read(self) -> None:
        try:
            data = await self.reader.read(READ_SIZE)
        except OSError as exc:
            self._close_socket()
            raise ConnectionLost(f"connection to {self.peer} lost: {_os_reason(exc)}") from None
        if data:
            if self.on_bytes is not None:
                self.on_bytes("received", data)
            self.conn.receive_data(data)
        else:
            self.conn.receive_eof()

    def _note(self, event: Event) -> None:
        if type(event) is DataReceived:
            return
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

    # ------------------------------------------------------------------ handshake and data

    async def do_handshake(self, timeout: float | None) -> HandshakeComplete:
        """Run the handshake to completion within ``timeout`` seconds (§4 handshake timeout)."""
        if isinstance(self.conn, ClientConnection) and self.conn.state is State.START:
            self._started = time.perf_counter()
            self.conn.start()
        try:
            async with asyncio.timeout(timeout):
                return await self._handshake_events()
        except TimeoutError:
            err = self.conn.handshake_timeout()
            await self._flush(quiet=True)
            self._close_socket()
            if err is None:  # pragma: no cover - the connection ended as the timer fired
                raise ConnectionLost("connection ended during the handshake") from None
            raise err from None

    async def _handshake_events(self) -> HandshakeComplete:
        while True:
            event = await self.next_event()
            if event is None:
                raise ConnectionLost(self.close_reason or "connection closed during the handshake")
            if isinstance(event, HandshakeComplete):
                return event
            if isinstance(event, PskNeeded) and isinstance(self.conn, ServerConnection):
                key = await self._wait_psk(event.identity)
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
            # asyncio.wait, not await: send_close cancels ``wait``, which must not look like
            # a cancellation of this task.
            await asyncio.wait({wait})
        except asyncio.CancelledError:
            wait.cancel()
            raise
        finally:
            self._psk_wait = None
        return None if wait.cancelled() else wait.result()

    async def recv(self) -> bytes | None:
        """The next application_data record; None after a clean close (close_notify both ways)."""
        while True:
            event = await self.next_event()
            if event is None:
                return None
            if isinstance(event, DataReceived):
                return event.data
            if isinstance(event, ConnectionClosed):
                if event.clean:
                    return None
                raise self._ended(event)

    async def send(self, data: bytes) -> None:
        """Send ``data`` as application_data (one record per 65536 bytes) and wait for the socket."""
        # Written at once, not at the end of the turn: the caller usually awaits an answer
        # next, and a deferred write would cost the event loop an extra pass per message.
        self.conn.send_data(data)
        await self._flush()

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
            asyncio.get_running_loop().call_soon(self._end_of_turn)

    async def drain(self) -> None:
        """Write what is queued and wait while the socket's buffer is over its high-water mark."""
        await self._flush()

    async def key_update(self, request_update: bool = True) -> None:
        """Switch our sending key; with ``request_update`` the peer switches its own too (§6)."""
        self.conn.send_key_update(request_update)
        await self._flush()

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the kernel: a peer that does not read grows it."""
        transport = self.writer.transport
        return 0 if transport.is_closing() else transport.get_write_buffer_size() + self._queued

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
        with contextlib.suppress(OSError, RuntimeError):
            self._write(self.conn.data_to_send())
        if self.closed:
            self._close_socket()

    async def close(self, timeout: float = DEFAULT_CLOSE_WAIT) -> None:
        """Send close_notify, wait up to ``timeout`` s for the peer's, then close the socket.

        Only for the task that reads this stream; any other task calls ``send_close``.
        """
        self.send_close()
        with contextlib.suppress(TimeoutError, TransportError, ProtocolError):
            async with asyncio.timeout(timeout):
                while await self.next_event() is not None:
                    pass
        self._close_socket()
        await self.wait_closed()

    def abort(self, alert: AlertCode, reason: str, *, hard: bool = False) -> ProtocolError:
        """End the connection on our own decision, sending ``alert`` (returns the error).

        ``hard`` drops the socket at once instead of letting queued bytes drain: for a
        peer that does not read, whose buffer would otherwise never empty.
        """
        err = self.conn.abort(alert, reason)
        with contextlib.suppress(OSError, RuntimeError):
            self._write(self.conn.data_to_send())
        if hard:
            self.writer.transport.abort()
        self._close_socket()
        return err

    async def wait_closed(self, timeout: float = DEFAULT_CLOSE_WAIT) -> None:
        """Close the socket and wait up to ``timeout`` s for queued bytes to go, then drop it."""
        self._close_socket()
        try:
            async with asyncio.timeout(timeout):
                await self.writer.wait_closed()
        except TimeoutError:
            self.writer.transport.abort()
        except (OSError, RuntimeError):
            pass

    # ------------------------------------------------------------------ bytes out

    def _end_of_turn(self) -> None:
        self._scheduled = False
        self._write_quietly()

    def _write_quietly(self, data: bytes = b"") -> None:
        """``_write``, for callers that learn of a failed socket on their next read or drain."""
        with contextlib.suppress(OSError, RuntimeError):
            self._write(data)

    def _write(self, data: bytes = b"") -> None:
        """Write the queued records, then ``data``, in one ``write``."""
        pending = self._pending
        if pending:
            if data:
                pending.append(data)
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._queued = 0
        if not data or self._socket_closed:
            return
        if self.writer.transport.is_closing():
            # The socket failed under a write from another task (a chat relay) before the
            # task reading this stream saw it: asyncio would log a warning per further write.
            return
        if self.on_bytes is not None:
            self.on_bytes("sent", data)
        self.writer.write(data)

    async def _flush(self, quiet: bool = False, backpressure: bool = True) -> None:
        """Write what the core queued and wait for the socket to take it.

        ``quiet`` (the connection is over: a last alert or close_notify) neither waits nor
        raises: closing the socket flushes it, and a peer that does not read must not be
        able to hold us here. Without ``backpressure`` it waits only if it wrote something.
        """
        try:
            data = self.conn.data_to_send()
            self._write(data)
            if not quiet and not self._socket_closed and (data or backpressure):
                transport = self.writer.transport
                # Under the low-water mark asyncio's flow control is never paused: drain()
                # would return at once, through two coroutines.
                if (
                    transport.is_closing()
                    or transport.get_write_buffer_size() > transport.get_write_buffer_limits()[0]
                ):
                    await self.writer.drain()
        except (OSError, RuntimeError) as exc:
            if quiet:
                return
            self._close_socket()
            raise ConnectionLost(f"connection to {self.peer} lost: {_os_reason(exc)}") from None

    def _close_socket(self) -> None:
        if not self._socket_closed:
            self._write_quietly()  # records sent this turn go before the socket closes
            self._socket_closed = True
            self.writer.close()


def _os_reason(exc: BaseException) -> str:
    """A short reason for a socket error ("connection refused")."""
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, OSError) and exc.errno:
        # asyncio wraps connect errors ("Connect call failed (...)"): the errno says it plainly.
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
