"""Client trust policies: how a client decides that a server key is the server's.

``tofu`` (trust on first use, like ``ssh``), ``none`` (nothing is checked: a lesson in
why that is dangerous), ``pin:SHA256HEX`` and ``pin:FILE``. A policy is handed to the
protocol core as ``ClientConfig(trust=policy.decide, allow_anonymous=policy.allow_anonymous)``.

``decide`` is a pure decision on what the policy already knows (no file is read or
written while the core waits on it). A key is proven only when the handshake completes
(the server's FINISHED, or its signature and FINISHED, needs the private key), so what a
policy remembers of a key (tofu's known_hosts line) is written by ``confirm``, which the
program calls after ``HandshakeComplete`` and never after a failed handshake.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from protocol.config import ServerIdentity, TrustVerdict

from .keys import (
    KeyFileError,
    data_dir,
    ensure_private_dir,
    fingerprint,
    load_public_key,
    long_fingerprint,
)

_HEX64 = re.compile(r"[0-9a-f]{64}")
TRUST_SPECS = "tofu, none, pin:SHA256HEX or pin:FILE"
"""The policies that need no broker."""
ALL_TRUST_SPECS = "tofu, none, pin:SHA256HEX, pin:FILE or mqtt (with --oob)"
"""Every policy, as an error lists them."""
KNOWN_HOSTS_NAME = "known_hosts"


def known_hosts_path(directory: Path | None = None) -> Path:
    """The tofu file: ``known_hosts`` in ``directory`` (default: the data directory)."""
    return (directory if directory is not None else data_dir()) / KNOWN_HOSTS_NAME


class KnownHosts:
    """A ``host:port sha256hex`` file, one server per line (``#`` starts a comment)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> dict[str, str]:
        """Every recorded host:port and its key fingerprint (a later line wins)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read known hosts file {self.path}: {exc}") from None
        out: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and not parts[0].startswith("#"):
                out[parts[0]] = parts[1].lower()
        return out

    def get(self, host_port: str) -> str | None:
        """The recorded fingerprint of ``host_port``, or None."""
        return self.entries().get(host_port)

    def add(self, host_port: str, sha256: str) -> None:
        """Record (or replace) the fingerprint of ``host_port``."""
        if not host_port or any(c.isspace() for c in host_port):
            raise ValueError(f"bad host:port {host_port!r}")
        entries = self.entries()
        entries[host_port] = sha256.lower()
        self._write(entries)

    def remove(self, host_port: str) -> bool:
        """Forget ``host_port``; True if it was recorded."""
        entries = self.entries()
        if entries.pop(host_port, None) is None:
            return False
        self._write(entries)
        return True

    def _write(self, entries: dict[str, str]) -> None:
        # Atomic replace: a crash or a concurrent client never leaves a half-written file.
        ensure_private_dir(self.path.parent)
        body = "".join(f"{hp} {fp}\n" for hp, fp in entries.items())
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


class TrustPolicy:
    """Decides whether a server key is trusted; ``notes`` collects lines for the user."""

    name = "?"
    allow_anonymous = False

    def __init__(self) -> None:
        self.notes: list[str] = []

    def decide(self, identity: ServerIdentity) -> TrustVerdict:
        """The verdict on the server's key (refusal sends bad_certificate); no side effects."""
        raise NotImplementedError

    def confirm(self, identity: ServerIdentity) -> None:
        """The handshake with ``identity`` completed: the key is proven; remember what to."""

    def __call__(self, identity: ServerIdentity) -> TrustVerdict:
        """A policy is itself a ``protocol.TrustDecision``."""
        return self.decide(identity)


class TofuPolicy(TrustPolicy):
    """Trust on first use: record the first key seen for host:port, refuse any other later."""

    name = "tofu"

    def __init__(self, host_port: str, known_hosts: Path) -> None:
        super().__init__()
        self.host_port = host_port
        self.known_hosts = KnownHosts(known_hosts)
        # Read once, before connecting: the decision during the handshake reads no file.
        self._known: str | None = None
        self._unreadable = ""
        try:
            self._known = self.known_hosts.get(host_port)
        except KeyFileError as exc:
            self._unreadable = str(exc)

    def decide(self, identity: ServerIdentity) -> TrustVerdict:
        """Accept an unknown host (recorded by ``confirm``) or the same key; refuse a changed one."""
        if self._unreadable:
            return TrustVerdict(False, self._unreadable)
        got = identity.key_sha256.lower()
        known = self._known
        if known is None or known == got:
            return TrustVerdict(True)
        self.notes.append(
            f"if the server's key changed on purpose, remove the line for {self.host_port}"
            f" from {self.known_hosts.path}"
        )
        return TrustVerdict(
            False,
            f"server key changed for {self.host_port}: possible man in the middle"
            f" (known {long_fingerprint(known)}, got {long_fingerprint(got)})",
        )

    def confirm(self, identity: ServerIdentity) -> None:
        """Record the key of a first use, now that the handshake proved it."""
        got = identity.key_sha256.lower()
        if self._known is not None:
            return
        try:
            self.known_hosts.add(self.host_port, got)
        except (KeyFileError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self.notes.append(
                f"warning: first use not recorded in {self.known_hosts.path}: {reason}"
            )
            return
        self._known = got
        self.notes.append(
            f"first use: recorded server key {long_fingerprint(got)} for {self.host_port}"
            f" in {self.known_hosts.path}"
        )


class NonePolicy(TrustPolicy):
    """Accept any server key, and anonymous dhe too: nothing authenticates the server."""

    name = "none"
    allow_anonymous = True

    def __init__(self) -> None:
        super().__init__()
        self.notes.append(
            "warning: trust none: nothing authenticates the server;"
            " a man in the middle can read and change this session"
        )

    def decide(self, identity: ServerIdentity) -> TrustVerdict:
        """Always trusted."""
        return TrustVerdict(True)


class PinPolicy(TrustPolicy):
    """Accept exactly one key, named by its SHA-256 (given, or taken from a public key file)."""

    name = "pin"

    def __init__(self, sha256: str, source: str = "") -> None:
        super().__init__()
        self.sha256 = sha256.lower()
        self.source = source

    def decide(self, identity: ServerIdentity) -> TrustVerdict:
        """Trusted iff the key's fingerprint is the pinned one."""
        got = identity.key_sha256.lower()
        if got == self.sha256:
            return TrustVerdict(True)
        where = f" (from {self.source})" if self.source else ""
        return TrustVerdict(
            False,
            f"server key {long_fingerprint(got)} does not match the pinned"
            f" {long_fingerprint(self.sha256)}{where}",
        )


class MqttPinPolicy(PinPolicy):
    """``--trust mqtt``: a pin whose SHA-256 the client reads from the broker before connecting.

    The broker is the authority here: whoever may write the server's ``fingerprint``
    topic decides which key this client accepts (docs/protocol.md §8).
    """

    name = "mqtt"

    def __init__(self) -> None:
        super().__init__("")

    def pin(self, sha256: str, source: str) -> None:
        """Pin the fingerprint read from ``source`` (the broker and topic), and say what that is worth."""
        self.sha256, self.source = sha256.lower(), source
        self.notes.append(
            f"pinned server key {long_fingerprint(self.sha256)} read from {source}: this is only"
            " as trustworthy as the broker's write permissions on that topic"
        )

    def decide(self, identity: ServerIdentity) -> TrustVerdict:
        """Refuse everything until ``pin`` ran; then exactly the pinned key."""
        if not self.sha256:
            return TrustVerdict(False, "trust mqtt: no fingerprint was read from the broker")
        return super().decide(identity)


def parse_trust(spec: str, host_port: str, known_hosts: Path, *, mqtt: bool = False) -> TrustPolicy:
    """The policy named by ``--trust``: tofu, none, pin:SHA256HEX, pin:FILE (mqtt with a broker)."""
    spec = spec.strip()
    if spec == "tofu":
        return TofuPolicy(host_port, known_hosts)
    if spec == "none":
        return NonePolicy()
    if spec == "mqtt":
        if mqtt:
            return MqttPinPolicy()
        raise ValueError(
            "trust 'mqtt' needs the MQTT out-of-band channel: add --oob mqtt://HOST:PORT,"
            f" or use {TRUST_SPECS}"
        )
    if spec.startswith("pin:"):
        return _parse_pin(spec[4:])
    raise ValueError(f"unknown trust policy {spec!r}: use {ALL_TRUST_SPECS}")


def _parse_pin(value: str) -> PinPolicy:
    if not value:
        raise ValueError("pin: needs the server key's SHA-256 (64 hex digits) or a public key file")
    digits = value.removeprefix("SHA256:").removeprefix("sha256:").replace(":", "").lower()
    if _HEX64.fullmatch(digits):
        return PinPolicy(digits)
    path = Path(value).expanduser()
    if path.exists():
        try:
            return PinPolicy(fingerprint(load_public_key(path)), str(path))
        except KeyFileError as exc:
            raise ValueError(f"pin:{value}: {exc}") from None
    if re.fullmatch(r"[0-9a-fA-F]+", digits):
        raise ValueError(
            f"pin:{value}: a pin needs all 64 hex digits of the SHA-256, got {len(digits)}"
        )
    raise ValueError(
        f"pin:{value} is neither a SHA-256 (64 hex digits) nor an existing public key file"
    )
