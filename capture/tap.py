"""``--pcap``: one connection's socket bytes into a shared ``PcapWriter``, via ``KxpStream.on_bytes``.

The server and the client use it alike; only who sent the SYN differs. A capture
is a side product: when the file cannot be written (a full disk), the capture
stops and says so once, and the connection goes on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from protocol import KexlabError

from .pcap import Address, Flow, PcapWriter

ErrorHook = Callable[[str], None]


class CaptureFileError(KexlabError):
    """The ``--pcap`` file cannot be written; ``str()`` is one line for the user."""


def _reason(exc: BaseException) -> str:
    return exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else str(exc)


def open_pcap(path: str | os.PathLike[str]) -> PcapWriter:
    """Create (or truncate) the pcap file at ``path`` for ``--pcap``."""
    try:
        return PcapWriter(path)
    except OSError as exc:
        raise CaptureFileError(
            f"cannot write the capture {os.fspath(path)}: {_reason(exc)}"
        ) from None


def close_pcap(writer: PcapWriter, path: str | os.PathLike[str]) -> None:
    """Close the ``--pcap`` file (the last flush may be what fails, e.g. on a full disk)."""
    try:
        writer.close()
    except OSError as exc:
        raise CaptureFileError(
            f"cannot write the capture {os.fspath(path)}: {_reason(exc)}"
        ) from None


def _address(sockname: Any) -> Address:
    # IPv6 socket names are (host, port, flowinfo, scope_id): the pcap needs the first two.
    return str(sockname[0]), int(sockname[1])


class PcapTap:
    """One TCP connection of this program, recorded as a flow of ``writer``."""

    def __init__(
        self,
        writer: PcapWriter,
        sockname: Any,
        peername: Any,
        *,
        initiated_by_local: bool,
        on_error: ErrorHook | None = None,
    ) -> None:
        self._writer = writer
        self._on_error = on_error
        self._flow: Flow | None = None
        try:
            self._flow = writer.flow(
                _address(sockname), _address(peername), initiated_by_local=initiated_by_local
            )
        except OSError as exc:
            self._stop(exc)
        except ValueError as exc:  # an address a pcap cannot hold: skip this connection only
            if on_error is not None:
                on_error(f"connection not captured: {exc}")

    def on_bytes(self, direction: str, data: bytes) -> None:
        """``KxpStream`` byte hook: ("sent" | "received", bytes)."""
        if self._flow is None:
            return
        try:
            if direction == "sent":
                self._flow.sent(data)
            else:
                self._flow.received(data)
        except OSError as exc:
            self._stop(exc)

    def close(self) -> None:
        """The connection is over: its FINs go into the capture."""
        if self._flow is None:
            return
        try:
            self._flow.close()
        except OSError as exc:
            self._stop(exc)

    def _stop(self, exc: BaseException) -> None:
        self._flow = None
        with contextlib.suppress(OSError):  # closing flushes, and the flush is what failed
            self._writer.close()
        if self._on_error is not None:
            self._on_error(f"capture stopped: {_reason(exc)}")


def tap_connection(
    writer: PcapWriter | None,
    extra: Callable[[str], Any],
    *,
    initiated_by_local: bool,
    on_error: ErrorHook | None = None,
) -> PcapTap | None:
    """A tap for one connection, or None without ``--pcap`` (or once the capture stopped).

    ``extra`` is the transport's ``get_extra_info`` (``KxpStream.extra``): it names the
    socket's two ends.
    """
    if writer is None or writer.closed:
        return None
    return PcapTap(
        writer,
        extra("sockname"),
        extra("peername"),
        initiated_by_local=initiated_by_local,
        on_error=on_error,
    )
