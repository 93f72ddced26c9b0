"""One connection's frames as annotated tables (``--explain``) and its secrets (``--show-secrets``)."""

from __future__ import annotations

from rich.console import Console

from protocol import Event, FrameTraced, HandshakeComplete, KeyUpdateReceived

from .annotator import Annotator
from .render import render_frame, render_secrets
from .secrets import annotate_secrets


class Explainer:
    """One connection's frames as annotated tables (``--explain``), secrets with ``--show-secrets``."""

    def __init__(
        self,
        console: Console,
        role: str,
        *,
        frames: bool,
        show_secrets: bool,
        label: str = "",
    ) -> None:
        self.console = console
        self.frames = frames
        self.show_secrets = show_secrets
        self.label = label
        self.annotator = Annotator(role, show_secrets=show_secrets)
        self.complete: HandshakeComplete | None = None
        self.epochs = {"client": 0, "server": 0}
        self.role = role

    def on_event(self, event: Event) -> None:
        """Feed every event of the connection, in order."""
        if isinstance(event, FrameTraced):
            if self.frames:
                render_frame(
                    self.console,
                    event.direction,
                    self.annotator.rows(event),
                    self.label + self.annotator.title(event),
                )
        elif isinstance(event, HandshakeComplete):
            self.complete = event
            self.annotator.handshake_complete(event)
            if self.show_secrets:
                self.secrets()
        elif isinstance(event, KeyUpdateReceived):
            peer = "server" if self.role == "client" else "client"
            self.epochs[peer] += 1
            if event.request_update:
                self.epochs[self.role] += 1

    def key_update_sent(self) -> None:
        """Our sending key moved on (``/rekey``): later secrets tables show the new epoch."""
        self.epochs[self.role] += 1

    def secrets(self) -> None:
        """Print the session's secrets table (only ever with ``--show-secrets``)."""
        if self.complete is None:
            return
        rows = annotate_secrets(
            self.complete,
            shared_secret=self.complete.secrets.shared_secret,
            client_epoch=self.epochs["client"],
            server_epoch=self.epochs["server"],
        )
        render_secrets(self.console, rows, f"{self.label}session secrets (--show-secrets)")
