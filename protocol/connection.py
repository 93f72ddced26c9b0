"""The sans-I/O connection core shared by both roles (docs/protocol.md §1, §4, §6, §7).

About 400 lines on purpose: the one state machine both roles run (dispatch, records,
key updates, alerts, close, and the flight steps both share), kept whole so the order
of events and errors can be read in one place.

A caller feeds received bytes (``receive_data``), drains ``next_event`` until it
returns None, sends what ``data_to_send`` returns, and drives the handshake timeout
(``handshake_timeout``): the core has no clock and does no I/O.

Frames are dispatched through a table ``(state, frame type) -> handler``; a missing
entry is exactly §1 check 5 (unexpected_message), applied to the header before the
payload is read. Any ProtocolError queues the matching alert, puts the connection in
``State.ERROR`` for good, and is raised from ``next_event`` after the events that came
before it, so no data that arrived ahead of the fault is lost.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

from cryptography.hazmat.primitives.constant_time import bytes_eq

from .alerts import AlertCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from .constants import HEADER_LEN, MAX_CONTENT, CipherSuite, ContentType, FrameType, Group, Kex
from .events import (
    AlertReceived,
    ConnectionClosed,
    DataReceived,
    Event,
    FrameTraced,
    HandshakeComplete,
    KeyUpdateReceived,
)
from .frames import Frame, FrameDecoder, encode_frame
from .kex import RandomSource, sha256_hex
from .keyschedule import HandshakeSecrets, KeySchedule, TranscriptHash
from .messages import Alert, ClientHello, Finished, ServerHello
from .records import RecordReceiver, RecordSender


class State(enum.Enum):
    """Handshake and connection states of both roles (§4)."""

    START = "start"
    # client
    WAIT_SERVER_HELLO = "wait_server_hello"
    WAIT_SERVER_SIGNATURE = "wait_server_signature"
    WAIT_SERVER_FINISHED = "wait_server_finished"
    # server
    WAIT_CLIENT_HELLO = "wait_client_hello"
    WAIT_PSK = "wait_psk"
    WAIT_KEY_TRANSPORT = "wait_key_transport"
    WAIT_CLIENT_FINISHED = "wait_client_finished"
    # both
    CONNECTED = "connected"
    CLOSED = "closed"
    ERROR = "error"


Handler = Callable[[Frame], None]

# Module constants: an enum member looked up on its class costs a descriptor call in 3.11,
# and these are read once or more per record.
_OVER = (State.CLOSED, State.ERROR)
_CONNECTED = State.CONNECTED
_RECORD = FrameType.RECORD
_APPLICATION_DATA = ContentType.APPLICATION_DATA
_KEY_UPDATE = ContentType.KEY_UPDATE
# (class, state, record seen) -> allowed frame types: the handler table is fixed per class.
_EXPECTED: dict[type, dict[tuple[State, bool], frozenset[FrameType]]] = {}


class Connection:
    """State, framing, records, alerts and close shared by ``ClientConnection`` and ``ServerConnection``."""

    role = "?"

    def __init__(self, rng: RandomSource, key_update_threshold: int, trace: bool) -> None:
        self.state = State.START
        self._rng = rng
        self._threshold = key_update_threshold
        self._trace = trace
        self._decoder = FrameDecoder()
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._pending_error: ProtocolError | None = None
        self._handlers: dict[tuple[State, FrameType], Handler] = {}
        self._expected_for: tuple[State | None, bool] = (None, False)
        self._expected_types: frozenset[FrameType] = frozenset()
        self._schedule: KeySchedule | None = None
        self._transcript: TranscriptHash | None = None
        self._sender: RecordSender | None = None
        self._receiver: RecordReceiver | None = None
        self._record_seen = False
        self._close_sent = False
        self._close_received = False
        self._eof = False
        self._th_before_finished = b""
        self._hello: ClientHello | None = None
        self._server_hello: ServerHello | None = None
        self._secrets: HandshakeSecrets | None = None
        self._th_keys = b""
        self._scheme: int | None = None
        self._psk_identity = ""
        self.error: ProtocolError | None = None

    # ------------------------------------------------------------------ public API

    @property
    def handshake_complete(self) -> bool:
        """§4: this side has sent its FINISHED and verified the peer's."""
        return self._sender is not None and self._receiver is not None

    @property
    def buffered(self) -> int:
        """Received bytes not yet taken as frames: what a reader that falls behind holds."""
        return self._decoder.buffered

    def receive_data(self, data: bytes) -> None:
        """Store bytes read from the peer; call ``next_event`` to process them."""
        if data:
            self._decoder.feed(data)

    def receive_eof(self) -> None:
        """The peer closed its side; ``next_event`` reports what that means."""
        self._decoder.feed_eof()
        self._eof = True

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed (or the connection is over).

        Raises the ProtocolError that ended the connection once, after every event
        that preceded it; its alert is then waiting in ``data_to_send``.
        """
        while not self._events:
            if self._pending_error is not None:
                err, self._pending_error = self._pending_error, None
                raise err
            if self.state in _OVER:
                return None
            try:
                expected = (
                    self._expected_types
                    if self.state is self._expected_for[0]
                    and self._record_seen is self._expected_for[1]
                    else self._expected()
                )
                got = self._decoder.next_view(expected)
                if got is None:
                    if self._eof:
                        self._peer_vanished()
                        continue
                    return None
                frame_type, view = got
                if frame_type is _RECORD:
                    self._on_record(view)
                else:
                    self._dispatch(Frame(frame_type, bytes(view[HEADER_LEN:])))
            except ProtocolError as exc:
                self._fail(exc)
        return self._events.popleft()

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (and forget)."""
        out = self._out
        if not out:
            return b""
        # One chunk (the common case of one record per write) goes out without a copy.
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def send_data(self, data: bytes) -> None:
        """Send application data as records of at most 65536 bytes each."""
        if self.state is not _CONNECTED or self._close_sent:
            self._require_connected("send data")
        if len(data) <= MAX_CONTENT:
            self._send_record(_APPLICATION_DATA, data)
            return
        with memoryview(data) as view:
            for start in range(0, len(data), MAX_CONTENT):
                self._send_record(_APPLICATION_DATA, view[start : start + MAX_CONTENT])

    def send_key_update(self, request_update: bool = False) -> None:
        """Switch our sending key; with ``request_update`` ask the peer to switch too (§6)."""
        self._require_connected("update keys")
        self._send_key_update(request_update)

    def close(self) -> None:
        """Send close_notify; the connection is closed once the peer answers with its own (§7)."""
        if self.state is State.ERROR or self._close_sent:
            return
        self._send_alert(AlertCode.CLOSE_NOTIFY, "")
        self._close_sent = True
        if self._close_received or not self.handshake_complete:
            self._finish_close(clean=self._close_received)

    def handshake_timeout(self) -> ProtocolError | None:
        """The caller's handshake timer fired: end with handshake_failure unless already complete."""
        if self.handshake_complete or self.state in (State.CLOSED, State.ERROR):
            return None
        err = LocalProtocolError(AlertCode.HANDSHAKE_FAILURE, "handshake timeout")
        self._fail(err)
        self._pending_error = None
        return err

    def abort(self, alert: AlertCode, reason: str) -> LocalProtocolError:
        """End the connection on a decision of our own (e.g. a failed SAS check), sending ``alert``."""
        err = LocalProtocolError(alert, reason)
        self._fail(err)
        self._pending_error = None
        return err

    # ------------------------------------------------------------------ frames out

    def _write_handshake(self, frame_type: FrameType, payload: bytes) -> bytes:
        frame = encode_frame(frame_type, payload)
        if self._transcript is not None:
            self._transcript.update(frame)
        self._out.append(frame)
        if self._trace:
            self._events.append(FrameTraced("sent", frame))
        return frame

    def _send_record(self, content_type: ContentType, content: bytes | memoryview) -> None:
        sender = self._sender
        assert sender is not None
        if sender.seq >= sender.threshold - 1 and content_type is not _KEY_UPDATE:
            self._send_key_update(False)  # §6: update before 2^24 records with one key
        if not self._trace:
            self._out.append(sender.seal(content_type, content))
            return
        epoch, seq = sender.epoch, sender.seq
        frame = sender.seal(content_type, content)
        self._out.append(frame)
        self._events.append(FrameTraced("sent", frame, epoch, seq, content_type, bytes(content)))

    def _send_key_update(self, request_update: bool) -> None:
        self._send_record(ContentType.KEY_UPDATE, b"\x01" if request_update else b"\x00")
        assert self._sender is not None
        self._sender.update()

    def _send_alert(self, code: int, reason: str) -> None:
        payload = Alert(code, reason).encode()
        if self._sender is not None:  # §7: after a complete handshake alerts are records
            self._send_record(ContentType.ALERT, payload)
        else:
            frame = encode_frame(FrameType.ALERT, payload)
            self._out.append(frame)
            if self._trace:
                self._events.append(FrameTraced("sent", frame))

    # ------------------------------------------------------------------ frames in

    def _expected(self) -> frozenset[FrameType]:
        # Called by next_event only when the state or _record_seen changed since the last
        # frame: a table lookup per class, never a set built per frame.
        key = (self.state, self._record_seen)
        table = _EXPECTED.setdefault(type(self), {})
        allowed = table.get(key)
        if allowed is None:
            types = {ft for (st, ft) in self._handlers if st is self.state}
            if self.state is State.CONNECTED:
                types.add(FrameType.RECORD)
            # §4: plaintext ALERT is accepted until the peer's first RECORD arrives.
            if not self._record_seen:
                types.add(FrameType.ALERT)
            allowed = table[key] = frozenset(types)
        self._expected_for = key
        self._expected_types = allowed
        return allowed

    def _dispatch(self, frame: Frame) -> None:
        if self._trace:
            self._events.append(FrameTraced("received", frame.encode()))
        if frame.type is FrameType.ALERT:
            alert = Alert.decode(frame.payload)
            self._on_alert(alert)
            return
        if self._transcript is not None:
            if frame.type is FrameType.FINISHED:  # FINISHED covers every frame before it
                self._th_before_finished = self._transcript.digest()
            self._transcript.update(frame.encode())
        self._handlers[(self.state, frame.type)](frame)

    def _on_record(self, frame: memoryview) -> None:
        receiver = self._receiver
        assert receiver is not None
        epoch = receiver.epoch
        content_type, content = receiver.open_frame(frame)
        self._record_seen = True
        if self._trace:
            self._events.append(
                FrameTraced(
                    "received", bytes(frame), epoch, receiver.seq - 1, content_type, content
                )
            )
        if content_type is _APPLICATION_DATA:
            if not self._close_received:
                self._events.append(DataReceived(content))
        elif content_type is _KEY_UPDATE:
            self._on_key_update(content)
        else:
            self._on_alert(Alert.decode(content))

    def _on_key_update(self, content: bytes) -> None:
        if len(content) != 1:
            raise RemoteProtocolError(AlertCode.DECODE_ERROR, f"key_update of {len(content)} bytes")
        if content[0] > 1:
            raise RemoteProtocolError(AlertCode.ILLEGAL_PARAMETER, f"request_update = {content[0]}")
        assert self._receiver is not None
        self._receiver.update()
        requested = content[0] == 1
        if requested and not self._close_sent:
            self._send_key_update(False)  # never 1, so updates do not loop
        self._events.append(KeyUpdateReceived(requested, self._receiver.epoch))

    def _on_alert(self, alert: Alert) -> None:
        self._events.append(AlertReceived(alert.code, alert.reason))
        if alert.code == AlertCode.CLOSE_NOTIFY:
            self._close_received = True
            if not self._close_sent:
                self._send_alert(AlertCode.CLOSE_NOTIFY, "")
                self._close_sent = True
            self._finish_close(clean=True)
        else:
            # §7: the receiver of a fatal alert closes without answering.
            self.state = State.ERROR
            self._events.append(ConnectionClosed(False, f"peer sent {alert.code}: {alert.reason}"))

    def _peer_vanished(self) -> None:
        reason = "peer closed the connection without close_notify"
        if not self.handshake_complete:
            reason = "peer closed the connection during the handshake"
        self._finish_close(clean=False, reason=reason)

    def _finish_close(self, clean: bool, reason: str = "") -> None:
        self.state = State.CLOSED
        self._events.append(ConnectionClosed(clean, reason))

    # ------------------------------------------------------------------ the key schedule

    def _derive(self, shared_secret: bytes) -> None:
        """§5: every secret from the shared secret and TH_keys (the transcript so far)."""
        assert self._schedule is not None and self._transcript is not None
        self._th_keys = self._transcript.digest()
        self._secrets = self._schedule.derive(shared_secret, self._th_keys)

    def _send_finished(self) -> None:
        """Our FINISHED over every handshake frame so far (§4)."""
        assert self._secrets is not None and self._schedule is not None
        assert self._transcript is not None
        s = self._secrets
        key = s.c_finished if self.role == "client" else s.s_finished
        verify = self._schedule.verify_data(key, self._transcript.digest())
        self._write_handshake(FrameType.FINISHED, Finished(verify).encode())

    def _verify_finished(self, frame: Frame) -> None:
        """The peer's FINISHED over every frame before it, or decrypt_error (§4)."""
        assert self._secrets is not None and self._schedule is not None
        s = self._secrets
        peer, key = ("server", s.s_finished) if self.role == "client" else ("client", s.c_finished)
        fin = Finished.decode(frame.payload, self._schedule.suite.hash_len)
        expected = self._schedule.verify_data(key, self._th_before_finished)
        if not bytes_eq(fin.verify_data, expected):
            raise RemoteProtocolError(AlertCode.DECRYPT_ERROR, f"{peer} FINISHED does not verify")

    def _complete(self) -> None:
        """Both FINISHED frames are through: switch to records and say so (§4)."""
        assert self._secrets is not None and self._schedule is not None
        assert self._transcript is not None
        assert self._hello is not None and self._server_hello is not None
        ch, sh, s = self._hello, self._server_hello, self._secrets
        mine, theirs = (s.c_ap_0, s.s_ap_0) if self.role == "client" else (s.s_ap_0, s.c_ap_0)
        self._sender = RecordSender(self._schedule, mine, self._threshold)
        self._receiver = RecordReceiver(self._schedule, theirs)
        self.state = State.CONNECTED
        self._events.append(
            HandshakeComplete(
                kex=Kex(ch.kex),
                cipher_suite=CipherSuite(ch.cipher_suite),
                group=Group(ch.group),
                server_key=sh.server_key,
                server_key_sha256=sha256_hex(sh.server_key) if sh.server_key else "",
                signature_scheme=self._scheme,
                psk_identity=self._psk_identity,
                client_random=ch.random,
                server_random=sh.random,
                sas=self._schedule.sas(s.master, self._transcript.digest()),
                secrets=s,
            )
        )

    # ------------------------------------------------------------------ errors

    def _require_connected(self, what: str) -> None:
        if self.state is not _CONNECTED or self._close_sent:
            raise LocalProtocolError(
                AlertCode.INTERNAL_ERROR, f"cannot {what} in state {self.state.value}"
            )

    def _fail(self, exc: ProtocolError) -> None:
        """Queue the alert for ``exc`` (if we may still send), enter ERROR for good."""
        if self.state in (State.CLOSED, State.ERROR):
            return
        if not self._close_sent:
            self._send_alert(exc.alert, exc.reason)
        self.state = State.ERROR
        self.error = exc
        self._pending_error = exc
