"""The server's log on stdout: readable text lines, or one JSON object per line."""

from __future__ import annotations

import json
import textwrap
import time
from typing import Any

from rich.console import Console

from explain.console import out, printable
from explain.explainer import Explainer
from explain.render import SUMMARY_INDENT, summary_line, terminal_width
from protocol import FrameTraced, HandshakeComplete

from .server import ServerObserver


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
        # Escaped before it is wrapped: a peer's newline must not start a line of its own,
        # while the wrapping's own line breaks stay line breaks.
        text = printable(self._text(event, peer, fields))
        width = terminal_width(self.console)
        if width is not None and len(text) > width:
            # On a terminal, break between words rather than through a fingerprint or a path;
            # a file or a pipe gets one line per event.
            text = textwrap.fill(
                text,
                width,
                subsequent_indent=SUMMARY_INDENT,
                break_long_words=False,
                break_on_hyphens=False,
            )
        print(text, flush=True)

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
        if event == "sas-matched":  # never "verified": see oob/sas.py describe_match
            return f"{where}{fields.get('detail', '')}"
        # A fingerprint is shown bare, SHA256:..., as the client shows it: it names itself,
        # and without "fingerprint=" it fits an 80-column line.
        detail = " ".join(str(v) if k == "fingerprint" else f"{k}={v}" for k, v in fields.items())
        return f"{where}{event}{': ' + detail if detail else ''}"

    def log(self, event: str, peer: str, fields: dict[str, Any]) -> None:
        """ServerObserver: structured events."""
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
            width = terminal_width(self.console)  # a file or a pipe gets one line per event
            # Already escaped (the peer's psk identity): its line breaks are the wrapping's.
            print(summary_line(hc, ms, "server", label=f"[{peer}] ", width=width), flush=True)
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
