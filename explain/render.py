"""Rich rendering of annotated frames (``--explain``) and of the one-line handshake summary."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from explain.console import printable
from explain.rows import FIELDS, SECRET_OFFSET, Row
from keystore.keys import short_fingerprint
from protocol.events import HandshakeComplete

HEX_PER_LINE = 16
HEX_MAX_BYTES = 64
FIELD_WIDTH = max(len(name) for name in FIELDS)
MIN_MEANING_WIDTH = 40
# The four-column layout needs the offset header (6), the longest field name, a full hex
# line and the table's padding (14) before the meaning gets any room at all.
WIDE_MIN_WIDTH = 14 + len("offset") + FIELD_WIDTH + 2 * HEX_PER_LINE + MIN_MEANING_WIDTH
STACKED_HEADER = "bytes, then meaning"
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


def frame_table(direction: str, rows: list[Row], title: str, width: int | None = None) -> Table:
    """The table ``render_frame`` prints for a console ``width`` columns wide (None: wide).

    Wide consoles get four columns: offset, field, bytes, meaning. Below ``WIDE_MIN_WIDTH``
    the meaning would be squeezed into a few characters per line, so it goes under the
    bytes in one column instead (``STACKED_HEADER``): same rows, same text, nothing cut.
    """
    colour = direction_colour(direction)
    table = Table(
        title=Text(title, style=f"bold {colour}"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        border_style=colour,
        header_style=f"bold {colour}",
        expand=False,
    )
    stacked = width is not None and width < WIDE_MIN_WIDTH
    table.add_column("offset", no_wrap=True, justify="right")
    if stacked:
        table.add_column("field", style=colour, overflow="fold")
        table.add_column(STACKED_HEADER, overflow="fold", ratio=1)
    else:
        # The longest field name, so consecutive frames line up.
        table.add_column("field", no_wrap=True, style=colour, min_width=FIELD_WIDTH)
        table.add_column("bytes", no_wrap=True, style="dim")
        table.add_column("meaning", overflow="fold", ratio=1)
    for row in rows:
        # Text, not markup: a hostile peer's alert reason must not style our terminal.
        cells = [Text(format_offset(row.offset)), Text(row.field)]
        if stacked:
            cells.append(Text.assemble((format_hex(row.data), "dim"), "\n", row.meaning))
        else:
            cells += [Text(format_hex(row.data)), Text(row.meaning)]
        table.add_row(*cells)
    return table


def render_frame(console: Console, direction: str, rows: list[Row], title: str) -> None:
    """Print one annotated frame as a table (offset, field, bytes, meaning), coloured by direction."""
    console.print(frame_table(direction, rows, title, console.width))


def render_secrets(console: Console, rows: list[Row], title: str = "session secrets") -> None:
    """Print ``annotate_secrets`` rows (only ever with ``--show-secrets``)."""
    render_frame(console, "secrets", rows, title)


SUMMARY_INDENT = "    "
"""Continuation lines of a summary broken to fit a terminal."""


def _summary_parts(
    complete: HandshakeComplete, elapsed_ms: float, role: str, label: str
) -> list[tuple[str, str]]:
    """(separator, text) pieces of the summary; a break may only fall between two."""
    if complete.server_key_sha256:
        key = f"server key {short_fingerprint(complete.server_key_sha256)}"
    elif complete.psk_identity:
        key = f"psk identity {printable(complete.psk_identity)}"  # the peer chose it
    else:
        key = "server key none (anonymous: not authenticated)"
    prefix = f"{role}: " if role else ""
    return [
        ("", f"{label}{prefix}handshake complete:"),
        (" ", complete.summary),
        (", ", key),
        (", ", f"SAS {complete.sas_display}"),
        (", ", f"{elapsed_ms:.1f} ms"),
    ]


def summary_line(
    complete: HandshakeComplete,
    elapsed_ms: float,
    role: str = "",
    *,
    label: str = "",
    width: int | None = None,
) -> str:
    """method/group/suite, server key fingerprint, SAS and handshake time, on one line.

    With ``width`` (a terminal's), the line is broken between its parts instead of where
    the terminal would cut it (inside a word, through the fingerprint or the SAS).
    """
    parts = _summary_parts(complete, elapsed_ms, role, label)
    lines = [parts[0][1]]
    for i, (sep, text) in enumerate(parts[1:], 2):
        # Room for the comma that ends a line broken after this part (not after the last).
        room = 0 if i == len(parts) else len(parts[i][0].rstrip())
        if width is None or len(lines[-1]) + len(sep) + len(text) + room <= width:
            lines[-1] += sep + text
        else:
            lines[-1] += sep.rstrip()
            lines.append(SUMMARY_INDENT + text)
    return "\n".join(lines)


def terminal_width(console: Console) -> int | None:
    """The width to fit lines to: the terminal's, or None when output goes to a file or a pipe."""
    return console.width if console.is_terminal else None


def render_summary_line(
    console: Console, complete: HandshakeComplete, elapsed_ms: float, role: str = ""
) -> str:
    """Print the summary unstyled: one line for scripts, broken between parts on a terminal."""
    line = summary_line(complete, elapsed_ms, role, width=terminal_width(console))
    console.print(Text(line), soft_wrap=True, highlight=False)
    return line
