"""Plain lines for people: stdout lines scripts can read, one-line errors on stderr."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from typing import Any

from rich.console import Console

from protocol import KexlabError, PeerAlert


def printable(text: str) -> str:
    """``text`` with every character a terminal would obey shown as an escape instead.

    What a peer, a broker or a file chose (an alert reason, a chat message, a topic) is
    shown through this: an ANSI escape cannot restyle or clear the terminal, a newline
    cannot start a forged log line, a bidi override cannot reorder what is read.
    Control characters (ESC, CR, BEL, ...), invisible format characters (bidi overrides)
    and line separators become ``\\x1b``-style escapes; so do the bytes that were not
    UTF-8 (decoded with ``surrogateescape``): ``\\xff``. Printable text, accents and
    all, is kept as it is.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def printable_bytes(data: bytes) -> str:
    """Bytes from a peer as text: UTF-8 where they are, ``\\xNN`` for every other byte."""
    return printable(data.decode("utf-8", "surrogateescape"))


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def out(text: str) -> None:
    """One plain line on stdout, flushed (scripts and tests read it as it comes), escaped."""
    print(printable(text), flush=True)


def error_line(text: str) -> None:
    """Write one line to stderr (never wrapped, never styled, control characters escaped)."""
    print(printable(" ".join(text.split("\n"))), file=sys.stderr, flush=True)


def note_line(text: str) -> None:
    """A note on stderr (first use, a pin, how an address was read): one line to a file or a
    pipe; on a terminal broken between words, never through a fingerprint or a port."""
    print(
        _fit(printable(" ".join(text.split("\n"))), _width(sys.stderr)), file=sys.stderr, flush=True
    )


def out_fitted(text: str) -> None:
    """``out`` for a long line people read (a receipt with its SHA-256): one line to a file
    or a pipe, broken between words on a terminal."""
    print(_fit(printable(text), _width(sys.stdout)), flush=True)


def _fit(text: str, width: int) -> str:
    if width < 40 or len(text) <= width:
        return text
    return textwrap.fill(
        text, width, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
    )


def _width(stream: Any) -> int:
    """The width of the terminal ``stream`` writes to (0 for a file or a pipe)."""
    if not stream.isatty():
        return 0
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size((0, 0)).columns


def stderr_console() -> Console:
    """A console on stderr (progress bars, warnings)."""
    return Console(file=sys.stderr, highlight=False)


def describe_error(exc: BaseException, peer: str = "peer") -> str:
    """One human line for a session failure (a peer's alert reason escaped visibly)."""
    if isinstance(exc, PeerAlert):
        # The peer's own words, sent before anything was authenticated: shown, never obeyed.
        return PeerAlert(exc.alert, printable(exc.reason)).describe(peer)
    if isinstance(exc, KexlabError):
        return exc.describe(peer)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    return str(exc) or type(exc).__name__
