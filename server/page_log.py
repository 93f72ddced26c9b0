"""The server's log with a page per connection (``--html DIR``) and ``--deterministic`` flags.

Each connection's frames are annotated as they cross (``webpage.LiveSession``); its page
is written when the connection ends, as ``connection-NNNN.html``. A stranger may open
connection after connection: each page is bounded (``webpage.steps``) and a run writes
at most ``MAX_PAGES`` of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from explain.teaching import SeedFlags
from protocol import FrameTraced, HandshakeComplete
from webpage import LiveSession, write_page

from .log import ServerLog

MAX_PAGES = 1000


def _host(peer: str) -> str:
    """The peer's address without its port (a page made twice with one seed stays the same)."""
    return peer.rpartition(":")[0] or peer


class PageLog(ServerLog):
    """``ServerLog`` that also writes session pages and flags what a seed produced."""

    def __init__(
        self,
        log_format: str,
        *,
        explain: bool,
        show_secrets: bool,
        pages: Path | None,
        seed: str | None = None,
        max_pages: int = MAX_PAGES,
    ) -> None:
        super().__init__(log_format, explain=explain, show_secrets=show_secrets)
        self.pages = pages
        self.seed = seed
        self.max_pages = max_pages
        self.written = 0
        self._live: dict[str, LiveSession] = {}
        self._flags = SeedFlags(seed, "server", frames=explain) if seed is not None else None

    def log(self, event: str, peer: str, fields: dict[str, Any]) -> None:
        """ServerObserver: a connection starts a page, its end writes it."""
        if event == "connect" and self.pages is not None:
            self._live[peer] = LiveSession(
                "server",
                peer=f"client {_host(peer)}",
                show_secrets=self.show_secrets,
                seed=self.seed,
            )
        super().log(event, peer, fields)
        if event in ("closed", "error", "refused"):
            self._write(peer, event, fields)

    def frame(self, peer: str, event: FrameTraced) -> None:
        """ServerObserver: into the page; printed only with ``--explain``."""
        live = self._live.get(peer)
        if live is not None:
            live.on_event(event)
        if self.explain:
            if self._flags is not None:
                self._flags.label = f"[{peer}] "
                self._flags.on_event(event)
            super().frame(peer, event)

    def handshake(self, peer: str, hc: HandshakeComplete, ms: float) -> None:
        """ServerObserver: the page learns the keys; the seed's flag comes before the summary."""
        live = self._live.get(peer)
        if live is not None:
            live.on_event(hc)
        if self._flags is not None:
            self._flags.label = f"[{peer}] "
            self._flags.on_event(hc)
        super().handshake(peer, hc, ms)

    def _write(self, peer: str, event: str, fields: dict[str, Any]) -> None:
        live = self._live.pop(peer, None)
        if live is None or self.pages is None or live.log.count == 0:
            return
        if self.written >= self.max_pages:
            if self.written == self.max_pages:
                self.written += 1
                self.emit("page-limit", reason=f"{self.max_pages} pages written: no more this run")
            return
        self.written += 1
        if event == "error":
            live.finish(self._text(event, "", fields))
        path = self.pages / f"connection-{self.written:04d}.html"
        try:
            write_page(path, live.story())
        except OSError as exc:
            self.emit("page-error", peer, path=str(path), reason=exc.strerror or str(exc))
            return
        self.emit("page", peer, path=str(path))
