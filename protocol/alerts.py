"""Alert codes (docs/protocol.md §7) and the one error root every protocol failure uses."""

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


def alert_name(code: int) -> str:
    """The spec's name for an alert code, or ``unknown(N)``."""
    try:
        return AlertCode(code).name.lower()
    except ValueError:
        return f"unknown({code})"


class ProtocolError(Exception):
    """Root of every KXP failure; carries the alert that the failure sends or received."""

    def __init__(self, alert: AlertCode, reason: str = "") -> None:
        super().__init__(
            f"{alert.name.lower()} ({int(alert)}): {reason}" if reason else alert.name.lower()
        )
        self.alert = alert
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """This side broke the protocol or refused to go on (API misuse, trust refusal, timeout)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids; the alert is what we answer with."""
