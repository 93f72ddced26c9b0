"""Handshake messages (docs/protocol.md §3) as frozen dataclasses with strict encode/decode.

Decoding checks structure only (lengths, trailing bytes, known code points of the
wire format itself); what a field *means* for the negotiation (§3 parsing rules
that depend on the kex or on configuration) is checked by ``connection``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .alerts import AlertCode, RemoteProtocolError
from .constants import HEADER_LEN, RANDOM_LEN, FrameType
from .wire import FieldLog, Reader, u8, u16, vec8, vec16


@dataclass(frozen=True)
class ClientHello:
    """CLIENT_HELLO: the client's random, its one proposal, and its share or identity."""

    random: bytes
    kex: int
    cipher_suite: int
    group: int
    key_share: bytes = b""
    psk_identity: bytes = b""
    frame_type: ClassVar[FrameType] = FrameType.CLIENT_HELLO

    def encode(self) -> bytes:
        """Payload bytes."""
        return (
            self.random
            + u8(self.kex)
            + u16(self.cipher_suite)
            + u16(self.group)
            + vec16(self.key_share)
            + vec8(self.psk_identity)
        )

    @classmethod
    def decode(cls, payload: bytes, log: FieldLog | None = None) -> ClientHello:
        """Parse a payload exactly (``log``: keep each field's offset and bytes)."""
        r = Reader(payload, "CLIENT_HELLO", log, HEADER_LEN)
        msg = cls(
            random=r.fixed(RANDOM_LEN, "random"),
            kex=r.u8("kex"),
            cipher_suite=r.u16("cipher_suite"),
            group=r.u16("group"),
            key_share=r.vec16("key_share"),
            psk_identity=r.vec8("psk_identity"),
        )
        r.finish()
        return msg


@dataclass(frozen=True)
class ServerHello:
    """SERVER_HELLO: the server's random, the echoed choice, its share and key."""

    random: bytes
    kex: int
    cipher_suite: int
    group: int
    key_share: bytes = b""
    server_key: bytes = b""
    frame_type: ClassVar[FrameType] = FrameType.SERVER_HELLO

    def encode(self) -> bytes:
        """Payload bytes."""
        return (
            self.random
            + u8(self.kex)
            + u16(self.cipher_suite)
            + u16(self.group)
            + vec16(self.key_share)
            + vec16(self.server_key)
        )

    @classmethod
    def decode(cls, payload: bytes, log: FieldLog | None = None) -> ServerHello:
        """Parse a payload exactly (``log``: keep each field's offset and bytes)."""
        r = Reader(payload, "SERVER_HELLO", log, HEADER_LEN)
        msg = cls(
            random=r.fixed(RANDOM_LEN, "random"),
            kex=r.u8("kex"),
            cipher_suite=r.u16("cipher_suite"),
            group=r.u16("group"),
            key_share=r.vec16("key_share"),
            server_key=r.vec16("server_key"),
        )
        r.finish()
        return msg


@dataclass(frozen=True)
class KeyTransport:
    """KEY_TRANSPORT: the RSA-OAEP wrapped premaster (rsa only)."""

    encrypted_secret: bytes
    frame_type: ClassVar[FrameType] = FrameType.KEY_TRANSPORT

    def encode(self) -> bytes:
        """Payload bytes."""
        return vec16(self.encrypted_secret)

    @classmethod
    def decode(cls, payload: bytes, log: FieldLog | None = None) -> KeyTransport:
        """Parse a payload exactly (``log``: keep each field's offset and bytes)."""
        r = Reader(payload, "KEY_TRANSPORT", log, HEADER_LEN)
        msg = cls(r.vec16("encrypted_secret"))
        r.finish()
        return msg


@dataclass(frozen=True)
class ServerSignature:
    """SERVER_SIGNATURE: the server's identity key signs TH(CH, SH) (dhe only)."""

    scheme: int
    signature: bytes
    frame_type: ClassVar[FrameType] = FrameType.SERVER_SIGNATURE

    def encode(self) -> bytes:
        """Payload bytes."""
        return u16(self.scheme) + vec16(self.signature)

    @classmethod
    def decode(cls, payload: bytes, log: FieldLog | None = None) -> ServerSignature:
        """Parse a payload exactly (``log``: keep each field's offset and bytes)."""
        r = Reader(payload, "SERVER_SIGNATURE", log, HEADER_LEN)
        msg = cls(r.u16("scheme"), r.vec16("signature"))
        r.finish()
        return msg


@dataclass(frozen=True)
class Finished:
    """FINISHED: HMAC over the transcript so far; its length is the suite's HashLen."""

    verify_data: bytes
    frame_type: ClassVar[FrameType] = FrameType.FINISHED

    def encode(self) -> bytes:
        """Payload bytes."""
        return self.verify_data

    @classmethod
    def decode(cls, payload: bytes, hash_len: int | None, log: FieldLog | None = None) -> Finished:
        """Parse a payload exactly (verify_data[HashLen]; all of it when HashLen is not known)."""
        r = Reader(payload, "FINISHED", log, HEADER_LEN)
        msg = cls(r.fixed(r.left if hash_len is None else hash_len, "verify_data"))
        r.finish()
        return msg


@dataclass(frozen=True)
class Alert:
    """ALERT (and the content of an alert record): a code and a human reason."""

    code: int
    reason: str = ""
    frame_type: ClassVar[FrameType] = FrameType.ALERT

    def encode(self) -> bytes:
        """Payload bytes; the reason is cut to 255 bytes of valid UTF-8."""
        raw = self.reason.encode("utf-8")[:255].decode("utf-8", "ignore").encode("utf-8")
        return u8(self.code) + vec8(raw)

    @classmethod
    def decode(cls, payload: bytes, log: FieldLog | None = None) -> Alert:
        """Parse a payload exactly; a reason that is not UTF-8 is decode_error."""
        r = Reader(payload, "ALERT", log, HEADER_LEN)
        code = r.u8("code")
        raw = r.vec8("reason")
        r.finish()
        try:
            reason = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(AlertCode.DECODE_ERROR, "ALERT reason is not UTF-8") from None
        return cls(code, reason)


HandshakeMessage = ClientHello | ServerHello | KeyTransport | ServerSignature | Finished

MESSAGES: dict[
    FrameType, type[ClientHello | ServerHello | KeyTransport | ServerSignature | Alert]
] = {
    FrameType.CLIENT_HELLO: ClientHello,
    FrameType.SERVER_HELLO: ServerHello,
    FrameType.KEY_TRANSPORT: KeyTransport,
    FrameType.SERVER_SIGNATURE: ServerSignature,
    FrameType.ALERT: Alert,
}
"""The payload decoder of each frame type but FINISHED (which needs HashLen) and RECORD."""
