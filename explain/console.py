"""Plain lines for people: stdout lines scripts can read, one-line errors on stderr."""

from __future__ import annotations

import sys

from rich.console import Console

from protocol import KexlabError, PeerAlert

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """``text`` with every control or invisible character shown as an escape (``\\x1b``).

    What a peer, a broker or a file chose (an alert reason, a chat message, a topic) is
    shown through this: an ANSI escape cannot restyle or clear the terminal, a newline
    cannot start a forged log line, a bidi override cannot reorder what is read.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, kept by "surrogateescape"
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def out(text: str) -> None:
    """One plain line on stdout, flushed (scripts and tests read it as it comes), escaped."""
    print(printable(text), flush=True)


def error_line(text: str) -> None:
    """Write one line to stderr (never wrapped, never styled, control characters escaped)."""
    print(printable(" ".join(text.split("\n"))), file=sys.stderr, flush=True)


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
