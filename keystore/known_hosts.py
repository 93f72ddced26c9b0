"""The tofu file: ``HOST:PORT SHA256HEX [comment]`` lines, read the way ssh reads its own.

Blank lines and ``#`` comments are skipped; anything after the fingerprint is a comment.
A line that is none of these is *unreadable*, and an unreadable line makes the file fail
closed (issue 13: a pin followed by a comment used to be skipped, so the client took the
host for a first use, accepted any key, and rewrote the file without the operator's line).
Writes never drop a line they did not write: a new pin is appended, ``remove`` takes out
only the lines of one host, every other line stays byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .keys import KeyFileError, ensure_private_dir

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HOST_PORT = re.compile(r"(?:\[[^\]\s]+\]|[^\s:\[\]]+):[0-9]{1,5}")
KNOWN_HOSTS_NAME = "known_hosts"


@dataclass(frozen=True)
class Line:
    """One line of the file as it is, and what it says."""

    number: int
    text: str
    host_port: str | None = None
    sha256: str | None = None
    problem: str | None = None
    """Why the line cannot be read (then host_port and sha256 may be None)."""

    @property
    def entry(self) -> bool:
        """A readable pin."""
        return self.sha256 is not None and self.problem is None


def parse_line(number: int, text: str) -> Line:
    """One line: blank, comment, ``HOST:PORT SHA256 [comment]``, or unreadable."""
    fields = text.split()
    if not fields or fields[0].startswith("#"):
        return Line(number, text)
    host_port = fields[0]
    if not _HOST_PORT.fullmatch(host_port):
        return Line(number, text, problem=f"{host_port[:60]!r} is not HOST:PORT")
    if len(fields) < 2:
        return Line(number, text, host_port, problem="no SHA-256 after the host")
    digits = fields[1].removeprefix("SHA256:").removeprefix("sha256:").replace(":", "").lower()
    if not _HEX64.fullmatch(digits):
        return Line(number, text, host_port, problem="the key is not a SHA-256 (64 hex digits)")
    return Line(number, text, host_port, digits)


class KnownHosts:
    """The file, read in full and written back atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def lines(self) -> list[Line]:
        """Every line (empty if there is no file); KeyFileError if it cannot be read."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read known hosts file {self.path}: {exc}") from None
        return [parse_line(n, line) for n, line in enumerate(text.splitlines(), 1)]

    def problems(self) -> list[Line]:
        """The lines that cannot be read."""
        return [line for line in self.lines() if line.problem is not None]

    def keys(self, host_port: str) -> list[Line]:
        """The readable pins of ``host_port``, in file order."""
        return [line for line in self.lines() if line.entry and line.host_port == host_port]

    def entries(self) -> dict[str, str]:
        """Every pinned host:port and its key (of several lines, the last), readable lines only."""
        return {line.host_port: line.sha256 for line in self.lines() if line.entry}  # type: ignore[misc]

    def get(self, host_port: str) -> str | None:
        """The last pinned fingerprint of ``host_port``, or None."""
        pins = self.keys(host_port)
        return pins[-1].sha256 if pins else None

    def add(self, host_port: str, sha256: str) -> None:
        """Pin ``host_port`` to ``sha256`` in a line of its own, after every line already there."""
        if not host_port or any(c.isspace() for c in host_port):
            raise ValueError(f"bad host:port {host_port!r}")
        lines = self.lines()
        sha256 = sha256.lower()
        if any(
            line.entry and (line.host_port, line.sha256) == (host_port, sha256) for line in lines
        ):
            return
        self._write([*(line.text for line in lines), f"{host_port} {sha256}"])

    def remove(self, host_port: str) -> int:
        """Forget ``host_port``: how many lines went (every other line is kept as it is)."""
        lines = self.lines()
        kept = [line.text for line in lines if line.host_port != host_port or line.problem]
        gone = len(lines) - len(kept)
        if gone:
            self._write(kept)
        return gone

    def loose_mode(self) -> str | None:
        """Why the file is writable by others (who then choose the keys we trust), or None."""
        try:
            mode = stat.S_IMODE(self.path.stat().st_mode)
        except OSError:
            return None
        if mode & 0o022:
            who = (
                "group and others"
                if mode & 0o022 == 0o022
                else "group"
                if mode & 0o020
                else "others"
            )
            return (
                f"{self.path} is writable by {who} (mode {mode:04o}): whoever can write it"
                f" chooses which server keys this client trusts; chmod 600 {self.path}"
            )
        return None

    def _write(self, lines: list[str]) -> None:
        # Atomic replace: a crash or a concurrent client never leaves a half-written file.
        ensure_private_dir(self.path.parent)
        body = "".join(f"{line}\n" for line in lines)
        fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
