"""Annotated frames (docs/protocol.md §1, §3, §6): every byte of a frame named and explained.

``annotate_frame`` splits one frame into rows — offset, field, bytes, meaning — whose
bytes tile the frame exactly, so a reader can follow a handshake byte by byte. It is
what ``--explain`` prints, and it never raises: bytes it cannot parse become an
``undecodable`` row that says why. Field names are the spec's (``FIELDS``), so a
Wireshark dissector can use the same ones (``kxp.<field>``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from .alerts import AlertCode, ProtocolError, alert_name
from .constants import (
    GROUP_NAMES,
    HEADER_LEN,
    MAGIC,
    MIN_RECORD_PAYLOAD,
    RANDOM_LEN,
    SCHEME_NAMES,
    SEQ_LEN,
    SUITE_NAMES,
    SUITES,
    TAG_LEN,
    VERSION,
    CipherSuite,
    ContentType,
    FrameType,
    Group,
    Kex,
    SignatureScheme,
)
from .events import FrameTraced, HandshakeComplete
from .frames import max_payload
from .kex import GROUPS
from .keyschedule import KeySchedule, TrafficKeys
from .messages import Alert

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


def _sha256(data: bytes) -> str:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize().hex()


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
    return f"{what}; SHA-256 {_sha256(der)}"


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


class _Cursor:
    """Walks a frame, appending rows; a field that does not fit ends the walk as undecodable."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.pos = 0
        self.end = len(frame)
        self.rows: list[Row] = []
        self.broken = False

    @property
    def left(self) -> int:
        return self.end - self.pos

    def take(self, n: int, field: str, meaning: str | Callable[[bytes], str]) -> bytes | None:
        """The next n bytes as one row, or None (and an undecodable row) if they are not there."""
        if self.broken:
            return None
        if n > self.left:
            self.rest(f"{field} cut short: needs {n} byte(s), {self.left} left (decode_error)")
            return None
        data = self.frame[self.pos : self.pos + n]
        text = meaning if isinstance(meaning, str) else meaning(data)
        self.rows.append(Row(self.pos, field, data, text))
        self.pos += n
        return data

    def uint(self, n: int, field: str, meaning: Callable[[int], str]) -> int | None:
        """A big-endian u8/u16/u32/u64 field."""
        data = self.take(n, field, lambda b: meaning(int.from_bytes(b, "big")))
        return None if data is None else int.from_bytes(data, "big")

    def vector(self, prefix: int, field: str, meaning: Callable[[bytes], str]) -> bytes | None:
        """``opaque field<0..2^(8*prefix)-1>``: a length row, then the bytes row."""
        n = self.uint(prefix, f"{field}.length", _length_meaning)
        if n is None:
            return None
        return self.take(n, field, meaning)

    def rest(self, why: str, *, always: bool = True) -> None:
        """Everything up to ``end`` as one undecodable row (even if empty); the walk stops."""
        if self.broken:
            return
        if always or self.pos < self.end:
            self.rows.append(
                Row(self.pos, UNDECODABLE, self.frame[self.pos : self.end], f"undecodable: {why}")
            )
        self.pos = self.end
        self.broken = True


def _length_meaning(n: int) -> str:
    return f"{n} byte(s) follow" if n else "0: empty"


# --------------------------------------------------------------------------- frame parts


def _header(c: _Cursor) -> tuple[FrameType, int] | None:
    magic = c.take(2, "magic", lambda b: '"KX"' if b == MAGIC else 'bad magic, not "KX"')
    if magic is None or magic != MAGIC:
        c.rest("not a KXP frame (bad magic: decode_error)")
        return None
    ver = c.uint(1, "ver", _ver_meaning)
    if ver is None or ver != VERSION:
        c.rest("unsupported version: payload not parsed (protocol_version)")
        return None
    raw_type = c.uint(1, "type", _type_meaning)
    frame_type = None if raw_type is None else _enum_value(FrameType, raw_type)
    if frame_type is None:
        c.rest("unknown frame type: payload not parsed (unexpected_message)")
        return None
    length = c.uint(4, "length", lambda n: _length_field_meaning(frame_type, n, len(c.frame)))
    if length is None:
        return None
    return frame_type, length


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


def _hello(c: _Cursor, side: str) -> None:
    c.take(RANDOM_LEN, "random", f"{side} random: 32 fresh bytes")
    kex = c.uint(1, "kex", _kex_meaning)
    c.uint(2, "cipher_suite", _suite_meaning)
    group = c.uint(2, "group", _group_meaning)
    c.vector(2, "key_share", lambda b: _key_share_meaning(side, group, b))
    if side == "client":
        c.vector(1, "psk_identity", _identity_meaning)
    else:
        c.vector(2, "server_key", lambda b: _server_key_meaning(kex, b))


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


def _server_key_meaning(kex: int | None, der: bytes) -> str:
    if not der:
        if kex == Kex.RSA:
            return "empty: rsa needs the server's RSA key (illegal_parameter)"
        return "empty: no server identity (psk, or anonymous dhe)"
    role = "RSA transport key" if kex == Kex.RSA else "identity key"
    return f"server's {role}: {describe_server_key(der)}"


def _key_transport(c: _Cursor) -> None:
    c.vector(
        2,
        "encrypted_secret",
        lambda b: (
            "RSA-OAEP(SHA-256) of the 32-byte premaster under the server's RSA key"
            f" ({len(b)} bytes = a {len(b) * 8}-bit modulus); only the private key opens it"
        ),
    )


def _server_signature(c: _Cursor) -> None:
    scheme = c.uint(2, "scheme", _scheme_meaning)
    name = "the"
    if scheme is not None and (known := _enum_value(SignatureScheme, scheme)) is not None:
        name = SCHEME_NAMES[known]
    c.vector(
        2,
        "signature",
        lambda b: (
            f"{name} signature by the server's identity key over"
            ' 0x20×64 || "kexlab/1 server signature" || 0x00 || TH(CH, SH)'
        ),
    )


def _scheme_meaning(v: int) -> str:
    scheme = _enum_value(SignatureScheme, v)
    if scheme is None:
        return f"unknown signature scheme 0x{v:04x} (illegal_parameter)"
    return f"0x{v:04x} {SCHEME_NAMES[scheme]}: {_SCHEME_MEANING[scheme]}"


def _finished(c: _Cursor, hash_len: int | None) -> None:
    n = c.left if hash_len is None else hash_len
    hash_name = _hash_name(n)
    c.take(
        n,
        "verify_data",
        f"HMAC-{hash_name}(finished_key, TH(every handshake frame before this one)):"
        " proves the sender derived the same keys from the same bytes",
    )


def _alert(c: _Cursor) -> None:
    c.uint(1, "code", _code_meaning)
    c.vector(1, "reason", _reason_meaning)


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


def _record(c: _Cursor, length: int, info: RecordInfo | None, show_secrets: bool) -> None:
    keys = info.keys if info is not None and show_secrets else None

    def seq_meaning(seq: int) -> str:
        text = f"sequence number {seq}"
        if info is not None and info.epoch is not None:
            text += f" under key epoch {info.epoch}"
        text += "; nonce = iv XOR seq, AAD = header || seq"
        if keys is not None:
            nonce = (int.from_bytes(keys.iv, "big") ^ seq).to_bytes(12, "big")
            text += f"; nonce {nonce.hex()}"
        return text

    if length < MIN_RECORD_PAYLOAD:
        c.rest(f"RECORD payload of {length} bytes is under {MIN_RECORD_PAYLOAD} (decode_error)")
        return
    # Split by the declared length, so a cut-short record shows its tag as missing.
    inner_len = length - SEQ_LEN - TAG_LEN
    c.uint(SEQ_LEN, "seq", seq_meaning)
    text = f"AES-GCM ciphertext of content_type || content ({inner_len} bytes)"
    if info is not None and (info.content_type is not None or info.content is not None):
        text += f"; decrypted: {describe_content(info.content_type, info.content)}"
    if keys is not None:
        text += f"; key {keys.key.hex()}"
    c.take(inner_len, "ciphertext", text)
    c.take(TAG_LEN, "tag", "AES-GCM tag: authenticates header || seq and the ciphertext")


# --------------------------------------------------------------------------- public API


def annotate_frame(
    frame: bytes,
    *,
    hash_len: int | None = None,
    record_info: RecordInfo | None = None,
    show_secrets: bool = False,
) -> list[Row]:
    """Rows naming every byte of ``frame``; their bytes tile it exactly. Never raises."""
    frame = bytes(frame)
    c = _Cursor(frame)
    if not frame:
        return [Row(0, UNDECODABLE, b"", "undecodable: empty, no frame header")]
    parsed = _header(c)
    if parsed is not None:
        frame_type, length = parsed
        c.end = min(HEADER_LEN + length, len(frame))
        if frame_type is FrameType.CLIENT_HELLO:
            _hello(c, "client")
        elif frame_type is FrameType.SERVER_HELLO:
            _hello(c, "server")
        elif frame_type is FrameType.KEY_TRANSPORT:
            _key_transport(c)
        elif frame_type is FrameType.SERVER_SIGNATURE:
            _server_signature(c)
        elif frame_type is FrameType.FINISHED:
            _finished(c, hash_len)
        elif frame_type is FrameType.ALERT:
            _alert(c)
        else:
            _record(c, length, record_info, show_secrets)
        if not c.broken and c.left:
            c.rest(f"{c.left} trailing byte(s) in the {frame_type.name} payload (decode_error)")
    c.end = len(frame)
    c.broken = False
    c.rest(f"{c.left} byte(s) beyond the declared length", always=False)
    return c.rows


def frame_title(frame: bytes, direction: str = "", record_info: RecordInfo | None = None) -> str:
    """A table title such as ``C → S  CLIENT_HELLO, 80 bytes``."""
    name = "?"
    if len(frame) >= 4 and frame[:2] == MAGIC:
        ft = _enum_value(FrameType, frame[3])
        name = ft.name if ft is not None else f"type 0x{frame[3]:02x}"
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
        frame = event.frame
        if len(frame) >= HEADER_LEN + RANDOM_LEN + 3 and frame[3] in (
            FrameType.CLIENT_HELLO,
            FrameType.SERVER_HELLO,
        ):
            suite = int.from_bytes(frame[HEADER_LEN + RANDOM_LEN + 1 : HEADER_LEN + RANDOM_LEN + 3])
            if _enum_value(CipherSuite, suite) is not None:
                self.cipher_suite = CipherSuite(suite)
        return annotate_frame(
            frame,
            hash_len=self.hash_len,
            record_info=self.record_info(event),
            show_secrets=self.show_secrets,
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
