"""Append §9 key log lines to a file (NSS style), safely from many connections at once."""

from __future__ import annotations

import os
from pathlib import Path


def append_keylog(path: Path, lines: str) -> None:
    """Append one connection's lines in a single write; a new file is created mode 0600."""
    # One os.write on an O_APPEND descriptor: concurrent connections never interleave lines.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, lines.encode("ascii"))
    finally:
        os.close(fd)
