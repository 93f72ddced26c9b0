"""``kexlab server`` options for what one stranger may claim (docs/hardening.md).

Every slot a stranger can take has a limit, on by default and sized so that a lab (200
clients at once from one machine, the README's walk-through) never meets it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from oob.psk_table import DEFAULT_MAX_LIFETIME
from server.inbox import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, DEFAULT_SESSION_FILES, Quota
from server.limits import DEFAULT_HANDSHAKE_RATE, DEFAULT_MAX_HANDSHAKES, DEFAULT_MAX_PER_ADDRESS
from server.server import DEFAULT_IDLE_TIMEOUT, ServerOptions

MaxPerAddressOption = Annotated[
    int,
    typer.Option(
        metavar="N",
        min=0,
        help="Connections from one address (IPv6: one /64) at once; more are refused"
        " (0: no limit).",
    ),
]
MaxHandshakesOption = Annotated[
    int,
    typer.Option(
        metavar="N",
        min=1,
        help="Handshakes in progress at once (one address gets half); more wait up to half"
        " the handshake timeout, then are refused.",
    ),
]
HandshakeRateOption = Annotated[
    float,
    typer.Option(
        metavar="PER_SECOND",
        min=0,
        help="Handshakes a second from one address, after a burst of twice as many; more wait"
        " their turn up to 5 s, then are refused before they cost a signature (0: no limit).",
    ),
]
IdleTimeoutOption = Annotated[
    float,
    typer.Option(
        metavar="SECONDS", min=0, help="Close a session silent for this many seconds (0: never)."
    ),
]
InboxMaxFilesOption = Annotated[
    int,
    typer.Option(
        metavar="N", min=0, help="Files the inbox may hold; more are refused (0: no limit)."
    ),
]
InboxMaxBytesOption = Annotated[
    int,
    typer.Option(
        metavar="BYTES", min=0, help="Bytes the inbox may hold; more are refused (0: no limit)."
    ),
]
UploadMaxFilesOption = Annotated[
    int, typer.Option(metavar="N", min=0, help="Files one session may upload (0: no limit).")
]
PskMaxLifetimeOption = Annotated[
    float,
    typer.Option(
        metavar="SECONDS",
        min=1,
        help="With --oob: seconds a key handed over may live at most, whatever its expires_at"
        " says (a flood of keys holds the table no longer).",
    ),
]

DEFAULTS = {
    "max_per_address": DEFAULT_MAX_PER_ADDRESS,
    "max_handshakes": DEFAULT_MAX_HANDSHAKES,
    "handshake_rate": DEFAULT_HANDSHAKE_RATE,
    "idle_timeout": DEFAULT_IDLE_TIMEOUT,
    "inbox_max_files": DEFAULT_MAX_FILES,
    "inbox_max_bytes": DEFAULT_MAX_BYTES,
    "upload_max_files": DEFAULT_SESSION_FILES,
    "psk_max_lifetime": DEFAULT_MAX_LIFETIME,
}


def apply_limits(
    options: ServerOptions,
    *,
    max_per_address: int,
    max_handshakes: int,
    handshake_rate: float,
    idle_timeout: float,
    inbox_max_files: int,
    inbox_max_bytes: int,
    upload_max_files: int,
) -> None:
    """Put the limits given on the command line into ``options``."""
    options.max_per_address = max_per_address
    options.max_handshakes = max_handshakes
    options.handshake_rate = handshake_rate
    options.idle_timeout = idle_timeout or None
    options.inbox_quota = Quota(
        max_files=inbox_max_files,
        max_bytes=inbox_max_bytes,
        session_files=upload_max_files,
        session_bytes=inbox_max_bytes,
    )
