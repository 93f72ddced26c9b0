"""A man in the middle without keys: relay every frame, change one, watch who notices.

``kexlab mitm --relay`` holds no session key. It passes both directions through frame
by frame (cut with the core's ``FrameDecoder``) and tampers with one thing:

- ``flip``: one bit of the client's first record → the server answers bad_record_mac;
- ``drop``, ``reorder``: the client's first record goes missing, or comes after the second
  → the server sees a gap in the sequence numbers (unexpected_message, "record lost or
  dropped");
- ``replay``: the client's first record arrives twice → "replayed record";
- ``downgrade-suite``: the CLIENT_HELLO asks for AES-128 instead of AES-256 → the client
  sees a SERVER_HELLO that does not echo its proposal (illegal_parameter);
- ``downgrade-anonymous``: the server's identity key and signature are stripped → a client
  that requires a key refuses (bad_certificate); one that accepts anonymous dhe finds the
  server's FINISHED over another transcript (decrypt_error).

Alerts sent before a side's handshake is complete are plaintext and the relay reads them;
later ones are records it cannot open, so it reports only that the session ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
from dataclasses import dataclass, field

from capture.pcap import PcapWriter
from capture.tap import PcapTap, tap_connection
from protocol import (
    CipherSuite,
    FrameDecoder,
    FrameType,
    KexlabError,
    ProtocolError,
    alert_name,
    encode_frame,
)
from protocol.constants import SEQ_LEN
from protocol.frames import Frame
from protocol.messages import Alert, ClientHello, ServerHello

from .attack import Report, Verdict

READ_SIZE = 65536


class Tamper(enum.Enum):
    """What the relay changes (NONE: nothing, it only shows the frames as they pass)."""

    NONE = "none"
    FLIP = "flip"
    DROP = "drop"
    REPLAY = "replay"
    REORDER = "reorder"
    DOWNGRADE_SUITE = "downgrade-suite"
    DOWNGRADE_ANONYMOUS = "downgrade-anonymous"


@dataclass
class _Direction:
    name: str
    taps: tuple[PcapTap | None, PcapTap | None] = (None, None)
    """(the leg it reads from, the leg it writes to), recorded with --pcap."""
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    records: int = 0
    held: bytes | None = None
    raw: bool = False
    """The stream stopped parsing as KXP: pass the rest through untouched."""


class TamperingRelay:
    """Relay one connection to ``upstream`` with one tampering."""

    def __init__(
        self,
        number: int,
        upstream: tuple[str, int],
        tamper: Tamper,
        report: Report,
        timeout: float,
        pcap: PcapWriter | None = None,
    ) -> None:
        self.number = number
        self.upstream = upstream
        self.tamper = tamper
        self.report = report
        self.timeout = timeout
        self.pcap = pcap
        self.changed = ""
        self.alerts: list[str] = []

    def say(self, text: str) -> None:
        """One line about this connection."""
        self.report(f"[{self.number}] {text}")

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Verdict:
        """Relay until both ends are done; the verdict says who noticed what."""
        host, port = self.upstream
        try:
            async with asyncio.timeout(self.timeout):
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer"
            reason = f"upstream {host}:{port} unavailable: {why.lower()}"
            writer.close()
            self.say(reason)
            return Verdict(False, f"FAILED: {reason}")
        client_tap = tap_connection(self.pcap, writer.get_extra_info, initiated_by_local=False)
        server_tap = tap_connection(self.pcap, up_writer.get_extra_info, initiated_by_local=True)
        legs = [
            self._pipe(reader, up_writer, _Direction("client → server", (client_tap, server_tap))),
            self._pipe(up_reader, writer, _Direction("server → client", (server_tap, client_tap))),
        ]
        await asyncio.gather(*legs, return_exceptions=True)
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()
        for tap in (client_tap, server_tap):
            if tap is not None:
                tap.close()
        return self._verdict()

    def _verdict(self) -> Verdict:
        if self.tamper is Tamper.NONE:
            return Verdict(False, "PASSED THROUGH: relayed unchanged (no keys: nothing to read)")
        if not self.changed:
            return Verdict(False, f"PASSED THROUGH: nothing to {self.tamper.value} in this session")
        if self.alerts:
            return Verdict(False, f"DETECTED: {self.alerts[0]}")
        return Verdict(
            False,
            f"DETECTED: the session ended after we {self.changed}"
            " (the alert is an encrypted record: the endpoint's own output names it)",
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: _Direction
    ) -> None:
        try:
            rx, tx = way.taps
            while data := await reader.read(READ_SIZE):
                if rx is not None:
                    rx.on_bytes("received", data)
                out = data if way.raw else self._frames(data, way)
                if out:
                    if tx is not None:
                        tx.on_bytes("sent", out)
                    writer.write(out)
                    await writer.drain()
        except OSError:
            pass  # a reset or a broken pipe ends this direction like an EOF
        finally:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()

    def _frames(self, data: bytes, way: _Direction) -> bytes:
        way.decoder.feed(data)
        out: list[bytes] = []
        while True:
            try:
                frame = way.decoder.next_frame()
            except ProtocolError as exc:
                self.say(f"{way.name}: not KXP any more ({exc.reason}): passing bytes through")
                way.raw = True
                return b"".join(out)
            if frame is None:
                return b"".join(out)
            out += self._edit(frame, way)

    def _edit(self, frame: Frame, way: _Direction) -> list[bytes]:
        """The frames to send for one received frame (none, itself, changed, or more)."""
        raw = frame.encode()
        client_side = way.name.startswith("client")
        t = frame.type
        if t is FrameType.ALERT:
            self._note_alert(way, frame.payload)
        if t is FrameType.RECORD and client_side:
            way.records += 1
            return self._record(raw, way)
        if t is FrameType.CLIENT_HELLO and self.tamper is Tamper.DOWNGRADE_SUITE:
            return [self._downgrade_suite(frame)]
        if self.tamper is Tamper.DOWNGRADE_ANONYMOUS and not client_side:
            if t is FrameType.SERVER_HELLO:
                return [self._strip_server_key(frame)]
            if t is FrameType.SERVER_SIGNATURE:
                self.say("server → client: SERVER_SIGNATURE dropped")
                return []
        self.say(f"{way.name}: {t.name}, {len(raw)} bytes")
        return [raw]

    def _record(self, raw: bytes, way: _Direction) -> list[bytes]:
        n, tamper = way.records, self.tamper
        shown = f"{way.name}: RECORD {n}, {len(raw)} bytes"
        if n == 1 and tamper is Tamper.FLIP:
            flipped = bytearray(raw)
            flipped[8 + SEQ_LEN] ^= 0x01  # the first ciphertext byte, after header and seq
            self._changed(f"flipped one bit of the client's first record ({shown})")
            return [bytes(flipped)]
        if n == 1 and tamper is Tamper.DROP:
            self._changed(f"dropped the client's first record ({shown})")
            return []
        if n == 1 and tamper is Tamper.REPLAY:
            self._changed(f"sent the client's first record twice ({shown})")
            return [raw, raw]
        if n == 1 and tamper is Tamper.REORDER:
            way.held = raw
            self.say(f"{shown}: held back")
            return []
        if n == 2 and way.held is not None:
            held, way.held = way.held, None
            self._changed("sent the client's second record before its first")
            return [raw, held]
        self.say(shown)
        return [raw]

    def _downgrade_suite(self, frame: Frame) -> bytes:
        try:
            ch = ClientHello.decode(frame.payload)
        except KexlabError:
            return frame.encode()
        if ch.cipher_suite != CipherSuite.AES_256_GCM_SHA384:
            self.say("client → server: CLIENT_HELLO already asks for AES-128: nothing to downgrade")
            return frame.encode()
        weaker = dataclasses.replace(ch, cipher_suite=CipherSuite.AES_128_GCM_SHA256)
        self._changed("rewrote CLIENT_HELLO's cipher suite from aes256 to aes128")
        return encode_frame(FrameType.CLIENT_HELLO, weaker.encode())

    def _strip_server_key(self, frame: Frame) -> bytes:
        try:
            sh = ServerHello.decode(frame.payload)
        except KexlabError:
            return frame.encode()
        if not sh.server_key:
            self.say("server → client: SERVER_HELLO carries no key: nothing to strip")
            return frame.encode()
        bare = dataclasses.replace(sh, server_key=b"")
        self._changed("stripped the server's key from SERVER_HELLO")
        return encode_frame(FrameType.SERVER_HELLO, bare.encode())

    def _changed(self, what: str) -> None:
        self.changed = self.changed or what
        self.say(f"tampered: {what}")

    def _note_alert(self, way: _Direction, payload: bytes) -> None:
        sender = "client" if way.name.startswith("client") else "server"
        try:
            alert = Alert.decode(payload)
        except KexlabError:
            return
        text = f"{sender} sent alert {alert_name(alert.code)} ({alert.code})"
        if alert.reason:
            text += f": {alert.reason}"
        self.say(text)
        self.alerts.append(text)
