"""Run a server: load or create the keys the enabled methods need, listen, stop on a signal.

``kexlab server`` (``cli.server_command``) reads the options and calls these; nothing
here knows the command line.
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from keystore import (
    data_dir,
    ensure_server_keys,
    fingerprint,
    load_private_key,
    load_rsa_private_key,
    long_fingerprint,
)
from oob.payloads import psk_filter
from protocol import KEX_NAMES, METHODS, Kex, KexlabError
from protocol.kex import ServerPrivateKey
from transport.address import host_port
from transport.signals import stop_on_signals

from .log import ServerLog
from .oob import ServerOob
from .server import KexlabServer, ServerOptions

LOG_FORMATS = ("text", "json")


def server_options(
    methods: frozenset[Kex],
    rsa_path: Path | None,
    sign_path: Path | None,
    anonymous: bool,
    log: ServerLog,
    inbox: Path,
) -> ServerOptions:
    """Load or create the keys the enabled methods need; log each as ``fingerprint=SHA256:...``.

    The form the client prints (``first use: recorded server key SHA256:...``, and the
    summary lines of both sides), so that a student can compare them by eye.
    """
    rsa_key: rsa.RSAPrivateKey | None = None
    transport = any(METHODS[k].server_key_role == "transport" for k in methods)
    signs = any(METHODS[k].server_signs for k in methods) and not anonymous
    needs_rsa = transport or (signs and sign_path is None)  # the RSA key signs by default
    if rsa_path is not None:
        rsa_key = load_rsa_private_key(rsa_path)
        log.emit(
            "key",
            role="rsa",
            fingerprint=long_fingerprint(fingerprint(rsa_key)),
            path=str(rsa_path),
        )
    elif needs_rsa:
        keys = ensure_server_keys(data_dir())
        rsa_key = keys.rsa_key
        if keys.created:
            log.emit(
                "key-created",
                path=str(keys.rsa_path),
                fingerprint=long_fingerprint(keys.fingerprint),
            )
        log.emit(
            "key",
            role="rsa",
            fingerprint=long_fingerprint(keys.fingerprint),
            path=str(keys.rsa_path),
        )
    sign_key: ServerPrivateKey | None = None
    if signs:
        if sign_path is not None:
            sign_key = load_private_key(sign_path)
            log.emit(
                "key",
                role="sign",
                fingerprint=long_fingerprint(fingerprint(sign_key)),
                path=str(sign_path),
            )
        else:
            sign_key = rsa_key
    return ServerOptions(
        kex_methods=methods,
        rsa_key=rsa_key if transport else None,
        sign_key=sign_key,
        inbox=inbox,
    )


async def serve(options: ServerOptions, log: ServerLog, mqtt: ServerOob | None = None) -> None:
    """Listen until SIGINT or SIGTERM, then close every session with close_notify."""
    asyncio.get_running_loop().set_exception_handler(LoopErrorLog(log))
    if mqtt is not None:
        mqtt.attach(options)
    srv = KexlabServer(options, log)
    try:
        host, port = await srv.start()
    except OSError as exc:
        raise listen_error(options.host, options.port, exc) from None
    shown = host_port(host, port)
    methods = ",".join(KEX_NAMES[k] for k in sorted(options.kex_methods))
    log.emit(
        "listening",
        address=shown,
        kex=methods,
        app=options.app,
        anonymous=any(METHODS[k].server_signs for k in options.kex_methods)
        and options.sign_key is None,
        psk_identities=",".join(sorted(options.psks)) or "-",
    )
    if mqtt is not None:
        _announce(mqtt, options, shown, log)
    stop = asyncio.Event()
    try:
        with stop_on_signals(stop):
            await srv.serve_until(stop)
    finally:
        if mqtt is not None:
            await mqtt.stop()
    log.emit("stopped", connections_closed=len(srv.streams) == 0)


class ListenError(KexlabError):
    """The server cannot listen where it was told to: one line with the address and the fix."""


_LISTEN_HINTS = {
    errno.EADDRINUSE: "another program holds that port (a kexlab server already running?):"
    " stop it, or choose another port with --port (--port 0 picks a free one)",
    errno.EADDRNOTAVAIL: "--host must be an address of this machine (127.0.0.1, ::1, or an"
    " address of one of its interfaces)",
    errno.EACCES: "ports below 1024 need root: choose another with --port (default 9700)",
}
_NAME_HINT = "--host takes an address of this machine (127.0.0.1, ::1) or a name for one"


def listen_error(host: str, port: int, exc: OSError) -> ListenError:
    """``cannot listen on HOST:PORT: why; what to do`` (asyncio's own text names a tuple)."""
    if isinstance(exc, socket.gaierror):
        reason, hint = (exc.strerror or str(exc)).lower(), _NAME_HINT
    else:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        hint = _LISTEN_HINTS.get(exc.errno or 0, "")
    return ListenError(
        f"cannot listen on {host_port(host, port)}: {reason}" + (f"; {hint}" if hint else "")
    )


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
        announces=f"{announced[0]} key" if announced else "no key",
        fingerprint=long_fingerprint(announced[1]) if announced else "-",
        psk_wait=mqtt.psk_wait,
        verify_sas=mqtt.verify_sas,
    )
