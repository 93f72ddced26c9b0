"""Records (docs/protocol.md §6): AES-GCM seal/open with per-direction sequence numbers and key updates.

``RecordSender`` and ``RecordReceiver`` each hold one direction's traffic secret.
They know nothing of handshakes, so a passive decryptor (key log + capture) uses
``RecordReceiver`` exactly as a connection does.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .alerts import AlertCode, LocalProtocolError, RemoteProtocolError
from .constants import (
    HEADER_LEN,
    KEY_UPDATE_THRESHOLD,
    MAGIC,
    MIN_RECORD_PAYLOAD,
    SEQ_LEN,
    TAG_LEN,
    VERSION,
    ContentType,
    FrameType,
)
from .frames import frame_header
from .keyschedule import KeySchedule
from .wire import Reader

# The AAD is the frame's first 16 bytes: 'K' 'X' ver type length(u32) || seq(u64).
_AAD = struct.Struct(">2sBBIQ")
_SEQ = struct.Struct(">Q")
_CONTENT_TYPES: dict[int, ContentType] = {int(c): c for c in ContentType}
_TYPE_BYTE: dict[int, bytes] = {c: bytes((c,)) for c in ContentType}
_OVERHEAD = SEQ_LEN + 1 + TAG_LEN
_MIN_FRAME = HEADER_LEN + MIN_RECORD_PAYLOAD
_CT_START = HEADER_LEN + SEQ_LEN
_RECORD = FrameType.RECORD


def _too_short(payload_len: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        AlertCode.DECODE_ERROR,
        f"RECORD payload of {payload_len} bytes is under {MIN_RECORD_PAYLOAD}",
    )


def read_record(reader: Reader, length: int) -> int:
    """§6 fields of a RECORD payload of declared ``length``: seq, ciphertext, tag; returns seq.

    Split by the declared length, so a record cut short shows its tag as missing.
    """
    if length < MIN_RECORD_PAYLOAD:
        raise _too_short(length)
    seq = reader.u64("seq")
    reader.fixed(length - SEQ_LEN - TAG_LEN, "ciphertext")
    reader.fixed(TAG_LEN, "tag")
    return seq


def record_seq(payload: bytes | memoryview) -> int | None:
    """The seq of a RECORD payload, as ``open`` reads it; None when the payload is too short."""
    return _SEQ.unpack_from(payload)[0] if len(payload) >= MIN_RECORD_PAYLOAD else None


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

    def seal(self, content_type: ContentType, content: bytes | memoryview) -> bytes:
        """A whole RECORD frame carrying ``content_type || content``."""
        seq = self.seq
        if seq >= self.threshold:  # checked before the nonce is used, never after
            raise LocalProtocolError(
                AlertCode.INTERNAL_ERROR, "record sequence exhausted without a key update"
            )
        aad = _AAD.pack(MAGIC, VERSION, _RECORD, _OVERHEAD + len(content), seq)
        # nonce = iv XOR (4 zero bytes || u64 seq)
        nonce = (self._iv ^ seq).to_bytes(12, "big")
        prefix = _TYPE_BYTE.get(content_type) or bytes((content_type,))  # tests seal odd types
        sealed = self._aead.encrypt(nonce, prefix + content, aad)
        self.seq = seq + 1
        return aad + sealed


class RecordReceiver(_Direction):
    """Opens records in one direction, diagnosing replays and gaps before decrypting."""

    def open(self, payload: bytes) -> tuple[ContentType, bytes]:
        """(content_type, content) of one RECORD payload."""
        return self.open_frame(frame_header(FrameType.RECORD, len(payload)) + payload)

    def open_frame(self, frame: bytes | memoryview) -> tuple[ContentType, bytes]:
        """(content_type, content) of one whole RECORD frame (header || payload)."""
        if len(frame) < _MIN_FRAME:
            raise _too_short(len(frame) - HEADER_LEN)
        (seq,) = _SEQ.unpack_from(frame, HEADER_LEN)
        if seq != self.seq:
            what = "replayed record" if seq < self.seq else "record lost or dropped"
            raise RemoteProtocolError(
                AlertCode.UNEXPECTED_MESSAGE,
                f"{what}: seq {seq}, expected {self.seq} (epoch {self.epoch})",
            )
        try:
            inner = self._aead.decrypt(
                (self._iv ^ seq).to_bytes(12, "big"), frame[_CT_START:], frame[:_CT_START]
            )
        except InvalidTag:
            raise RemoteProtocolError(
                AlertCode.BAD_RECORD_MAC, f"record seq {seq} fails authentication"
            ) from None
        self.seq = seq + 1
        content_type = _CONTENT_TYPES.get(inner[0])
        if content_type is None:
            raise RemoteProtocolError(
                AlertCode.UNEXPECTED_MESSAGE, f"unknown content type 0x{inner[0]:02x}"
            )
        return content_type, inner[1:]
