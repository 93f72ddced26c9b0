"""The rows of an annotated frame: offset, field, bytes, meaning (``explain.annotate``)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.events import FrameTraced
from protocol.keyschedule import TrafficKeys

UNDECODABLE = "undecodable"
SECRET_OFFSET = -1
"""``Row.offset`` of a derived value that never crosses the wire (``annotate_secrets``)."""

# Every field name annotate_frame can produce, header first (docs/protocol.md §1, §3, §6).
FIELDS = (
    "magic",
    "ver",
    "type",
    "length",
    "random",
    "kex",
    "cipher_suite",
    "group",
    "key_share.length",
    "key_share",
    "psk_identity.length",
    "psk_identity",
    "server_key.length",
    "server_key",
    "encrypted_secret.length",
    "encrypted_secret",
    "scheme",
    "signature.length",
    "signature",
    "verify_data",
    "code",
    "reason.length",
    "reason",
    "seq",
    "ciphertext",
    "tag",
    UNDECODABLE,
)


@dataclass(frozen=True)
class Row:
    """One field of a frame: where it starts, its name, its bytes and what they mean."""

    offset: int
    field: str
    data: bytes
    meaning: str


@dataclass(frozen=True)
class RecordInfo:
    """What the connection knows of a RECORD beyond its bytes (from ``FrameTraced``)."""

    epoch: int | None = None
    """The traffic key epoch that sealed it."""
    content_type: int | None = None
    """The decrypted inner content type."""
    content: bytes | None = None
    """The decrypted content."""
    keys: TrafficKeys | None = None
    """The epoch's key and iv: shown only with ``show_secrets``."""

    @classmethod
    def from_trace(cls, event: FrameTraced, keys: TrafficKeys | None = None) -> RecordInfo | None:
        """The record facts of a traced frame, or None for a handshake frame or alert."""
        if event.content_type is None and event.epoch is None:
            return None
        return cls(event.epoch, event.content_type, event.content, keys)
