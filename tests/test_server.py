"""The server library in-process: echo, chat, uploads and the inbox, timeouts, limits, shutdown."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    Recorder,
    home_fixture,
    home_key,
    server_maker,
)

from client.session import ClientOptions, ClientSession, SessionError
from protocol import AlertCode, FrameType, Kex, PeerAlert, TrustVerdict, encode_frame, parse_keylog
from protocol.messages import Alert
from server import apps
from server.inbox import Inbox, Upload, UploadError, safe_name
from server.server import KexlabServer
from transport import ConnectionLost
from transport.control import OP_FILE, decode_control, encode_control

PSKS = {"alice": b"a" * 32, "bob": b"b" * 32, "carol": b"c" * 32}


@pytest.fixture
async def make_server(home: Path) -> AsyncIterator:
    async with server_maker(home, PSKS) as make:
        yield make


async def connect(
    srv: KexlabServer, kex: Kex = Kex.DHE, name: str = "alice", **kw: object
) -> ClientSession:
    options = ClientOptions(
        host="127.0.0.1",
        port=srv.address[1],
        kex=kex,
        psk_identity=name if kex is Kex.PSK else "",
        psk=PSKS.get(name, b"") if kex is Kex.PSK else b"",
        trust=lambda i: TrustVerdict(True),
        timeout=5,
    )
    for k, v in kw.items():
        setattr(options, k, v)
    return await ClientSession.open(options)


# --------------------------------------------------------------------------- echo


@pytest.mark.parametrize("kex", list(Kex))
async def test_echo_returns_identical_records(make_server, kex: Kex) -> None:
    srv, rec = await make_server()
    session = await connect(srv, kex)
    for msg in (b"hello", b"\xff\xfe binary \x01", b"", "ünïcode".encode()):
        assert await session.request(msg) == msg
    await session.close()
    await rec.event("closed")
    assert [h.kex for h in rec.handshakes] == [kex]


async def test_unknown_control_record_gets_an_error_reply(make_server) -> None:
    srv, _ = await make_server()
    session = await connect(srv)
    reply = await session.request(b"\x00not json")
    assert decode_control(reply) == {"op": "error", "reason": "control record is not UTF-8 JSON"}
    reply = await session.request(encode_control("dance"))
    assert decode_control(reply)["reason"] == "unknown op 'dance'"
    await session.close()


# --------------------------------------------------------------------------- chat


async def test_chat_relays_to_every_other_member_with_the_senders_name(make_server) -> None:
    srv, rec = await make_server(app="chat")
    alice = await connect(srv, Kex.PSK, "alice")
    bob = await connect(srv, Kex.PSK, "bob")
    carol = await connect(srv, Kex.DHE)
    await rec.handshakes_done(3)  # all three are in the room
    await alice.send(b"hi all")
    assert await bob.receive(5) == b"alice: hi all"
    got = await carol.receive(5)
    assert got == b"alice: hi all"
    await carol.send(b"hello")
    carol_name = f"127.0.0.1:{carol.stream.extra('sockname')[1]}"
    assert await alice.receive(5) == f"{carol_name}: hello".encode()
    assert await bob.receive(5) == f"{carol_name}: hello".encode()
    with pytest.raises(TimeoutError):  # nobody hears their own message back
        await alice.receive(0.2)
    for s in (alice, bob, carol):
        await s.close()


async def test_chat_drops_a_member_that_does_not_read(
    make_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apps, "SLOW_READER_LIMIT", 64 * 1024)
    srv, rec = await make_server(app="chat")
    alice = await connect(srv, Kex.PSK, "alice")
    bob = await connect(srv, Kex.PSK, "bob")  # bob never reads
    carol = await connect(srv, Kex.PSK, "carol")
    await rec.handshakes_done(3)  # all three are in the room
    blob = b"z" * 60000
    for _ in range(300):  # ~18 MB: far more than bob's socket buffers hold
        await alice.send(blob)
        if rec.named("dropped"):
            break
        assert await carol.receive(5) == b"alice: " + blob
    assert rec.named("dropped") == [{"reason": "not reading"}]
    await alice.send(b"still here")
    while (got := await carol.receive(5)) != b"alice: still here":
        assert got == b"alice: " + blob
    for s in (alice, carol):
        await s.close()
    await bob.stream.wait_closed()


# --------------------------------------------------------------------------- uploads


async def test_upload_lands_in_the_inbox_with_a_receipt(
    make_server, home: Path, tmp_path: Path
) -> None:
    srv, rec = await make_server()
    src = tmp_path / "report.txt"
    src.write_bytes(b"results\n" * 30000)
    session = await connect(srv)
    seen: list[int] = []
    receipt = await session.send_file(src, seen.append)
    assert receipt.name == "report.txt" and receipt.size == src.stat().st_size
    assert receipt.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert sum(seen) == receipt.size
    stored = home / "inbox" / "report.txt"
    assert stored.read_bytes() == src.read_bytes()
    assert stored.stat().st_mode & 0o777 == 0o600
    # The session goes on as an echo afterwards, and a second upload never overwrites.
    assert await session.request(b"after") == b"after"
    again = await session.send_file(src)
    assert again.name == "report-1.txt"
    await session.close()
    assert rec.named("upload-done")[0]["sha256"] == receipt.sha256


async def test_upload_of_an_empty_file(make_server, home: Path, tmp_path: Path) -> None:
    srv, _ = await make_server()
    src = tmp_path / "empty"
    src.write_bytes(b"")
    session = await connect(srv)
    receipt = await session.send_file(src)
    assert receipt.size == 0 and (home / "inbox" / "empty").read_bytes() == b""
    await session.close()


async def test_upload_name_cannot_escape_the_inbox(make_server, home: Path) -> None:
    srv, _ = await make_server()
    session = await connect(srv)
    data = b"owned"
    header = encode_control(
        OP_FILE, name="../../evil.sh", size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    await session.send(header)
    await session.send(data)
    reply = decode_control(await session.receive(5) or b"")
    assert reply["op"] == "file-ok" and reply["name"] == "evil.sh"
    assert (home / "inbox" / "evil.sh").read_bytes() == data
    assert not (home.parent / "evil.sh").exists()
    await session.close()


async def test_upload_with_a_wrong_hash_is_refused_and_removed(make_server, home: Path) -> None:
    srv, rec = await make_server()
    session = await connect(srv)
    await session.send(encode_control(OP_FILE, name="x.bin", size=3, sha256="0" * 64))
    await session.send(b"abc")
    reply = decode_control(await session.receive(5) or b"")
    assert reply["op"] == "file-error" and "sha256 mismatch" in reply["reason"]
    assert not (home / "inbox" / "x.bin").exists()
    await session.close()
    assert rec.named("upload-failed")


async def test_upload_with_more_bytes_than_announced_is_refused(make_server, home: Path) -> None:
    srv, _ = await make_server()
    session = await connect(srv)
    await session.send(
        encode_control(OP_FILE, name="x.bin", size=2, sha256=hashlib.sha256(b"ab").hexdigest())
    )
    await session.send(b"abc")
    reply = decode_control(await session.receive(5) or b"")
    assert reply == {"op": "file-error", "reason": "more bytes than the announced 2"}
    assert list((home / "inbox").iterdir()) == []
    await session.close()


async def test_a_connection_lost_mid_upload_leaves_no_file(make_server, home: Path) -> None:
    srv, rec = await make_server()
    session = await connect(srv)
    await session.send(encode_control(OP_FILE, name="half.bin", size=10, sha256="0" * 64))
    await session.send(b"12345")
    await rec.event("upload-start")
    assert (home / "inbox" / "half.bin").exists()
    session.stream.transport.close()  # gone without close_notify
    await session.stream.wait_closed()
    await rec.event("error")
    assert not (home / "inbox" / "half.bin").exists()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"size": 1, "sha256": "0" * 64}, "file name missing"),
        ({"name": "a", "size": -1, "sha256": "0" * 64}, "file size must be an integer"),
        ({"name": "a", "size": True, "sha256": "0" * 64}, "file size must be an integer"),
        ({"name": "a", "size": 1, "sha256": "xyz"}, "sha256 must be 64 lowercase hex digits"),
    ],
)
async def test_bad_upload_headers_are_refused(make_server, fields: dict, reason: str) -> None:
    srv, _ = await make_server()
    session = await connect(srv)
    reply = decode_control(await session.request(encode_control(OP_FILE, **fields)))
    assert reply["op"] == "file-error" and reply["reason"].startswith(reason)
    assert await session.request(b"still echoing") == b"still echoing"
    await session.close()


async def test_client_detects_a_receipt_that_does_not_match(
    make_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = await make_server()
    src = tmp_path / "f"
    src.write_bytes(b"data")
    session = await connect(srv)
    real = session._control_reply

    async def lying_reply() -> dict:
        reply = await real()
        return {**reply, "sha256": "1" * 64}

    monkeypatch.setattr(session, "_control_reply", lying_reply)
    with pytest.raises(SessionError, match="server stored 4 bytes with SHA-256 1111"):
        await session.send_file(src)
    await session.close()


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\win.ini", "win.ini"),
        (".bashrc", "bashrc"),
        ("..", "file"),
        ("", "file"),
        ("a b;rm -rf *.txt", "a_b_rm_-rf_.txt"),
        ("x" * 300, "x" * 100),
        ("/", "file"),
    ],
)
def test_safe_name(name: str, safe: str) -> None:
    assert safe_name(name) == safe


def test_inbox_never_overwrites_and_never_follows_links(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "in")
    p1, f1 = inbox.create("a.tar.gz")
    p2, f2 = inbox.create("a.tar.gz")
    f1.close()
    f2.close()
    assert (p1.name, p2.name) == ("a.tar.gz", "a-1.tar.gz")
    (tmp_path / "in" / "link").symlink_to(tmp_path / "target")
    p3, f3 = inbox.create("link")
    f3.close()
    assert p3.name == "link-1" and not (tmp_path / "target").exists()


def test_upload_refuses_sizes_over_the_limit(tmp_path: Path) -> None:
    with pytest.raises(UploadError):
        Upload(Inbox(tmp_path), {"name": "a", "size": (4 << 30) + 1, "sha256": "0" * 64})


# --------------------------------------------------------------------------- limits and timeouts


async def test_idle_timeout_closes_with_close_notify(make_server) -> None:
    srv, rec = await make_server(idle_timeout=0.2)
    session = await connect(srv)
    assert await session.receive(5) is None  # a clean close from the server
    assert rec.named("idle-timeout") == [{"seconds": 0.2}]
    await session.stream.wait_closed()


async def test_idle_timeout_also_cuts_a_client_that_never_reads(make_server) -> None:
    srv, rec = await make_server(idle_timeout=0.3)
    session = await connect(srv)
    blob = b"q" * 65536
    start = asyncio.get_running_loop().time()
    with pytest.raises(ConnectionLost):  # the server drops it: its echoes back up unread
        async with asyncio.timeout(5):
            while True:
                await session.send(blob)
    assert asyncio.get_running_loop().time() - start < 3
    assert rec.named("idle-timeout") == [{"seconds": 0.3}]
    await rec.event("closed")
    await session.stream.wait_closed()


async def test_max_connections_refuses_with_an_alert(make_server) -> None:
    srv, rec = await make_server(max_connections=1)
    first = await connect(srv)
    with pytest.raises(PeerAlert) as info:
        await connect(srv)
    assert (info.value.name, info.value.reason) == (
        "handshake_failure",
        "server busy: too many connections",
    )
    assert await first.request(b"ok") == b"ok"
    await first.close()
    await rec.event("closed")
    third = await connect(srv)  # a slot is free again
    await third.close()


async def test_shutdown_sends_close_notify_to_every_client(make_server) -> None:
    srv, rec = await make_server()
    sessions = [await connect(srv, kex) for kex in Kex]
    waiting = [asyncio.create_task(s.receive(5)) for s in sessions]
    await rec.handshakes_done(len(sessions))  # every session is in the app, past its handshake
    await srv.shutdown(grace=2.0)
    assert await asyncio.gather(*waiting) == [None, None, None]
    assert not srv.streams
    for s in sessions:
        await s.stream.wait_closed()


async def test_shutdown_closes_clients_mid_handshake(make_server) -> None:
    srv, rec = await make_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.address[1])
    await rec.event("connect")  # accepted: mid-handshake, silent
    await srv.shutdown(grace=0.5)
    data = await asyncio.wait_for(reader.read(), 5)  # the server's close_notify, then EOF
    assert data == encode_frame(FrameType.ALERT, Alert(AlertCode.CLOSE_NOTIFY, "").encode())
    writer.close()
    await writer.wait_closed()
    assert not srv.streams


async def test_server_keylog_matches_the_connection(make_server, tmp_path: Path) -> None:
    keylog = tmp_path / "server.keys"
    srv, rec = await make_server(keylog=keylog)
    session = await connect(srv, Kex.RSA)
    await session.close()
    await rec.event("closed")
    assert keylog.read_text() == session.handshake.keylog
    parsed = parse_keylog(keylog.read_text())[session.handshake.client_random]
    assert parsed["CLIENT_TRAFFIC_SECRET_0"] == session.handshake.secrets.c_ap_0
    assert keylog.stat().st_mode & 0o777 == 0o600


async def test_handshake_failures_are_logged_per_connection(make_server) -> None:
    srv, rec = await make_server(kex_methods=frozenset({Kex.PSK}))
    with pytest.raises(PeerAlert):
        await connect(srv, Kex.DHE)
    fields = await rec.event("error")
    assert fields["sent_alert"] == "handshake_failure" and "psk" in fields["reason"]
    with pytest.raises((ConnectionLost, PeerAlert)):
        await connect(srv, Kex.PSK, "mallory", psk=b"m" * 32)
    assert any(f.get("sent_alert") == "unknown_psk_identity" for f in rec.named("error"))
