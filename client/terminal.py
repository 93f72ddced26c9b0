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

from explain.console import (
    describe_error,
    error_line,
    note_line,
    out,
    out_fitted,
    printable,
    printable_bytes,
    stderr_console,
)
from explain.explainer import Explainer
from explain.render import render_summary_line
from keystore import TrustPolicy
from protocol import AlertCode, Kex, PeerAlert, ProtocolError
from protocol.constants import DEFAULT_PORT, MAX_CONTENT
from transport import ConnectionLost
from transport.control import decode_control, is_control

from .oob import ClientOob
from .session import ClientOptions, ClientSession, SessionError

HELP_LINE = "type a message and Enter to send; /rekey /sas /quit (or Ctrl-D)"
ECHO = "echo: "
"""Marks the reply to a message sent with --send or from piped stdin (request/response)."""
RECEIVED = "received: "
"""Marks a record that arrived at the prompt (an echo, or with --app chat another member's)."""
COMMANDS = ("/rekey", "/sas", "/quit")
"""Lines that are commands, at the prompt and in piped stdin alike (never sent)."""


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
    line = describe_error(exc, peer="server")
    if isinstance(exc, ConnectionLost):
        # The pump names the address as host:port; an IPv6 host needs brackets to be read.
        plain = f"cannot connect to {options.host}:{options.port}"
        if line.startswith(plain):
            line = f"cannot connect to {options.address}" + line[len(plain) :]
            if line.endswith("connection refused"):
                line += f"; {_refused_hint(options)}"
    return line


def _refused_hint(options: ClientOptions) -> str:
    """What a refused connection most often means in the lab."""
    if ":" in options.host:
        return "kexlab server listens on 127.0.0.1 only, unless started with --host ::1"
    if options.port != DEFAULT_PORT:
        return f"is a kexlab server running with --port {options.port}?"
    return "is a kexlab server running? (kexlab server: 127.0.0.1:9700 by default)"


async def run(
    options: ClientOptions,
    policy: TrustPolicy,
    messages: list[bytes],
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
            note_line(note)
        session = await mqtt.open(options, explainer.on_event)
    else:
        session = await ClientSession.open(options, on_event=explainer.on_event)
    if progress is not None:
        progress.connected = True
    for note in policy.notes:  # first use recorded, the "none" warning, the mqtt pin
        note_line(note)
    render_summary_line(console, session.handshake, session.handshake_ms, "client")
    try:
        if mqtt is not None and mqtt.verify_sas:
            line, verified = await mqtt.check_sas(session)
            style = "green" if verified else "yellow"  # green only for what the broker backs
            console.print(Text(line, style=style), soft_wrap=True, highlight=False)
        if messages or send_file is not None:
            for message in messages:  # bytes as given: text need not be UTF-8
                out(ECHO + printable_bytes(await session.request(message)))
            if send_file is not None:
                await _upload(session, send_file)
        elif interactive:
            await _interactive(session, explainer)
            return
        else:
            async for line in _stdin_lines():
                command = _command_of(line)
                if command == "/quit":
                    break
                if command is not None:
                    await _run_command(session, explainer, command)
                    continue
                out(ECHO + printable_bytes(await session.request(line)))
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
    out_fitted(
        f"file sent: {printable(path.name)} stored as {printable(receipt.name)}, {receipt.size} bytes,"
        f" SHA-256 {receipt.sha256} (confirmed by the server)"
    )


async def _stdin_lines() -> AsyncIterator[bytes]:
    """Lines of a non-terminal stdin, one message each (newline removed), as bytes.

    Bytes, so that a line that is not UTF-8 is sent as it is. A daemon thread reads
    them: stdin may be a pipe, a file or (under test) no file at all, and a read blocked
    on an idle pipe must never keep the program from exiting.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    room = threading.Semaphore(64)  # lines read ahead of the session, at most

    def put(item: bytes | None) -> bool:
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
        stream = getattr(sys.stdin, "buffer", None)
        with contextlib.suppress(ValueError, OSError):  # stdin closed under us: just stop
            if stream is None:  # a text stream without bytes under it (tests)
                lines = (s.encode("utf-8", "surrogateescape") for s in iter(sys.stdin.readline, ""))
            else:
                lines = iter(stream.readline, b"")
            for line in lines:
                if not put(line):
                    return
        put(None)

    threading.Thread(target=reader, name="stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        room.release()
        data = line.removesuffix(b"\n").removesuffix(b"\r")
        if len(data) > MAX_CONTENT:
            raise SessionError(f"a line of stdin is over {MAX_CONTENT} bytes (use --send-file)")
        yield data


async def _interactive(session: ClientSession, explainer: Explainer) -> None:
    """Prompt mode: typed lines are sent, incoming records printed, /rekey /sas /quit."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes | None] = asyncio.Queue()
    fd = sys.stdin.fileno()
    pending = bytearray()

    def readable() -> None:
        data = os.read(fd, 4096)
        if not data:
            loop.remove_reader(fd)
            if pending:  # Ctrl-D after text without Enter: send it, as a pipe's last line is
                lines.put_nowait(bytes(pending).removesuffix(b"\r"))
                pending.clear()
            lines.put_nowait(None)
            return
        pending.extend(data)
        while b"\n" in pending:
            raw, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            lines.put_nowait(raw.removesuffix(b"\r"))

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
            if line is None or _command_of(line) == "/quit":
                break
            await _typed(session, explainer, line)
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


def _command_of(line: bytes) -> str | None:
    """The command a line is (one of ``COMMANDS``, spaces around it allowed), or None."""
    word = line.strip().decode("utf-8", "replace")
    return word if word in COMMANDS else None


async def _run_command(session: ClientSession, explainer: Explainer, command: str) -> None:
    """/rekey or /sas (the caller handles /quit)."""
    if command == "/rekey":
        await session.key_update()
        explainer.key_update_sent()
        out("key_update sent (request_update=1): both directions now use new traffic keys")
    elif command == "/sas":
        hc = session.handshake
        out(f"SAS {hc.sas_display}  (full: {hc.sas.hex()})")


async def _typed(session: ClientSession, explainer: Explainer, line: bytes) -> None:
    """One line typed at the prompt: a command or a message."""
    command = _command_of(line)
    word = line.strip()
    if command is not None:
        await _run_command(session, explainer, command)
    elif word.startswith(b"/") and word not in (b"/", b"//"):
        # A typo of a command is more likely than a message that starts with "/".
        out(f"unknown command {printable_bytes(word)}: {HELP_LINE}")
    elif len(line) > MAX_CONTENT:
        out(f"not sent: a message is at most {MAX_CONTENT} bytes")
    else:
        await session.send(line)


def _incoming(record: bytes) -> str:
    """A record that arrived at the prompt: a message, or a control record shown as such."""
    if is_control(record):
        with contextlib.suppress(ValueError):
            return printable(f"(control) {decode_control(record)}")
    return RECEIVED + printable_bytes(record)
