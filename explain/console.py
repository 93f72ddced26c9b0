"""Plain lines for people: stdout lines scripts can read, one-line errors on stderr."""

from __future__ import annotations

import sys

from rich.console import Console

from protocol import KexlabError


def out(text: str) -> None:
    """One plain line on stdout, flushed (scripts and tests read it as it comes)."""
    print(text, flush=True)


def error_line(text: str) -> None:
    """Write one line to stderr (never wrapped, never styled)."""
    print(" ".join(text.split("\n")), file=sys.stderr, flush=True)


def stderr_console() -> Console:
    """A console on stderr (progress bars, warnings)."""
    return Console(file=sys.stderr, highlight=False)


def describe_error(exc: BaseException, peer: str = "peer") -> str:
    """One human line for a session failure."""
    if isinstance(exc, KexlabError):
        return exc.describe(peer)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    return str(exc) or type(exc).__name__
