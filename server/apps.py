"""What the server does with records after the handshake: echo or chat, plus file uploads.

Conventions (docs/application.md): a record is a message unless it is a control
record (leading NUL); a "file" control record is followed by the file's bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from explain.console import printable
from protocol import AlertCode, ProtocolError
from transport import KxpStream, TransportError
from transport.control import (
    OP_ERROR,
    OP_FILE,
    OP_FILE_ERROR,
    OP_FILE_OK,
    ControlError,
    decode_control,
    encode_control,
    is_control,
)

from .inbox import Inbox, Upload, UploadError, Usage

Log = Callable[..., None]
"""log(event, **fields): the server's structured log."""

SLOW_READER_LIMIT = 4 << 20
"""A chat member with more than this many bytes queued and unread is dropped, not waited for."""


class Session:
    """One connected client after its handshake, as an app sees it."""

    def __init__(self, stream: KxpStream, name: str, inbox: Inbox, log: Log) -> None:
        self.stream = stream
        self.name = name
        self.inbox = inbox
        self.log = log
        self.upload: Upload | None = None
        self.usage = Usage()
        """What this session stored in the inbox (its quota)."""
        self._refused = 0  # uploads refused after the first one logged (see _refuse)

    async def handle(self, record: bytes, on_message: Callable[[bytes], Any]) -> None:
        """Route one record: upload bytes, a control record, or a message for the app."""
        if self.stream.close_sent:
            # We are closing (server shutdown): §7 lets us send nothing more, so records the
            # client sent before it saw our close_notify are read and dropped, not answered.
            return
        if self.upload is not None:
            await self._upload_bytes(record)
        elif is_control(record):
            await self._control(record)
        else:
            await on_message(record)

    async def _control(self, record: bytes) -> None:
        try:
            obj = decode_control(record)
        except ControlError as exc:
            await self.stream.send(encode_control(OP_ERROR, reason=str(exc)))
            return
        if obj["op"] != OP_FILE:
            op = printable(str(obj["op"])[:40])
            await self.stream.send(encode_control(OP_ERROR, reason=f"unknown op {op!r}"))
            return
        try:
            upload = Upload(self.inbox, obj)
            await self.inbox.reserve(upload.size, self.usage)
        except UploadError as exc:
            await self._refuse(str(exc))
            return
        try:
            await upload.open()
        except (UploadError, OSError) as exc:
            self.inbox.release(upload.size, self.usage)
            await self._refuse(str(exc))
            return
        self.upload = upload
        self.log("upload-start", file=upload.path.name, size=upload.size)
        if upload.done:
            await self._finish_upload()

    async def _refuse(self, reason: str) -> None:
        # The first refusal of a session is logged, the others counted (one line at close):
        # a client looping on refused uploads must not write a line per attempt.
        if self._refused == 0:
            self.log("upload-refused", reason=reason)
        self._refused += 1
        await self.stream.send(encode_control(OP_FILE_ERROR, reason=reason))

    async def _upload_bytes(self, data: bytes) -> None:
        upload = self.upload
        assert upload is not None
        try:
            await upload.feed(data)
        except (UploadError, OSError) as exc:
            self.upload = None
            await self._drop(upload)
            self.log("upload-failed", file=upload.path.name, reason=str(exc))
            await self.stream.send(encode_control(OP_FILE_ERROR, reason=str(exc)))
            return
        if upload.done:
            await self._finish_upload()

    async def _finish_upload(self) -> None:
        upload, self.upload = self.upload, None
        assert upload is not None
        try:
            digest = await upload.finish()
        except (UploadError, OSError) as exc:
            self.inbox.release(upload.size, self.usage)
            self.log("upload-failed", file=upload.path.name, reason=str(exc))
            await self.stream.send(encode_control(OP_FILE_ERROR, reason=str(exc)))
            return
        self.log("upload-done", file=str(upload.path), size=upload.size, sha256=digest)
        await self.stream.send(
            encode_control(OP_FILE_OK, name=upload.path.name, size=upload.size, sha256=digest)
        )

    async def _drop(self, upload: Upload) -> None:
        self.inbox.release(upload.size, self.usage)
        await upload.discard()

    async def close(self) -> None:
        """Drop a partial upload when the connection ends (and say so in the log)."""
        if self._refused > 1:
            self.log("upload-refused", more=self._refused - 1, reason="in this session")
        if self.upload is not None:
            upload, self.upload = self.upload, None
            await self._drop(upload)
            self.log(
                "upload-failed",
                file=upload.path.name,
                reason=f"connection ended after {upload.received} of {upload.size} bytes;"
                " partial file removed",
            )


class App:
    """Base: read records until the peer closes; subclasses say what a message does."""

    name = "?"

    def __init__(self, idle_timeout: float | None = None) -> None:
        self.idle_timeout = idle_timeout

    async def run(self, session: Session) -> None:
        """Serve one session until it closes (clean) or fails (the error propagates)."""
        self.joined(session)
        try:
            while True:
                try:
                    # The idle timeout covers waiting for a record and answering it, so a
                    # client that sends but never reads its echoes cannot hold a slot forever.
                    async with asyncio.timeout(self.idle_timeout or None):
                        record = await session.stream.recv()
                        if record is None:
                            return
                        await session.handle(record, lambda m: self.message(session, m))
                except TimeoutError:
                    session.log("idle-timeout", seconds=self.idle_timeout)
                    if session.stream.write_buffer_size:
                        # It does not read what we sent: it would not read close_notify either.
                        session.stream.abort(AlertCode.INTERNAL_ERROR, "idle timeout", hard=True)
                    else:
                        await session.stream.close()
                    return
        finally:
            self.left(session)
            await session.close()

    def joined(self, session: Session) -> None:
        """A session starts being served."""

    def left(self, session: Session) -> None:
        """A session ends."""

    async def message(self, session: Session, data: bytes) -> None:
        """One message record from ``session``."""
        raise NotImplementedError


class EchoApp(App):
    """Every message comes back as one record with identical bytes."""

    name = "echo"

    async def message(self, session: Session, data: bytes) -> None:
        """Echo the record."""
        await session.stream.send(data)


class ChatApp(App):
    """Every message goes to every other member, prefixed with the sender's name."""

    name = "chat"

    def __init__(self, idle_timeout: float | None = None) -> None:
        super().__init__(idle_timeout)
        self.members: list[Session] = []

    def joined(self, session: Session) -> None:
        """Enter the room."""
        self.members.append(session)

    def left(self, session: Session) -> None:
        """Leave the room."""
        with contextlib.suppress(ValueError):
            self.members.remove(session)

    async def message(self, session: Session, data: bytes) -> None:
        """Relay without waiting on anyone: a member who does not read is dropped.

        The relayed line is one line of plain text: control characters (a newline, an
        ANSI escape) are escaped visibly, so no member can clear another's screen or
        start a line that looks like someone else's ("bob: ...", "SAS verified ...").
        """
        text = printable(data.decode("utf-8", "surrogateescape"))
        line = f"{printable(session.name)}: {text}".encode()
        for other in list(self.members):
            if other is session or other.stream.closed:
                continue
            try:
                other.stream.send_nowait(line)
            except (ProtocolError, TransportError, OSError, RuntimeError):
                continue
            if other.stream.write_buffer_size > SLOW_READER_LIMIT:
                other.log("dropped", reason="not reading")
                other.stream.abort(AlertCode.INTERNAL_ERROR, "not reading: dropped", hard=True)


APPS: dict[str, type[App]] = {"echo": EchoApp, "chat": ChatApp}
