"""Rich rendering of annotated frames (``--explain``) and of the one-line handshake summary."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from keystore.keys import short_fingerprint
from protocol.annotate import FIELDS, SECRET_OFFSET, Row
from protocol.constants import Kex
from protocol.events import HandshakeComplete

HEX_PER_LINE = 16
HEX_MAX_BYTES = 64
FIELD_WIDTH = max(len(name) for name in FIELDS)
_COLOURS = {
    "sent": "cyan",
    "received": "magenta",
    "c → s": "cyan",
    "c->s": "cyan",
    "s → c": "magenta",
    "s->c": "magenta",
    "secrets": "red",
}


def direction_colour(direction: str) -> str:
    """The colour of a direction: what we send, what we receive, secret values."""
    return _COLOURS.get(direction.strip().lower(), "white")


def format_hex(data: bytes, per_line: int = HEX_PER_LINE, max_bytes: int = HEX_MAX_BYTES) -> str:
    """Hex in lines of ``per_line`` bytes; past ``max_bytes`` a "… N bytes" line says how many."""
    if not data:
        return "(empty)"
    shown = data[:max_bytes]
    lines = [shown[i : i + per_line].hex() for i in range(0, len(shown), per_line)]
    if len(data) > max_bytes:
        lines.append(f"… {len(data)} bytes in all")
    return "\n".join(lines)


def format_offset(offset: int) -> str:
    """Four hex digits, or a dash for a value that never crosses the wire."""
    return "—" if offset == SECRET_OFFSET else f"{offset:04x}"


def frame_table(direction: str, rows: list[Row], title: str) -> Table:
    """The table ``render_frame`` prints (exposed for tests and other layouts)."""
    colour = direction_colour(direction)
    table = Table(
        title=Text(title, style=f"bold {colour}"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        border_style=colour,
        header_style=f"bold {colour}",
        expand=False,
    )
    table.add_column("offset", no_wrap=True, justify="right")
    # The longest field name, so consecutive frames line up.
    table.add_column("field", no_wrap=True, style=colour, min_width=FIELD_WIDTH)
    table.add_column("bytes", no_wrap=True, style="dim")
    table.add_column("meaning", overflow="fold", ratio=1)
    for row in rows:
        # Text, not markup: a hostile peer's alert reason must not style our terminal.
        table.add_row(
            Text(format_offset(row.offset)),
            Text(row.field),
            Text(format_hex(row.data)),
            Text(row.meaning),
        )
    return table


def render_frame(console: Console, direction: str, rows: list[Row], title: str) -> None:
    """Print one annotated frame as a table (offset, field, bytes, meaning), coloured by direction."""
    console.print(frame_table(direction, rows, title))


def render_secrets(console: Console, rows: list[Row], title: str = "session secrets") -> None:
    """Print ``annotate_secrets`` rows (only ever with ``--show-secrets``)."""
    render_frame(console, "secrets", rows, title)


def summary_line(complete: HandshakeComplete, elapsed_ms: float, role: str = "") -> str:
    """method/group/suite, server key fingerprint, SAS and handshake time, on one line."""
    if complete.server_key_sha256:
        key = f"server key {short_fingerprint(complete.server_key_sha256)}"
    elif complete.kex is Kex.PSK:
        key = f"psk identity {complete.psk_identity}"
    else:
        key = "server key none (anonymous: not authenticated)"
    prefix = f"{role}: " if role else ""
    return (
        f"{prefix}handshake complete: {complete.summary}, {key},"
        f" SAS {complete.sas_display}, {elapsed_ms:.1f} ms"
    )


def render_summary_line(
    console: Console, complete: HandshakeComplete, elapsed_ms: float, role: str = ""
) -> str:
    """Print ``summary_line`` unwrapped and unstyled (scripts grep it); return it."""
    line = summary_line(complete, elapsed_ms, role)
    console.print(Text(line), soft_wrap=True, highlight=False)
    return line
