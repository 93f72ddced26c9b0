"""Alert codes (docs/protocol.md §7) and the one error root: every error a user can see.

``KexlabError`` is the root of every error kexlab reports to a person, in the core and
above it; ``str()`` of one is a single human line. ``ProtocolError`` is the branch for
a KXP connection that ended with an alert: ``LocalProtocolError`` (we refused to go on),
``RemoteProtocolError`` (the peer broke the protocol; we answered with ``alert``) and
``PeerAlert`` (the peer ended it with a fatal alert; nothing is answered, §7).
"""

from __future__ import annotations

import enum


class AlertCode(enum.IntEnum):
    """The alert codes of §7; ``CLOSE_NOTIFY`` is the only non-fatal one."""

    CLOSE_NOTIFY = 0
    UNEXPECTED_MESSAGE = 10
    BAD_RECORD_MAC = 20
    RECORD_OVERFLOW = 22
    HANDSHAKE_FAILURE = 40
    BAD_CERTIFICATE = 42
    ILLEGAL_PARAMETER = 47
    DECODE_ERROR = 50
    DECRYPT_ERROR = 51
    PROTOCOL_VERSION = 70
    INTERNAL_ERROR = 80
    UNKNOWN_PSK_IDENTITY = 115

    @property
    def fatal(self) -> bool:
        """Every alert but close_notify ends the connection."""
        return self is not AlertCode.CLOSE_NOTIFY


_CODES = {int(code): code for code in AlertCode}


def alert_name(code: int) -> str:
    """The spec's name for an alert code, or ``unknown(N)``."""
    known = _CODES.get(code)
    return known.name.lower() if known is not None else f"unknown({code})"


class KexlabError(Exception):
    """Root of every error kexlab reports to a user; ``str()`` is one human line."""

    def describe(self, peer: str = "peer") -> str:
        """The line to show a user; ``peer`` names the other side ("server", "client")."""
        return str(self)


class ProtocolError(KexlabError):
    """A KXP connection ended with an alert: ``alert`` is the code sent, or received.

    ``alert`` is an ``AlertCode`` whenever §7 defines the code; only a peer may send
    one it does not define (``PeerAlert``), which stays a plain int.
    """

    def __init__(self, alert: AlertCode | int, reason: str = "") -> None:
        self.alert: AlertCode | int = _CODES.get(alert, alert)
        self.reason = reason
        name = f"{alert_name(alert)} ({int(alert)})"
        super().__init__(f"{name}: {reason}" if reason else alert_name(alert))

    @property
    def alert_text(self) -> str:
        """``decode_error (50)``."""
        return f"{alert_name(self.alert)} ({int(self.alert)})"

    def describe(self, peer: str = "peer") -> str:
        """What we refused and the alert we sent."""
        sent = f"sent alert {self.alert_text}"
        return f"{self.reason} ({sent})" if self.reason else sent


class LocalProtocolError(ProtocolError):
    """This side broke the protocol or refused to go on (API misuse, trust refusal, timeout)."""

    alert: AlertCode


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; the alert is what we answer with."""

    alert: AlertCode

    def describe(self, peer: str = "peer") -> str:
        """Who broke the protocol, how, and the alert we answered with."""
        return f"protocol error from {peer}: {self.reason} (sent alert {self.alert_text})"


class PeerAlert(ProtocolError):
    """The peer ended the connection with a fatal alert; the receiver answers nothing (§7)."""

    @property
    def code(self) -> int:
        """The code as received."""
        return int(self.alert)

    @property
    def name(self) -> str:
        """The spec's name of the code, or ``unknown(N)``."""
        return alert_name(self.alert)

    def __str__(self) -> str:
        return self.describe()

    def describe(self, peer: str = "peer") -> str:
        """``server sent alert decrypt_error (51): reason``."""
        text = f"{peer} sent alert {self.alert_text}"
        return f"{text}: {self.reason}" if self.reason else text
