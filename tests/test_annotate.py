"""explain.annotate on every vector frame and on garbage; explain.render's tables and summary line."""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

import pytest
from conftest import handshake_vector_names, load_vector
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from explain.annotate import annotate_frame, frame_title
from explain.annotator import Annotator
from explain.render import (
    format_hex,
    format_offset,
    render_frame,
    render_secrets,
    render_summary_line,
    summary_line,
)
from explain.rows import FIELDS, SECRET_OFFSET, UNDECODABLE, RecordInfo, Row
from explain.secrets import annotate_secrets, epoch_keys
from explain.words import describe_content, describe_server_key, preview
from protocol import (
    CipherSuite,
    ClientConfig,
    ClientConnection,
    FrameTraced,
    Group,
    HandshakeComplete,
    Kex,
    ServerConfig,
    ServerConnection,
    TrustVerdict,
)
from protocol.connection import Connection
from protocol.constants import ContentType, FrameType
from protocol.frames import encode_frame
from protocol.keyschedule import HandshakeSecrets
from protocol.messages import Alert

VECTORS = handshake_vector_names()

HEADER = ["magic", "ver", "type", "length"]
LAYOUT = {
    "CLIENT_HELLO": [
        *HEADER,
        "random",
        "kex",
        "cipher_suite",
        "group",
        "key_share.length",
        "key_share",
        "psk_identity.length",
        "psk_identity",
    ],
    "SERVER_HELLO": [
        *HEADER,
        "random",
        "kex",
        "cipher_suite",
        "group",
        "key_share.length",
        "key_share",
        "server_key.length",
        "server_key",
    ],
    "KEY_TRANSPORT": [*HEADER, "encrypted_secret.length", "encrypted_secret"],
    "SERVER_SIGNATURE": [*HEADER, "scheme", "signature.length", "signature"],
    "FINISHED": [*HEADER, "verify_data"],
    "ALERT": [*HEADER, "code", "reason.length", "reason"],
    "RECORD": [*HEADER, "seq", "ciphertext", "tag"],
}


def assert_tiles(frame: bytes, rows: list[Row]) -> None:
    """Every row's bytes are the frame's bytes at its offset, and together they cover it exactly."""
    pos = 0
    for row in rows:
        assert row.offset == pos, (row, pos)
        assert frame[pos : pos + len(row.data)] == row.data
        assert row.field in FIELDS
        assert isinstance(row.meaning, str) and row.meaning
        pos += len(row.data)
    assert pos == len(frame)


def field(rows: list[Row], name: str) -> Row:
    found = [r for r in rows if r.field == name]
    assert len(found) == 1, (name, rows)
    return found[0]


def record_info(record: dict[str, Any]) -> RecordInfo:
    return RecordInfo(
        epoch=record["epoch"],
        content_type=int(record["content_type"], 16),
        content=bytes.fromhex(record["content"]),
    )


# --------------------------------------------------------------------------- every vector frame


@pytest.mark.parametrize("name", VECTORS)
def test_every_vector_frame_tiles_with_the_spec_layout(name: str) -> None:
    vec = load_vector(name)
    records = {r["frame"]: r for r in vec["records"]}
    assert len(vec["frames"]) >= 5
    for entry in vec["frames"]:
        frame = bytes.fromhex(entry["hex"])
        info = record_info(records[entry["hex"]]) if entry["hex"] in records else None
        for hash_len in (vec["hash_len"], None):
            rows = annotate_frame(frame, hash_len=hash_len, record_info=info)
            assert_tiles(frame, rows)
            assert [r.field for r in rows] == LAYOUT[entry["name"]], entry["name"]
            assert UNDECODABLE not in {r.field for r in rows}
            assert field(rows, "type").meaning.startswith(f"{entry['name']} (0x")
            assert field(rows, "length").meaning == f"{len(frame) - 8} payload bytes"


@pytest.mark.parametrize("name", VECTORS)
def test_vector_field_values(name: str) -> None:
    vec = load_vector(name)
    inputs = vec["inputs"]
    frames = {(f["dir"], f["name"]): bytes.fromhex(f["hex"]) for f in vec["frames"]}
    ch = annotate_frame(frames[("C->S", "CLIENT_HELLO")])
    sh = annotate_frame(frames[("S->C", "SERVER_HELLO")])
    assert field(ch, "random").data.hex() == inputs["client_random"]
    assert field(sh, "random").data.hex() == inputs["server_random"]
    assert field(ch, "kex").meaning.startswith(f"{vec['kex']} ({vec['kex_code']})")
    suite = int(vec["cipher_suite"], 16)
    assert field(ch, "cipher_suite").data == suite.to_bytes(2, "big")
    assert vec["aead"].split("/")[0] in field(sh, "cipher_suite").meaning
    group = int(vec["group"], 16)
    assert field(sh, "group").data == group.to_bytes(2, "big")
    if vec["kex"] == "dhe":
        assert vec["group_name"] in field(ch, "group").meaning
        assert field(ch, "key_share").data.hex() == inputs["client_key_share"]
        assert field(sh, "key_share").data.hex() == inputs["server_key_share"]
        assert field(ch, "key_share").meaning.startswith("client's ephemeral")
        assert field(sh, "key_share").meaning.startswith("server's ephemeral")
    else:
        assert field(ch, "key_share").meaning.startswith("empty")
    if vec["kex"] == "psk":
        assert inputs["psk_identity_text"] in field(ch, "psk_identity").meaning
    server_key = field(sh, "server_key")
    spki = inputs.get("identity_key_spki") or inputs.get("rsa_key_spki") or ""
    assert server_key.data.hex() == spki
    if spki:
        assert hashlib.sha256(server_key.data).hexdigest() in server_key.meaning
    else:
        assert server_key.meaning.startswith("empty")
    verify = {
        f["dir"]: field(annotate_frame(bytes.fromhex(f["hex"])), "verify_data").data.hex()
        for f in vec["frames"]
        if f["name"] == "FINISHED"
    }
    assert verify == {"C->S": vec["client_verify_data"], "S->C": vec["server_verify_data"]}
    hash_name = "SHA-256" if vec["hash_len"] == 32 else "SHA-384"
    fin = annotate_frame(frames[("C->S", "FINISHED")], hash_len=vec["hash_len"])
    assert field(fin, "verify_data").meaning.startswith(f"HMAC-{hash_name}(finished_key")


def test_signature_and_key_transport_meanings() -> None:
    dhe = load_vector("dhe-x25519-0x1302-rsa-pss.json")
    ss = next(f for f in dhe["frames"] if f["name"] == "SERVER_SIGNATURE")
    rows = annotate_frame(bytes.fromhex(ss["hex"]))
    assert field(rows, "scheme").meaning == "0x0804 rsa_pss_rsae_sha256: RSA-PSS, SHA-256, salt 32"
    assert field(rows, "signature").meaning.startswith("rsa_pss_rsae_sha256 signature")
    sh = next(f for f in dhe["frames"] if f["name"] == "SERVER_HELLO")
    assert (
        "RSA-2048 public key"
        in field(annotate_frame(bytes.fromhex(sh["hex"])), "server_key").meaning
    )
    rsa_vec = load_vector("rsa-0x1301.json")
    kt = next(f for f in rsa_vec["frames"] if f["name"] == "KEY_TRANSPORT")
    rows = annotate_frame(bytes.fromhex(kt["hex"]))
    assert "RSA-OAEP(SHA-256) of the 32-byte premaster" in field(rows, "encrypted_secret").meaning
    assert "2048-bit modulus" in field(rows, "encrypted_secret").meaning


@pytest.mark.parametrize("name", VECTORS)
def test_vector_records_show_decrypted_content(name: str) -> None:
    vec = load_vector(name)
    assert vec["records"]
    for record in vec["records"]:
        frame = bytes.fromhex(record["frame"])
        rows = annotate_frame(frame, record_info=record_info(record))
        assert_tiles(frame, rows)
        assert field(rows, "seq").data == record["seq"].to_bytes(8, "big")
        assert f"sequence number {record['seq']} under key epoch {record['epoch']}" in (
            field(rows, "seq").meaning
        )
        assert len(field(rows, "tag").data) == 16
        assert len(field(rows, "ciphertext").data) == 1 + len(record["content"]) // 2
        meaning = field(rows, "ciphertext").meaning
        kind = record["content_type_name"]
        assert f"decrypted: {kind}" in meaning
        if kind == "application_data":
            assert bytes.fromhex(record["content"]).decode() in meaning
        assert not re.search(r"nonce [0-9a-f]{24}", field(rows, "seq").meaning)  # on request only
        title = frame_title(frame, "C → S", record_info(record))
        assert title == f"C → S  RECORD ({kind}), {len(frame)} bytes"


def test_record_keys_shown_only_with_show_secrets() -> None:
    vec = load_vector("dhe-x25519-0x1301-ed25519.json")
    record = vec["records"][0]
    keys = epoch_keys(0x1301, bytes.fromhex(vec["c_ap_0"]), 0)
    epoch = vec["epochs"]["client"][0]
    assert (keys.key.hex(), keys.iv.hex()) == (epoch["key"], epoch["iv"])
    info = RecordInfo(0, 0x17, bytes.fromhex(record["content"]), keys)
    frame = bytes.fromhex(record["frame"])
    hidden = annotate_frame(frame, record_info=info)
    assert epoch["key"] not in " ".join(r.meaning for r in hidden)
    shown = annotate_frame(frame, record_info=info, show_secrets=True)
    assert_tiles(frame, shown)
    assert f"nonce {epoch['iv']}" in field(shown, "seq").meaning  # seq 0: nonce = iv
    assert f"key {epoch['key']}" in field(shown, "ciphertext").meaning


def test_epoch_keys_follow_key_updates() -> None:
    vec = load_vector("dhe-x25519-0x1302-rsa-pss.json")
    for side, secret in (("client", vec["c_ap_0"]), ("server", vec["s_ap_0"])):
        for epoch in vec["epochs"][side]:
            keys = epoch_keys(0x1302, bytes.fromhex(secret), epoch["epoch"])
            assert keys.secret.hex() == epoch["secret"]
            assert (keys.key.hex(), keys.iv.hex()) == (epoch["key"], epoch["iv"])


def _complete_from_vector(vec: dict[str, Any]) -> HandshakeComplete:
    return HandshakeComplete(
        kex=Kex[vec["kex"].upper()],
        cipher_suite=CipherSuite(int(vec["cipher_suite"], 16)),
        group=Group(int(vec["group"], 16)),
        server_key=b"",
        server_key_sha256="",
        signature_scheme=None,
        psk_identity="",
        client_random=bytes.fromhex(vec["inputs"]["client_random"]),
        server_random=bytes.fromhex(vec["inputs"]["server_random"]),
        sas=bytes.fromhex(vec["sas"]["bytes"]),
        secrets=HandshakeSecrets(
            *(
                bytes.fromhex(vec[k])
                for k in ("shared_secret", "master", "c_ap_0", "s_ap_0", "c_finished", "s_finished")
            )
        ),
    )


@pytest.mark.parametrize("name", VECTORS)
def test_annotate_secrets_matches_vector(name: str) -> None:
    vec = load_vector(name)
    done = _complete_from_vector(vec)
    rows = annotate_secrets(done, shared_secret=bytes.fromhex(vec["shared_secret"]))
    values = {r.field: r.data.hex() for r in rows}
    assert all(r.offset == SECRET_OFFSET for r in rows)
    for key in ("shared_secret", "master", "c_ap_0", "s_ap_0", "c_finished", "s_finished"):
        assert values[key] == vec[key]
    assert values["c_ap_0.key"] == vec["epochs"]["client"][0]["key"]
    assert values["s_ap_0.iv"] == vec["epochs"]["server"][0]["iv"]
    later = {r.field: r.data.hex() for r in annotate_secrets(done, client_epoch=1, server_epoch=1)}
    assert "shared_secret" not in later
    assert later["c_ap_1"] == vec["epochs"]["client"][1]["secret"]
    assert later["c_ap_1.key"] == vec["epochs"]["client"][1]["key"]
    assert later["s_ap_1.iv"] == vec["epochs"]["server"][1]["iv"]


# --------------------------------------------------------------------------- garbage in


@pytest.mark.parametrize("name", VECTORS)
def test_every_truncation_and_extension_of_vector_frames(name: str) -> None:
    vec = load_vector(name)
    for entry in vec["frames"][:6]:
        frame = bytes.fromhex(entry["hex"])
        for cut in range(len(frame)):
            rows = annotate_frame(frame[:cut], hash_len=vec["hash_len"])
            assert_tiles(frame[:cut], rows)
            if cut > 8:
                assert rows[-1].field == UNDECODABLE
                assert "cut short" in rows[-1].meaning or "under 25" in rows[-1].meaning
        longer = frame + b"\x00\x01"
        rows = annotate_frame(longer, hash_len=vec["hash_len"])
        assert_tiles(longer, rows)
        assert rows[-1].field == UNDECODABLE
        assert rows[-1].meaning == "undecodable: 2 byte(s) beyond the declared length"


def test_truncated_frame_says_what_is_cut_short() -> None:
    frame = bytes.fromhex(load_vector("psk-0x1301.json")["frames"][0]["hex"])
    rows = annotate_frame(frame[:20])
    assert_tiles(frame[:20], rows)
    assert "only 12 present" in field(rows, "length").meaning
    assert rows[-1].meaning == (
        "undecodable: random cut short: needs 32 byte(s), 12 left (decode_error)"
    )


def test_trailing_bytes_inside_payload() -> None:
    payload = Alert(40, "no").encode() + b"\xaa\xbb"
    frame = encode_frame(FrameType.ALERT, payload)
    rows = annotate_frame(frame)
    assert_tiles(frame, rows)
    assert rows[-1] == Row(
        len(frame) - 2,
        UNDECODABLE,
        b"\xaa\xbb",
        "undecodable: 2 trailing byte(s) in the ALERT payload (decode_error)",
    )


def test_finished_with_wrong_hash_len() -> None:
    frame = encode_frame(FrameType.FINISHED, bytes(40))
    rows = annotate_frame(frame, hash_len=32)
    assert_tiles(frame, rows)
    assert [r.field for r in rows][-2:] == ["verify_data", UNDECODABLE]
    short = annotate_frame(encode_frame(FrameType.FINISHED, bytes(20)), hash_len=48)
    assert short[-1].meaning.startswith("undecodable: verify_data cut short: needs 48")
    assert field(
        annotate_frame(encode_frame(FrameType.FINISHED, bytes(48))), "verify_data"
    ).meaning.startswith("HMAC-SHA-384")
    assert field(
        annotate_frame(encode_frame(FrameType.FINISHED, bytes(7))), "verify_data"
    ).meaning.startswith("HMAC-Hash")


@pytest.mark.parametrize(
    ("frame", "fields", "last_meaning"),
    [
        (b"", [UNDECODABLE], "undecodable: empty, no frame header"),
        (
            b"K",
            [UNDECODABLE],
            "undecodable: magic cut short: needs 2 byte(s), 1 left (decode_error)",
        ),
        (b"GET / HTTP/1.1\r\n", ["magic", UNDECODABLE], "undecodable: not a KXP frame"),
        (b"KX\x02\x01\x00\x00\x00\x00", ["magic", "ver", UNDECODABLE], "unsupported version"),
        (
            b"KX\x01\x09\x00\x00\x00\x01z",
            ["magic", "ver", "type", UNDECODABLE],
            "unknown frame type",
        ),
        (b"KX\x01\x01\x00\x00", ["magic", "ver", "type", UNDECODABLE], "length cut short"),
        (b"KX", ["magic", UNDECODABLE], "undecodable: ver cut short: needs 1 byte(s), 0 left"),
        (b"KX\x01", ["magic", "ver", UNDECODABLE], "undecodable: type cut short"),
        (b"KX\x01\x05", ["magic", "ver", "type", UNDECODABLE], "undecodable: length cut short"),
    ],
)
def test_garbage_headers(frame: bytes, fields: list[str], last_meaning: str) -> None:
    rows = annotate_frame(frame)
    if frame:
        assert_tiles(frame, rows)
    assert [r.field for r in rows] == fields
    assert last_meaning in rows[-1].meaning


def test_header_meanings_for_bad_values() -> None:
    assert field(annotate_frame(b"XX\x01\x01"), "magic").meaning == 'bad magic, not "KX"'
    assert "unsupported (protocol_version)" in field(annotate_frame(b"KX\x07"), "ver").meaning
    assert "unknown frame type 0x09" in field(annotate_frame(b"KX\x01\x09"), "type").meaning
    huge = annotate_frame(b"KX\x01\x01\xff\xff\xff\xff")
    assert "over the 16384-byte limit (record_overflow)" in field(huge, "length").meaning
    rec = annotate_frame(b"KX\x01\x17\x00\x01\x00\x1a")
    assert "over the 65561-byte limit" in field(rec, "length").meaning


def test_odd_hello_values() -> None:
    payload = bytes(32) + b"\x09" + b"\x13\x05" + b"\x00\x99" + b"\x00\x03abc" + b"\x03\xff\xfe\xfd"
    frame = encode_frame(FrameType.CLIENT_HELLO, payload)
    rows = annotate_frame(frame)
    assert_tiles(frame, rows)
    assert field(rows, "kex").meaning == "unknown kex 9 (handshake_failure)"
    assert field(rows, "cipher_suite").meaning == "unknown cipher suite 0x1305 (handshake_failure)"
    assert field(rows, "group").meaning == "unknown group 0x0099 (handshake_failure)"
    assert field(rows, "key_share").meaning == "client's DH public share, 3 bytes"
    assert "not UTF-8" in field(rows, "psk_identity").meaning
    wrong_len = bytes(32) + b"\x02\x13\x01\x00\x1d\x00\x02ab\x00"
    rows = annotate_frame(encode_frame(FrameType.CLIENT_HELLO, wrong_len))
    assert "x25519 needs 32 (illegal_parameter)" in field(rows, "key_share").meaning
    assert field(rows, "group").meaning == "0x001d x25519"


def test_server_key_meanings() -> None:
    def sh(kex: int, server_key: bytes) -> str:
        payload = bytes(32) + bytes((kex,)) + b"\x13\x01\x00\x00\x00\x00"
        payload += len(server_key).to_bytes(2, "big") + server_key
        return field(
            annotate_frame(encode_frame(FrameType.SERVER_HELLO, payload)), "server_key"
        ).meaning

    assert sh(1, b"") == "empty: rsa needs the server's RSA key (illegal_parameter)"
    assert sh(3, b"") == "empty: no server identity (psk, or anonymous dhe)"
    assert sh(1, b"\x30\x00").startswith("server's RSA transport key: does not parse as DER SPKI")
    ec_der = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert "not RSA or Ed25519 (bad_certificate)" in sh(2, ec_der)
    ed_der = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert describe_server_key(ed_der).startswith("Ed25519 public key, DER SPKI; SHA-256 ")


def test_signature_scheme_unknown_and_alert_fields() -> None:
    rows = annotate_frame(encode_frame(FrameType.SERVER_SIGNATURE, b"\x09\x09\x00\x01z"))
    assert field(rows, "scheme").meaning == "unknown signature scheme 0x0909 (illegal_parameter)"
    assert field(rows, "signature").meaning.startswith("the signature by")
    alert = annotate_frame(encode_frame(FrameType.ALERT, Alert(42, "server key changed").encode()))
    assert field(alert, "code").meaning == "bad_certificate (42): fatal, the sender closes"
    assert field(alert, "reason").meaning == 'for humans: "server key changed"'
    close = annotate_frame(encode_frame(FrameType.ALERT, Alert(0).encode()))
    assert field(close, "code").meaning.startswith("close_notify (0): orderly close")
    assert field(close, "reason").meaning == "empty"
    odd = annotate_frame(encode_frame(FrameType.ALERT, b"\xc8\x02\xff\xfe"))
    assert field(odd, "code").meaning.startswith("unknown(200) (200)")
    assert field(odd, "reason").meaning == "not UTF-8 (decode_error)"


def test_short_record_payload() -> None:
    frame = encode_frame(FrameType.RECORD, bytes(24))
    rows = annotate_frame(frame)
    assert_tiles(frame, rows)
    assert rows[-1].meaning == "undecodable: RECORD payload of 24 bytes is under 25 (decode_error)"


def test_describe_content_and_preview() -> None:
    assert describe_content(0x18, b"\x02") == "key_update with bad content 02"
    assert describe_content(0x18, b"") == "key_update with bad content (empty)"
    assert describe_content(0x15, b"\x28") == "alert, malformed: 28"
    assert describe_content(0x15, Alert(10, "x").encode()) == 'alert unexpected_message (10) "x"'
    assert describe_content(0x99, b"x") == "unknown content type 0x99"
    assert describe_content(0x17, None) == "application_data"
    assert describe_content(None, None) == ""
    assert describe_content(None, b"hi") == 'content, 2 bytes: "hi"'
    assert describe_content(0x17, b"") == "application_data, 0 bytes: (empty)"
    assert preview(b"a" * 60) == '"' + "a" * 48 + '…"'
    assert preview(b"\x00\x01") == "0001"
    assert preview(bytes(30)) == "00" * 24 + "…"
    assert preview(b"line\n") == "6c696e650a"
    assert preview(b"\xff\xfe") == "fffe"


def test_record_info_from_trace() -> None:
    assert RecordInfo.from_trace(FrameTraced("sent", b"KX")) is None
    ev = FrameTraced("received", b"", 1, 2, ContentType.APPLICATION_DATA, b"x")
    assert RecordInfo.from_trace(ev) == RecordInfo(1, ContentType.APPLICATION_DATA, b"x", None)


def test_frame_title() -> None:
    assert frame_title(b"KX\x01\x01" + bytes(4)) == "CLIENT_HELLO, 8 bytes"
    assert frame_title(b"KX\x01\x33") == "type 0x33, 4 bytes"
    assert frame_title(b"nope", "S → C") == "S → C  ?, 4 bytes"
    assert (
        frame_title(b"KX\x01\x17", record_info=RecordInfo(0, 0x44, b"")) == "RECORD (0x44), 4 bytes"
    )


@given(st.binary(max_size=600))
def test_random_bytes_never_raise_and_tile(data: bytes) -> None:
    for hash_len in (None, 32, 48):
        rows = annotate_frame(data, hash_len=hash_len)
        if data:
            assert_tiles(data, rows)


@given(
    st.sampled_from([*FrameType, 0x00, 0x06, 0xFF]),
    st.binary(max_size=400),
    st.integers(min_value=-3, max_value=3),
    st.one_of(
        st.none(),
        st.builds(
            RecordInfo,
            st.one_of(st.none(), st.integers(0, 5)),
            st.one_of(st.none(), st.sampled_from([0x15, 0x17, 0x18, 0x00])),
            st.one_of(st.none(), st.binary(max_size=40)),
        ),
    ),
)
def test_random_payloads_behind_valid_headers(
    frame_type: int, payload: bytes, skew: int, info: RecordInfo | None
) -> None:
    length = max(len(payload) + skew, 0)
    frame = b"KX\x01" + bytes((frame_type,)) + length.to_bytes(4, "big") + payload
    for show in (False, True):
        rows = annotate_frame(frame, hash_len=32, record_info=info, show_secrets=show)
        assert_tiles(frame, rows)


# --------------------------------------------------------------------------- live sessions


def _traced_session(kex: Kex) -> tuple[list[object], list[object]]:
    rsa_key = _RSA_KEY
    client = ClientConnection(
        ClientConfig(
            kex=kex,
            cipher_suite=CipherSuite.AES_256_GCM_SHA384,
            psk_identity="alice" if kex is Kex.PSK else "",
            psk=bytes(range(32)) if kex is Kex.PSK else b"",
            trust=lambda _i: TrustVerdict(True),
            trace=True,
        )
    )
    server = ServerConnection(
        ServerConfig(
            rsa_key=rsa_key,
            sign_key=_ED_KEY,
            psk_lookup=lambda i: bytes(range(32)) if i == "alice" else None,
            trace=True,
        )
    )
    client.start()
    events: dict[Connection, list[object]] = {client: [], server: []}

    def pump() -> None:
        for _ in range(6):
            for src, dst in ((client, server), (server, client)):
                data = src.data_to_send()
                if data:
                    dst.receive_data(data)
                while (ev := dst.next_event()) is not None:
                    events[dst].append(ev)

    # The client's own CLIENT_HELLO trace is queued before any bytes arrive.
    while (ev := client.next_event()) is not None:
        events[client].append(ev)
    pump()
    client.send_data(b"hello [bold]world[/bold]")
    client.send_key_update(request_update=True)
    client.send_data(b"after update")
    pump()
    client.close()
    pump()
    return events[client], events[server]


_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ED_KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize("kex", [Kex.RSA, Kex.DHE, Kex.PSK])
def test_annotator_on_live_sessions(kex: Kex) -> None:
    client_events, server_events = _traced_session(kex)
    for role, events in (("client", client_events), ("server", server_events)):
        annotator = Annotator(role, show_secrets=True)
        traced = 0
        seen_keys = False
        for ev in events:
            if isinstance(ev, HandshakeComplete):
                annotator.handshake_complete(ev)
            if not isinstance(ev, FrameTraced):
                continue
            traced += 1
            rows = annotator.rows(ev)
            assert_tiles(ev.frame, rows)
            assert UNDECODABLE not in {r.field for r in rows}, rows
            title = annotator.title(ev)
            arrow = annotator.arrow(ev.direction)
            assert title.startswith(arrow)
            assert (arrow == "C → S") == ((role == "client") == (ev.direction == "sent"))
            if ev.frame[3] == FrameType.FINISHED:
                assert len(field(rows, "verify_data").data) == 48  # learned from the hellos
            if ev.frame[3] == FrameType.RECORD:
                assert annotator.complete is not None
                seen_keys |= "; key " in field(rows, "ciphertext").meaning
                assert re.search(r"nonce [0-9a-f]{24}", field(rows, "seq").meaning)
        assert traced >= 8
        assert seen_keys
        assert annotator.hash_len == 48


# --------------------------------------------------------------------------- explain.render


def _console() -> Console:
    return Console(file=io.StringIO(), width=140, color_system=None, record=True)


def test_render_frame_table() -> None:
    vec = load_vector("dhe-x25519-0x1301-ed25519.json")
    frame = bytes.fromhex(vec["frames"][1]["hex"])
    console = _console()
    render_frame(console, "received", annotate_frame(frame), "S → C  SERVER_HELLO, 125 bytes")
    out = console.export_text()
    assert "S → C  SERVER_HELLO, 125 bytes" in out
    for header in ("offset", "field", "bytes", "meaning"):
        assert header in out
    assert "0051" in out and "server_key" in out
    assert vec["inputs"]["server_random"][:32] in out  # 16 bytes per hex line
    assert "Ed25519 public key" in out


def test_render_does_not_interpret_markup() -> None:
    frame = encode_frame(FrameType.ALERT, Alert(40, "[bold red]boom[/bold red]").encode())
    console = _console()
    render_frame(console, "received", annotate_frame(frame), "[x]")
    out = console.export_text()
    assert "[bold red]boom[/bold red]" in out
    assert "[x]" in out


def test_render_secrets_and_helpers() -> None:
    done = _complete_from_vector(load_vector("psk-0x1301.json"))
    console = _console()
    render_secrets(console, annotate_secrets(done))
    out = console.export_text()
    assert "session secrets" in out and "master" in out and "—" in out
    assert format_offset(SECRET_OFFSET) == "—"
    assert format_offset(0x51) == "0051"
    assert format_hex(b"") == "(empty)"
    assert format_hex(bytes(20), per_line=8) == "\n".join(["00" * 8, "00" * 8, "00" * 4])
    assert format_hex(bytes(100)).splitlines()[-1] == "… 100 bytes in all"
    assert len(format_hex(bytes(100)).splitlines()) == 5


def test_summary_lines() -> None:
    vec = load_vector("dhe-x25519-0x1301-ed25519.json")
    done = _complete_from_vector(vec)
    spki = bytes.fromhex(vec["inputs"]["identity_key_spki"])
    fp = hashlib.sha256(spki).hexdigest()
    signed = HandshakeComplete(
        **{**done.__dict__, "server_key": spki, "server_key_sha256": fp, "signature_scheme": 0x0807}
    )
    line = summary_line(signed, 12.345, "client")
    assert line == (
        f"client: handshake complete: dhe/x25519/aes128/ed25519, server key SHA256:{fp[:16]}…,"
        f" SAS {vec['sas']['display']}, 12.3 ms"
    )
    assert "server key none (anonymous" in summary_line(done, 1.0)
    psk = HandshakeComplete(
        **{
            **_complete_from_vector(load_vector("psk-0x1301.json")).__dict__,
            "psk_identity": "alice",
        }
    )
    assert summary_line(psk, 2.0).startswith("handshake complete: psk/aes128, psk identity alice,")
    console = Console(file=io.StringIO(), width=40, color_system=None, record=True)
    printed = render_summary_line(console, signed, 3.0, "server")
    assert console.export_text() == printed + "\n"  # one line, never wrapped
