"""Where uploaded files land: one directory, sanitised names, never an overwrite."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

from protocol import KexlabError

MAX_NAME = 100
MAX_UPLOAD = 4 << 30
"""Largest file a client may announce (4 GiB): a lab server, not a file store."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class UploadError(KexlabError):
    """An upload that cannot be accepted or did not arrive intact; ``str()`` goes to the client."""


def safe_name(name: str) -> str:
    """A file name that stays inside the inbox: last path part only, no leading dot, plain chars."""
    base = re.split(r"[/\\]", name)[-1]
    base = _UNSAFE.sub("_", base).lstrip(".")[:MAX_NAME]
    return base or "file"


class Inbox:
    """A directory of received files; each new file gets a fresh name."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def create(self, name: str) -> tuple[Path, BinaryIO]:
        """Open a new file for ``name`` (sanitised; "-1", "-2"... on a clash), mode 0600."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        base = safe_name(name)
        stem, dot, suffix = base.partition(".")
        n = 0
        while True:
            candidate = base if n == 0 else f"{stem}-{n}{dot}{suffix}"
            path = self.directory / candidate
            try:
                # O_EXCL: never overwrite, even against a racing upload; O_NOFOLLOW: no symlink games.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                n += 1
                continue
            return path, os.fdopen(fd, "wb")


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
        self.size = size
        self.expected_sha256 = digest
        self.received = 0
        self._hash = hashlib.sha256()
        self.path, self._file = inbox.create(name)

    @property
    def done(self) -> bool:
        """Every announced byte is in."""
        return self.received >= self.size

    def feed(self, data: bytes) -> None:
        """Store one record's bytes; more than announced is an error."""
        if self.received + len(data) > self.size:
            raise UploadError(f"more bytes than the announced {self.size}")
        self._file.write(data)
        self._hash.update(data)
        self.received += len(data)

    def finish(self) -> str:
        """Close the file and check its hash; returns the hex SHA-256 (the file is kept)."""
        self._file.close()
        actual = self._hash.hexdigest()
        if actual != self.expected_sha256:
            self.discard()
            raise UploadError(f"sha256 mismatch: announced {self.expected_sha256}, got {actual}")
        return actual

    def discard(self) -> None:
        """Drop a partial or corrupt file."""
        self._file.close()
        self.path.unlink(missing_ok=True)
