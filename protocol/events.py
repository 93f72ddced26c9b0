"""Events a connection hands to its caller (the I/O adapter), one small dataclass each."""

from __future__ import annotations

from dataclasses import dataclass, field

from .alerts import AlertCode, alert_name
from .constants import (
    GROUP_NAMES,
    KEX_NAMES,
    SCHEME_NAMES,
    SUITE_NAMES,
    CipherSuite,
    ContentType,
    Group,
    Kex,
    SignatureScheme,
)
from .keyschedule import HandshakeSecrets, keylog_lines, sas_display


class Event:
    """Base of every event."""


@dataclass(frozen=True)
class HandshakeComplete(Event):
    """This side's handshake is complete (§4): it has sent its FINISHED and verified the peer's."""

    kex: Kex
    """The key exchange method."""
    cipher_suite: CipherSuite
    """The AEAD suite."""
    group: Group
    """The DH group (Group.NONE for rsa and psk)."""
    server_key: bytes
    """The server's key as DER SPKI (rsa transport key or dhe identity key); empty for psk/anonymous."""
    server_key_sha256: str
    """Hex SHA-256 of ``server_key`` (the fingerprint people compare), or empty."""
    signature_scheme: int | None
    """The SERVER_SIGNATURE scheme, None when no signature was sent."""
    psk_identity: str
    """The PSK identity (psk only), else empty."""
    client_random: bytes
    """CLIENT_HELLO.random: names the session in key logs and on the out-of-band channel."""
    server_random: bytes
    """SERVER_HELLO.random."""
    sas: bytes = field(repr=False)
    """The full short authentication string (compared by machine)."""
    secrets: HandshakeSecrets = field(repr=False)
    """master, c_ap_0, s_ap_0 and the finished keys: for the key log and --show-secrets only."""

    @property
    def sas_display(self) -> str:
        """The 64-bit form people read aloud (§5)."""
        return sas_display(self.sas)

    @property
    def keylog(self) -> str:
        """The two §9 key log lines."""
        return keylog_lines(self.client_random, self.secrets.c_ap_0, self.secrets.s_ap_0)

    @property
    def summary(self) -> str:
        """method / group / suite in the names the programs print."""
        parts = [KEX_NAMES[self.kex]]
        if self.group is not Group.NONE:
            parts.append(GROUP_NAMES[self.group])
        parts.append(SUITE_NAMES[self.cipher_suite])
        if self.signature_scheme is not None:
            parts.append(SCHEME_NAMES[SignatureScheme(self.signature_scheme)])
        return "/".join(parts)


@dataclass(frozen=True)
class DataReceived(Event):
    """One application_data record's content."""

    data: bytes


@dataclass(frozen=True)
class KeyUpdateReceived(Event):
    """The peer switched its sending key; we switched our receiving key (and answered if asked)."""

    request_update: bool
    """Whether the peer asked us to update our sending key too (we did, at once)."""
    receive_epoch: int
    """Our receiving key's epoch after the update."""


@dataclass(frozen=True)
class AlertReceived(Event):
    """The peer sent an alert: close_notify, or a fatal one that ended the connection."""

    code: int
    reason: str

    @property
    def name(self) -> str:
        """The spec's name of the code."""
        return alert_name(self.code)

    @property
    def fatal(self) -> bool:
        """Every alert but close_notify is fatal."""
        return self.code != AlertCode.CLOSE_NOTIFY


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """No more events will come; ``clean`` when both close_notify alerts were exchanged."""

    clean: bool
    reason: str = ""


@dataclass(frozen=True)
class PskNeeded(Event):
    """Server: the client named a PSK identity we do not hold; call ``supply_psk`` (key or None)."""

    identity: str


@dataclass(frozen=True)
class FrameTraced(Event):
    """A frame crossed the wire (only with ``trace=True``): for annotated handshake traces."""

    direction: str
    """"sent" or "received"."""
    frame: bytes
    """The whole frame, header included."""
    epoch: int | None = None
    """RECORD only: the traffic key epoch."""
    seq: int | None = None
    """RECORD only: its sequence number."""
    content_type: ContentType | None = None
    """RECORD only: the inner content type."""
    content: bytes | None = None
    """RECORD only: the decrypted content."""
