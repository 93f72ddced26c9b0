"""One connection's traced frames annotated in order: the suite and secrets learnt as they come."""

from __future__ import annotations

from protocol.constants import (
    SUITES,
    CipherSuite,
)
from protocol.dissect import dissect_frame
from protocol.events import FrameTraced, HandshakeComplete
from protocol.messages import ClientHello, ServerHello

from .annotate import annotate_dissection, frame_title
from .rows import RecordInfo, Row
from .secrets import epoch_keys
from .words import enum_value


class Annotator:
    """Annotates one connection's ``FrameTraced`` events in order (what ``--explain`` needs).

    It learns the suite (hence FINISHED's HashLen) from the hellos it sees, and the
    traffic secrets from ``handshake_complete``, so with ``show_secrets`` a record row
    shows its key and nonce.
    """

    def __init__(self, role: str, *, show_secrets: bool = False) -> None:
        self.role = role
        self.show_secrets = show_secrets
        self.cipher_suite: CipherSuite | None = None
        self.complete: HandshakeComplete | None = None

    @property
    def hash_len(self) -> int | None:
        """HashLen of the suite seen so far."""
        return SUITES[self.cipher_suite].hash_len if self.cipher_suite is not None else None

    def handshake_complete(self, event: HandshakeComplete) -> None:
        """Remember the session's secrets (records after this can show their keys)."""
        self.complete = event
        self.cipher_suite = event.cipher_suite

    def arrow(self, direction: str) -> str:
        """``C → S`` or ``S → C`` for a traced direction ("sent"/"received")."""
        client_sends = (self.role == "client") == (direction == "sent")
        return "C → S" if client_sends else "S → C"

    def rows(self, event: FrameTraced) -> list[Row]:
        """The annotated rows of one traced frame."""
        d = dissect_frame(event.frame, self.hash_len)
        if isinstance(d.message, ClientHello | ServerHello):  # FINISHED's HashLen from here on
            self.cipher_suite = enum_value(CipherSuite, d.message.cipher_suite) or self.cipher_suite
        return annotate_dissection(
            d, record_info=self.record_info(event), show_secrets=self.show_secrets
        )

    def record_info(self, event: FrameTraced) -> RecordInfo | None:
        """RecordInfo for a traced RECORD, with its keys when secrets are shown."""
        keys = None
        if self.show_secrets and self.complete is not None and event.epoch is not None:
            s = self.complete.secrets
            client_sends = (self.role == "client") == (event.direction == "sent")
            keys = epoch_keys(
                self.complete.cipher_suite, s.c_ap_0 if client_sends else s.s_ap_0, event.epoch
            )
        return RecordInfo.from_trace(event, keys)

    def title(self, event: FrameTraced) -> str:
        """``C → S  CLIENT_HELLO, 80 bytes``."""
        return frame_title(event.frame, self.arrow(event.direction), RecordInfo.from_trace(event))
