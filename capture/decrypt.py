"""Find KXP sessions in a capture and decrypt their records (``kexlab decrypt``).

(About 500 lines: one pass from TCP streams to frames, keys and records; its inputs and
its report live in ``capture/inputs.py`` and ``capture/report.py``.)

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
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from protocol.alerts import AlertCode, ProtocolError, alert_name
from protocol.constants import (
    GROUP_NAMES,
    HEADER_LEN,
    MAGIC,
    SCHEME_NAMES,
    SUITE_NAMES,
    SUITES,
    VERSION,
    CipherSuite,
    ContentType,
    FrameType,
    Group,
    SignatureScheme,
)
from protocol.dissect import dissect_frame
from protocol.frames import Frame, FrameDecoder
from protocol.kex import sha256_hex, spki
from protocol.keyschedule import HandshakeSecrets, KeySchedule
from protocol.messages import Alert
from protocol.methods import KexMethod
from protocol.observed import ObservedHandshake
from protocol.records import RecordReceiver, record_seq

from .inputs import CLIENT_KEY, SERVER_KEY, InputError, load_keylog, load_rsa_key, parse_psk
from .mqtt import LeakedPsk, find_psks
from .report import DecryptReport, Record, SeenFrame, Session, SessionKeys, report_to_json
from .streams import CaptureError, TcpConnection, TcpStream, read_capture

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

_START = MAGIC + bytes((VERSION,))

Keylog = Mapping[bytes, Mapping[str, bytes] | Sequence[Mapping[str, bytes]]]
"""client_random -> its secrets by label, or several such sets (``load_keylog``)."""


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
class _Keys:
    client: bytes | None
    server: bytes | None
    method: str
    secrets: HandshakeSecrets | None = None


def _from_keylog(
    hs: ObservedHandshake, keylog: Keylog | None, client: _Side, server: _Side
) -> _Keys | None:
    """The key log's secrets for this session: of several sets, the one that opens it."""
    entry = (keylog or {}).get(hs.ch.random)
    if not entry or hs.suite is None:
        return None
    sets = [entry] if isinstance(entry, Mapping) else list(entry)
    candidates = [
        _Keys(e.get(CLIENT_KEY), e.get(SERVER_KEY), "key log")
        for e in sets
        if e.get(CLIENT_KEY) is not None or e.get(SERVER_KEY) is not None
    ]
    # The same client_random on two connections (a man in the middle copies the client's
    # onto its own connection to the server): the right set opens this session's records.
    for keys in candidates:
        if _opens(keys.client, hs.suite, client) or _opens(keys.server, hs.suite, server):
            return keys
    return candidates[0] if candidates else None  # _judge says that they do not open it


def _opens(secret: bytes | None, suite: CipherSuite, side: _Side) -> bool:
    """``secret`` opens the first record ``side`` sent."""
    first = next((f.frame for f in side.frames if f.frame.type is FrameType.RECORD), None)
    if secret is None or first is None:
        return False
    try:
        RecordReceiver(KeySchedule(SUITES[suite]), secret).open(first.payload)
    except ProtocolError:
        return False
    return True


def _from_rsa(hs: ObservedHandshake, key: rsa.RSAPrivateKey) -> tuple[_Keys | None, str]:
    assert hs.sh is not None and hs.method is not None
    if hs.kt is None:
        return None, "the capture has no KEY_TRANSPORT to decrypt"
    if spki(key) != hs.sh.server_key:
        return None, "the given RSA key is not the one this server used (public keys differ)"
    premaster = hs.method.passive_secret(hs.kt, key, None)
    if premaster is None:
        return None, "KEY_TRANSPORT does not decrypt to a 32-byte premaster with the given key"
    secrets = hs.secrets(premaster)
    if secrets is None:
        return None, "the premaster does not match the client's FINISHED"
    method = "RSA private key: KEY_TRANSPORT decrypted, keys rebuilt from the transcript"
    return _Keys(secrets.c_ap_0, secrets.s_ap_0, method, secrets), ""


def _from_psk(
    hs: ObservedHandshake, candidates: Sequence[tuple[bytes, str]], notes: list[str]
) -> tuple[_Keys | None, str]:
    """The first candidate that the first FINISHED confirms; a note for each one it refutes."""
    first = _first_finisher(hs)
    refuted: list[str] = []
    for psk, origin in candidates:
        assert hs.method is not None
        shared = hs.method.passive_secret(hs.kt, None, psk)
        secrets = hs.secrets(shared) if shared is not None else None  # checked by FINISHED
        if secrets is not None:
            notes.extend(
                f"{wrong} does not match the {first}'s FINISHED: not used" for wrong in refuted
            )
            return _Keys(secrets.c_ap_0, secrets.s_ap_0, origin, secrets), ""
        refuted.append(origin)
    identity = hs.ch.psk_identity.decode("utf-8", "replace")
    return None, (
        f"no PSK for identity {identity!r} matches the {first}'s FINISHED: tried "
        + "; ".join(refuted)
    )


def _first_finisher(hs: ObservedHandshake) -> str:
    """Whose FINISHED comes first (§4), the one that checks a key found in the capture."""
    return "client" if hs.method is not None and hs.method.client_finishes_first else "server"


# --------------------------------------------------------------------------- sessions


def _handshake(client: _Side, server: _Side, session: Session) -> ObservedHandshake | None:
    try:
        hs = ObservedHandshake(client.frames[0].frame)
    except ProtocolError as exc:
        session.reason = f"CLIENT_HELLO does not parse: {exc.reason}"
        return None
    ch = hs.ch
    session.client_random = ch.random
    session.kex = hs.method.name if hs.method is not None else f"unknown({ch.kex})"
    if hs.suite is not None:
        session.cipher_suite = SUITE_NAMES[hs.suite]
    else:
        session.cipher_suite = f"unknown(0x{ch.cipher_suite:04x})"
    if ch.group in set(Group):
        session.group = GROUP_NAMES[Group(ch.group)]
    else:
        session.group = f"unknown(0x{ch.group:04x})"
    session.psk_identity = ch.psk_identity.decode("utf-8", "replace")
    if hs.suite is None:
        return hs
    try:
        for item in server.frames:
            hs.add("server", item.frame)
        for item in client.frames[1:]:
            hs.add("client", item.frame)
    except ProtocolError as exc:
        session.notes.append(f"handshake message does not parse: {exc.reason}")
    if hs.signature is not None and hs.signature.scheme in set(SignatureScheme):
        session.signature_scheme = SCHEME_NAMES[SignatureScheme(hs.signature.scheme)]
    if hs.sh is not None:
        session.server_random = hs.sh.random
        if hs.sh.server_key:
            session.server_key_sha256 = sha256_hex(hs.sh.server_key)
    session.handshake_complete = hs.complete
    return hs


def _alert_text(payload: bytes) -> str:
    try:
        alert = Alert.decode(payload)
    except ProtocolError as exc:
        return f"malformed alert: {exc.reason}"
    return alert_name(alert.code) + (f": {alert.reason}" if alert.reason else "")


def _no_key_reason(session: Session, method: KexMethod | None) -> str:
    if method is None:
        return "no key log entry for this session"
    if method.forward_secret:
        return (
            f"forward secret: the session key came from ephemeral {session.group} shares whose "
            "private halves were discarded after the handshake; no long-term key ever "
            "encrypted it (the server's key only signs), so no key that leaks later and nothing "
            "in this capture can decrypt it. Only a key log written by an endpoint during the "
            "session can."
        )
    if method.needs_psk:
        return (
            f"no key log entry and no PSK for identity {session.psk_identity!r} (none given with "
            "--psk, none published on MQTT in this capture); whoever holds that PSK can decrypt "
            f"this session ({method.name} has no forward secrecy)"
        )
    return (
        "no key log entry and no --rsa-key: whoever obtains the server's RSA private key, "
        f"even years from now, can decrypt this session ({method.name} key transport has no"
        " forward secrecy)"
    )


def _find_keys(
    session: Session,
    hs: ObservedHandshake,
    client: _Side,
    server: _Side,
    keylog: Keylog | None,
    rsa_key: rsa.RSAPrivateKey | None,
    psks: Mapping[str, bytes],
    leaked: Sequence[LeakedPsk],
) -> _Keys | None:
    keys = _from_keylog(hs, keylog, client, server)
    if keys is not None:
        return keys
    if hs.sh is None:
        alerts = [f.frame for f in server.frames if f.frame.type is FrameType.ALERT]
        session.reason = "the server never sent SERVER_HELLO: no keys were agreed"
        if alerts:
            session.reason = (
                f"the handshake failed ({_alert_text(alerts[0].payload)}): no keys were agreed"
            )
        return None
    why = ""
    method = hs.method
    if method is not None and method.server_key_role == "transport" and rsa_key is not None:
        keys, why = _from_rsa(hs, rsa_key)
    elif method is not None and method.needs_psk:
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
            keys, why = _from_psk(hs, candidates, session.notes)
    if keys is None:
        session.reason = why or _no_key_reason(session, method)
    return keys


def _records(
    side: _Side,
    sender: str,
    secret: bytes | None,
    suite: CipherSuite | None,
    seen: list[SeenFrame],
) -> list[Record]:
    """Every RECORD and plaintext ALERT after the handshake, decrypted when ``secret`` is known.

    Every frame of the side, records or not, also goes to ``seen`` (the session page).
    """
    receiver = (
        RecordReceiver(KeySchedule(SUITES[suite]), secret)
        if secret is not None and suite is not None
        else None
    )
    out: list[Record] = []
    for item in side.frames:
        f = item.frame
        seen.append(SeenFrame(item.time, sender, f.encode()))
        if f.type is FrameType.ALERT:
            note = _alert_text(f.payload)
            out.append(Record(item.time, sender, None, None, "alert", f.payload, note))
            seen[-1].record = out[-1]
            continue
        if f.type is not FrameType.RECORD:
            continue
        seq = record_seq(f.payload)
        if receiver is None or seq is None:
            out.append(Record(item.time, sender, None, seq, "encrypted", None))
        else:
            out.append(_open_record(receiver, f.payload, item.time, sender, seq))
        seen[-1].record = out[-1]
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
    if hs is not None and hs.suite is not None:
        suite = hs.suite
        keys = _find_keys(session, hs, client, server, keylog, rsa_key, psks, leaked)
        failure = _handshake_failure(hs, client, server)
        if failure:
            # Nothing was agreed, so nothing is sealed: say that, not "no key matches".
            if keys is not None:
                session.notes.append(
                    f"the {keys.method} matches the {_first_finisher(hs)}'s FINISHED:"
                    f" the {_first_finisher(hs)} held that key, the other side did not"
                )
            session.reason = (
                f"{failure}: no session keys were agreed, so nothing was encrypted and there"
                " is nothing to decrypt"
            )
            session.handshake_failed, keys = True, None
    elif hs is not None:
        session.reason = f"unknown cipher suite {session.cipher_suite}: no keys were agreed"
    session.forward_secret = hs is not None and hs.method is not None and hs.method.forward_secret
    c_secret = keys.client if keys else None
    s_secret = keys.server if keys else None
    session.records = _records(client, "client", c_secret, suite, session.frames)
    session.records += _records(server, "server", s_secret, suite, session.frames)
    session.records.sort(key=lambda r: r.time)
    session.frames.sort(key=lambda f: f.time)
    if keys is not None:
        _judge(session, keys)
        if session.decrypted:
            session.keys = SessionKeys(keys.client, keys.server, keys.secrets)
    return session


def _handshake_failure(hs: ObservedHandshake, client: _Side, server: _Side) -> str:
    """``the client sent alert decrypt_error (51): ...`` when an alert ended the handshake."""
    if hs.complete or hs.sh is None:  # no SERVER_HELLO: _find_keys says why already
        return ""
    alerts = [
        (item.time, who, item.frame)
        for who, side in (("client", client), ("server", server))
        for item in side.frames
        if item.frame.type is FrameType.ALERT
    ]
    if not alerts:
        return ""
    _time, who, frame = min(alerts, key=lambda a: a[0])
    return f"the {who} sent alert {_alert_text(frame.payload)}"


def _first_type(stream: TcpStream) -> FrameType | None:
    return dissect_frame(stream.data[:HEADER_LEN]).frame_type


def _judge(session: Session, keys: _Keys) -> None:
    """Decide whether the keys found actually opened the records."""
    opened = [r for r in session.records if r.plaintext is not None and r.epoch is not None]
    failed = [r for r in session.records if r.epoch is not None and r.plaintext is None]
    sealed = [r for r in session.records if r.seq is not None and r.epoch is None]
    session.method = keys.method
    session.decrypted = bool(opened) or not failed
    if not session.decrypted:
        session.reason = f"the keys from the {keys.method} do not open this session's records"
        if keys.method == "key log":
            session.reason += (
                " (secrets logged for another connection with the same client_random, such as"
                " the other leg of a man in the middle, who copies the client's random, look"
                " like this too)"
            )
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
