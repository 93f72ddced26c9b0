"""The transport's errors: a connection that ended outside the protocol's alerts."""

from __future__ import annotations

import os
import socket

from protocol import KexlabError


class TransportError(KexlabError):
    """A connection ended for a reason outside the protocol's alerts; ``str()`` is one human line."""


class ConnectionLost(TransportError):
    """The socket failed or the peer went away without a fatal alert."""

    def describe(self, peer: str = "peer") -> str:
        """The line, with the peer named ("server closed the connection ...")."""
        text = str(self)
        return peer + text[4:] if text.startswith("peer ") else text


def os_reason(exc: BaseException) -> str:
    """A short reason for a socket error ("connection refused")."""
    if isinstance(exc, socket.gaierror) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, OSError) and exc.errno:
        # asyncio wraps connect errors ("Connect call failed (...)"): the errno says it plainly.
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__
