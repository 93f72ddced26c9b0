"""The record layer (docs/protocol.md §5 key/iv/"traffic upd", §6 records) checked independently.

``RecordSender`` / ``RecordReceiver`` are compared against AES-GCM and HKDF computed here
from the spec's formulas with ``cryptography`` directly, against the shared vectors, and
on real connection pairs with a small injected ``key_update_threshold``.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from conftest import handshake_vector_names, load_vector
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from protocol import (
    AlertCode,
    CipherSuite,
    ClientConfig,
    ClientConnection,
    Connection,
    ConnectionClosed,
    ContentType,
    DataReceived,
    Event,
    FrameDecoder,
    FrameTraced,
    Group,
    HandshakeComplete,
    Kex,
    KeyUpdateReceived,
    LocalProtocolError,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
    State,
    parse_keylog,
)
from protocol.constants import MIN_RECORD_PAYLOAD, SUITES
from protocol.keyschedule import KeySchedule, keylog_lines
from protocol.records import RecordReceiver, RecordSender, read_record, record_seq
from protocol.wire import FieldLog, Reader

# Suite parameters written out from the §2 table, not read from protocol/.
SPEC_SUITES = {
    CipherSuite.AES_128_GCM_SHA256: (16, hashes.SHA256()),
    CipherSuite.AES_256_GCM_SHA384: (32, hashes.SHA384()),
}
SUITE_IDS = ["aes128", "aes256"]


# --------------------------------------------------------------------------- the spec, by hand


def expand_label(algorithm: hashes.HashAlgorithm, secret: bytes, label: bytes, n: int) -> bytes:
    """§5 HKDF-Expand-Label with an empty context: u16 n || <"kexlab " || label> || <>."""
    full = b"kexlab " + label
    info = n.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    return HKDFExpand(algorithm, n, info).derive(secret)


def spec_keys(suite: CipherSuite, secret: bytes) -> tuple[bytes, bytes]:
    """(key, iv) of a traffic secret (§5)."""
    key_len, algorithm = SPEC_SUITES[suite]
    return expand_label(algorithm, secret, b"key", key_len), expand_label(
        algorithm, secret, b"iv", 12
    )


def spec_next(suite: CipherSuite, secret: bytes) -> bytes:
    """next secret = HKDF-Expand-Label(secret, "traffic upd", "", HashLen) (§5)."""
    _, algorithm = SPEC_SUITES[suite]
    return expand_label(algorithm, secret, b"traffic upd", algorithm.digest_size)


def spec_seal(
    suite: CipherSuite, secret: bytes, seq: int, content_type: int, content: bytes
) -> bytes:
    """A whole RECORD frame per §6: header || u64 seq || AES-GCM(inner, aad = header || seq)."""
    key, iv = spec_keys(suite, secret)
    nonce = bytes(a ^ b for a, b in zip(iv, bytes(4) + seq.to_bytes(8, "big"), strict=True))
    length = 8 + 1 + len(content) + 16
    header = b"KX\x01\x17" + length.to_bytes(4, "big")
    seq_bytes = seq.to_bytes(8, "big")
    sealed = AESGCM(key).encrypt(nonce, bytes([content_type]) + content, header + seq_bytes)
    return header + seq_bytes + sealed


def spec_open(suite: CipherSuite, secret: bytes, frame: bytes) -> tuple[int, int, bytes]:
    """(seq, content_type, content) of a RECORD frame, decrypted per §6."""
    key, iv = spec_keys(suite, secret)
    seq_bytes = frame[8:16]
    nonce = bytes(a ^ b for a, b in zip(iv, bytes(4) + seq_bytes, strict=True))
    inner = AESGCM(key).decrypt(nonce, frame[16:], frame[:8] + seq_bytes)
    return int.from_bytes(seq_bytes, "big"), inner[0], inner[1:]


def pair_of(
    suite: CipherSuite, secret: bytes, threshold: int = 1 << 24
) -> tuple[RecordSender, RecordReceiver]:
    """A sender and a receiver on the same traffic secret."""
    schedule = KeySchedule(SUITES[suite])
    return RecordSender(schedule, secret, threshold), RecordReceiver(schedule, secret)


# --------------------------------------------------------------------------- seal / open


@pytest.mark.parametrize("suite", list(CipherSuite), ids=SUITE_IDS)
def test_seal_is_the_spec_computation(suite: CipherSuite) -> None:
    """nonce = iv XOR (0^4 || seq), aad = header || seq: byte-equal to an independent AES-GCM."""
    secret = os.urandom(SPEC_SUITES[suite][1].digest_size)
    sender, _ = pair_of(suite, secret)
    assert (sender.epoch, sender.seq, sender.secret) == (0, 0, secret)
    contents = [b"", b"a", os.urandom(1000), os.urandom(65536)]
    for seq, content in enumerate(contents):
        frame = sender.seal(ContentType.APPLICATION_DATA, content)
        assert frame == spec_seal(suite, secret, seq, 0x17, content)
        assert spec_open(suite, secret, frame) == (seq, 0x17, content)
        assert sender.seq == seq + 1
    frame = sender.seal(ContentType.KEY_UPDATE, b"\x01")
    assert frame == spec_seal(suite, secret, len(contents), 0x18, b"\x01")


def test_nonce_uses_the_low_eight_bytes_only() -> None:
    """A large seq changes only the low 8 bytes of the nonce: sealed at seq 2^40 it still matches."""
    suite = CipherSuite.AES_128_GCM_SHA256
    secret = bytes(range(32))
    sender, receiver = pair_of(suite, secret, threshold=1 << 48)
    sender.seq = receiver.seq = 1 << 40  # jump ahead instead of sealing 2^40 records
    frame = sender.seal(ContentType.APPLICATION_DATA, b"far")
    assert frame == spec_seal(suite, secret, 1 << 40, 0x17, b"far")
    assert receiver.open(frame[8:]) == (ContentType.APPLICATION_DATA, b"far")


@pytest.mark.parametrize("suite", list(CipherSuite), ids=SUITE_IDS)
def test_open_reads_independently_sealed_records(suite: CipherSuite) -> None:
    """RecordReceiver opens what the spec computation seals, every content type, seq by seq."""
    secret = os.urandom(SPEC_SUITES[suite][1].digest_size)
    _, receiver = pair_of(suite, secret)
    records = [
        (0x17, b"data"),
        (0x17, b""),
        (0x15, b"\x00\x00"),
        (0x18, b"\x00"),
    ]
    for seq, (content_type, content) in enumerate(records):
        frame = spec_seal(suite, secret, seq, content_type, content)
        assert receiver.open(frame[8:]) == (ContentType(content_type), content)
        assert receiver.seq == seq + 1
    assert receiver.epoch == 0


# --------------------------------------------------------------------------- key update


@pytest.mark.parametrize("suite", list(CipherSuite), ids=SUITE_IDS)
def test_update_follows_traffic_upd_and_resets_seq(suite: CipherSuite) -> None:
    """update(): secret -> Expand-Label(secret, "traffic upd"), new key and iv, seq back to 0."""
    secret = os.urandom(SPEC_SUITES[suite][1].digest_size)
    sender, receiver = pair_of(suite, secret)
    expected = secret
    for epoch in range(4):
        for seq in range(epoch + 1):  # a different number of records in each epoch
            content = b"e%d s%d" % (epoch, seq)
            frame = sender.seal(ContentType.APPLICATION_DATA, content)
            assert frame == spec_seal(suite, expected, seq, 0x17, content)
            assert receiver.open(frame[8:]) == (ContentType.APPLICATION_DATA, content)
        old, expected = expected, spec_next(suite, expected)
        assert expected != old
        sender.update()
        assert (sender.epoch, sender.seq, sender.secret) == (epoch + 1, 0, expected)
        # The old key cannot open a record sealed under the new one.
        probe = spec_seal(suite, expected, 0, 0x17, b"probe")
        stale = RecordReceiver(KeySchedule(SUITES[suite]), old)
        with pytest.raises(RemoteProtocolError) as info:
            stale.open(probe[8:])
        assert info.value.alert is AlertCode.BAD_RECORD_MAC
        receiver.update()
        assert (receiver.epoch, receiver.seq, receiver.secret) == (epoch + 1, 0, expected)


@pytest.mark.parametrize("name", handshake_vector_names())
def test_records_of_the_vectors(name: str, vectors_dir: Any) -> None:
    """Each vector's records reseal byte for byte and open, across its key_update (§5, §6)."""
    v = load_vector(name)
    suite = CipherSuite(int(v["cipher_suite"], 16))
    for side in ("client", "server"):
        secret = bytes.fromhex(v["epochs"][side][0]["secret"])
        for epoch in v["epochs"][side]:
            assert epoch["secret"] == secret.hex()
            key, iv = spec_keys(suite, secret)
            assert (key.hex(), iv.hex()) == (epoch["key"], epoch["iv"])
            secret = spec_next(suite, secret)
    senders = {
        "C->S": pair_of(suite, bytes.fromhex(v["c_ap_0"])),
        "S->C": pair_of(suite, bytes.fromhex(v["s_ap_0"])),
    }
    assert v["records"], "a vector without records checks nothing here"
    for rec in v["records"]:
        sender, receiver = senders[rec["dir"]]
        content_type = ContentType(int(rec["content_type"], 16))
        content = bytes.fromhex(rec["content"])
        assert (sender.epoch, sender.seq) == (rec["epoch"], rec["seq"])
        frame = sender.seal(content_type, content)
        assert frame.hex() == rec["frame"]
        assert receiver.open(frame[8:]) == (content_type, content)
        if content_type is ContentType.KEY_UPDATE:
            sender.update()
            receiver.update()


# --------------------------------------------------------------------------- threshold on one sender


def test_seal_refuses_to_pass_the_threshold() -> None:
    """With threshold 4, seq 0..3 seal; a fifth record is refused before its nonce is used."""
    sender, receiver = pair_of(CipherSuite.AES_128_GCM_SHA256, bytes(32), threshold=4)
    flags = []
    for i in range(4):
        flags.append(sender.needs_update)
        receiver.open(sender.seal(ContentType.APPLICATION_DATA, bytes([i]))[8:])
    assert flags == [False, False, False, True]  # only one record left at seq 3
    assert sender.needs_update
    with pytest.raises(LocalProtocolError) as refused:
        sender.seal(ContentType.APPLICATION_DATA, b"one too many")
    assert refused.value.alert is AlertCode.INTERNAL_ERROR
    assert refused.value.reason == "record sequence exhausted without a key update"
    assert sender.seq == 4  # nothing was sealed
    sender.update()
    receiver.update()
    assert not sender.needs_update
    assert receiver.open(sender.seal(ContentType.APPLICATION_DATA, b"ok")[8:])[1] == b"ok"


# --------------------------------------------------------------------------- the smallest record


def test_the_smallest_record_is_an_empty_content_and_its_type() -> None:
    """25 bytes (seq, one encrypted type byte, tag) is a record; 24 is not (§6)."""
    sender, receiver = pair_of(CipherSuite.AES_128_GCM_SHA256, bytes(32))
    first = sender.seal(ContentType.APPLICATION_DATA, b"first")[8:]
    payload = sender.seal(ContentType.APPLICATION_DATA, b"")[8:]
    assert len(payload) == MIN_RECORD_PAYLOAD == 25
    log = FieldLog()
    assert read_record(Reader(payload, "RECORD", log), len(payload)) == 1
    assert [(f.name, len(f.data)) for f in log.spans] == [
        ("seq", 8),
        ("ciphertext", 1),
        ("tag", 16),
    ]
    assert record_seq(payload) == 1
    assert record_seq(memoryview(payload)) == 1
    assert record_seq(payload[:-1]) is None
    with pytest.raises(RemoteProtocolError, match="RECORD payload of 24 bytes is under 25"):
        read_record(Reader(payload[:-1], "RECORD"), len(payload) - 1)
    receiver.open(first)
    assert receiver.open(payload) == (ContentType.APPLICATION_DATA, b"")


# --------------------------------------------------------------------------- threshold on connections


def drain(conn: Connection) -> list[Event]:
    """Every event a connection has now (a ProtocolError fails the test)."""
    events: list[Event] = []
    while (ev := conn.next_event()) is not None:
        events.append(ev)
    return events


def pump(client: ClientConnection, server: ServerConnection, log: dict[str, list[Event]]) -> None:
    """Move bytes both ways until both sides are quiet, logging each side's events."""
    log["client"] += drain(client)
    log["server"] += drain(server)
    while True:
        c_out, s_out = client.data_to_send(), server.data_to_send()
        if not c_out and not s_out:
            return
        server.receive_data(c_out)
        client.receive_data(s_out)
        log["server"] += drain(server)
        log["client"] += drain(client)


def threshold_pair(
    kex: Kex, client_threshold: int, server_threshold: int
) -> tuple[ClientConnection, ServerConnection, dict[str, list[Event]]]:
    """A traced psk or anonymous-dhe pair (no long-term keys needed) with small thresholds."""
    psk = os.urandom(32)
    client = ClientConnection(
        ClientConfig(
            kex=kex,
            cipher_suite=CipherSuite.AES_128_GCM_SHA256,
            group=Group.X25519,
            psk_identity="rekey" if kex is Kex.PSK else "",
            psk=psk if kex is Kex.PSK else b"",
            allow_anonymous=True,
            key_update_threshold=client_threshold,
            trace=True,
        )
    )
    server = ServerConnection(
        ServerConfig(
            kex_methods=frozenset({Kex.DHE, Kex.PSK}),
            psk_lookup={"rekey": psk}.get,
            key_update_threshold=server_threshold,
            trace=True,
        )
    )
    log: dict[str, list[Event]] = {"client": [], "server": []}
    client.start()
    pump(client, server, log)
    assert any(isinstance(e, HandshakeComplete) for e in log["client"])
    assert any(isinstance(e, HandshakeComplete) for e in log["server"])
    return client, server, log


def traced_records(events: list[Event], direction: str) -> list[FrameTraced]:
    """Traced RECORD frames (those with an epoch) in one direction."""
    return [
        e
        for e in events
        if isinstance(e, FrameTraced) and e.direction == direction and e.epoch is not None
    ]


def check_key_usage(sent: list[FrameTraced], received: list[FrameTraced], threshold: int) -> int:
    """No key seals more than ``threshold`` records; the peer opened each with the same key.

    Returns how many key updates the sender made.
    """
    epochs = [t.epoch for t in sent if t.epoch is not None]
    assert len(epochs) == len(sent)
    per_epoch = Counter(epochs)
    assert max(per_epoch.values()) <= threshold
    assert epochs == sorted(epochs)
    assert sorted(per_epoch) == list(range(len(per_epoch)))  # no epoch skipped
    for t in sent:  # seq restarts at 0 in each epoch and counts up
        assert t.seq == [u for u in sent if u.epoch == t.epoch].index(t)
    updates = [t for t in sent if t.content_type is ContentType.KEY_UPDATE]
    # Each key_update is the last record of its epoch; the epoch after the last may be empty.
    assert [t.epoch for t in updates] == list(range(len(updates)))
    for t in updates:
        assert t is [u for u in sent if u.epoch == t.epoch][-1]
    assert len(per_epoch) in (len(updates), len(updates) + 1)
    view = [(t.frame, t.epoch, t.seq, t.content_type, t.content) for t in sent]
    assert view == [(t.frame, t.epoch, t.seq, t.content_type, t.content) for t in received]
    return len(updates)


@pytest.mark.parametrize("kex", [Kex.PSK, Kex.DHE], ids=["psk", "dhe"])
def test_automatic_key_update_before_threshold(kex: Kex) -> None:
    """threshold=4: keys roll over on their own, the peer follows, and all data arrives intact."""
    client, server, log = threshold_pair(kex, 4, 5)
    c_msgs = [b"c%03d" % i + os.urandom(i) for i in range(40)]
    s_msgs = [b"s%03d" % i + os.urandom(i) for i in range(40)]
    for i in range(40):
        client.send_data(c_msgs[i])
        if i % 3 == 0:
            server.send_data(s_msgs[i // 3])
        if i % 7 == 0:
            pump(client, server, log)
    for msg in s_msgs[14:]:
        server.send_data(msg)
    server.send_data(os.urandom(3 * 65536 + 5))  # one call that crosses a key update
    client.send_key_update(request_update=True)  # an explicit update mixed in
    client.send_data(b"last")
    pump(client, server, log)

    got_s = [e.data for e in log["server"] if isinstance(e, DataReceived)]
    got_c = [e.data for e in log["client"] if isinstance(e, DataReceived)]
    assert got_s == [*c_msgs, b"last"]
    assert got_c[: len(s_msgs)] == s_msgs
    assert len(b"".join(got_c[len(s_msgs) :])) == 3 * 65536 + 5

    c_updates = check_key_usage(
        traced_records(log["client"], "sent"), traced_records(log["server"], "received"), 4
    )
    s_updates = check_key_usage(
        traced_records(log["server"], "sent"), traced_records(log["client"], "received"), 5
    )
    assert c_updates >= 10 and s_updates >= 10
    # The peer followed each update: one KeyUpdateReceived per update, epochs 1, 2, 3, ...
    s_kur = [e for e in log["server"] if isinstance(e, KeyUpdateReceived)]
    c_kur = [e for e in log["client"] if isinstance(e, KeyUpdateReceived)]
    assert [e.receive_epoch for e in s_kur] == list(range(1, c_updates + 1))
    assert [e.receive_epoch for e in c_kur] == list(range(1, s_updates + 1))
    assert [e.request_update for e in s_kur].count(True) == 1
    assert not any(e.request_update for e in c_kur)

    client.close()
    pump(client, server, log)
    assert log["client"][-1] == ConnectionClosed(clean=True)
    assert log["server"][-1] == ConnectionClosed(clean=True)
    assert client.state is State.CLOSED and server.state is State.CLOSED
    # The close_notify records obey the threshold too.
    check_key_usage(
        traced_records(log["client"], "sent"), traced_records(log["server"], "received"), 4
    )
    check_key_usage(
        traced_records(log["server"], "sent"), traced_records(log["client"], "received"), 5
    )


def test_threshold_two_updates_after_every_record() -> None:
    """The smallest threshold (2): each data record is followed by a key_update."""
    client, server, log = threshold_pair(Kex.PSK, 2, 2)
    for i in range(6):
        client.send_data(bytes([i]))
    pump(client, server, log)
    sent = traced_records(log["client"], "sent")
    assert [(t.epoch, t.seq, t.content_type) for t in sent] == [
        (0, 0, ContentType.APPLICATION_DATA),
        (0, 1, ContentType.KEY_UPDATE),
        (1, 0, ContentType.APPLICATION_DATA),
        (1, 1, ContentType.KEY_UPDATE),
        (2, 0, ContentType.APPLICATION_DATA),
        (2, 1, ContentType.KEY_UPDATE),
        (3, 0, ContentType.APPLICATION_DATA),
        (3, 1, ContentType.KEY_UPDATE),
        (4, 0, ContentType.APPLICATION_DATA),
        (4, 1, ContentType.KEY_UPDATE),
        (5, 0, ContentType.APPLICATION_DATA),
    ]
    assert [e.data for e in log["server"] if isinstance(e, DataReceived)] == [
        bytes([i]) for i in range(6)
    ]


@pytest.mark.parametrize("threshold", [1, 0])
def test_threshold_under_two_is_rejected(threshold: int) -> None:
    """A threshold under 2 leaves no room for the key_update itself: a configuration error."""
    with pytest.raises(ValueError, match="key_update_threshold"):
        ClientConnection(ClientConfig(allow_anonymous=True, key_update_threshold=threshold))
    with pytest.raises(ValueError, match="key_update_threshold"):
        ServerConnection(
            ServerConfig(kex_methods=frozenset({Kex.DHE}), key_update_threshold=threshold)
        )


# --------------------------------------------------------------------------- what open() refuses


def test_open_diagnoses_before_decrypting() -> None:
    """§6: short payload, replay, gap, bad tag and unknown inner type each get their alert."""
    suite = CipherSuite.AES_128_GCM_SHA256
    secret = bytes(range(32))
    _, receiver = pair_of(suite, secret)
    rec0 = spec_seal(suite, secret, 0, 0x17, b"zero")[8:]
    rec1 = spec_seal(suite, secret, 1, 0x17, b"one")[8:]
    rec2 = spec_seal(suite, secret, 2, 0x17, b"two")[8:]

    def refused(payload: bytes) -> RemoteProtocolError:
        with pytest.raises(RemoteProtocolError) as info:
            receiver.open(payload)
        return info.value

    err = refused(rec0[:24])
    assert err.alert is AlertCode.DECODE_ERROR and "under 25" in err.reason
    err = refused(rec1)
    assert err.alert is AlertCode.UNEXPECTED_MESSAGE and "lost or dropped" in err.reason
    tampered = rec0[:-1] + bytes([rec0[-1] ^ 1])
    assert refused(tampered).alert is AlertCode.BAD_RECORD_MAC
    assert receiver.seq == 0  # nothing above moved the expected seq
    assert receiver.open(rec0) == (ContentType.APPLICATION_DATA, b"zero")
    err = refused(rec0)
    assert err.alert is AlertCode.UNEXPECTED_MESSAGE and "replayed record" in err.reason
    assert receiver.open(rec1)[1] == b"one"
    assert receiver.open(rec2)[1] == b"two"
    odd = spec_seal(suite, secret, 3, 0x42, b"?")[8:]
    err = refused(odd)
    assert err.alert is AlertCode.UNEXPECTED_MESSAGE and "0x42" in err.reason


@pytest.mark.parametrize(
    ("content", "alert"),
    [
        (b"", AlertCode.DECODE_ERROR),
        (b"\x00\x00", AlertCode.DECODE_ERROR),
        (b"\x02", AlertCode.ILLEGAL_PARAMETER),
    ],
    ids=["empty", "two-bytes", "value-2"],
)
def test_malformed_key_update_on_a_connection(content: bytes, alert: AlertCode) -> None:
    """§6: a key_update not exactly one byte is decode_error; a value over 1 illegal_parameter."""
    _, server, log = threshold_pair(Kex.PSK, 1 << 24, 1 << 24)
    (hc,) = [e for e in log["client"] if isinstance(e, HandshakeComplete)]
    # Seal as the client would (its first record: epoch 0, seq 0) but with a bad body.
    forger = RecordSender(KeySchedule(SUITES[hc.cipher_suite]), hc.secrets.c_ap_0)
    server.receive_data(forger.seal(ContentType.KEY_UPDATE, content))
    with pytest.raises(RemoteProtocolError) as info:
        drain(server)
    assert info.value.alert is alert
    assert server.state is State.ERROR
    # The alert goes out as a record under the server's key (its handshake is complete, §7).
    reader = RecordReceiver(KeySchedule(SUITES[hc.cipher_suite]), hc.secrets.s_ap_0)
    out = server.data_to_send()
    assert out[3] == 0x17
    content_type, body = reader.open(out[8:])
    assert content_type is ContentType.ALERT and body[0] == alert


# --------------------------------------------------------------------------- passive decryption


def test_key_log_and_capture_decrypt_every_record() -> None:
    """§9: the key log lines plus the capture suffice to read every record, across updates."""
    client, _, log = threshold_pair(Kex.PSK, 3, 1 << 24)
    (hc,) = [e for e in log["client"] if isinstance(e, HandshakeComplete)]
    wire = bytearray()
    for i in range(5):  # threshold 3: several automatic key updates
        client.send_data(b"secret %d" % i)
        wire += client.data_to_send()
    noise = "# a comment\n\nCLIENT_RANDOM too few\nLABEL zz 00\nX 00 not-hex\n"
    table = parse_keylog(noise + hc.keylog)
    assert list(table) == [hc.client_random]
    secret = table[hc.client_random]["CLIENT_TRAFFIC_SECRET_0"]
    assert table[hc.client_random]["SERVER_TRAFFIC_SECRET_0"] == hc.secrets.s_ap_0
    observer = RecordReceiver(KeySchedule(SUITES[hc.cipher_suite]), secret)
    decoder = FrameDecoder()
    decoder.feed(bytes(wire))
    seen = []
    while (frame := decoder.next_frame()) is not None:
        content_type, content = observer.open(frame.payload)
        if content_type is ContentType.KEY_UPDATE:
            observer.update()
        else:
            seen.append(content)
    assert seen == [b"secret %d" % i for i in range(5)]
    assert observer.epoch == 2


def test_key_log_comment_lines_are_ignored() -> None:
    """§9: a line starting with '#' is a comment, even when the rest would parse as a secret."""
    cr, c_secret, s_secret = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
    real = keylog_lines(cr, c_secret, s_secret)
    commented = f"#CLIENT_TRAFFIC_SECRET_0 {cr.hex()} {'ff' * 32}\n# {'aa' * 32} {'bb' * 32}\n"
    assert parse_keylog(commented) == {}
    assert parse_keylog(real + commented) == {
        cr: {"CLIENT_TRAFFIC_SECRET_0": c_secret, "SERVER_TRAFFIC_SECRET_0": s_secret}
    }


def test_record_refusal_reasons_word_for_word() -> None:
    """The one line a user reads for each refused record (§6), exactly: seq, epoch and sizes."""
    sender, receiver = pair_of(CipherSuite.AES_128_GCM_SHA256, bytes(32))
    first = sender.seal(ContentType.APPLICATION_DATA, b"a")[8:]
    second = sender.seal(ContentType.APPLICATION_DATA, b"b")[8:]

    def reason(payload: bytes) -> tuple[AlertCode, str]:
        with pytest.raises(RemoteProtocolError) as info:
            receiver.open(payload)
        return info.value.alert, info.value.reason

    assert reason(first[:24]) == (
        AlertCode.DECODE_ERROR,
        "RECORD payload of 24 bytes is under 25",
    )
    assert reason(second) == (
        AlertCode.UNEXPECTED_MESSAGE,
        "record lost or dropped: seq 1, expected 0 (epoch 0)",
    )
    assert receiver.open(first) == (ContentType.APPLICATION_DATA, b"a")
    assert reason(first) == (
        AlertCode.UNEXPECTED_MESSAGE,
        "replayed record: seq 0, expected 1 (epoch 0)",
    )
    assert reason(second[:-1] + bytes([second[-1] ^ 1])) == (
        AlertCode.BAD_RECORD_MAC,
        "record seq 1 fails authentication",
    )
