"""What every kexlab command shares: one-line errors, exit codes, and argument parsers.

An error is one line on stderr: exit 1 for a failure, 2 for a usage mistake. No
traceback reaches a user (set ``KEXLAB_DEBUG=1`` to see one while developing).
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from keystore.psk import parse_psk_spec
from oob import DEFAULT_URL, MqttSettings
from oob.payloads import check_server_id
from protocol import (
    GROUP_NAMES,
    KEX_NAMES,
    SUITE_NAMES,
    CipherSuite,
    Group,
    Kex,
    KexlabError,
)
from protocol.constants import DEFAULT_PORT

try:  # typer >= 0.20 vendors click as typer._click; older ones depend on click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        ClickException,
        UsageError,
    )

DEBUG_ENV = "KEXLAB_DEBUG"


def error_line(text: str) -> None:
    """Write one line to stderr (never wrapped, never styled)."""
    print(" ".join(text.split("\n")), file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    error_line(f"error: {message}")
    raise typer.Exit(code)


def _one_line_errors(run: Callable[[], Any], prog_name: str | None) -> NoReturn:
    """Run a command in non-standalone mode; every escaping error becomes one line + exit code."""
    try:
        rv = run()
    except UsageError as exc:
        name = exc.ctx.command_path if exc.ctx is not None else (prog_name or "kexlab")
        message = exc.format_message()
        if message:  # empty: "no arguments", the help was printed already
            error_line(f"{name}: error: {message} (see '{name} --help')")
        sys.exit(exc.exit_code)
    except ClickException as exc:
        error_line(f"error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        error_line("aborted")
        sys.exit(1)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        error_line(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)")
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


class _OneLineErrorsMixin:
    """``main`` like typer's, with usage and internal errors as one line (exit 2 and 1)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Like typer's, with one-line errors in standalone mode."""

        def run() -> Any:
            return super(_OneLineErrorsMixin, self).main(  # type: ignore[misc]
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )

        if not standalone_mode:
            return run()
        _one_line_errors(run, prog_name)


class KexlabGroup(_OneLineErrorsMixin, TyperGroup):
    """The ``kexlab`` group: usage and internal errors are one line (exit 2 and 1)."""


class KexlabCommand(_OneLineErrorsMixin, TyperCommand):
    """A single command (``python -m server``) with one-line errors."""


def single_command_app(function: Any, name: str, help_text: str) -> typer.Typer:
    """A typer app that is exactly one command (for ``python -m server`` / ``client``)."""
    app = typer.Typer(
        name=name, help=help_text, add_completion=False, pretty_exceptions_enable=False
    )
    app.command(name=name, cls=KexlabCommand)(function)
    return app


# --------------------------------------------------------------------------- errors


def describe_error(exc: BaseException, peer: str = "peer") -> str:
    """One human line for a session failure."""
    if isinstance(exc, KexlabError):
        return exc.describe(peer)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- parsers

KEX_BY_NAME = {name: kex for kex, name in KEX_NAMES.items()}
SUITE_BY_NAME = {name: suite for suite, name in SUITE_NAMES.items()}
GROUP_BY_NAME: dict[str, Group] = {
    **{name: g for g, name in GROUP_NAMES.items() if g is not Group.NONE},
    "p256": Group.SECP256R1,
    "p-256": Group.SECP256R1,
    "p384": Group.SECP384R1,
    "p-384": Group.SECP384R1,
}


def _choice(value: str, table: dict[str, Any], what: str, shown: Sequence[str] = ()) -> Any:
    key = value.strip().lower()
    if key not in table:
        raise typer.BadParameter(f"unknown {what} {value!r}: use {', '.join(shown or table)}")
    return table[key]


def parse_kex(value: str) -> Kex:
    """rsa | dhe | psk."""
    kex: Kex = _choice(value, KEX_BY_NAME, "key exchange")
    return kex


def parse_kex_list(value: str) -> frozenset[Kex]:
    """A comma-separated list of methods (``rsa,dhe,psk``)."""
    names = [part for part in value.split(",") if part.strip()]
    if not names:
        raise typer.BadParameter("name at least one method: rsa, dhe, psk")
    return frozenset(parse_kex(name) for name in names)


def parse_suite(value: str) -> CipherSuite:
    """aes128 | aes256."""
    suite: CipherSuite = _choice(value, SUITE_BY_NAME, "cipher suite")
    return suite


def parse_group(value: str) -> Group:
    """x25519 | secp256r1 | secp384r1 | ffdhe2048 | ffdhe3072 (p256/p384 accepted)."""
    shown = [n for g, n in GROUP_NAMES.items() if g is not Group.NONE]
    group: Group = _choice(value, GROUP_BY_NAME, "group", shown)
    return group


def parse_psk(spec: str) -> tuple[str, bytes]:
    """``IDENTITY=HEX``: a §3 identity and a key of at least 16 bytes."""
    try:
        return parse_psk_spec(spec)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def parse_address(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` (port 9700 by default)."""
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise typer.BadParameter(f"{text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise typer.BadParameter(f"{text!r} is not [HOST]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise typer.BadParameter(f"{text!r} has no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise typer.BadParameter(f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


# --------------------------------------------------------------------------- session options
# One definition for ``kexlab server`` and ``kexlab client``, so both spell and explain them alike.

ExplainOption = Annotated[
    bool, typer.Option("--explain", help="Print every frame as an annotated table.")
]
ShowSecretsOption = Annotated[
    bool,
    typer.Option(
        "--show-secrets",
        help="Also print the session's secret values (shared secret, master, traffic keys).",
    ),
]
KeylogOption = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        envvar="KEXLAB_KEYLOGFILE",
        help="Append each session's traffic secrets (NSS key log style) to FILE.",
    ),
]
PcapOption = Annotated[
    Path | None,
    typer.Option(
        "--pcap",
        metavar="FILE",
        help="Write what crosses the connection(s) to FILE as a pcap (no root needed).",
    ),
]


# --------------------------------------------------------------------------- MQTT options
# One definition for ``kexlab server``, ``kexlab client`` and ``kexlab psk send`` (§8), so the
# three spell, explain and read them (environment variables included) the same way.

OOB_HELP = "MQTT broker of the out-of-band channel: mqtt://HOST:PORT or mqtts://HOST:PORT."
SAS_MISMATCH = "SAS mismatch: possible man in the middle"

OobOption = Annotated[str, typer.Option("--oob", metavar="URL", help=OOB_HELP)]
"""``psk send``: the broker, ``mqtt://localhost:1883`` by default."""
OptionalOobOption = Annotated[
    str | None,
    typer.Option(
        "--oob",
        metavar="URL",
        help=OOB_HELP + " Turns on the MQTT features (README: the out-of-band lesson).",
        show_default=False,
    ),
]
"""``server`` / ``client``: no broker unless asked for."""
ServerIdOption = Annotated[
    str | None,
    typer.Option(
        "--server-id",
        help="The server's name on the broker (topics kexlab/v1/SERVER_ID/...)."
        " Default: this machine's host name (the server's default when it runs here).",
        show_default=False,
    ),
]
VerifySasOption = Annotated[
    str | None,
    typer.Option(
        "--verify-sas",
        metavar="mqtt",
        help="After the handshake, compare the full SAS with the peer's over the --oob"
        " broker; a mismatch aborts the connection.",
        show_default=False,
    ),
]
UsernameOption = Annotated[
    str | None,
    typer.Option(help="MQTT user name (or KEXLAB_MQTT_USERNAME).", show_default=False),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        help="File whose first line is the MQTT password (or KEXLAB_MQTT_PASSWORD_FILE).",
        show_default=False,
    ),
]
CaOption = Annotated[
    Path | None,
    typer.Option(
        help="PEM CA file for an mqtts:// broker (or KEXLAB_MQTT_CA).", show_default=False
    ),
]


def mqtt_settings(
    url: str = DEFAULT_URL,
    username: str | None = None,
    password_file: Path | None = None,
    ca_file: Path | None = None,
) -> MqttSettings:
    """The broker settings from the shared options (unset ones from KEXLAB_MQTT_*); OobError."""
    return MqttSettings.from_url(
        url, username=username, password_file=password_file, ca_file=ca_file
    )


def mqtt_options_need_oob(
    oob: str | None,
    *,
    username: str | None = None,
    password_file: Path | None = None,
    ca_file: Path | None = None,
    server_id: str | None = None,
    verify_sas: str | None = None,
) -> None:
    """Usage error for an MQTT option given without ``--oob`` (it would silently do nothing)."""
    if verify_sas is not None and verify_sas != "mqtt":
        raise typer.BadParameter(
            f"{verify_sas!r}: the SAS can only be compared over mqtt", param_hint="'--verify-sas'"
        )
    if oob is not None:
        return
    given = {
        "--mqtt-username": username,
        "--mqtt-password-file": password_file,
        "--mqtt-ca": ca_file,
        "--server-id": server_id,
        "--verify-sas": verify_sas,
    }
    for name, value in given.items():
        if value is not None:
            raise typer.BadParameter(
                "needs the MQTT out-of-band channel: add --oob mqtt://HOST:PORT",
                param_hint=f"'{name}'",
            )


def default_server_id(server_id: str | None) -> str:
    """``--server-id`` checked as one topic level, or this machine's host name."""
    value = server_id if server_id is not None else socket.gethostname()
    try:
        return check_server_id(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--server-id'") from None
