"""What each field of a frame means, in words for students (docs/protocol.md §1, §3, §6).

``FieldMeanings`` reads the fields of one dissected frame in order and says what each
one is; later fields (a key_share) are explained with earlier ones (its group).
"""

from __future__ import annotations

import enum
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from explain.console import printable
from protocol import METHODS
from protocol.alerts import AlertCode, ProtocolError, alert_name
from protocol.constants import (
    GROUP_NAMES,
    HEADER_LEN,
    KEX_NAMES,
    MAGIC,
    SCHEME_NAMES,
    SUITE_NAMES,
    VERSION,
    CipherSuite,
    ContentType,
    FrameType,
    Group,
    Kex,
    SignatureScheme,
)
from protocol.dissect import Dissection
from protocol.frames import max_payload
from protocol.kex import GROUPS, sha256_hex
from protocol.keyschedule import TrafficKeys
from protocol.messages import Alert
from protocol.wire import Span

from .rows import RecordInfo

_DIRECTION = {
    FrameType.CLIENT_HELLO: "client → server",
    FrameType.SERVER_HELLO: "server → client",
    FrameType.KEY_TRANSPORT: "client → server",
    FrameType.SERVER_SIGNATURE: "server → client",
    FrameType.FINISHED: "both directions",
    FrameType.ALERT: "both directions, before the sender's handshake is complete",
    FrameType.RECORD: "both directions, encrypted",
}
_KEX_MEANING = {
    Kex.RSA: "rsa (1): RSA-OAEP key transport",
    Kex.DHE: "dhe (2): ephemeral Diffie-Hellman",
    Kex.PSK: "psk (3): pre-shared key delivered out of band",
}
_SUITE_MEANING = {
    CipherSuite.AES_128_GCM_SHA256: "AES-128-GCM with SHA-256",
    CipherSuite.AES_256_GCM_SHA384: "AES-256-GCM with SHA-384",
}
_SCHEME_MEANING = {
    SignatureScheme.RSA_PSS_RSAE_SHA256: "RSA-PSS, SHA-256, salt 32",
    SignatureScheme.ED25519: "Ed25519",
}
_PREVIEW_CHARS = 48
_E = TypeVar("_E", bound=enum.IntEnum)


# --------------------------------------------------------------------------- helpers


def hash_name(length: int | None) -> str:
    return {32: "SHA-256", 48: "SHA-384"}.get(length or 0, "Hash")


def enum_value(enum_type: type[_E], value: int) -> _E | None:
    try:
        return enum_type(value)
    except ValueError:
        return None


def preview(content: bytes, limit: int = _PREVIEW_CHARS) -> str:
    """Printable UTF-8 as a quoted, shortened string; anything else as shortened hex."""
    if not content:
        return "(empty)"
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = "\x00"  # not printable: falls through to hex
    if text.isprintable():
        return '"' + (text if len(text) <= limit else text[:limit] + "…") + '"'
    half = limit // 2
    return content[:half].hex() + ("…" if len(content) > half else "")


def describe_server_key(der: bytes) -> str:
    """What a DER SPKI holds (type and size) and its SHA-256 fingerprint."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        what = "does not parse as DER SPKI (bad_certificate)"
    else:
        if isinstance(key, rsa.RSAPublicKey):
            what = f"RSA-{key.key_size} public key, DER SPKI"
        elif isinstance(key, ed25519.Ed25519PublicKey):
            what = "Ed25519 public key, DER SPKI"
        else:
            what = f"{type(key).__name__.lstrip('_')}, not RSA or Ed25519 (bad_certificate)"
    return f"{what}; SHA-256 {sha256_hex(der)}"


def describe_content(content_type: int | None, content: bytes | None) -> str:
    """The decrypted inner of a record, for people."""
    ct = None
    if content_type is not None:
        try:
            ct = ContentType(content_type)
        except ValueError:
            return f"unknown content type 0x{content_type:02x}"
    if content is None:
        return ct.name.lower() if ct is not None else ""
    if ct is ContentType.KEY_UPDATE:
        if content == b"\x01":
            return "key_update, request_update=1: the peer must update its sending key too"
        if content == b"\x00":
            return "key_update, request_update=0"
        return f"key_update with bad content {content.hex() or '(empty)'}"
    if ct is ContentType.ALERT:
        try:
            alert = Alert.decode(content)
        except ProtocolError:
            return f"alert, malformed: {content.hex() or '(empty)'}"
        reason = f' "{printable(alert.reason)}"' if alert.reason else ""  # the peer's words
        return f"alert {alert_name(alert.code)} ({alert.code}){reason}"
    name = ct.name.lower() if ct is not None else "content"
    return f"{name}, {len(content)} bytes: {preview(content)}"


def _length_meaning(n: int) -> str:
    return f"{n} byte(s) follow" if n else "0: empty"


# --------------------------------------------------------------------------- field meanings


def _ver_meaning(v: int) -> str:
    return "version 1 (KXP/1)" if v == VERSION else f"version {v}: unsupported (protocol_version)"


def _type_meaning(t: int) -> str:
    ft = enum_value(FrameType, t)
    if ft is None:
        return f"unknown frame type 0x{t:02x} (unexpected_message)"
    return f"{ft.name} (0x{t:02x}), {_DIRECTION[ft]}"


def _length_field_meaning(frame_type: FrameType, n: int, frame_len: int) -> str:
    text = f"{n} payload bytes"
    limit = max_payload(frame_type)
    if n > limit:
        text += f", over the {limit}-byte limit (record_overflow)"
    present = frame_len - HEADER_LEN
    if present < n:
        text += f", only {present} present"
    return text


def _kex_meaning(v: int) -> str:
    kex = enum_value(Kex, v)
    return _KEX_MEANING[kex] if kex is not None else f"unknown kex {v} (handshake_failure)"


def _suite_meaning(v: int) -> str:
    suite = enum_value(CipherSuite, v)
    if suite is None:
        return f"unknown cipher suite 0x{v:04x} (handshake_failure)"
    return f"0x{v:04x} {SUITE_NAMES[suite]}: {_SUITE_MEANING[suite]}"


def _group_meaning(v: int) -> str:
    group = enum_value(Group, v)
    if group is None:
        return f"unknown group 0x{v:04x} (handshake_failure)"
    if group is Group.NONE:
        return "0x0000 none: no DH group (rsa, psk)"
    return f"0x{v:04x} {GROUP_NAMES[group]}"


def _key_share_meaning(side: str, group_code: int | None, share: bytes) -> str:
    if not share:
        return "empty: no DH share (rsa, psk)"
    group = None if group_code is None else enum_value(Group, group_code)
    impl = GROUPS.get(group) if group is not None else None
    if impl is None:
        return f"{side}'s DH public share, {len(share)} bytes"
    text = f"{side}'s ephemeral {GROUP_NAMES[impl.group]} public key, {len(share)} bytes"
    if len(share) != impl.share_len:
        text += f"; {GROUP_NAMES[impl.group]} needs {impl.share_len} (illegal_parameter)"
    return text


def _identity_meaning(raw: bytes) -> str:
    if not raw:
        return "empty: not psk"
    try:
        return f'PSK identity "{printable(raw.decode("utf-8"))}"'
    except UnicodeDecodeError:
        return "PSK identity, not UTF-8 (unknown_psk_identity)"


_SERVER_KEY_ROLE = {"transport": "RSA transport key", "identity": "identity key"}


def _server_key_meaning(kex_code: int | None, der: bytes) -> str:
    kex = None if kex_code is None else enum_value(Kex, kex_code)
    role = METHODS[kex].server_key_role if kex is not None else "identity"
    if not der:
        if role == "transport":
            return (
                f"empty: {KEX_NAMES[kex or Kex.RSA]} needs the server's RSA key (illegal_parameter)"
            )
        return "empty: no server identity (psk, or anonymous dhe)"
    return f"server's {_SERVER_KEY_ROLE.get(role, 'key')}: {describe_server_key(der)}"


def _encrypted_secret_meaning(data: bytes) -> str:
    return (
        "RSA-OAEP(SHA-256) of the 32-byte premaster under the server's RSA key"
        f" ({len(data)} bytes = a {len(data) * 8}-bit modulus); only the private key opens it"
    )


def _scheme_meaning(v: int) -> str:
    scheme = enum_value(SignatureScheme, v)
    if scheme is None:
        return f"unknown signature scheme 0x{v:04x} (illegal_parameter)"
    return f"0x{v:04x} {SCHEME_NAMES[scheme]}: {_SCHEME_MEANING[scheme]}"


def _signature_meaning(scheme: int | None) -> str:
    name = "the"
    if scheme is not None and (known := enum_value(SignatureScheme, scheme)) is not None:
        name = SCHEME_NAMES[known]
    return (
        f"{name} signature by the server's identity key over"
        ' 0x20×64 || "kexlab/1 server signature" || 0x00 || TH(CH, SH)'
    )


def _verify_data_meaning(hash_len: int | None, data: bytes) -> str:
    return (
        f"HMAC-{hash_name(hash_len or len(data))}(finished_key, TH(every handshake frame"
        " before this one)): proves the sender derived the same keys from the same bytes"
    )


def _code_meaning(v: int) -> str:
    if v == AlertCode.CLOSE_NOTIFY:
        return "close_notify (0): orderly close, the only non-fatal alert"
    return f"{alert_name(v)} ({v}): fatal, the sender closes"


def _reason_meaning(raw: bytes) -> str:
    if not raw:
        return "empty"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 (decode_error)"
    return f"for humans: {preview(raw, 200)}"


def _seq_meaning(seq: int, info: RecordInfo | None, keys: TrafficKeys | None) -> str:
    text = f"sequence number {seq}"
    if info is not None and info.epoch is not None:
        text += f" under key epoch {info.epoch}"
    text += "; nonce = iv XOR seq, AAD = header || seq"
    if keys is not None:
        nonce = (int.from_bytes(keys.iv, "big") ^ seq).to_bytes(12, "big")
        text += f"; nonce {nonce.hex()}"
    return text


def _ciphertext_meaning(data: bytes, info: RecordInfo | None, keys: TrafficKeys | None) -> str:
    text = f"AES-GCM ciphertext of content_type || content ({len(data)} bytes)"
    if info is not None and (info.content_type is not None or info.content is not None):
        text += f"; decrypted: {describe_content(info.content_type, info.content)}"
    if keys is not None:
        text += f"; key {keys.key.hex()}"
    return text


_TAG_MEANING = "AES-GCM tag: authenticates header || seq and the ciphertext"


class FieldMeanings:
    """The meaning of each span of one dissected frame, in order (later fields read earlier ones)."""

    def __init__(
        self, d: Dissection, hash_len: int | None, info: RecordInfo | None, show_secrets: bool
    ) -> None:
        self.d = d
        self.hash_len = hash_len
        self.info = info
        self.keys = info.keys if info is not None and show_secrets else None
        self.side = "server" if d.frame_type is FrameType.SERVER_HELLO else "client"
        self.values: dict[str, int] = {}

    def __call__(self, span: Span) -> str:
        """The meaning of the next span."""
        name, data = span.name, span.data
        value = int.from_bytes(data, "big")
        self.values[name] = value
        match name:
            case "magic":
                return '"KX"' if data == MAGIC else 'bad magic, not "KX"'
            case "ver":
                return _ver_meaning(value)
            case "type":
                return _type_meaning(value)
            case "length":
                frame_type = FrameType(self.values["type"])
                return _length_field_meaning(frame_type, value, len(self.d.frame))
            case "random":
                return f"{self.side} random: 32 fresh bytes"
            case "kex":
                return _kex_meaning(value)
            case "cipher_suite":
                return _suite_meaning(value)
            case "group":
                return _group_meaning(value)
            case "key_share":
                return _key_share_meaning(self.side, self.values.get("group"), data)
            case "psk_identity":
                return _identity_meaning(data)
            case "server_key":
                return _server_key_meaning(self.values.get("kex"), data)
            case "encrypted_secret":
                return _encrypted_secret_meaning(data)
            case "scheme":
                return _scheme_meaning(value)
            case "signature":
                return _signature_meaning(self.values.get("scheme"))
            case "verify_data":
                return _verify_data_meaning(self.hash_len, data)
            case "code":
                return _code_meaning(value)
            case "reason":
                return _reason_meaning(data)
            case "seq":
                return _seq_meaning(value, self.info, self.keys)
            case "ciphertext":
                return _ciphertext_meaning(data, self.info, self.keys)
            case "tag":
                return _TAG_MEANING
        return _length_meaning(value)  # key_share.length, server_key.length, ...


# A header check that failed ends the walk: the rest of the frame is not read (§1).
