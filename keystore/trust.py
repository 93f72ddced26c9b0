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

import re
from pathlib import Path

from protocol.config import ServerIdentity, TrustVerdict

from .keys import (
    KeyFileError,
    data_dir,
    fingerprint,
    load_public_key,
    long_fingerprint,
)
from .known_hosts import KNOWN_HOSTS_NAME, KnownHosts, Line

_HEX64 = re.compile(r"[0-9a-f]{64}")
TRUST_SPECS = "tofu, none, pin:SHA256HEX or pin:FILE"
"""The policies that need no broker."""
ALL_TRUST_SPECS = "tofu, none, pin:SHA256HEX, pin:FILE or mqtt (with --oob)"
"""Every policy, as an error lists them."""


def known_hosts_path(directory: Path | None = None) -> Path:
    """The tofu file: ``known_hosts`` in ``directory`` (default: the data directory)."""
    return (directory if directory is not None else data_dir()) / KNOWN_HOSTS_NAME


class TrustPolicy:
    """Decides whether a server key is trusted; ``notes`` collects lines for the user."""

    name = "?"
    allow_anonymous = False

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.hint = ""
        """After a refusal: how the user can recover, for the end of the error line."""

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
        self._known: list[Line] = []
        self._unreadable = ""
        try:
            lines = self.known_hosts.lines()
        except KeyFileError as exc:
            self._unreadable = str(exc)
            return
        bad = [line for line in lines if line.problem is not None]
        if bad:
            # Fail closed: an operator's line we cannot read may be this host's pin.
            self._unreadable = (
                f"cannot read line {bad[0].number} of known hosts file {known_hosts}:"
                f" {bad[0].problem}"
            )
            self.hint = "fix or delete that line (kexlab known-hosts list shows every line)"
        self._known = [line for line in lines if line.entry and line.host_port == host_port]
        loose = self.known_hosts.loose_mode()
        if loose is not None:
            self.notes.append(f"warning: {loose}")

    def decide(self, identity: ServerIdentity) -> TrustVerdict:
        """Accept an unknown host (recorded by ``confirm``) or a known key; refuse a changed one."""
        if self._unreadable:
            return TrustVerdict(False, self._unreadable)
        got = identity.key_sha256.lower()
        if not self._known or any(line.sha256 == got for line in self._known):
            return TrustVerdict(True)
        where = ", ".join(str(line.number) for line in self._known)
        self.hint = (
            f"if the server's key changed on purpose: kexlab known-hosts forget {self.host_port}"
            f" (line {where} of {self.known_hosts.path})"
        )
        known = " or ".join(long_fingerprint(line.sha256 or "") for line in self._known)
        return TrustVerdict(
            False,
            f"server key changed for {self.host_port}: possible man in the middle"
            f" (known {known}, got {long_fingerprint(got)})",
        )

    def confirm(self, identity: ServerIdentity) -> None:
        """Record the key of a first use, now that the handshake proved it."""
        got = identity.key_sha256.lower()
        if self._known:
            return
        try:
            self.known_hosts.add(self.host_port, got)
        except (KeyFileError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            self.notes.append(
                f"warning: first use not recorded in {self.known_hosts.path}: {reason}"
            )
            return
        self._known = [Line(0, "", self.host_port, got)]
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
