"""Where a pre-shared key may come from: ``--psk-file``, ``KEXLAB_PSK``, or (warned) ``--psk``.

``--psk IDENTITY=HEX`` puts the key in the process list, where every local user reads it
(``ps``, ``/proc/PID/cmdline``). A key file (mode 0600) or the environment (readable only
by the same user, ``/proc/PID/environ`` is 0400) keeps it there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from explain.console import error_line
from keystore import loose_key_file, parse_psk_spec, read_psk_file

ENV_PSK = "KEXLAB_PSK"
ENV_PSK_FILE = "KEXLAB_PSK_FILE"
ON_THE_COMMAND_LINE = (
    "warning: --psk puts the key in the process list, where every local user can read it"
    " (ps, /proc/PID/cmdline); prefer --psk-file FILE (mode 600) or KEXLAB_PSK"
)

PskFileOption = Annotated[
    Path | None,
    typer.Option(
        "--psk-file",
        metavar="FILE",
        help="Read IDENTITY=HEX lines from FILE (keep it mode 600): unlike --psk, the key does"
        f" not show in the process list. Without --psk or --psk-file: {ENV_PSK}=IDENTITY=HEX"
        f" or {ENV_PSK_FILE}=FILE.",
        show_default=False,
    ),
]


def given_psks(psks: list[str], psk_file: Path | None) -> list[tuple[str, bytes]]:
    """The keys of ``--psk`` and ``--psk-file``; usage errors (``warn_about`` warns later)."""
    keys = []
    for spec in psks:
        try:
            keys.append(parse_psk_spec(spec))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--psk'") from None
    if psk_file is not None:
        keys += _from_file(psk_file, "'--psk-file'")
    return keys


def warn_about(psks: list[str] | str | None) -> None:
    """The warning for a key given with ``--psk``, once every usage error had its turn."""
    if psks:
        error_line(ON_THE_COMMAND_LINE)


def env_psks(env: Mapping[str, str] | None = None) -> list[tuple[str, bytes]]:
    """The keys of ``KEXLAB_PSK`` (one IDENTITY=HEX) or else ``KEXLAB_PSK_FILE``; usage errors."""
    env = os.environ if env is None else env
    if env.get(ENV_PSK):
        try:
            return [parse_psk_spec(env[ENV_PSK])]
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=ENV_PSK) from None
    if env.get(ENV_PSK_FILE):
        return _from_file(Path(env[ENV_PSK_FILE]), ENV_PSK_FILE)
    return []


def _from_file(path: Path, hint: str) -> list[tuple[str, bytes]]:
    try:
        keys = read_psk_file(path.expanduser())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    loose = loose_key_file(path.expanduser())
    if loose is not None:
        error_line(f"warning: {loose}")
    return keys
