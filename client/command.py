"""``kexlab client HOST[:PORT]`` (and ``python -m client``): one session from the terminal.

Modes, in this order: ``--send`` messages and/or ``--send-file``; else lines from stdin
when it is not a terminal; else an interactive prompt.
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
from typing import Annotated

import typer
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

from capture.tap import CaptureFileError, close_pcap, open_pcap
from cli.common import (
    CaOption,
    ExplainOption,
    KeylogOption,
    OptionalOobOption,
    PasswordFileOption,
    PcapOption,
    ServerIdOption,
    ShowSecretsOption,
    UsernameOption,
    VerifySasOption,
    describe_error,
    error_line,
    fail,
    parse_address,
    parse_group,
    parse_kex,
    parse_psk,
    parse_suite,
)
from cli.output import Explainer, out, stderr_console
from explain.render import render_summary_line
from keystore import KeyFileError, TrustPolicy, data_dir, parse_trust
from oob import OobError
from protocol import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    KEX_NAMES,
    AlertCode,
    Kex,
    PeerAlert,
    ProtocolError,
)
from protocol.constants import MAX_CONTENT
from transport import TransportError
from transport.control import decode_control, is_control
from transport.keylog import append_keylog

from .oob import ClientOob, client_oob
from .session import ClientOptions, ClientSession, SessionError

HELP_LINE = "type a message and Enter to send; /rekey /sas /quit (or Ctrl-D)"
DEFAULT_GROUP = "x25519"
DEFAULT_TRUST = "tofu"


def _check_address(value: str) -> str:
    parse_address(value)
    return value


def _check_kex(value: str | None) -> str | None:
    if value is not None:
        parse_kex(value)
    return value


def _check_group(value: str | None) -> str | None:
    if value is not None:
        parse_group(value)
    return value


def _check_suite(value: str) -> str:
    parse_suite(value)
    return value


def _check_psk(value: str | None) -> str | None:
    if value is not None:
        parse_psk(value)
    return value


def client(
    address: Annotated[
        str,
        typer.Argument(
            metavar="HOST[:PORT]",
            callback=_check_address,
            help="The server (port 9700 unless given; IPv6 as [::1]:9700).",
        ),
    ],
    kex: Annotated[
        str | None,
        typer.Option(
            callback=_check_kex, help="rsa, dhe or psk. Default: dhe, or psk when --psk is given."
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            callback=_check_group,
            help="dhe group: x25519, secp256r1, secp384r1, ffdhe2048, ffdhe3072. Default: x25519.",
            show_default=False,
        ),
    ] = None,
    suite: Annotated[
        str, typer.Option(callback=_check_suite, help="Cipher suite: aes128 or aes256.")
    ] = "aes256",
    psk: Annotated[
        str | None,
        typer.Option(
            metavar="IDENTITY=HEX",
            callback=_check_psk,
            help="The pre-shared key, as handed over out of band.",
        ),
    ] = None,
    trust: Annotated[
        str | None,
        typer.Option(
            metavar="POLICY",
            help="How to trust the server key (rsa, dhe): tofu (record it on first use in"
            " $KEXLAB_HOME/known_hosts, keyed by host:port), none, pin:SHA256HEX or pin:FILE"
            " (a public key file), or mqtt (pin the fingerprint the server announces on"
            " the --oob broker: only as trustworthy as the broker's write permissions)."
            " Default: tofu.",
            show_default=False,
        ),
    ] = None,
    oob: OptionalOobOption = None,
    server_id: ServerIdOption = None,
    verify_sas: VerifySasOption = None,
    mqtt_username: UsernameOption = None,
    mqtt_password_file: PasswordFileOption = None,
    mqtt_ca: CaOption = None,
    send: Annotated[
        list[str] | None,
        typer.Option(metavar="TEXT", help="Send TEXT, print the echo (repeatable); then exit."),
    ] = None,
    send_file: Annotated[
        Path | None,
        typer.Option(
            "--send-file",
            metavar="PATH",
            help="Upload a file to the server's inbox; size and SHA-256 are checked.",
        ),
    ] = None,
    explain: ExplainOption = False,
    show_secrets: ShowSecretsOption = False,
    keylog: KeylogOption = None,
    pcap: PcapOption = None,
    timeout: Annotated[
        float,
        typer.Option(min=0.01, help="Seconds for connect, handshake and each reply."),
    ] = DEFAULT_HANDSHAKE_TIMEOUT,
) -> None:
    """Connect to a kexlab server, agree on a key, and talk over AES-GCM records."""
    host, port = parse_address(address)
    method = parse_kex(kex) if kex is not None else (Kex.PSK if psk else Kex.DHE)
    identity, key = parse_psk(psk) if psk else ("", b"")
    _check_combination(method, psk, oob, group, trust)
    if send_file is not None:
        _check_readable(send_file)
    for text in send or []:
        if len(text.encode("utf-8")) > MAX_CONTENT:
            raise typer.BadParameter(
                f"a message is at most {MAX_CONTENT} bytes (use --send-file)",
                param_hint="'--send'",
            )
    options = ClientOptions(
        host=host,
        port=port,
        kex=method,
        group=parse_group(group or DEFAULT_GROUP),
        suite=parse_suite(suite),
        psk_identity=identity,
        psk=key,
        explain=explain,
        keylog=keylog,
        timeout=timeout,
    )
    try:
        mqtt = client_oob(
            oob,
            server_id,
            verify_sas,
            mqtt_username,
            mqtt_password_file,
            mqtt_ca,
            publish_psk=method is Kex.PSK and not psk,
        )
    except OobError as exc:
        fail(str(exc))
    if mqtt is not None and mqtt.publish_psk:
        mqtt.new_psk(options)
    try:
        policy = parse_trust(
            trust or DEFAULT_TRUST,
            options.address,
            data_dir() / "known_hosts",
            mqtt=mqtt is not None,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--trust'") from None
    options.trust, options.allow_anonymous = policy.decide, policy.allow_anonymous
    try:
        options.config()
    except ValueError as exc:
        fail(str(exc))
    if keylog is not None:
        _check_keylog(keylog)
    # No stdin at all (started with stdin closed): nothing to read, like an empty pipe.
    interactive = not send and send_file is None and sys.stdin is not None and sys.stdin.isatty()
    try:
        options.pcap = open_pcap(pcap) if pcap is not None else None
    except CaptureFileError as exc:
        fail(str(exc))
    options.on_pcap_error = lambda reason: error_line(f"warning: --pcap {pcap}: {reason}")
    progress = _Progress()
    try:
        asyncio.run(
            _run(options, policy, send or [], send_file, show_secrets, interactive, mqtt, progress)
        )
    except KeyboardInterrupt:
        fail(
            "interrupted (Ctrl-C): session closed with close_notify"
            if progress.connected
            else "interrupted (Ctrl-C) before the handshake completed"
        )
    except (ProtocolError, TransportError, KeyFileError, OSError, SessionError) as exc:
        fail(_describe(exc, options))
    except OobError as exc:
        fail(str(exc))
    finally:
        if options.pcap is not None and pcap is not None:
            try:
                close_pcap(options.pcap, pcap)
            except CaptureFileError as exc:
                fail(str(exc))


@dataclass
class _Progress:
    """How far a run got, for the line printed when Ctrl-C ends it."""

    connected: bool = False


def _check_combination(
    method: Kex, psk: str | None, oob: str | None, group: str | None, trust: str | None
) -> None:
    """Usage errors for options that would be silently ignored with this method."""
    name = KEX_NAMES[method]
    if method is Kex.PSK and not psk and oob is None:
        raise typer.BadParameter(
            "--kex psk needs --psk IDENTITY=HEX (or --oob mqtt://HOST:PORT to send a fresh"
            " key to the server over MQTT)",
            param_hint="'--psk'",
        )
    if method is not Kex.PSK and psk:
        raise typer.BadParameter(f"--psk is for --kex psk, not {name}", param_hint="'--psk'")
    if group is not None and method is not Kex.DHE:
        raise typer.BadParameter(
            f"--group is for --kex dhe: {name} uses no Diffie-Hellman group",
            param_hint="'--group'",
        )
    if trust is not None and method is Kex.PSK:
        raise typer.BadParameter(
            "--trust decides about the server key of rsa and dhe; with psk there is none:"
            " the pre-shared key itself authenticates the server",
            param_hint="'--trust'",
        )


def _check_readable(path: Path) -> None:
    """A usage error, before connecting, for a --send-file that cannot be read."""
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file" if path.exists() else None
        raise typer.BadParameter(f"{path}: {what or 'no such file'}", param_hint="'--send-file'")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise typer.BadParameter(f"{path}: {reason}", param_hint="'--send-file'") from None


def _check_keylog(path: Path) -> None:
    """Fail before connecting if the key log cannot be written (it would fail after the handshake)."""
    try:
        append_keylog(path, "")  # creates it mode 0600, as the real write would
    except OSError as exc:
        fail(f"cannot write the key log {path}: {(exc.strerror or str(exc)).lower()}")


def _describe(exc: BaseException, options: ClientOptions) -> str:
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


async def _run(
    options: ClientOptions,
    policy: TrustPolicy,
    messages: list[str],
    send_file: Path | None,
    show_secrets: bool,
    interactive: bool,
    mqtt: ClientOob | None = None,
    progress: _Progress | None = None,
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
            verified = await mqtt.check_sas(session)
            console.print(Text(verified, style="green"), soft_wrap=True, highlight=False)
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
