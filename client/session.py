"""One client session: connect, handshake, then messages and file uploads (no terminal here)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capture.pcap import PcapWriter
from capture.tap import ErrorHook, PcapTap, tap_connection
from protocol import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PORT,
    CipherSuite,
    ClientConfig,
    ClientConnection,
    Event,
    Group,
    HandshakeComplete,
    Kex,
    KexlabError,
    ServerIdentity,
    TrustDecision,
    check_client_config,
    trust_nobody,
)
from protocol.kex import RandomSource
from transport import ConnectionLost, EventHook, KxpStream
from transport.address import host_port
from transport.control import (
    FILE_CHUNK,
    OP_FILE,
    OP_FILE_ERROR,
    OP_FILE_OK,
    ControlError,
    decode_control,
    encode_control,
    is_control,
)
from transport.keylog import append_keylog


class SessionError(KexlabError):
    """A session-level failure that is not an alert (no reply, a bad upload receipt)."""


@dataclass
class ClientOptions:
    """Everything the session needs to know (policies and keys already built)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    kex: Kex = Kex.DHE
    group: Group = Group.X25519
    suite: CipherSuite = CipherSuite.AES_256_GCM_SHA384
    psk_identity: str = ""
    psk: bytes = b""
    trust: TrustDecision = trust_nobody
    allow_anonymous: bool = False
    confirm_trust: Callable[[ServerIdentity], None] | None = None
    """Told the trusted server key once the handshake proved it (tofu records it then)."""
    explain: bool = False
    keylog: Path | None = None
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    pcap: PcapWriter | None = None
    """Where the connection's bytes are recorded (``--pcap``); the caller closes it."""
    on_pcap_error: ErrorHook | None = None
    """Told once if the capture stops (the session goes on)."""
    observe: EventHook | None = None
    """Also told every event, frames traced (the session page), before ``open``'s hook."""
    rng: RandomSource | None = None
    """Where the connection draws its randomness (``--deterministic``); None: the OS."""

    @property
    def address(self) -> str:
        """host:port as the known_hosts file keys it (IPv6 in brackets)."""
        return host_port(self.host, self.port)

    def config(self) -> ClientConfig:
        """The protocol core's configuration (ValueError for a proposal that cannot work)."""
        cfg = ClientConfig(
            kex=self.kex,
            cipher_suite=self.suite,
            group=self.group,  # each method uses only its own fields
            psk_identity=self.psk_identity,
            psk=self.psk,
            trust=self.trust,
            allow_anonymous=self.allow_anonymous,
            trace=self.explain or self.observe is not None,
        )
        if self.rng is not None:
            cfg.rng = self.rng
        check_client_config(cfg)
        return cfg


@dataclass(frozen=True)
class FileReceipt:
    """The server's confirmation of an upload, checked against what we sent."""

    name: str
    size: int
    sha256: str


class ClientSession:
    """A connected, handshaken client: send messages, await replies, upload files, close."""

    def __init__(
        self, stream: KxpStream, options: ClientOptions, tap: PcapTap | None = None
    ) -> None:
        self.stream = stream
        self.options = options
        self.tap = tap
        assert stream.handshake is not None
        self.handshake: HandshakeComplete = stream.handshake
        self.handshake_ms: float = stream.handshake_ms or 0.0

    @classmethod
    async def open(cls, options: ClientOptions, on_event: EventHook | None = None) -> ClientSession:
        """Connect and run the handshake; errors are ProtocolError or TransportError."""
        conn = ClientConnection(options.config())
        if options.observe is not None:
            on_event = _both(options.observe, on_event)
        stream = await KxpStream.connect(
            options.host, options.port, conn, timeout=options.timeout, on_event=on_event
        )
        tap = tap_connection(
            options.pcap, stream.extra, initiated_by_local=True, on_error=options.on_pcap_error
        )
        if tap is not None:
            stream.on_bytes = tap.on_bytes  # nothing is sent before the handshake starts
        try:
            hc = await stream.do_handshake(options.timeout)
            if conn.server_identity is not None and options.confirm_trust is not None:
                options.confirm_trust(conn.server_identity)
            if options.keylog is not None:
                append_keylog(options.keylog, hc.keylog)
        except BaseException:
            # A failed handshake is closed already; Ctrl-C or an unwritable key log is not:
            # say close_notify rather than leave the server with a half-open socket.
            stream.send_close()
            await stream.wait_closed()
            if tap is not None:
                tap.close()
            raise
        return cls(stream, options, tap)

    async def send(self, message: bytes) -> None:
        """Send one message record."""
        await self.stream.send(message)

    async def receive(self, timeout: float | None = None) -> bytes | None:
        """The next record (None after the server closed cleanly); TimeoutError after ``timeout``."""
        async with asyncio.timeout(timeout):
            return await self.stream.recv()

    async def request(self, message: bytes) -> bytes:
        """Send one message and return the next record that comes back (the echo)."""
        await self.send(message)
        try:
            reply = await self.receive(self.options.timeout)
        except TimeoutError:
            raise SessionError(f"no reply within {self.options.timeout:g} s") from None
        if reply is None:
            raise ConnectionLost("server closed the connection")
        return reply

    async def key_update(self) -> None:
        """Switch keys both ways (§6: request_update = 1)."""
        await self.stream.key_update(request_update=True)

    async def send_file(
        self, path: Path, progress: Callable[[int], None] | None = None
    ) -> FileReceipt:
        """Upload ``path``; returns the server's receipt once size and SHA-256 match ours."""
        size, digest = _file_digest(path)
        await self.send(encode_control(OP_FILE, name=path.name, size=size, sha256=digest))
        with path.open("rb") as fh:
            while chunk := fh.read(FILE_CHUNK):
                await self.send(chunk)
                if progress is not None:
                    progress(len(chunk))
        reply = await self._control_reply()
        if reply["op"] == OP_FILE_ERROR:
            raise SessionError(f"server refused the file: {reply.get('reason', '?')}")
        if reply["op"] != OP_FILE_OK:
            raise SessionError(f"unexpected reply to the upload: {reply['op']!r}")
        receipt = FileReceipt(
            str(reply.get("name", "")), reply.get("size", -1), str(reply.get("sha256", ""))
        )
        if receipt.size != size or receipt.sha256 != digest:
            raise SessionError(
                f"server stored {receipt.size} bytes with SHA-256 {receipt.sha256}, "
                f"sent {size} bytes with SHA-256 {digest}"
            )
        return receipt

    async def _control_reply(self) -> dict[str, Any]:
        """The next control record; messages from others (chat) in between are skipped."""
        try:
            async with asyncio.timeout(self.options.timeout):
                return await self._next_control()
        except TimeoutError:
            raise SessionError(
                f"no confirmation of the file within {self.options.timeout:g} s"
            ) from None

    async def _next_control(self) -> dict[str, Any]:
        while True:
            record = await self.stream.recv()
            if record is None:
                raise ConnectionLost("server closed the connection before confirming the file")
            if is_control(record):
                try:
                    return decode_control(record)
                except ControlError as exc:
                    raise SessionError(f"bad reply from the server: {exc}") from None

    async def close(self) -> None:
        """close_notify both ways, then the socket."""
        await self.stream.close()
        self._end_capture()

    async def wait_closed(self) -> None:
        """Close the socket without close_notify (after ``stream.send_close``, or an error)."""
        await self.stream.wait_closed()
        self._end_capture()

    def _end_capture(self) -> None:
        if self.tap is not None:
            self.tap.close()


def _both(first: EventHook, then: EventHook | None) -> EventHook:
    def hook(event: Event) -> None:
        first(event)
        if then is not None:
            then(event)

    return hook


def _file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
