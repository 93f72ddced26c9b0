"""A client session at the terminal: messages, stdin lines, the interactive prompt, uploads.

``kexlab client`` (``cli.client_command``) builds the options and calls ``run``; nothing
here knows the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from explain.console import describe_error, error_line, out, stderr_console
from explain.explainer import Explainer
from explain.render import render_summary_line
from keystore import TrustPolicy
from protocol import AlertCode, Kex, PeerAlert, ProtocolError
from protocol.constants import MAX_CONTENT
from transport.control import decode_control, is_control

from .oob import ClientOob
from .session import ClientOptions, ClientSession, SessionError

HELP_LINE = "type a message and Enter to send; /rekey /sas /quit (or Ctrl-D)"


@dataclass
class RunProgress:
    """How far a run got, for the line printed when Ctrl-C ends it."""

    connected: bool = False


def describe_failure(exc: BaseException, options: ClientOptions) -> str:
    """One line for a failed session, with what the client knows that the error does not."""
    if isinstance(exc, ProtocolError) and not isinstance(exc, PeerAlert):
        sent = f"sent alert {exc.alert_text}"
        if exc.alert is AlertCode.DECRYPT_ERROR and options.kex is Kex.PSK:
            # The server keyed its FINISHED with its own copy of the PSK: if it does not
            # verify, the two copies differ (tampering would need the key to do better).
            return (
                f"{exc.reason}: the two sides most likely hold different keys for PSK"
                f" identity {options.psk_identity!r} ({sent})"
            )
        if exc.reason.startswith("bad magic"):
            return f"{options.address} does not speak KXP/1: {exc.reason} ({sent})"
    return describe_error(exc, peer="server")


async def run(
    options: ClientOptions,
    policy: TrustPolicy,
    messages: list[str],
    send_file: Path | None,
    show_secrets: bool,
    interactive: bool,
    mqtt: ClientOob | None = None,
    progress: RunProgress | None = None,
) -> None:
    console = Console(highlight=False)
    explainer = Explainer(console, "client", frames=options.explain, show_secrets=show_secrets)
    if mqtt is not None:
        for note in await mqtt.before_connect(options, policy):  # the PSK publication
            error_line(note)
        session = await mqtt.open(options, explainer.on_event)
    else:
        session = await ClientSession.open(options, on_event=explainer.on_event)
    if progress is not None:
        progress.connected = True
    for note in policy.notes:  # first use recorded, the "none" warning, the mqtt pin
        error_line(note)
    render_summary_line(console, session.handshake, session.handshake_ms, "client")
    try:
        if mqtt is not None and mqtt.verify_sas:
            line, verified = await mqtt.check_sas(session)
            style = "green" if verified else "yellow"  # green only for what the broker backs
            console.print(Text(line, style=style), soft_wrap=True, highlight=False)
        if messages or send_file is not None:
            for text in messages:
                out(_text(await session.request(text.encode("utf-8"))))
            if send_file is not None:
                await _upload(session, send_file)
        elif interactive:
            await _interactive(session, explainer)
            return
        else:
            async for line in _stdin_lines():
                out(_text(await session.request(line.encode("utf-8"))))
    except BaseException:
        session.stream.send_close()  # no reply, Ctrl-C, a bad receipt: still end politely
        await session.wait_closed()
        raise
    await session.close()


async def _upload(session: ClientSession, path: Path) -> None:
    """Send a file with a progress bar on stderr; print the server's receipt."""
    size = path.stat().st_size
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=False,
    ) as progress:
        task = progress.add_task(f"sending {path.name}", total=size)
        receipt = await session.send_file(path, lambda n: progress.advance(task, n))
    out(
        f"file sent: {path.name} stored as {receipt.name}, {receipt.size} bytes,"
        f" SHA-256 {receipt.sha256} (confirmed by the server)"
    )


async def _stdin_lines() -> AsyncIterator[str]:
    """Lines of a non-terminal stdin, one message each (newline removed).

    A daemon thread reads them: stdin may be a pipe, a file or (under test) no file at
    all, and a read blocked on an idle pipe must never keep the program from exiting.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    room = threading.Semaphore(64)  # lines read ahead of the session, at most

    def put(item: str | None) -> bool:
        while not room.acquire(timeout=0.5):
            if loop.is_closed():
                return False
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the session ended first
            return False
        return True

    def reader() -> None:
        if sys.stdin is None:  # started with stdin closed: no lines at all
            put(None)
            return
        with contextlib.suppress(ValueError, OSError):  # stdin closed under us: just stop
            for line in iter(sys.stdin.readline, ""):
                if not put(line):
                    return
        put(None)

    threading.Thread(target=reader, name="stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        room.release()
        text = line.removesuffix("\n").removesuffix("\r")
        if len(text.encode("utf-8")) > MAX_CONTENT:
            raise SessionError(f"a line of stdin is over {MAX_CONTENT} bytes (use --send-file)")
        yield text


async def _interactive(session: ClientSession, explainer: Explainer) -> None:
    """Prompt mode: typed lines are sent, incoming records printed, /rekey /sas /quit."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    fd = sys.stdin.fileno()
    pending = bytearray()

    def readable() -> None:
        data = os.read(fd, 4096)
        if not data:
            loop.remove_reader(fd)
            if pending:  # Ctrl-D after text without Enter: send it, as a pipe's last line is
                lines.put_nowait(pending.decode("utf-8", "replace").rstrip("\r"))
                pending.clear()
            lines.put_nowait(None)
            return
        pending.extend(data)
        while b"\n" in pending:
            raw, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            lines.put_nowait(raw.decode("utf-8", "replace").rstrip("\r"))

    quitting = False

    async def receive() -> None:
        while (record := await session.stream.recv()) is not None:
            out(_incoming(record))
        if not quitting:
            out("server closed the session")

    error_line(HELP_LINE)
    loop.add_reader(fd, readable)
    receiver = asyncio.create_task(receive())
    # Ctrl-C or an error ends us while it waits: whatever it raises then is not news.
    receiver.add_done_callback(lambda task: task.cancelled() or task.exception())
    try:
        while True:
            getter = asyncio.ensure_future(lines.get())
            done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if receiver in done:
                getter.cancel()
                receiver.result()  # the server's alert or a lost connection, if any
                return
            line = getter.result()
            if line is None or line.strip() == "/quit":
                break
            await _command(session, explainer, line)
    except BaseException:
        receiver.cancel()
        raise
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)
    quitting = True
    session.stream.send_close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            await receiver
    await session.wait_closed()


async def _command(session: ClientSession, explainer: Explainer, line: str) -> None:
    """One typed line: a slash command or a message."""
    word = line.strip()
    if word == "/rekey":
        await session.key_update()
        explainer.key_update_sent()
        out("key_update sent (request_update=1): both directions now use new traffic keys")
    elif word == "/sas":
        hc = session.handshake
        out(f"SAS {hc.sas_display}  (full: {hc.sas.hex()})")
    elif word.startswith("/") and word not in ("/", "//"):
        out(f"unknown command {word}: {HELP_LINE}")
    elif len(line.encode("utf-8")) > MAX_CONTENT:
        out(f"not sent: a message is at most {MAX_CONTENT} bytes")
    else:
        await session.send(line.encode("utf-8"))


def _text(record: bytes) -> str:
    """A record as printable text (undecodable bytes replaced)."""
    return record.decode("utf-8", "replace")


def _incoming(record: bytes) -> str:
    """A record that arrived unasked: a message, or a control record shown as such."""
    if is_control(record):
        with contextlib.suppress(ValueError):
            return f"(control) {decode_control(record)}"
    return _text(record)
