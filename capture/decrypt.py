"""Find KXP sessions in a capture and decrypt their records (``kexlab decrypt``).

A passive observer holds the transcript and nothing else. What turns it into
plaintext, per session (docs/protocol.md §5, §9):

- a key log line for the session's client_random gives the traffic secrets;
- rsa: the server's RSA private key decrypts KEY_TRANSPORT, so the premaster and
  the whole key schedule follow from the transcript, for every session ever
  recorded with that key (no forward secrecy);
- psk: the PSK (given, or found in an MQTT PUBLISH in the same capture) is the
  shared secret; it too opens every session that used it;
- dhe: only the two ephemeral private values, discarded after the handshake, give
  the shared secret. Without a key log the session stays sealed: forward secrecy.

Derived keys are checked against a FINISHED from the capture before use, so a
wrong RSA key or a stale PSK is reported as such rather than as garbage. Records
are opened with ``protocol.records.RecordReceiver``, exactly as an endpoint does,
following key_update records from epoch to epoch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.constant_time import bytes_eq

from protocol.alerts import AlertCode, KexlabError, ProtocolError, alert_name
from protocol.constants import (
    GROUP_NAMES,
    HEADER_LEN,
    KEX_NAMES,
    MAGIC,
    MIN_PSK_LEN,
    PREMASTER_LEN,
    SCHEME_NAMES,
    SEQ_LEN,
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
from protocol.frames import Frame, FrameDecoder
from protocol.kex import spki
from protocol.keyschedule import KeySchedule, TranscriptHash, parse_keylog
from protocol.messages import Alert, ClientHello, Finished, KeyTransport, ServerHello
from protocol.records import RecordReceiver

from .mqtt import LeakedPsk, find_psks
from .streams import Address, CaptureError, TcpConnection, TcpStream, read_capture

__all__ = [
    "CaptureError",
    "DecryptReport",
    "InputError",
    "Record",
    "Session",
    "decrypt_capture",
    "load_keylog",
    "load_rsa_key",
    "parse_psk",
    "report_to_json",
]

CLIENT_KEY = "CLIENT_TRAFFIC_SECRET_0"
SERVER_KEY = "SERVER_TRAFFIC_SECRET_0"
# §3 KEY_TRANSPORT: RSA-OAEP(SHA-256, MGF1-SHA-256, empty label).
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_START = MAGIC + bytes((VERSION,))

Keylog = Mapping[bytes, Mapping[str, bytes]]


class InputError(KexlabError):
    """A key source given by the user cannot be used (unreadable file, bad format)."""


# --------------------------------------------------------------------------- results


@dataclass
class Record:
    """One record (or plaintext ALERT frame) of a session, decrypted when a key was at hand."""

    time: float
    sender: str
    """"client" or "server"."""
    epoch: int | None
    """Traffic key epoch (0, then +1 per key_update); None for a plaintext ALERT frame."""
    seq: int | None
    """The record's seq; None for a plaintext ALERT frame."""
    content_type: str
    """"application_data", "key_update", "alert", or "encrypted" when not decrypted."""
    plaintext: bytes | None
    """The content (for alerts the ALERT payload); None when not decrypted."""
    note: str = ""
    """What went wrong with this record, or the alert's name and reason."""

    @property
    def direction(self) -> str:
        """ "client->server" or "server->client"."""
        return "client->server" if self.sender == "client" else "server->client"


@dataclass
class Session:
    """One KXP connection found in the capture and what could be done with it."""

    client: Address
    server: Address
    start_time: float
    kex: str = "?"
    cipher_suite: str = "?"
    group: str = "none"
    client_random: bytes = b""
    server_random: bytes = b""
    psk_identity: str = ""
    server_key_sha256: str = ""
    signature_scheme: str = ""
    handshake_complete: bool = False
    """Both FINISHED frames are in the capture."""
    decrypted: bool = False
    """Keys were found for at least one direction and they open its records."""
    method: str = ""
    """How the keys were obtained, when ``decrypted``."""
    reason: str = ""
    """Why the session was not decrypted (or a part of it was not)."""
    forward_secret: bool = False
    """dhe: no long-term secret, leaked or not, recovers the session keys."""
    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class DecryptReport:
    """Everything ``decrypt_capture`` found."""

    capture: str
    packets: int
    sessions: list[Session]
    psks_found: list[LeakedPsk]
    warnings: list[str]


# --------------------------------------------------------------------------- user inputs


def load_keylog(path: str | os.PathLike[str]) -> dict[bytes, dict[str, bytes]]:
    """Read a §9 key log file; a file without a single key log line is an error."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            entries = parse_keylog(fh.read())
    except OSError as exc:
        raise InputError(f"cannot read key log {os.fspath(path)}: {exc.strerror or exc}") from None
    entries = {cr: e for cr, e in entries.items() if CLIENT_KEY in e or SERVER_KEY in e}
    if not entries:
        raise InputError(f"{os.fspath(path)} holds no key log lines ({CLIENT_KEY} ...)")
    return entries


def load_rsa_key(path: str | os.PathLike[str]) -> rsa.RSAPrivateKey:
    """Read an unencrypted RSA private key (PEM or DER, PKCS#8 or PKCS#1)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read RSA key {os.fspath(path)}: {exc.strerror or exc}") from None
    loader = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        key = loader(data, None)
    except TypeError:
        raise InputError(f"{os.fspath(path)} is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{os.fspath(path)} is not a private key in PEM or DER") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InputError(f"{os.fspath(path)} is not an RSA private key")
    return key


def parse_psk(text: str) -> tuple[str, bytes]:
    """``ID=HEX`` -> (identity, key)."""
    identity, sep, hex_key = text.partition("=")
    if not sep or not identity:
        raise InputError(f"--psk {text!r}: expected IDENTITY=HEX")
    try:
        key = bytes.fromhex(hex_key)
    except ValueError:
        raise InputError(f"--psk {identity}=...: the key is not hex") from None
    if len(key) < MIN_PSK_LEN:
        raise InputError(f"--psk {identity}=...: a PSK is at least {MIN_PSK_LEN} bytes")
    return identity, key


# --------------------------------------------------------------------------- frames


@dataclass
class _Frame:
    frame: Frame
    time: float


@dataclass
class _Side:
    frames: list[_Frame]
    problem: str = ""


def _frames(stream: TcpStream, who: str) -> _Side:
    """Split one direction's bytes into frames; a bad header or a cut ends the list."""
    decoder = FrameDecoder()
    decoder.feed(stream.data)
    side = _Side([])
    offset = 0
    while True:
        try:
            frame = decoder.next_frame()
        except ProtocolError as exc:
            side.problem = f"{who} stream: {exc.reason} at byte {offset}; the rest is not KXP"
            break
        if frame is None:
            break
        end = offset + HEADER_LEN + len(frame.payload)
        side.frames.append(_Frame(frame, stream.time_at(offset, end)))
        offset = end
    if not side.problem and decoder.buffered:
        side.problem = f"{who} stream ends inside a frame ({decoder.buffered} bytes)"
    if stream.gap is not None:
        side.problem = (
            f"{who} stream: the capture misses bytes from offset {stream.gap}; "
            "frames after the hole cannot be read"
        )
    return side


def _is_kxp(stream: TcpStream) -> bool:
    return stream.data[:3] == _START


# --------------------------------------------------------------------------- key recovery


@dataclass
class _Handshake:
    ch: ClientHello
    ch_frame: bytes
    sh: ServerHello | None = None
    sh_frame: bytes = b""
    kt: KeyTransport | None = None
    kt_frame: bytes = b""
    client_finished: bytes | None = None
    server_finished: bytes | None = None
    server_frames: list[bytes] = field(default_factory=list)
    """Server handshake frames before its FINISHED (SH, [SS]), for TH."""


@dataclass
class _Keys:
    client: bytes | None
    server: bytes | None
    method: str


def _th(suite: CipherSuite, *frames: bytes) -> bytes:
    th = TranscriptHash(SUITES[suite].hash())
    for frame in frames:
        th.update(frame)
    return th.digest()


def _from_keylog(hs: _Handshake, keylog: Keylog | None) -> _Keys | None:
    entry = (keylog or {}).get(hs.ch.random)
    if not entry:
        return None
    c, s = entry.get(CLIENT_KEY), entry.get(SERVER_KEY)
    if c is None and s is None:
        return None
    return _Keys(c, s, "key log")


def _from_rsa(
    hs: _Handshake, suite: CipherSuite, key: rsa.RSAPrivateKey
) -> tuple[_Keys | None, str]:
    assert hs.sh is not None
    if hs.kt is None:
        return None, "the capture has no KEY_TRANSPORT to decrypt"
    if spki(key) != hs.sh.server_key:
        return None, "the given RSA key is not the one this server used (public keys differ)"
    try:
        premaster = key.decrypt(hs.kt.encrypted_secret, _OAEP)
    except ValueError:
        premaster = b""
    if len(premaster) != PREMASTER_LEN:
        return None, "KEY_TRANSPORT does not decrypt to a 32-byte premaster with the given key"
    schedule = KeySchedule(SUITES[suite])
    th_keys = _th(suite, hs.ch_frame, hs.sh_frame, hs.kt_frame)  # rsa: TH(CH, SH, KT)
    secrets = schedule.derive(premaster, th_keys)
    if hs.client_finished is not None:  # the client's FINISHED covers exactly CH, SH, KT
        expected = schedule.verify_data(secrets.c_finished, th_keys)
        if not bytes_eq(expected, hs.client_finished):
            return None, "the premaster does not match the client's FINISHED"
    method = "RSA private key: KEY_TRANSPORT decrypted, keys rebuilt from the transcript"
    return _Keys(secrets.c_ap_0, secrets.s_ap_0, method), ""


def _from_psk(
    hs: _Handshake, suite: CipherSuite, candidates: Sequence[tuple[bytes, str]]
) -> tuple[_Keys | None, str]:
    schedule = KeySchedule(SUITES[suite])
    th_keys = _th(suite, hs.ch_frame, hs.sh_frame)  # psk: TH(CH, SH)
    for psk, origin in candidates:
        secrets = schedule.derive(psk, th_keys)
        if hs.server_finished is not None:
            # The server's FINISHED lets anyone who saw the handshake test a PSK offline (§5).
            th = _th(suite, hs.ch_frame, *hs.server_frames)
            if not bytes_eq(schedule.verify_data(secrets.s_finished, th), hs.server_finished):
                continue
        return _Keys(secrets.c_ap_0, secrets.s_ap_0, origin), ""
    return None, (
        f"{len(candidates)} PSK(s) for identity {hs.ch.psk_identity.decode('utf-8', 'replace')!r} "
        "were tried and none matches the server's FINISHED"
    )


# --------------------------------------------------------------------------- sessions


def _handshake(client: _Side, server: _Side, session: Session) -> _Handshake | None:
    ch_f = client.frames[0].frame
    try:
        ch = ClientHello.decode(ch_f.payload)
    except ProtocolError as exc:
        session.reason = f"CLIENT_HELLO does not parse: {exc.reason}"
        return None
    hs = _Handshake(ch, ch_f.encode())
    session.client_random = ch.random
    session.kex = KEX_NAMES.get(Kex(ch.kex), "?") if ch.kex in set(Kex) else f"unknown({ch.kex})"
    if ch.cipher_suite in set(CipherSuite):
        session.cipher_suite = SUITE_NAMES[CipherSuite(ch.cipher_suite)]
    else:
        session.cipher_suite = f"unknown(0x{ch.cipher_suite:04x})"
    if ch.group in set(Group):
        session.group = GROUP_NAMES[Group(ch.group)]
    else:
        session.group = f"unknown(0x{ch.group:04x})"
    session.psk_identity = ch.psk_identity.decode("utf-8", "replace")
    if ch.cipher_suite not in set(CipherSuite):
        return hs
    hash_len = SUITES[CipherSuite(ch.cipher_suite)].hash_len
    try:
        for item in server.frames:
            f = item.frame
            if f.type is FrameType.SERVER_HELLO and hs.sh is None:
                hs.sh = ServerHello.decode(f.payload)
                hs.sh_frame = f.encode()
                hs.server_frames.append(hs.sh_frame)
            elif f.type is FrameType.SERVER_SIGNATURE:
                hs.server_frames.append(f.encode())
                scheme = int.from_bytes(f.payload[:2], "big")
                if scheme in set(SignatureScheme):
                    session.signature_scheme = SCHEME_NAMES[SignatureScheme(scheme)]
            elif f.type is FrameType.FINISHED and hs.server_finished is None:
                hs.server_finished = Finished.decode(f.payload, hash_len).verify_data
        for item in client.frames[1:]:
            f = item.frame
            if f.type is FrameType.KEY_TRANSPORT and hs.kt is None:
                hs.kt = KeyTransport.decode(f.payload)
                hs.kt_frame = f.encode()
            elif f.type is FrameType.FINISHED and hs.client_finished is None:
                hs.client_finished = Finished.decode(f.payload, hash_len).verify_data
    except ProtocolError as exc:
        session.notes.append(f"handshake message does not parse: {exc.reason}")
    if hs.sh is not None:
        session.server_random = hs.sh.random
        if hs.sh.server_key:
            h = hashes.Hash(hashes.SHA256())
            h.update(hs.sh.server_key)
            session.server_key_sha256 = h.finalize().hex()
    session.handshake_complete = (
        hs.sh is not None and hs.client_finished is not None and hs.server_finished is not None
    )
    return hs


def _alert_text(payload: bytes) -> str:
    try:
        alert = Alert.decode(payload)
    except ProtocolError as exc:
        return f"malformed alert: {exc.reason}"
    return alert_name(alert.code) + (f": {alert.reason}" if alert.reason else "")


def _no_key_reason(session: Session) -> str:
    if session.kex == "dhe":
        return (
            f"forward secret: the session key came from ephemeral {session.group} shares whose "
            "private halves were discarded after the handshake; no long-term key ever "
            "encrypted it (the server's key only signs), so no key that leaks later and nothing "
            "in this capture can decrypt it. Only a key log written by an endpoint during the "
            "session can."
        )
    if session.kex == "rsa":
        return (
            "no key log entry and no --rsa-key: whoever obtains the server's RSA private key, "
            "even years from now, can decrypt this session (rsa key transport has no forward "
            "secrecy)"
        )
    if session.kex == "psk":
        return (
            f"no key log entry and no PSK for identity {session.psk_identity!r} (none given with "
            "--psk, none published on MQTT in this capture); whoever holds that PSK can decrypt "
            "this session (psk has no forward secrecy)"
        )
    return "no key log entry for this session"


def _find_keys(
    session: Session,
    hs: _Handshake,
    server: _Side,
    keylog: Keylog | None,
    rsa_key: rsa.RSAPrivateKey | None,
    psks: Mapping[str, bytes],
    leaked: Sequence[LeakedPsk],
) -> _Keys | None:
    keys = _from_keylog(hs, keylog)
    if keys is not None:
        return keys
    suite = CipherSuite(hs.ch.cipher_suite)
    if hs.sh is None:
        alerts = [f.frame for f in server.frames if f.frame.type is FrameType.ALERT]
        session.reason = "the server never sent SERVER_HELLO: no keys were agreed"
        if alerts:
            session.reason = (
                f"the handshake failed ({_alert_text(alerts[0].payload)}): no keys were agreed"
            )
        return None
    why = ""
    if session.kex == "rsa" and rsa_key is not None:
        keys, why = _from_rsa(hs, suite, rsa_key)
    elif session.kex == "psk":
        candidates: list[tuple[bytes, str]] = []
        if session.psk_identity in psks:
            candidates.append(
                (psks[session.psk_identity], f"PSK {session.psk_identity!r} from --psk")
            )
        for leak in leaked:
            if leak.identity == session.psk_identity:
                origin = (
                    f"PSK {leak.identity!r} found in an MQTT PUBLISH on {leak.topic} "
                    f"({leak.src[0]}:{leak.src[1]} -> {leak.dst[0]}:{leak.dst[1]})"
                )
                candidates.append((leak.key, origin))
        if candidates:
            keys, why = _from_psk(hs, suite, candidates)
    if keys is None:
        session.reason = why or _no_key_reason(session)
    return keys


def _records(
    side: _Side, sender: str, secret: bytes | None, suite: CipherSuite | None
) -> list[Record]:
    """Every RECORD and plaintext ALERT after the handshake, decrypted when ``secret`` is known."""
    receiver = (
        RecordReceiver(KeySchedule(SUITES[suite]), secret)
        if secret is not None and suite is not None
        else None
    )
    out: list[Record] = []
    for item in side.frames:
        f = item.frame
        if f.type is FrameType.ALERT:
            note = _alert_text(f.payload)
            out.append(Record(item.time, sender, None, None, "alert", f.payload, note))
            continue
        if f.type is not FrameType.RECORD:
            continue
        seq = int.from_bytes(f.payload[:SEQ_LEN], "big")
        if receiver is None:
            out.append(Record(item.time, sender, None, seq, "encrypted", None))
            continue
        out.append(_open_record(receiver, f.payload, item.time, sender, seq))
    return out


def _open_record(
    receiver: RecordReceiver, payload: bytes, time: float, sender: str, seq: int
) -> Record:
    note = ""
    if seq > receiver.seq:
        # Missing records (a hole in the capture): skip ahead, as the key is still right.
        note = f"records {receiver.seq}..{seq - 1} of epoch {receiver.epoch} are missing"
        receiver.seq = seq
    epoch = receiver.epoch
    try:
        content_type, content = receiver.open(payload)
    except ProtocolError as exc:
        if exc.alert is AlertCode.BAD_RECORD_MAC and seq == receiver.seq:
            receiver.seq = seq + 1  # keep step with the sender for the next record
        return Record(time, sender, epoch, seq, "encrypted", None, exc.reason)
    name = content_type.name.lower()
    if content_type is ContentType.KEY_UPDATE:
        if content in (b"\x00", b"\x01"):
            receiver.update()  # §6: the receiver switches on reading it
            note = f"request_update={content[0]}; next epoch {receiver.epoch}"
        else:
            note = "malformed key_update"
    elif content_type is ContentType.ALERT:
        note = _alert_text(content)
    return Record(time, sender, epoch, seq, name, content, note)


def _session(
    conn: TcpConnection,
    keylog: Keylog | None,
    rsa_key: rsa.RSAPrivateKey | None,
    psks: Mapping[str, bytes],
    leaked: Sequence[LeakedPsk],
) -> Session | None:
    a, b = conn.streams()
    if not (_is_kxp(a) or _is_kxp(b)):
        return None
    c_stream, s_stream = a, b
    if _first_type(b) == FrameType.CLIENT_HELLO and _first_type(a) != FrameType.CLIENT_HELLO:
        c_stream, s_stream = b, a  # the TCP responder spoke first as the KXP client
    client, server = _frames(c_stream, "client"), _frames(s_stream, "server")
    start = c_stream.first_time or s_stream.first_time or conn.first_time
    session = Session(client=c_stream.src, server=c_stream.dst, start_time=start)
    session.notes += [p for p in (client.problem, server.problem) if p]
    hs = None
    if client.frames and client.frames[0].frame.type is FrameType.CLIENT_HELLO:
        hs = _handshake(client, server, session)
    else:
        session.reason = "the capture does not hold this session's CLIENT_HELLO"
    keys, suite = None, None
    if hs is not None and hs.ch.cipher_suite in set(CipherSuite):
        suite = CipherSuite(hs.ch.cipher_suite)
        keys = _find_keys(session, hs, server, keylog, rsa_key, psks, leaked)
    elif hs is not None:
        session.reason = f"unknown cipher suite {session.cipher_suite}: no keys were agreed"
    session.forward_secret = session.kex == "dhe"
    c_secret = keys.client if keys else None
    s_secret = keys.server if keys else None
    session.records = _records(client, "client", c_secret, suite)
    session.records += _records(server, "server", s_secret, suite)
    session.records.sort(key=lambda r: r.time)
    if keys is not None:
        _judge(session, keys)
    return session


def _first_type(stream: TcpStream) -> int | None:
    return stream.data[3] if _is_kxp(stream) and len(stream.data) > 3 else None


def _judge(session: Session, keys: _Keys) -> None:
    """Decide whether the keys found actually opened the records."""
    opened = [r for r in session.records if r.plaintext is not None and r.epoch is not None]
    failed = [r for r in session.records if r.epoch is not None and r.plaintext is None]
    sealed = [r for r in session.records if r.seq is not None and r.epoch is None]
    session.method = keys.method
    session.decrypted = bool(opened) or not failed
    if not session.decrypted:
        session.reason = f"the keys from the {keys.method} do not open this session's records"
    elif sealed:
        missing = "client" if keys.client is None else "server"
        session.reason = f"the key log has no traffic secret for the {missing}'s records"


def decrypt_capture(
    path: str | os.PathLike[str],
    *,
    keylog: Keylog | None = None,
    rsa_key: rsa.RSAPrivateKey | None = None,
    psks: Mapping[str, bytes] | None = None,
) -> DecryptReport:
    """Read a capture, find every KXP session (any port) and decrypt what the key sources allow."""
    capture = read_capture(path)
    leaked = find_psks(capture)
    sessions = []
    for conn in capture.connections:
        session = _session(conn, keylog, rsa_key, psks or {}, leaked)
        if session is not None:
            sessions.append(session)
    return DecryptReport(capture.path, capture.packets, sessions, leaked, capture.warnings)


# --------------------------------------------------------------------------- JSON


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def report_to_json(report: DecryptReport) -> dict[str, Any]:
    """A JSON-ready view of a report (bytes as hex, plaintext also as UTF-8 text when it is)."""
    return {
        "capture": report.capture,
        "packets": report.packets,
        "warnings": report.warnings,
        "psks_found": [
            {
                "identity": leak.identity,
                "key": leak.key.hex(),
                "topic": leak.topic,
                "server_id": leak.server_id,
                "time": leak.time,
                "expires_at": leak.expires_at,
                "from": f"{leak.src[0]}:{leak.src[1]}",
                "to": f"{leak.dst[0]}:{leak.dst[1]}",
            }
            for leak in report.psks_found
        ],
        "sessions": [
            {
                "client": f"{s.client[0]}:{s.client[1]}",
                "server": f"{s.server[0]}:{s.server[1]}",
                "start_time": s.start_time,
                "kex": s.kex,
                "cipher_suite": s.cipher_suite,
                "group": s.group,
                "client_random": s.client_random.hex(),
                "server_random": s.server_random.hex(),
                "psk_identity": s.psk_identity,
                "server_key_sha256": s.server_key_sha256,
                "signature_scheme": s.signature_scheme,
                "handshake_complete": s.handshake_complete,
                "decrypted": s.decrypted,
                "method": s.method,
                "reason": s.reason,
                "forward_secret": s.forward_secret,
                "notes": s.notes,
                "records": [
                    {
                        "time": r.time,
                        "direction": r.direction,
                        "epoch": r.epoch,
                        "seq": r.seq,
                        "content_type": r.content_type,
                        "plaintext_hex": None if r.plaintext is None else r.plaintext.hex(),
                        "plaintext": _text(r.plaintext),
                        "note": r.note,
                    }
                    for r in s.records
                ],
            }
            for s in report.sessions
        ],
    }
