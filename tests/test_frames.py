"""Frames and messages (docs/protocol.md §1, §3, §6): golden bytes, one-byte-at-a-time decoding,
bounded memory, and whole handshakes delivered byte by byte."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import handshake_vector_names, load_vector
from helpers import drain, make_pair
from hypothesis import given
from hypothesis import strategies as st

from protocol import (
    AlertCode,
    CipherSuite,
    ClientConnection,
    FrameDecoder,
    FrameType,
    Group,
    HandshakeComplete,
    Kex,
    ProtocolError,
    RemoteProtocolError,
    ServerConnection,
    State,
    encode_frame,
)
from protocol.constants import SUITES, ContentType
from protocol.frames import Frame, check_expected, check_header
from protocol.keyschedule import KeySchedule
from protocol.messages import (
    Alert,
    ClientHello,
    Finished,
    KeyTransport,
    ServerHello,
    ServerSignature,
)
from protocol.records import RecordReceiver, RecordSender

R1 = bytes(range(32))
R1_HEX = R1.hex()
R2 = bytes(range(0x20, 0x40))
R2_HEX = R2.hex()

Message = ClientHello | ServerHello | KeyTransport | ServerSignature | Finished | Alert


def h(*fields: str) -> str:
    """Hex fields of a frame, one argument per field, joined."""
    return "".join(fields)


# Each golden frame is written field by field from §1 and §3, not produced by the code under test.
# fmt: off
GOLDEN: list[Any] = [
    pytest.param(
        ClientHello(R1, Kex.PSK, 0x1301, 0x0000, b"", b"alice"),
        h("4b58", "01", "01", "0000002d",  # KX, v1, CLIENT_HELLO, length 45
          R1_HEX,  # random[32]
          "03", "1301", "0000",  # kex psk, AES-128-GCM/SHA-256, no group
          "0000",  # key_share<0..65535>: empty
          "05", "616c696365"),  # psk_identity<0..255>: "alice"
        id="client-hello-psk",
    ),
    pytest.param(
        ClientHello(R1, Kex.DHE, 0x1302, 0x001D, b"\x09\x08\x07\x06", b""),
        h("4b58", "01", "01", "0000002c",  # length 44
          R1_HEX,
          "02", "1302", "001d",  # dhe, AES-256-GCM/SHA-384, x25519
          "0004", "09080706",  # key_share: decode checks structure; lengths are §3's rules
          "00"),  # psk_identity: empty
        id="client-hello-dhe",
    ),
    pytest.param(
        ClientHello(R1, Kex.RSA, 0x1301, 0x0000),
        h("4b58", "01", "01", "00000028", R1_HEX, "01", "1301", "0000", "0000", "00"),
        id="client-hello-rsa",
    ),
    pytest.param(
        ServerHello(R2, Kex.DHE, 0x1302, 0x0017, b"\x04\x01\x02", b"\x30\x00"),
        h("4b58", "01", "02", "0000002e",  # SERVER_HELLO, length 46
          R2_HEX,
          "02", "1302", "0017",  # echoed kex, suite, group (secp256r1)
          "0003", "040102",  # key_share<0..65535>
          "0002", "3000"),  # server_key<0..65535>
        id="server-hello-dhe",
    ),
    pytest.param(
        ServerHello(R2, Kex.PSK, 0x1301, 0x0000),
        h("4b58", "01", "02", "00000029", R2_HEX, "03", "1301", "0000", "0000", "0000"),
        id="server-hello-psk",
    ),
    pytest.param(
        KeyTransport(b"\xde\xad\xbe\xef"),
        h("4b58", "01", "03", "00000006", "0004", "deadbeef"),
        id="key-transport",
    ),
    pytest.param(
        ServerSignature(0x0807, b"\x01\x02\x03"),
        h("4b58", "01", "04", "00000007", "0807", "0003", "010203"),
        id="server-signature",
    ),
    pytest.param(Finished(b"\x5a" * 32), h("4b58", "01", "05", "00000020", "5a" * 32),
                 id="finished-sha256"),
    pytest.param(Finished(b"\xa5" * 48), h("4b58", "01", "05", "00000030", "a5" * 48),
                 id="finished-sha384"),
    pytest.param(Alert(50, "bad magic"),
                 h("4b58", "01", "15", "0000000b", "32", "09", "626164206d61676963"),
                 id="alert-decode-error"),
    pytest.param(Alert(0), h("4b58", "01", "15", "00000002", "00", "00"),
                 id="alert-close-notify"),
    pytest.param(Alert(40, "\u00e9"), h("4b58", "01", "15", "00000004", "28", "02", "c3a9"),
                 id="alert-utf8"),
]
# fmt: on


def _decode(frame_type: FrameType, payload: bytes) -> Message:
    """The message class of a frame type, decoding ``payload``."""
    if frame_type is FrameType.FINISHED:
        return Finished.decode(payload, len(payload))
    cls = {
        FrameType.CLIENT_HELLO: ClientHello,
        FrameType.SERVER_HELLO: ServerHello,
        FrameType.KEY_TRANSPORT: KeyTransport,
        FrameType.SERVER_SIGNATURE: ServerSignature,
        FrameType.ALERT: Alert,
    }[frame_type]
    return cls.decode(payload)  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(("msg", "golden_hex"), GOLDEN)
def test_golden_bytes(msg: Message, golden_hex: str) -> None:
    """encode gives the golden frame byte for byte, and decode gives the message back."""
    golden = bytes.fromhex(golden_hex)
    assert encode_frame(msg.frame_type, msg.encode()) == golden
    dec = FrameDecoder()
    dec.feed(golden)
    frame = dec.next_frame()
    assert frame == Frame(msg.frame_type, golden[8:])
    assert frame.encode() == golden and frame.header == golden[:8]
    assert _decode(frame.type, frame.payload) == msg


def test_alert_reason_is_cut_to_255_bytes_of_utf8() -> None:
    """An ALERT reason longer than 255 bytes is cut on a character boundary."""
    payload = Alert(10, "\u00e9" * 200).encode()
    assert payload[:2] == b"\x0a\xfe"  # 127 two-byte characters, not 255 bytes mid-character
    assert Alert.decode(payload) == Alert(10, "\u00e9" * 127)


def test_check_expected_without_a_state_allows_every_type() -> None:
    """None (a dissector, no state machine) allows any type; a set allows only its members."""
    for frame_type in FrameType:
        check_expected(frame_type, None)
        check_expected(frame_type, {frame_type})
    with pytest.raises(RemoteProtocolError, match="RECORD not expected now") as refused:
        check_expected(FrameType.RECORD, {FrameType.CLIENT_HELLO})
    assert refused.value.alert is AlertCode.UNEXPECTED_MESSAGE


def test_encode_frame_refuses_oversized_payloads() -> None:
    """A payload over the §1 limit is a local bug, refused before anything is sent."""
    encode_frame(FrameType.CLIENT_HELLO, b"\x00" * 16384)
    encode_frame(FrameType.RECORD, b"\x00" * 65561)
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(FrameType.CLIENT_HELLO, b"\x00" * 16385)
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(FrameType.ALERT, b"\x00" * 16385)
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(FrameType.RECORD, b"\x00" * 65562)


def _vector_frames(name: str) -> list[bytes]:
    return [bytes.fromhex(f["hex"]) for f in load_vector(name)["frames"]]


@pytest.mark.parametrize("name", handshake_vector_names())
def test_vector_frames_round_trip(name: str, vectors_dir: Path) -> None:
    """Every frame of the shared vectors decodes and re-encodes to the same bytes."""
    vec = load_vector(name)
    hash_len = vec["hash_len"]
    for raw in _vector_frames(name):
        (frame,) = _split(raw)
        assert frame.encode() == raw
        if frame.type is FrameType.RECORD:
            continue
        if frame.type is FrameType.FINISHED:
            msg: Message = Finished.decode(frame.payload, hash_len)
        else:
            msg = _decode(frame.type, frame.payload)
        assert encode_frame(frame.type, msg.encode()) == raw


@pytest.mark.parametrize("name", handshake_vector_names())
def test_vector_records_golden(name: str, vectors_dir: Path) -> None:
    """RECORD golden bytes: sealing each vector record's plaintext gives its frame (§6)."""
    vec = load_vector(name)
    schedule = KeySchedule(SUITES[CipherSuite(int(vec["cipher_suite"], 16))])
    secrets = {"C->S": vec["c_ap_0"], "S->C": vec["s_ap_0"]}
    senders = {d: RecordSender(schedule, bytes.fromhex(s)) for d, s in secrets.items()}
    receivers = {d: RecordReceiver(schedule, bytes.fromhex(s)) for d, s in secrets.items()}
    assert vec["records"]
    for rec in vec["records"]:
        sender, receiver = senders[rec["dir"]], receivers[rec["dir"]]
        content_type = ContentType(int(rec["content_type"], 16))
        content = bytes.fromhex(rec["content"])
        assert (sender.epoch, sender.seq) == (rec["epoch"], rec["seq"])
        frame = bytes.fromhex(rec["frame"])
        assert sender.seal(content_type, content) == frame
        assert receiver.open(frame[8:]) == (content_type, content)
        if content_type is ContentType.KEY_UPDATE:
            sender.update()
            receiver.update()


# ---------------------------------------------------------------------- decoder


def _split(data: bytes) -> list[Frame]:
    dec = FrameDecoder()
    dec.feed(data)
    out = []
    while (frame := dec.next_frame()) is not None:
        out.append(frame)
    assert dec.buffered == 0
    return out


def _stream() -> list[bytes]:
    """Golden frames and a whole vector handshake with its records: a varied frame stream."""
    golden = [bytes.fromhex(p.values[1]) for p in GOLDEN]
    return golden + _vector_frames("dhe-x25519-0x1302-rsa-pss.json")


def test_decoder_one_byte_at_a_time() -> None:
    """Fed one byte at a time, the decoder yields nothing until a frame's last byte, then exactly it."""
    wanted = _stream()
    dec = FrameDecoder()
    got: list[bytes] = []
    for raw in wanted:
        for i in range(len(raw)):
            dec.feed(raw[i : i + 1])
            frame = dec.next_frame()
            if i < len(raw) - 1:
                assert frame is None, (raw[:8].hex(), i)
                assert dec.buffered == i + 1
            else:
                assert frame is not None
                got.append(frame.encode())
                assert dec.next_frame() is None
                assert dec.buffered == 0
    assert got == wanted


def test_decoder_several_frames_in_one_chunk() -> None:
    """All frames in one chunk come out in order, then None."""
    wanted = _stream()
    dec = FrameDecoder()
    dec.feed(b"".join(wanted))
    got = []
    while (frame := dec.next_frame()) is not None:
        got.append(frame.encode())
    assert got == wanted
    assert dec.buffered == 0


@pytest.mark.parametrize("cut", [1, 7, 8, 9, 40])
def test_decoder_chunks_across_frame_boundaries(cut: int) -> None:
    """Chunks that cut frames anywhere give the same frames."""
    wanted = _stream()
    data = b"".join(wanted)
    dec = FrameDecoder()
    got = []
    for start in range(0, len(data), cut):
        dec.feed(data[start : start + cut])
        while (frame := dec.next_frame()) is not None:
            got.append(frame.encode())
    assert got == wanted


def test_decoder_buffers_only_what_arrived() -> None:
    """A header announcing the largest RECORD (65561 bytes) costs only the bytes that came."""
    dec = FrameDecoder()
    dec.feed(b"KX\x01\x17" + (65561).to_bytes(4, "big") + b"\x00" * 5)
    assert dec.next_frame() is None
    assert dec.buffered == 13
    dec.feed(b"\x00" * 100)
    assert dec.next_frame() is None
    assert dec.buffered == 113
    dec.feed(b"\x00" * (65561 - 105))
    frame = dec.next_frame()
    assert frame is not None and len(frame.payload) == 65561
    assert dec.buffered == 0


def test_decoder_refuses_an_oversized_header_without_its_payload() -> None:
    """One byte over the limit is refused from the header, never buffered up to its length."""
    dec = FrameDecoder()
    dec.feed(b"KX\x01\x17" + (65562).to_bytes(4, "big"))
    with pytest.raises(ProtocolError) as info:
        dec.next_frame()
    assert info.value.alert.name == "RECORD_OVERFLOW"
    assert dec.buffered == 8


def test_decoder_eof() -> None:
    """EOF on a frame boundary is silence; EOF inside a frame is decode_error."""
    dec = FrameDecoder()
    dec.feed(bytes.fromhex(GOLDEN[-1].values[1]))
    dec.feed_eof()
    assert dec.next_frame() is not None
    assert dec.next_frame() is None
    dec = FrameDecoder()
    dec.feed(b"KX\x01")
    dec.feed_eof()
    with pytest.raises(ProtocolError, match="inside a frame"):
        dec.next_frame()


# ---------------------------------------------------------------------- byte-by-byte handshakes


def _bytewise(
    client: ClientConnection, server: ServerConnection
) -> tuple[HandshakeComplete, HandshakeComplete]:
    """Deliver every byte of the handshake on its own; no side may act before a frame ends."""
    done: dict[str, HandshakeComplete] = {}
    queued = {"client": client.data_to_send(), "server": b""}
    peers = (("client", client, "server", server), ("server", server, "client", client))
    for _ in range(10):
        if not any(queued.values()):
            break
        for src_name, _src, dst_name, dst in peers:
            data, queued[src_name] = queued[src_name], b""
            ends, pos = set(), 0
            for frame in _split(data):
                pos += len(frame.encode())
                ends.add(pos)
            for i in range(len(data)):
                dst.receive_data(data[i : i + 1])
                got = drain(dst)
                assert got.error is None, got.error
                out = dst.data_to_send()
                queued[dst_name] += out
                if i + 1 not in ends:  # inside a frame nothing happens: no event, no reply
                    assert got.events == [] and out == b"", (dst_name, i)
                for ev in got.events:
                    if isinstance(ev, HandshakeComplete):
                        done[dst_name] = ev
    return done["client"], done["server"]


@pytest.mark.parametrize(
    ("kex", "group", "suite"),
    [
        (Kex.PSK, Group.X25519, CipherSuite.AES_128_GCM_SHA256),
        (Kex.DHE, Group.X25519, CipherSuite.AES_256_GCM_SHA384),
        (Kex.DHE, Group.SECP256R1, CipherSuite.AES_128_GCM_SHA256),
        (Kex.RSA, Group.X25519, CipherSuite.AES_128_GCM_SHA256),
    ],
    ids=["psk", "dhe-x25519", "dhe-p256", "rsa"],
)
def test_handshake_byte_by_byte(kex: Kex, group: Group, suite: CipherSuite) -> None:
    """A whole handshake fed one byte at a time completes, with the same keys on both sides."""
    client, server = make_pair(kex, suite, group)
    c_done, s_done = _bytewise(client, server)
    assert c_done.sas == s_done.sas
    assert c_done.secrets == s_done.secrets
    assert client.state is State.CONNECTED and server.state is State.CONNECTED
    # and a record, byte by byte too
    client.send_data(b"after the handshake")
    data = client.data_to_send()
    events = []
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
        got = drain(server)
        assert got.error is None
        events += got.events
        assert (events == []) is (i < len(data) - 1)
    assert [e.data for e in events] == [b"after the handshake"]  # type: ignore[attr-defined]


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    st.lists(st.booleans(), max_size=20),
)
def test_any_chunking_and_any_feed_drain_interleaving_gives_the_same_frames(
    payloads: list[bytes], cuts: list[int], drain_after: list[bool]
) -> None:
    """Frames come out whole and in order however the bytes are cut and however many
    feeds happen before a drain (a regression: several feeds used to glue frames)."""
    frames = [encode_frame(FrameType.ALERT, p[:200]) for p in payloads]
    stream = b"".join(frames)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    decoder = FrameDecoder()
    out: list[bytes] = []
    for i, chunk in enumerate(chunks):
        decoder.feed(chunk)
        if i < len(drain_after) and drain_after[i]:
            while (frame := decoder.next_frame()) is not None:
                out.append(frame.encode())
    while (frame := decoder.next_frame()) is not None:
        out.append(frame.encode())
    assert out == frames
    assert decoder.buffered == 0


def test_three_feeds_before_a_drain() -> None:
    """The reported case: feed a[:5], a[5:] + b[:3], b[3:], then drain twice."""
    a = encode_frame(FrameType.ALERT, b"\x00\x05hello")
    b = encode_frame(FrameType.ALERT, b"\x0a\x00")
    decoder = FrameDecoder()
    decoder.feed(a[:5])
    decoder.feed(a[5:] + b[:3])
    decoder.feed(b[3:])
    first, second = decoder.next_frame(), decoder.next_frame()
    assert first is not None and first.encode() == a
    assert second is not None and second.encode() == b
    assert decoder.next_frame() is None


# ---------------------------------------------------------------------- decoder contract
# What FrameDecoder's docstrings promise beyond "the right frames": it keeps no copy of a
# caller's mutable buffer, cuts frames out of the chunk without copying, holds no spent chunk,
# and checks each header (check_header) before its payload.

A = encode_frame(FrameType.ALERT, b"\x00\x05hello")
B = encode_frame(FrameType.ALERT, b"\x0a\x00")


@pytest.mark.parametrize("wrap", [bytearray, lambda b: memoryview(bytearray(b))])
def test_decoder_copies_a_buffer_the_caller_may_reuse(wrap: Any) -> None:
    """feed() keeps bytes, never a reference to the caller's bytearray (which gets reused)."""
    buf = wrap(A + B[:3])
    dec = FrameDecoder()
    dec.feed(buf)
    buf[:] = b"\xff" * len(buf)  # the caller reads the next chunk into the same buffer
    frame = dec.next_frame()
    assert frame is not None and frame.encode() == A
    again = wrap(B[3:])
    dec.feed(again)
    again[:] = b"\xff" * len(again)
    frame = dec.next_frame()
    assert frame is not None and frame.encode() == B
    assert dec.next_frame() is None and dec.buffered == 0


def test_decoder_cuts_frames_out_of_the_chunk_without_copying() -> None:
    """A frame inside one chunk is a view of that very chunk (zero copy), header included."""
    chunk = A + B
    dec = FrameDecoder()
    dec.feed(chunk)
    for want in (A, B):
        got = dec.next_view()
        assert got is not None
        frame_type, view = got
        assert frame_type is FrameType.ALERT and view.readonly
        assert view.obj is chunk and bytes(view) == want
    assert dec.next_view() is None


def test_decoder_holds_no_spent_chunk() -> None:
    """Once its last frame is taken, the decoder drops its reference to the chunk.

    sys.getrefcount (CPython) is the observable: an idle connection keeps no read buffer."""
    chunk = A + B
    idle = sys.getrefcount(chunk)
    dec = FrameDecoder()
    dec.feed(chunk)
    assert sys.getrefcount(chunk) == idle + 1  # kept by reference, not copied
    for _ in range(2):
        got = dec.next_view()
        assert got is not None
        got[1].release()
    assert sys.getrefcount(chunk) == idle
    assert dec.buffered == 0


def test_decoder_assembles_only_the_straddling_frame() -> None:
    """A frame across two chunks is assembled up to its own end; the next one is cut from the
    second chunk in place, and the assembled frame's view stays valid afterwards."""
    second = A[5:] + B
    dec = FrameDecoder()
    dec.feed(A[:5])
    dec.feed(second)
    first = dec.next_view()
    assert first is not None
    assert bytes(first[1]) == A and first[1].readonly
    assert dec.buffered == len(B)
    nxt = dec.next_view()
    assert nxt is not None and nxt[1].obj is second and bytes(nxt[1]) == B
    dec.feed(B[:4])
    dec.feed(B[4:])
    assert dec.next_frame() == Frame(FrameType.ALERT, B[8:])
    assert bytes(first[1]) == A  # never written again


@pytest.mark.parametrize("first_read", [3, 5, 9])
def test_decoder_carry_takes_no_byte_past_the_straddling_frame(first_read: int) -> None:
    """A short frame (B: 10 bytes) straddling two reads: the carry takes up to its end only,
    so the frame after it is still cut from the second chunk."""
    second = B[first_read:] + A
    dec = FrameDecoder()
    dec.feed(B[:first_read])
    dec.feed(second)
    got = dec.next_view()
    assert got is not None and bytes(got[1]) == B
    assert dec.buffered == len(A)
    nxt = dec.next_view()
    assert nxt is not None and nxt[1].obj is second and bytes(nxt[1]) == A


def test_next_frame_applies_the_expected_types() -> None:
    """§1 check 5 through next_frame (as through next_view), on a whole and a straddling frame."""
    for reads in ([A], [A[:4], A[4:]]):
        dec = FrameDecoder()
        for chunk in reads:
            dec.feed(chunk)
        with pytest.raises(ProtocolError) as info:
            dec.next_frame({FrameType.RECORD})
        assert (info.value.alert.name, info.value.reason) == (
            "UNEXPECTED_MESSAGE",
            "ALERT not expected now",
        )


def test_decoder_carry_is_emptied_by_the_frame_that_fills_it() -> None:
    """After a straddling frame, later frames come from the chunks again (nothing left over)."""
    dec = FrameDecoder()
    dec.feed(A[:3])
    dec.feed(A[3:])
    assert dec.next_frame() == Frame(FrameType.ALERT, A[8:])
    chunk = B + A
    dec.feed(chunk)
    got = dec.next_view()
    assert got is not None and got[1].obj is chunk


@pytest.mark.parametrize(
    "reads",
    [
        pytest.param([A[:3], A[3:5]], id="header-over-two-reads"),
        pytest.param([A[:5], A[5:10]], id="payload-over-two-reads"),
        pytest.param([A[:9], A[9:10], A[10:11]], id="three-reads"),
    ],
)
def test_decoder_eof_inside_a_frame_that_came_in_several_reads(reads: list[bytes]) -> None:
    """§1: end of stream inside a frame is decode_error on the carry path too."""
    dec = FrameDecoder()
    for i, chunk in enumerate(reads):
        dec.feed(chunk)
        if i:  # drain between reads as a connection does (the first read is left pending)
            assert dec.next_frame() is None
    dec.feed_eof()
    with pytest.raises(ProtocolError) as info:
        dec.next_frame()
    assert info.value.alert.name == "DECODE_ERROR"
    assert f"inside a frame ({sum(map(len, reads))} bytes)" in info.value.reason


def test_decoder_eof_after_a_straddling_frame_is_silence() -> None:
    """EOF right after a frame completed from two reads is a clean end, not an error."""
    dec = FrameDecoder()
    dec.feed(A[:5])
    dec.feed(A[5:])
    dec.feed_eof()
    assert dec.next_frame() == Frame(FrameType.ALERT, A[8:])
    assert dec.next_frame() is None


@pytest.mark.parametrize(
    ("header", "alert", "reason"),
    [
        pytest.param(b"KY\x09\xff" + b"\xff" * 4, "DECODE_ERROR", "bad magic 4b59", id="magic"),
        pytest.param(b"KX\x02\xff" + b"\xff" * 4, "PROTOCOL_VERSION", "version 2", id="version"),
        pytest.param(b"KX\x01\x99" + b"\xff" * 4, "UNEXPECTED_MESSAGE", "type 0x99", id="type"),
        pytest.param(
            b"KX\x01\x01" + (16385).to_bytes(4, "big"),
            "RECORD_OVERFLOW",
            "CLIENT_HELLO length 16385 exceeds 16384",
            id="length",
        ),
        pytest.param(
            b"KX\x01\x17" + (0).to_bytes(4, "big"),
            "UNEXPECTED_MESSAGE",
            "RECORD not expected now",
            id="expected",
        ),
    ],
)
def test_check_header_applies_the_checks_in_order(header: bytes, alert: str, reason: str) -> None:
    """§1 checks 1-5 on a bare header; each case also breaks every later check."""
    with pytest.raises(ProtocolError) as info:
        check_header(header, {FrameType.CLIENT_HELLO})
    assert info.value.alert.name == alert
    assert reason in info.value.reason


def test_check_header_returns_type_and_length() -> None:
    assert check_header(A[:8]) == (FrameType.ALERT, len(A) - 8)
    assert check_header(A[:8], {FrameType.ALERT}) == (FrameType.ALERT, 7)
    limit = (65561).to_bytes(4, "big")  # the largest RECORD is allowed, one more is not
    assert check_header(b"KX\x01\x17" + limit, None) == (FrameType.RECORD, 65561)
