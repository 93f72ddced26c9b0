"""``kexlab server`` (and ``python -m server``): options -> keys -> a listening KexlabServer."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric import rsa

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
    default_server_id,
    describe_error,
    fail,
    mqtt_options_need_oob,
    mqtt_settings,
    parse_kex_list,
    parse_psk,
)
from cli.output import ServerLog
from keystore import (
    KeyFileError,
    data_dir,
    ensure_server_keys,
    fingerprint,
    load_private_key,
)
from oob import DEFAULT_PSK_WAIT, OobError
from oob.payloads import psk_filter
from protocol import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_PORT, KEX_NAMES, Kex
from protocol.kex import ServerPrivateKey

from .apps import APPS
from .oob import ServerOob
from .server import DEFAULT_MAX_CONNECTIONS, KexlabServer, ServerOptions

LOG_FORMATS = ("text", "json")


def _check_app(value: str) -> str:
    if value not in APPS:
        raise typer.BadParameter(f"unknown app {value!r}: use {', '.join(APPS)}")
    return value


def _check_log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise typer.BadParameter(f"unknown log format {value!r}: use text or json")
    return value


def _check_kex(value: str) -> str:
    parse_kex_list(value)
    return value


def _check_psks(values: list[str] | None) -> list[str] | None:
    for spec in values or []:
        parse_psk(spec)
    return values


def server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port to listen on (0: any free port).")
    ] = DEFAULT_PORT,
    kex: Annotated[
        str,
        typer.Option(callback=_check_kex, help="Key exchange methods to enable, comma-separated."),
    ] = "rsa,dhe,psk",
    rsa_key: Annotated[
        Path | None,
        typer.Option(
            "--rsa-key",
            metavar="FILE",
            help="RSA private key (>= 2048 bits) for rsa transport and, by default, dhe"
            " signatures. Default: $KEXLAB_HOME/server-rsa.pem (KEXLAB_HOME defaults to"
            " ~/.local/share/kexlab), created on first run.",
        ),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            metavar="FILE",
            help="Identity key (RSA or Ed25519) that signs dhe shares. Default: the RSA key.",
        ),
    ] = None,
    anonymous: Annotated[
        bool,
        typer.Option(
            "--anonymous",
            help="Serve dhe without a signature (clients must use --trust none).",
        ),
    ] = False,
    psk: Annotated[
        list[str] | None,
        typer.Option(
            "--psk",
            metavar="IDENTITY=HEX",
            callback=_check_psks,
            help="A pre-shared key handed over out of band (repeatable).",
        ),
    ] = None,
    oob: OptionalOobOption = None,
    server_id: ServerIdOption = None,
    psk_wait: Annotated[
        float | None,
        typer.Option(
            min=0,
            help=f"With --oob: seconds to wait for the key of a PSK identity the server does"
            f" not know yet before answering unknown_psk_identity. Default: {DEFAULT_PSK_WAIT:g}.",
            show_default=False,
        ),
    ] = None,
    verify_sas: VerifySasOption = None,
    mqtt_username: UsernameOption = None,
    mqtt_password_file: PasswordFileOption = None,
    mqtt_ca: CaOption = None,
    app: Annotated[
        str,
        typer.Option(
            callback=_check_app,
            help="echo: every record comes back as is. chat: every message goes to every"
            " other client, prefixed with the sender's name.",
        ),
    ] = "echo",
    inbox: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Where received files go. Default: $KEXLAB_HOME/inbox."),
    ] = None,
    keylog: KeylogOption = None,
    pcap: PcapOption = None,
    explain: ExplainOption = False,
    show_secrets: ShowSecretsOption = False,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Connections served at once; more are refused.")
    ] = DEFAULT_MAX_CONNECTIONS,
    handshake_timeout: Annotated[
        float,
        typer.Option(min=0.01, help="Seconds a client has to complete its handshake."),
    ] = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.01, help="Close a session silent for this many seconds (default: never)."
        ),
    ] = None,
    log_format: Annotated[
        str, typer.Option(callback=_check_log_format, help="text or json (one object per line).")
    ] = "text",
) -> None:
    """Serve KXP/1: agree on a key with each client by rsa, dhe or psk, then echo or chat."""
    if anonymous and sign_key is not None:
        raise typer.BadParameter(
            "--anonymous and --sign-key exclude each other", param_hint="'--anonymous'"
        )
    mqtt = _mqtt(
        oob,
        server_id,
        psk_wait,
        verify_sas,
        mqtt_username,
        mqtt_password_file,
        mqtt_ca,
        handshake_timeout,
    )
    methods = parse_kex_list(kex)
    log = ServerLog(log_format, explain=explain, show_secrets=show_secrets)
    try:
        options = _options(
            methods, rsa_key, sign_key, anonymous, log, inbox or data_dir() / "inbox"
        )
    except (KeyFileError, ValueError, OSError) as exc:
        fail(describe_error(exc))
    options.host, options.port = host, port
    options.psks = dict(parse_psk(spec) for spec in psk or [])
    options.app, options.keylog, options.explain = app, keylog, explain
    options.max_connections = max_connections
    options.handshake_timeout = handshake_timeout
    options.idle_timeout = idle_timeout
    try:
        options.pcap = open_pcap(pcap) if pcap is not None else None
    except CaptureFileError as exc:
        fail(str(exc))
    if pcap is not None:
        log.emit("capture", path=str(pcap))
    try:
        asyncio.run(_serve(options, log, mqtt))
    except (ValueError, OSError) as exc:
        fail(describe_error(exc))
    finally:
        if options.pcap is not None and pcap is not None:
            try:
                close_pcap(options.pcap, pcap)  # after shutdown: every flow has its FINs
            except CaptureFileError as exc:
                fail(str(exc))


def _mqtt(
    oob: str | None,
    server_id: str | None,
    psk_wait: float | None,
    verify_sas: str | None,
    username: str | None,
    password_file: Path | None,
    ca_file: Path | None,
    handshake_timeout: float,
) -> ServerOob | None:
    """The out-of-band options checked (usage errors first); None without --oob."""
    mqtt_options_need_oob(
        oob,
        username=username,
        password_file=password_file,
        ca_file=ca_file,
        server_id=server_id,
        verify_sas=verify_sas,
    )
    if oob is None:
        if psk_wait is not None:
            raise typer.BadParameter(
                "needs the MQTT out-of-band channel: add --oob mqtt://HOST:PORT",
                param_hint="'--psk-wait'",
            )
        return None
    wait = DEFAULT_PSK_WAIT if psk_wait is None else psk_wait
    if wait >= handshake_timeout:
        # The client would be cut by the handshake timeout before the wait could end.
        raise typer.BadParameter(
            f"must be shorter than --handshake-timeout ({handshake_timeout:g} s)",
            param_hint="'--psk-wait'",
        )
    sid = default_server_id(server_id)
    try:
        settings = mqtt_settings(oob, username, password_file, ca_file)
    except OobError as exc:
        fail(str(exc))
    return ServerOob(settings, sid, psk_wait=wait, verify_sas=verify_sas is not None)


def _options(
    methods: frozenset[Kex],
    rsa_path: Path | None,
    sign_path: Path | None,
    anonymous: bool,
    log: ServerLog,
    inbox: Path,
) -> ServerOptions:
    """Load or create the keys the enabled methods need."""
    rsa_key: rsa.RSAPrivateKey | None = None
    needs_rsa = Kex.RSA in methods or (Kex.DHE in methods and not anonymous and sign_path is None)
    if rsa_path is not None:
        key = load_private_key(rsa_path)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyFileError(f"{rsa_path} is not an RSA key (--rsa-key needs RSA >= 2048 bits)")
        rsa_key = key
        log.emit("key", role="rsa", sha256=fingerprint(key), path=str(rsa_path))
    elif needs_rsa:
        keys = ensure_server_keys(data_dir())
        rsa_key = keys.rsa_key
        if keys.created:
            log.emit("key-created", path=str(keys.rsa_path), sha256=keys.fingerprint)
        log.emit("key", role="rsa", sha256=keys.fingerprint, path=str(keys.rsa_path))
    sign_key: ServerPrivateKey | None = None
    if Kex.DHE in methods and not anonymous:
        if sign_path is not None:
            sign_key = load_private_key(sign_path)
            log.emit("key", role="sign", sha256=fingerprint(sign_key), path=str(sign_path))
        else:
            sign_key = rsa_key
    return ServerOptions(
        kex_methods=methods,
        rsa_key=rsa_key if Kex.RSA in methods else None,
        sign_key=sign_key,
        inbox=inbox,
    )


async def _serve(options: ServerOptions, log: ServerLog, mqtt: ServerOob | None = None) -> None:
    """Listen until SIGINT or SIGTERM, then close every session with close_notify."""
    asyncio.get_running_loop().set_exception_handler(LoopErrorLog(log))
    if mqtt is not None:
        mqtt.attach(options)
    srv = KexlabServer(options, log)
    host, port = await srv.start()
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    methods = ",".join(KEX_NAMES[k] for k in sorted(options.kex_methods))
    log.emit(
        "listening",
        address=shown,
        kex=methods,
        app=options.app,
        anonymous=Kex.DHE in options.kex_methods and options.sign_key is None,
        psk_identities=",".join(sorted(options.psks)) or "-",
    )
    if mqtt is not None:
        _announce(mqtt, options, shown, log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await srv.serve_until(stop)
    finally:
        for sig in handled:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        if mqtt is not None:
            await mqtt.stop()
    log.emit("stopped", connections_closed=len(srv.streams) == 0)


_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class LoopErrorLog:
    """asyncio's own error reports as server log lines, never a traceback on stderr.

    The one an operator meets is accept() running out of file descriptors: asyncio
    stops accepting for a second and retries, reporting it with a traceback once per
    connection waiting in the backlog (Python 3.11 keeps looping after the error), so
    those reports become at most one line a second.
    """

    def __init__(self, log: ServerLog, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.clock = clock
        self._last_pause = -math.inf

    def __call__(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler."""
        exc = context.get("exception")
        message = str(context.get("message", "asyncio error"))
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_FDS and "accept" in message:
            now = self.clock()
            if now - self._last_pause >= 1.0:
                self._last_pause = now
                self.log.emit(
                    "accept-paused",
                    reason=f"{exc.strerror or exc}: new connections wait about 1 s"
                    " (raise `ulimit -n` or lower --max-connections)",
                )
            return
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        self.log.emit("loop-error", message=message, error=detail)


def _announce(mqtt: ServerOob, options: ServerOptions, address: str, log: ServerLog) -> None:
    """Start the out-of-band channel and say what it does."""
    announced = mqtt.start(options, address, log)
    log.emit(
        "mqtt",
        broker=mqtt.settings.describe(),
        server_id=mqtt.server_id,
        subscribe=psk_filter(mqtt.server_id),
        fingerprint=f"{announced[0]}:{announced[1]}" if announced else "-",
        psk_wait=mqtt.psk_wait,
        verify_sas=mqtt.verify_sas,
    )
