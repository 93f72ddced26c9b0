"""Options spelled once for every command that takes them: session options, MQTT options."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from explain.console import error_line
from oob import DEFAULT_URL, MqttSettings, OobError
from oob.payloads import check_server_id
from oob.settings import ENV_CA, ENV_PASSWORD_FILE
from transport.keylog import KeylogRefused, append_keylog

from .errors import fail

# --------------------------------------------------------------------------- files named on the line


def input_file(path: Path, option: str) -> Path:
    """A usage error (exit 2) for an input file that is missing, a folder, or unreadable.

    Found before any work starts, as click does for its own paths. What is *in* the file
    (a bad key, a loose mode) is the file's problem, not the command line's: exit 1 later.
    """
    hint = f"'{option}'" if option.startswith("-") else option
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file" if path.exists() else None
        raise typer.BadParameter(f"{path}: {what or 'no such file'}", param_hint=hint)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise typer.BadParameter(f"{path}: {reason}", param_hint=hint) from None
    return path


def check_keylog(path: Path) -> None:
    """Fail before any session if the key log cannot be written (it would fail after a handshake)."""
    try:
        warning = append_keylog(path, "")  # creates it mode 0600, as the real write would
    except KeylogRefused as exc:
        fail(f"cannot write the key log {path}: {exc}")
    except OSError as exc:
        fail(f"cannot write the key log {path}: {(exc.strerror or str(exc)).lower()}")
    if warning is not None:
        error_line(f"warning: {warning}")


def output_file(path: Path, option: str) -> Path:
    """A usage error for an output path that is a folder (exit 2), as click does for its own."""
    if path.is_dir():
        raise typer.BadParameter(f"{path}: a directory", param_hint=f"'{option}'")
    return path


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
        help="Append each session's traffic secrets (NSS key log style) to FILE: earlier"
        " sessions stay in it; a new FILE is created mode 0600.",
    ),
]
PcapOption = Annotated[
    Path | None,
    typer.Option(
        "--pcap",
        metavar="FILE",
        help="Write what crosses the connection(s) to FILE as a pcap (no root needed)."
        " FILE is replaced on each run, as tcpdump -w does; --keylog appends.",
    ),
]


# --------------------------------------------------------------------------- MQTT options
# One definition for ``kexlab server``, ``kexlab client`` and ``kexlab psk send`` (§8), so the
# three spell, explain and read them (environment variables included) the same way.

OOB_HELP = "MQTT broker of the out-of-band channel: mqtt://HOST:PORT or mqtts://HOST:PORT."

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
        metavar="NAME",
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
    typer.Option(
        metavar="USER", help="MQTT user name (or KEXLAB_MQTT_USERNAME).", show_default=False
    ),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="File whose first line is the MQTT password (or KEXLAB_MQTT_PASSWORD_FILE).",
        show_default=False,
    ),
]
CaOption = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE",
        help="PEM CA file for an mqtts:// broker (or KEXLAB_MQTT_CA).",
        show_default=False,
    ),
]


def mqtt_settings(
    url: str = DEFAULT_URL,
    username: str | None = None,
    password_file: Path | None = None,
    ca_file: Path | None = None,
) -> MqttSettings:
    """The broker settings from the shared options (unset ones from KEXLAB_MQTT_*).

    Every mistake in them is a usage error (exit 2): a URL that is not mqtt[s]://HOST:PORT,
    a password file without a user, a CA without TLS, a file that cannot be read.
    """
    try:
        settings = MqttSettings.from_url(
            url, username=username, password_file=password_file, ca_file=ca_file
        )
    except OobError as exc:
        message = str(exc)
        option = "--oob"
        if "password file" in message:
            option = "--mqtt-username"
        elif "CA file" in message:
            option = "--mqtt-ca"
        raise typer.BadParameter(message, param_hint=f"'{option}'") from None
    if settings.password_file is not None:
        input_file(settings.password_file, f"'--mqtt-password-file' / {ENV_PASSWORD_FILE}")
    if settings.ca_file is not None:
        input_file(settings.ca_file, f"'--mqtt-ca' / {ENV_CA}")
    return settings


def mqtt_options_need_oob(
    oob: str | None,
    *,
    username: str | None = None,
    password_file: Path | None = None,
    ca_file: Path | None = None,
    server_id: str | None = None,
    verify_sas: str | None = None,
    psk_wait: float | None = None,
    forge_sas: bool = False,
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
        "--psk-wait": psk_wait,
        "--forge-sas": True if forge_sas else None,
    }
    for name, value in given.items():
        if value is not None:
            raise typer.BadParameter(
                "needs the MQTT out-of-band channel: add --oob mqtt://HOST:PORT",
                param_hint=f"'{name}'",
            )


def check_server_id_option(value: str | None) -> str | None:
    """``--server-id`` as a callback: one topic level (usage error otherwise)."""
    return None if value is None else default_server_id(value)


def default_server_id(server_id: str | None) -> str:
    """``--server-id`` checked as one topic level, or this machine's host name."""
    value = server_id if server_id is not None else socket.gethostname()
    try:
        return check_server_id(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--server-id'") from None
