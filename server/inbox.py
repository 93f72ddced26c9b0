"""Where uploaded files land: one directory, sanitised names, never an overwrite, quotas.

Everything a client can make the server store is bounded (issue 13: 100,000 files in
22 s over one session, then a name-clash search of ~0.9 s per upload on the event loop):
files and bytes per inbox and per session, a unique name found in constant time, and
every file-system call that can block (open, write, close, unlink, the start-up count)
run in a worker thread, never on the event loop that serves every connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from protocol import KexlabError

MAX_NAME = 100
MAX_UPLOAD = 4 << 30
"""Largest file a client may announce (4 GiB): a lab server, not a file store."""
DEFAULT_MAX_FILES = 10_000
DEFAULT_MAX_BYTES = 8 << 30
DEFAULT_SESSION_FILES = 1_000
RECOUNT_AFTER = 10.0
"""Seconds before a full inbox is counted again (an operator may have emptied it)."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class UploadError(KexlabError):
    """An upload that cannot be accepted or did not arrive intact; ``str()`` goes to the client."""


def safe_name(name: str) -> str:
    """A file name that stays inside the inbox: last path part only, no leading dot, plain chars."""
    base = re.split(r"[/\\]", name)[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")[:MAX_NAME]
    return base or "file"


@dataclass(frozen=True)
class Quota:
    """How much one inbox, and one session, may hold; 0 turns a limit off."""

    max_files: int = DEFAULT_MAX_FILES
    max_bytes: int = DEFAULT_MAX_BYTES
    session_files: int = DEFAULT_SESSION_FILES
    session_bytes: int = DEFAULT_MAX_BYTES


@dataclass
class Usage:
    """Files and bytes one session has stored (or is storing)."""

    files: int = 0
    bytes: int = 0


class Inbox:
    """A directory of received files; each new file gets a fresh name."""

    def __init__(self, directory: Path, quota: Quota | None = None) -> None:
        self.directory = directory
        self.quota = quota or Quota()
        self.usage: Usage | None = None
        """What the directory holds, counted once (in a thread) and then kept up to date."""
        self._counted_at = -RECOUNT_AFTER
        self._suffixes: dict[str, int] = {}

    async def reserve(self, size: int, session: Usage) -> None:
        """Count a file of ``size`` bytes against both quotas, or refuse it (UploadError)."""
        q = self.quota
        if q.session_files and session.files + 1 > q.session_files:
            raise UploadError(f"quota: at most {q.session_files} files per session")
        if q.session_bytes and session.bytes + size > q.session_bytes:
            raise UploadError(f"quota: at most {q.session_bytes} bytes per session")
        if self.usage is None or (self._full(size) and self._recount_due()):
            self._counted_at = time.monotonic()
            self.usage = await asyncio.to_thread(self._count)
        if self.usage is not None and self._full(size):
            raise UploadError(
                f"quota: the inbox is full ({self.usage.files} files, {self.usage.bytes} bytes;"
                f" at most {q.max_files} files, {q.max_bytes} bytes)"
            )
        for usage in (self.usage, session):
            if usage is not None:
                usage.files += 1
                usage.bytes += size

    def release(self, size: int, session: Usage) -> None:
        """Give back what ``reserve`` counted for a file that was not kept."""
        for usage in (self.usage, session):
            if usage is not None:
                usage.files -= 1
                usage.bytes -= size

    def _full(self, size: int) -> bool:
        q, usage = self.quota, self.usage
        assert usage is not None
        return bool(
            (q.max_files and usage.files + 1 > q.max_files)
            or (q.max_bytes and usage.bytes + size > q.max_bytes)
        )

    def _recount_due(self) -> bool:
        return time.monotonic() - self._counted_at >= RECOUNT_AFTER

    def _count(self) -> Usage:
        usage = Usage()
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        usage.files += 1
                        usage.bytes += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            pass
        return usage

    def create(self, name: str) -> tuple[Path, BinaryIO]:
        """Open a new file for ``name`` (sanitised; a suffix on a clash), mode 0600. Blocks.

        The base name first, then ``stem-N`` from a counter kept per name, then a random
        suffix: a constant number of tries however many files share the name.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        base = safe_name(name)
        stem, dot, suffix = base.partition(".")
        if len(self._suffixes) > max(self.quota.max_files, DEFAULT_MAX_FILES):
            self._suffixes.clear()  # only a hint: a clash below falls back to random names
        n = self._suffixes.get(base, 1)
        candidates = [base, f"{stem}-{n}{dot}{suffix}"]
        candidates += [f"{stem}-{secrets.token_hex(4)}{dot}{suffix}" for _ in range(8)]
        for i, candidate in enumerate(candidates):
            path = self.directory / candidate
            try:
                # O_EXCL: never overwrite, even against a racing upload; O_NOFOLLOW: no symlink games.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            if i >= 1:
                self._suffixes[base] = n + 1
            return path, os.fdopen(fd, "wb")
        raise UploadError(f"no free name for {base!r} in the inbox")


class Upload:
    """One file arriving after its "file" control record."""

    def __init__(self, inbox: Inbox, header: dict[str, Any]) -> None:
        name, size, digest = header.get("name"), header.get("size"), header.get("sha256")
        if not isinstance(name, str) or not name:
            raise UploadError("file name missing")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_UPLOAD:
            raise UploadError(f"file size must be an integer from 0 to {MAX_UPLOAD}")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise UploadError("sha256 must be 64 lowercase hex digits")
        self.inbox = inbox
        self.name = name
        self.size = size
        self.expected_sha256 = digest
        self.received = 0
        self._hash = hashlib.sha256()
        self.path = Path(safe_name(name))
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        """Create the file (in a worker thread)."""
        self.path, self._file = await asyncio.to_thread(self.inbox.create, self.name)

    @property
    def done(self) -> bool:
        """Every announced byte is in."""
        return self.received >= self.size

    async def feed(self, data: bytes) -> None:
        """Store one record's bytes; more than announced is an error."""
        if self.received + len(data) > self.size:
            raise UploadError(f"more bytes than the announced {self.size}")
        self._hash.update(data)
        self.received += len(data)
        if data and self._file is not None:
            # A worker thread per record (at most 64 KiB): a slow disk stalls this upload only.
            await asyncio.to_thread(self._file.write, data)

    async def finish(self) -> str:
        """Close the file and check its hash; returns the hex SHA-256 (the file is kept)."""
        actual = self._hash.hexdigest()
        if actual != self.expected_sha256:
            await self.discard()
            raise UploadError(f"sha256 mismatch: announced {self.expected_sha256}, got {actual}")
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)
        return actual

    async def discard(self) -> None:
        """Drop a partial or corrupt file."""
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(_close_and_unlink, file, self.path)


def _close_and_unlink(file: BinaryIO, path: Path) -> None:
    file.close()
    path.unlink(missing_ok=True)
