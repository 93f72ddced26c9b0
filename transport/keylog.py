"""Append §9 key log lines to a file (NSS style), safely from many connections at once.

A key log holds every traffic secret: whoever reads it reads the sessions. So the file
is opened without following a symlink (a planted link to a world-readable file would
otherwise receive the secrets), must be a regular file of ours, and is made 0600 if it
is not (issue 13: an existing 0644 file, or a link to a 0666 one, was used silently).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class KeylogRefused(PermissionError):
    """The key log exists but is no file to put secrets in; ``str()`` says why (path aside)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "key log refused"


def append_keylog(path: Path, lines: str) -> str | None:
    """Append one connection's lines in a single write; a new file is created mode 0600.

    Returns a warning when the file's mode had to be tightened; raises ``KeylogRefused``
    (an ``OSError``) for a symlink, a non-regular file or a file of another user.
    """
    # One os.write on an O_APPEND descriptor: concurrent connections never interleave lines.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if os.path.islink(path):
            raise KeylogRefused(
                "it is a symbolic link: a key log is never written through one"
                " (the secrets would land wherever it points)"
            ) from None
        raise exc from None
    try:
        warning = _check(fd, path)
        os.write(fd, lines.encode("ascii"))
    finally:
        os.close(fd)
    return warning


def _check(fd: int, path: Path) -> str | None:
    """Refuse what must not hold secrets; tighten a mode that lets others read them."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise KeylogRefused("it is not a regular file: no secrets are written to it")
    if st.st_uid != os.geteuid():
        raise KeylogRefused("it belongs to another user: no secrets are written to it")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        os.fchmod(fd, 0o600)  # on the descriptor we write to, not on a name that may change
        return f"key log {path} was mode {mode:04o}, readable by others: now 0600"
    return None
