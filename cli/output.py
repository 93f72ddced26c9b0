"""What the programs print about sessions: explain tables, summary lines, the server's log."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console

from explain.annotate import Annotator, annotate_secrets
from explain.render import render_frame, render_secrets, summary_line
from protocol import Event, FrameTraced, HandshakeComplete, KeyUpdateReceived
from server.server import ServerObserver


def out(text: str) -> None:
    """One plain line on stdout, flushed (scripts and tests read it as it comes)."""
    print(text, flush=True)


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


class ServerLog(ServerObserver):
    """The server's log on stdout: readable text lines, or one JSON object per line."""

    def __init__(self, log_format: str, *, explain: bool, show_secrets: bool) -> None:
        self.json = log_format == "json"
        self.explain = explain
        self.show_secrets = show_secrets
        self.console = Console(highlight=False, soft_wrap=False)
        self._explainers: dict[str, Explainer] = {}

    def emit(self, event: str, peer: str = "", **fields: Any) -> None:
        """One log line."""
        if self.json:
            record = {"time": round(time.time(), 3), "event": event}
            if peer:
                record["peer"] = peer
            record.update(fields)
            out(json.dumps(record, sort_keys=False, default=str))
            return
        out(self._text(event, peer, fields))

    @staticmethod
    def _text(event: str, peer: str, fields: dict[str, Any]) -> str:
        where = f"[{peer}] " if peer else ""
        if event == "error" and "sent_alert" in fields:
            return (
                f"{where}connection failed: sent alert {fields['sent_alert']} ({fields['code']}):"
                f" {fields['reason']}"
            )
        if event == "error" and "received_alert" in fields:
            return (
                f"{where}connection failed: client sent alert {fields['received_alert']}"
                f" ({fields['code']}): {fields['reason']}"
            )
        if event == "error":
            return f"{where}connection failed: {fields.get('reason', '')}"
        if event == "oob":  # a line of the MQTT channel's own log (server/oob.py)
            return f"oob: {fields.get('message', '')}"
        if event == "sas-verified":
            sas = fields.get("sas", "")
            return f"{where}SAS verified over MQTT: the client computed the same SAS ({sas} …)"
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{where}{event}{': ' + detail if detail else ''}"

    def log(self, event: str, peer: str, fields: dict[str, Any]) -> None:
        """ServerObserver: structured events."""
        if event == "sas-verified" and not self.json:
            text = self._text(event, peer, fields)
            self.console.print(text, style="green", soft_wrap=True, markup=False, highlight=False)
            return
        self.emit(event, peer, **fields)
        if event in ("closed", "error", "refused"):
            self._explainers.pop(peer, None)

    def _explainer(self, peer: str) -> Explainer:
        explainer = self._explainers.get(peer)
        if explainer is None:
            explainer = Explainer(
                self.console, "server", frames=True, show_secrets=False, label=f"[{peer}] "
            )
            # Record rows show their keys only with --show-secrets; the table comes in handshake().
            explainer.annotator.show_secrets = self.show_secrets
            self._explainers[peer] = explainer
        return explainer

    def handshake(self, peer: str, hc: HandshakeComplete, ms: float) -> None:
        """ServerObserver: the summary line of a completed handshake."""
        if self.json:
            self.emit(
                "handshake",
                peer,
                summary=hc.summary,
                server_key_sha256=hc.server_key_sha256,
                psk_identity=hc.psk_identity,
                client_random=hc.client_random.hex(),
                sas=hc.sas_display,
                ms=round(ms, 1),
            )
        else:
            out(f"[{peer}] {summary_line(hc, ms, 'server')}")
        if self.explain or self.show_secrets:
            explainer = self._explainer(peer)
            explainer.complete = hc
            explainer.annotator.handshake_complete(hc)
            if self.show_secrets and not self.json:
                explainer.secrets()

    def frame(self, peer: str, event: FrameTraced) -> None:
        """ServerObserver: an annotated frame (``--explain``)."""
        explainer = self._explainer(peer)
        if not self.json:
            explainer.on_event(event)
            return
        rows = explainer.annotator.rows(event)
        self.emit(
            "frame",
            peer,
            title=explainer.annotator.title(event),
            rows=[
                {"offset": r.offset, "field": r.field, "bytes": r.data.hex(), "meaning": r.meaning}
                for r in rows
            ],
        )


def stderr_console() -> Console:
    """A console on stderr (progress bars, warnings)."""
    return Console(file=sys.stderr, highlight=False)
