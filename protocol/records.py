"""Records (PROTOCOL.md §6): AES-GCM seal/open with per-direction sequence numbers and key updates.

``RecordSender`` and ``RecordReceiver`` each hold one direction's traffic secret.
They know nothing of handshakes, so a passive decryptor (key log + capture) uses
``RecordReceiver`` exactly as a connection does.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .alerts import AlertCode, RemoteProtocolError
from .constants import (
    KEY_UPDATE_THRESHOLD,
    MIN_RECORD_PAYLOAD,
    SEQ_LEN,
    TAG_LEN,
    ContentType,
    FrameType,
)
from .frames import frame_header
from .keyschedule import KeySchedule


class _Direction:
    """One direction's traffic secret, AEAD object, iv and seq."""

    def __init__(self, schedule: KeySchedule, secret: bytes) -> None:
        self._schedule = schedule
        self.epoch = -1
        self._install(secret)

    def _install(self, secret: bytes) -> None:
        keys = self._schedule.traffic_keys(secret)
        self.secret = secret
        self._aead = AESGCM(keys.key)
        self._iv = int.from_bytes(keys.iv, "big")
        self.seq = 0
        self.epoch += 1

    def update(self) -> None:
        """Switch to the next traffic secret (§5 "traffic upd") and restart seq at 0."""
        self._install(self._schedule.next_secret(self.secret))

    def _nonce(self, seq: int) -> bytes:
        # nonce = iv XOR (4 zero bytes || u64 seq)
        return (self._iv ^ seq).to_bytes(12, "big")


class RecordSender(_Direction):
    """Seals records in one direction."""

    def __init__(
        self, schedule: KeySchedule, secret: bytes, threshold: int = KEY_UPDATE_THRESHOLD
    ) -> None:
        super().__init__(schedule, secret)
        self.threshold = threshold

    @property
    def needs_update(self) -> bool:
        """True when only one record is left under this key (§6: update before 2^24)."""
        return self.seq >= self.threshold - 1

    def seal(self, content_type: ContentType, content: bytes) -> bytes:
        """A whole RECORD frame carrying ``content_type || content``."""
        seq = self.seq
        if seq >= self.threshold:  # checked before the nonce is used, never after
            raise RuntimeError("record sequence exhausted without a key update")
        seq_bytes = seq.to_bytes(SEQ_LEN, "big")
        header = frame_header(FrameType.RECORD, SEQ_LEN + 1 + len(content) + TAG_LEN)
        sealed = self._aead.encrypt(
            self._nonce(seq), bytes((content_type,)) + content, header + seq_bytes
        )
        self.seq = seq + 1
        return header + seq_bytes + sealed


class RecordReceiver(_Direction):
    """Opens records in one direction, diagnosing replays and gaps before decrypting."""

    def open(self, payload: bytes) -> tuple[ContentType, bytes]:
        """(content_type, content) of one RECORD payload."""
        if len(payload) < MIN_RECORD_PAYLOAD:
            raise RemoteProtocolError(
                AlertCode.DECODE_ERROR,
                f"RECORD payload of {len(payload)} bytes is under {MIN_RECORD_PAYLOAD}",
            )
        seq = int.from_bytes(payload[:SEQ_LEN], "big")
        if seq != self.seq:
            what = "replayed record" if seq < self.seq else "record lost or dropped"
            raise RemoteProtocolError(
                AlertCode.UNEXPECTED_MESSAGE,
                f"{what}: seq {seq}, expected {self.seq} (epoch {self.epoch})",
            )
        header = frame_header(FrameType.RECORD, len(payload))
        try:
            inner = self._aead.decrypt(
                self._nonce(seq), payload[SEQ_LEN:], header + payload[:SEQ_LEN]
            )
        except InvalidTag:
            raise RemoteProtocolError(
                AlertCode.BAD_RECORD_MAC, f"record seq {seq} fails authentication"
            ) from None
        self.seq = seq + 1
        try:
            content_type = ContentType(inner[0])
        except ValueError:
            raise RemoteProtocolError(
                AlertCode.UNEXPECTED_MESSAGE, f"unknown content type 0x{inner[0]:02x}"
            ) from None
        return content_type, inner[1:]
