"""Annotated frames: every byte of a frame named and explained (docs/protocol.md §1, §3, §6).

``annotate_frame`` turns the core's dissection of one frame (``protocol.dissect``: the
offsets and bytes the connection's own decoders read) into rows — offset, field,
bytes, meaning — whose bytes tile the frame exactly, so a reader can follow a handshake
byte by byte. It is what ``--explain`` prints, and it never raises: bytes the decoders
could not read become an ``undecodable`` row that says why. Field names are the spec's
(``FIELDS``), so a Wireshark dissector can use the same ones (``kxp.<field>``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from protocol import METHODS
from protocol.alerts import AlertCode, ProtocolError, alert_name
from protocol.constants import (
    GROUP_NAMES,
    HEADER_LEN,
    KEX_NAMES,
    MAGIC,
    SCHEME_NAMES,
    SUITE_NAMES,
    SUITES,
    VERSION,
    CipherSuite,
    ContentType,
    FrameType,
    Group,
    Kex,
    SignatureScheme,
)
from protocol.dissect import Dissection, dissect_frame
from protocol.events import FrameTraced, HandshakeComplete
from protocol.frames import max_payload
from protocol.kex import GROUPS, sha256_hex
from protocol.keyschedule import KeySchedule, TrafficKeys
from protocol.messages import Alert, ClientHello, ServerHello
from protocol.wire import Span

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


# --------------------------------------------------------------------------- helpers


def _hash_name(length: int | None) -> str:
    return {32: "SHA-256", 48: "SHA-384"}.get(length or 0, "Hash")


def _enum_value(enum_type: type[_E], value: int) -> _E | None:
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
        reason = f' "{alert.reason}"' if alert.reason else ""
        return f"alert {alert_name(alert.code)} ({alert.code}){reason}"
    name = ct.name.lower() if ct is not None else "content"
    return f"{name}, {len(content)} bytes: {preview(content)}"


def _length_meaning(n: int) -> str:
    return f"{n} byte(s) follow" if n else "0: empty"


# --------------------------------------------------------------------------- field meanings


def _ver_meaning(v: int) -> str:
    return "version 1 (KXP/1)" if v == VERSION else f"version {v}: unsupported (protocol_version)"


def _type_meaning(t: int) -> str:
    ft = _enum_value(FrameType, t)
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
    kex = _enum_value(Kex, v)
    return _KEX_MEANING[kex] if kex is not None else f"unknown kex {v} (handshake_failure)"


def _suite_meaning(v: int) -> str:
    suite = _enum_value(CipherSuite, v)
    if suite is None:
        return f"unknown cipher suite 0x{v:04x} (handshake_failure)"
    return f"0x{v:04x} {SUITE_NAMES[suite]}: {_SUITE_MEANING[suite]}"


def _group_meaning(v: int) -> str:
    group = _enum_value(Group, v)
    if group is None:
        return f"unknown group 0x{v:04x} (handshake_failure)"
    if group is Group.NONE:
        return "0x0000 none: no DH group (rsa, psk)"
    return f"0x{v:04x} {GROUP_NAMES[group]}"


def _key_share_meaning(side: str, group_code: int | None, share: bytes) -> str:
    if not share:
        return "empty: no DH share (rsa, psk)"
    group = None if group_code is None else _enum_value(Group, group_code)
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
        return f'PSK identity "{raw.decode("utf-8")}"'
    except UnicodeDecodeError:
        return "PSK identity, not UTF-8 (unknown_psk_identity)"


_SERVER_KEY_ROLE = {"transport": "RSA transport key", "identity": "identity key"}


def _server_key_meaning(kex_code: int | None, der: bytes) -> str:
    kex = None if kex_code is None else _enum_value(Kex, kex_code)
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
    scheme = _enum_value(SignatureScheme, v)
    if scheme is None:
        return f"unknown signature scheme 0x{v:04x} (illegal_parameter)"
    return f"0x{v:04x} {SCHEME_NAMES[scheme]}: {_SCHEME_MEANING[scheme]}"


def _signature_meaning(scheme: int | None) -> str:
    name = "the"
    if scheme is not None and (known := _enum_value(SignatureScheme, scheme)) is not None:
        name = SCHEME_NAMES[known]
    return (
        f"{name} signature by the server's identity key over"
        ' 0x20×64 || "kexlab/1 server signature" || 0x00 || TH(CH, SH)'
    )


def _verify_data_meaning(hash_len: int | None, data: bytes) -> str:
    return (
        f"HMAC-{_hash_name(hash_len or len(data))}(finished_key, TH(every handshake frame"
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


class _Meanings:
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
_HEADER_STOPS = {
    "magic": "not a KXP frame (bad magic: decode_error)",
    "ver": "unsupported version: payload not parsed (protocol_version)",
    "type": "unknown frame type: payload not parsed (unexpected_message)",
}


def _why_undecodable(d: Dissection) -> tuple[int, int, str] | None:
    """(start, end, why) of the bytes the decoders could not read, if any."""
    log = d.log
    if log.shortfall is not None:
        short = log.shortfall
        end = d.payload_end if d.frame_type is not None else len(d.frame)
        why = f"{short.name} cut short: needs {short.needed} byte(s), {short.left} left"
        return short.offset, end, f"{why} (decode_error)"
    if d.frame_type is None and d.header_error is not None:
        last = log.spans[-1]
        return last.offset + len(last.data), len(d.frame), _HEADER_STOPS[last.name]
    if log.trailing is not None:
        assert d.frame_type is not None
        extra = d.payload_end - log.trailing
        why = f"{extra} trailing byte(s) in the {d.frame_type.name} payload (decode_error)"
        return log.trailing, d.payload_end, why
    if d.payload_error is not None and d.frame_type is FrameType.RECORD and d.seq is None:
        return HEADER_LEN, d.payload_end, f"{d.payload_error.reason} (decode_error)"
    return None


# --------------------------------------------------------------------------- public API


def annotate_frame(
    frame: bytes,
    *,
    hash_len: int | None = None,
    record_info: RecordInfo | None = None,
    show_secrets: bool = False,
) -> list[Row]:
    """Rows naming every byte of ``frame``; their bytes tile it exactly. Never raises."""
    return annotate_dissection(
        dissect_frame(frame, hash_len), record_info=record_info, show_secrets=show_secrets
    )


def annotate_dissection(
    d: Dissection, *, record_info: RecordInfo | None = None, show_secrets: bool = False
) -> list[Row]:
    """``annotate_frame`` for a frame the caller has dissected already."""
    frame = d.frame
    if not frame:
        return [Row(0, UNDECODABLE, b"", "undecodable: empty, no frame header")]
    meaning = _Meanings(d, d.hash_len, record_info, show_secrets)
    rows = [Row(span.offset, span.name, span.data, meaning(span)) for span in d.log.spans]
    stop = _why_undecodable(d)
    if stop is not None:
        start, end, why = stop
        rows.append(Row(start, UNDECODABLE, frame[start:end], f"undecodable: {why}"))
    if d.frame_type is not None and len(frame) > d.payload_end:
        extra = len(frame) - d.payload_end
        rows.append(
            Row(
                d.payload_end,
                UNDECODABLE,
                frame[d.payload_end :],
                f"undecodable: {extra} byte(s) beyond the declared length",
            )
        )
    return rows


def frame_title(frame: bytes, direction: str = "", record_info: RecordInfo | None = None) -> str:
    """A table title such as ``C → S  CLIENT_HELLO, 80 bytes``."""
    name = "?"
    type_span = next((s for s in dissect_frame(frame).log.spans if s.name == "type"), None)
    if type_span is not None:
        code = type_span.data[0]
        ft = _enum_value(FrameType, code)
        name = ft.name if ft is not None else f"type 0x{code:02x}"
        if ft is FrameType.RECORD and record_info is not None:
            ct = record_info.content_type
            if ct is not None:
                known = _enum_value(ContentType, ct)
                name += f" ({known.name.lower() if known is not None else f'0x{ct:02x}'})"
    prefix = f"{direction}  " if direction else ""
    return f"{prefix}{name}, {len(frame)} bytes"


def epoch_keys(cipher_suite: int, secret_0: bytes, epoch: int) -> TrafficKeys:
    """Key and iv of a direction's traffic secret after ``epoch`` key updates (§5, §6)."""
    schedule = KeySchedule(SUITES[CipherSuite(cipher_suite)])
    secret = secret_0
    for _ in range(epoch):
        secret = schedule.next_secret(secret)
    return schedule.traffic_keys(secret)


def annotate_secrets(
    complete: HandshakeComplete,
    *,
    shared_secret: bytes | None = None,
    client_epoch: int = 0,
    server_epoch: int = 0,
) -> list[Row]:
    """The §5 secrets of a session as rows (offset ``SECRET_OFFSET``): for ``--show-secrets``."""
    s = complete.secrets
    hash_name = _hash_name(SUITES[complete.cipher_suite].hash_len)
    rows: list[Row] = []
    if shared_secret is not None:
        source = {
            Kex.RSA: "the 32-byte premaster the client wrapped with RSA-OAEP",
            Kex.DHE: "the DH output; it never crossed the wire",
            Kex.PSK: "the pre-shared key",
        }[complete.kex]
        rows.append(Row(SECRET_OFFSET, "shared_secret", shared_secret, source))
    rows.append(
        Row(
            SECRET_OFFSET, "master", s.master, f"HKDF-Extract-{hash_name}(0^HashLen, shared_secret)"
        )
    )
    for name, label, value in (
        ("c_ap_0", "c ap traffic", s.c_ap_0),
        ("s_ap_0", "s ap traffic", s.s_ap_0),
        ("c_finished", "c finished", s.c_finished),
        ("s_finished", "s finished", s.s_finished),
    ):
        rows.append(
            Row(SECRET_OFFSET, name, value, f'HKDF-Expand-Label(master, "{label}", TH_keys)')
        )
    for side, secret_0, epoch, sender in (
        ("c", s.c_ap_0, client_epoch, "client"),
        ("s", s.s_ap_0, server_epoch, "server"),
    ):
        keys = epoch_keys(complete.cipher_suite, secret_0, epoch)
        name = f"{side}_ap_{epoch}"
        if epoch:
            rows.append(
                Row(SECRET_OFFSET, name, keys.secret, f'"traffic upd" applied {epoch} time(s)')
            )
        rows.append(
            Row(SECRET_OFFSET, f"{name}.key", keys.key, f"AES-GCM key of {sender} → peer records")
        )
        rows.append(
            Row(SECRET_OFFSET, f"{name}.iv", keys.iv, "nonce base: nonce = iv XOR (0^4 || seq)")
        )
    return rows


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
            self.cipher_suite = (
                _enum_value(CipherSuite, d.message.cipher_suite) or self.cipher_suite
            )
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
