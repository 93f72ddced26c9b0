"""Offline decryption (capture/decrypt.py, cli/decrypt.py): every key source, every method.

Sessions come from the spec's vectors (frames replayed into a pcap: an independent
check of the whole path), from in-memory connections written with ``PcapWriter``,
and from a real loopback session captured by tcpdump. Each test checks the exact
plaintexts, or the exact reason a session stays sealed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dpkt  # type: ignore[import-untyped]
import pytest
import typer
from conftest import load_vector
from cryptography.hazmat.primitives import serialization
from external_tools import require_tool
from kxp_sessions import (
    PSK,
    PSK_IDENTITY,
    LabKeys,
    LiveResult,
    Recorded,
    client_config,
    lab_keys,
    live_sessions,
    record_session,
    server_config,
)
from typer.testing import CliRunner

from capture.decrypt import (
    DecryptReport,
    InputError,
    Session,
    decrypt_capture,
    load_keylog,
    load_rsa_key,
    parse_psk,
)
from capture.mqtt import control_packets, psk_topic
from capture.pcap import PcapWriter
from capture.streams import read_capture
from cli.decrypt import decrypt, preview
from protocol import Kex
from protocol.keyschedule import parse_keylog

CLIENT_MESSAGES = (b"first secret", b"q" * 70000, b"after the key update")
SERVER_MESSAGES = (b"server reply",)
PORTS = {"rsa": 50011, "dhe": 50012, "psk": 50013}
SERVER_ID = "lab-server"


# --------------------------------------------------------------------------- helpers


def app_data(session: Session, sender: str) -> bytes:
    """All application_data plaintext one side sent, joined."""
    return b"".join(
        r.plaintext or b""
        for r in session.records
        if r.sender == sender and r.content_type == "application_data"
    )


def by_port(report: DecryptReport, port: int) -> Session:
    """The session whose client used ``port``."""
    (session,) = [s for s in report.sessions if s.client[1] == port]
    return session


def assert_exact(session: Session) -> None:
    """The session's records are exactly the generated conversation, key update included."""
    assert session.decrypted, session.reason
    assert app_data(session, "client") == b"".join(CLIENT_MESSAGES)
    assert app_data(session, "server") == b"".join(SERVER_MESSAGES)
    client = [(r.epoch, r.seq, r.content_type) for r in session.records if r.sender == "client"]
    assert client == [
        (0, 0, "application_data"),
        (0, 1, "application_data"),
        (0, 2, "application_data"),
        (0, 3, "key_update"),
        (1, 0, "application_data"),
        (1, 1, "alert"),
    ]
    server = [(r.epoch, r.seq, r.content_type) for r in session.records if r.sender == "server"]
    assert server == [(0, 0, "key_update"), (1, 0, "application_data"), (1, 1, "alert")]
    assert [r.note for r in session.records if r.content_type == "alert"] == ["close_notify"] * 2


def varint(n: int) -> bytes:
    """MQTT variable byte integer."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(text: str) -> bytes:
    """MQTT UTF-8 string: u16 length || bytes."""
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def mqtt(ptype: int, flags: int, body: bytes) -> bytes:
    """One MQTT control packet."""
    return bytes(((ptype << 4) | flags,)) + varint(len(body)) + body


def connect(version: int, client_id: str = "kexlab-client") -> bytes:
    """CONNECT for MQTT 3.1.1 (4) or 5."""
    body = mqtt_str("MQTT") + bytes((version, 0x02)) + (60).to_bytes(2, "big")
    if version == 5:
        body += varint(0)
    return mqtt(1, 0, body + mqtt_str(client_id))


def publish(
    topic: str, payload: bytes, version: int, qos: int = 1, props: bytes = b"", pid: int = 7
) -> bytes:
    """PUBLISH with QoS ``qos`` (a packet identifier when > 0) and MQTT 5 properties."""
    body = mqtt_str(topic)
    if qos:
        body += pid.to_bytes(2, "big")
    if version == 5:
        body += varint(len(props)) + props
    return mqtt(3, qos << 1, body + payload)


def psk_payload(identity: str, key: bytes) -> bytes:
    """The §8 psk/<identity> payload."""
    doc = {"identity": identity, "key": base64.b64encode(key).decode(), "expires_at": 4102444800}
    return json.dumps(doc).encode()


def write_mqtt(
    writer: PcapWriter,
    packets: list[bytes],
    client_port: int,
    broker_port: int = 1883,
    to_client: bool = False,
) -> None:
    """One MQTT connection: CONNECT/CONNACK then ``packets`` (sent by the client, or by the
    broker to a subscriber when ``to_client``), each cut in two TCP segments."""
    flow = writer.flow(("127.0.0.1", client_port), ("127.0.0.1", broker_port))
    flow.sent(packets[0])
    flow.received(mqtt(2, 0, b"\x00\x00"))
    for packet in packets[1:]:
        half = len(packet) // 2
        for part in (packet[:half], packet[half:]):
            (flow.received if to_client else flow.sent)(part)
    flow.close()


def run_cli(*args: str) -> tuple[int, str, str]:
    """Invoke ``decrypt`` mounted in a throwaway typer app: (exit code, stdout, stderr)."""
    app = typer.Typer()
    app.command()(decrypt)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------- fixtures


@dataclass
class Lab:
    """One capture with an rsa, a dhe and a psk session, and their key log."""

    path: Path
    keys: LabKeys
    sessions: dict[str, Recorded]

    @property
    def keylog(self) -> str:
        """Key log lines of all three sessions."""
        return "".join(rec.keylog for rec in self.sessions.values())


def record_lab(writer: PcapWriter, keys: LabKeys, ports: dict[str, int]) -> dict[str, Recorded]:
    """An rsa, a dhe and a psk session with a key update each, into ``writer``."""
    sessions = {}
    for name, kex in (("rsa", Kex.RSA), ("dhe", Kex.DHE), ("psk", Kex.PSK)):
        sessions[name] = record_session(
            writer,
            client_config(kex),
            server_config(keys),
            client_messages=CLIENT_MESSAGES,
            server_messages=SERVER_MESSAGES,
            key_update=True,
            client_addr=("127.0.0.1", ports[name]),
        )
    return sessions


@pytest.fixture(scope="module")
def keys() -> LabKeys:
    """The vectors' long-term keys."""
    return lab_keys()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, keys: LabKeys) -> Lab:
    """The three-method capture."""
    path = tmp_path_factory.mktemp("decrypt") / "lab.pcap"
    with PcapWriter(path) as writer:
        sessions = record_lab(writer, keys, PORTS)
    return Lab(path, keys, sessions)


def rewrite(src: Path, dst: Path, edit: Iterator[tuple[float, bytes]] | None = None) -> None:
    """Copy a pcap's packets, as ``edit`` yields them, into a new pcap."""
    with open(dst, "wb") as out:
        writer = dpkt.pcap.Writer(out, snaplen=65535)
        for ts, buf in edit if edit is not None else read_pcap(src):
            writer.writepkt(buf, ts=ts)


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    """Every (time, frame) of a pcap."""
    with open(path, "rb") as fh:
        return [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(fh)]


def tcp_len(buf: bytes) -> int:
    """TCP payload length of one Ethernet frame."""
    return len(dpkt.ethernet.Ethernet(buf).data.data.data)


# --------------------------------------------------------------------------- spec vectors


def vector_pcap(name: str, path: Path) -> dict:
    """Replay a vector's frames, in wire order, as one TCP connection; return the vector."""
    vec = load_vector(name)
    with PcapWriter(path) as writer:
        flow = writer.flow(("10.0.0.1", 40000), ("10.0.0.2", 9700))
        for frame in vec["frames"]:
            data = bytes.fromhex(frame["hex"])
            (flow.sent if frame["dir"] == "C->S" else flow.received)(data)
        flow.close()
    return vec


def vector_records(vec: dict) -> list[tuple[str, int, int, bytes]]:
    """(sender, epoch, seq, content) of a vector's records, per direction in order."""
    out = []
    for r in vec["records"]:
        sender = "client" if r["dir"] == "C->S" else "server"
        out.append((sender, r["epoch"], r["seq"], bytes.fromhex(r["content"])))
    return sorted(out, key=lambda t: t[0])


def decrypted_records(session: Session) -> list[tuple[str, int, int, bytes]]:
    """The same view of a decrypted session."""
    out = [(r.sender, r.epoch, r.seq, r.plaintext) for r in session.records]
    assert all(p is not None for *_, p in out)
    return sorted(out, key=lambda t: t[0])  # type: ignore[arg-type,return-value]


def test_vector_rsa_decrypts_with_the_rsa_key(tmp_path: Path) -> None:
    vec = vector_pcap("rsa-0x1301.json", tmp_path / "v.pcap")
    key = serialization.load_der_private_key(bytes.fromhex(vec["inputs"]["rsa_key_pkcs8"]), None)
    report = decrypt_capture(tmp_path / "v.pcap", rsa_key=key)  # type: ignore[arg-type]
    (session,) = report.sessions
    assert session.method.startswith("RSA private key")
    assert session.client_random.hex() == vec["inputs"]["client_random"]
    assert (session.kex, session.cipher_suite, session.group) == ("rsa", "aes128", "none")
    assert decrypted_records(session) == vector_records(vec)


@pytest.mark.parametrize(
    "name", ["dhe-x25519-0x1302-rsa-pss.json", "dhe-ffdhe2048-0x1301-ed25519.json"]
)
def test_vector_dhe_decrypts_with_its_key_log(tmp_path: Path, name: str) -> None:
    vec = vector_pcap(name, tmp_path / "v.pcap")
    cr = vec["inputs"]["client_random"]
    keylog = parse_keylog(
        f"CLIENT_TRAFFIC_SECRET_0 {cr} {vec['c_ap_0']}\nSERVER_TRAFFIC_SECRET_0 {cr} {vec['s_ap_0']}\n"
    )
    (session,) = decrypt_capture(tmp_path / "v.pcap", keylog=keylog).sessions
    assert session.method == "key log"
    assert decrypted_records(session) == vector_records(vec)
    (sealed,) = decrypt_capture(tmp_path / "v.pcap").sessions
    assert sealed.forward_secret and not sealed.decrypted


def test_vector_psk_decrypts_with_the_psk(tmp_path: Path) -> None:
    vec = vector_pcap("psk-0x1301.json", tmp_path / "v.pcap")
    identity = vec["inputs"]["psk_identity_text"]
    psks = {identity: bytes.fromhex(vec["inputs"]["psk"])}
    (session,) = decrypt_capture(tmp_path / "v.pcap", psks=psks).sessions
    assert session.psk_identity == identity
    assert decrypted_records(session) == vector_records(vec)


# --------------------------------------------------------------------------- key sources


def test_key_log_decrypts_every_method(lab: Lab) -> None:
    report = decrypt_capture(lab.path, keylog=parse_keylog(lab.keylog))
    assert len(report.sessions) == 3 and report.warnings == []
    for name, port in PORTS.items():
        session = by_port(report, port)
        assert session.kex == name
        assert session.method == "key log"
        assert session.client_random == lab.sessions[name].complete.client_random
        assert session.server == ("127.0.0.1", 9700)
        assert_exact(session)


def test_rsa_key_opens_rsa_only_and_dhe_stays_forward_secret(lab: Lab) -> None:
    report = decrypt_capture(lab.path, rsa_key=lab.keys.rsa)
    rsa_session = by_port(report, PORTS["rsa"])
    assert rsa_session.method.startswith("RSA private key: KEY_TRANSPORT decrypted")
    assert_exact(rsa_session)
    dhe = by_port(report, PORTS["dhe"])
    assert not dhe.decrypted and dhe.forward_secret
    assert dhe.reason.startswith("forward secret: ")
    assert "x25519" in dhe.reason
    assert all(r.plaintext is None for r in dhe.records)
    psk = by_port(report, PORTS["psk"])
    assert not psk.decrypted and not psk.forward_secret
    assert "no PSK for identity 'lab-client-1'" in psk.reason


def test_without_keys_each_method_says_why(lab: Lab) -> None:
    report = decrypt_capture(lab.path)
    reasons = {s.kex: s for s in report.sessions}
    assert all(not s.decrypted for s in report.sessions)
    assert "no forward secrecy" in reasons["rsa"].reason
    assert "--rsa-key" in reasons["rsa"].reason
    assert reasons["dhe"].forward_secret and "forward secret" in reasons["dhe"].reason
    assert "psk has no forward secrecy" in reasons["psk"].reason
    sealed = [r for s in report.sessions for r in s.records]
    assert sealed and all(r.content_type == "encrypted" and r.plaintext is None for r in sealed)


def test_psk_argument_opens_the_psk_session(lab: Lab) -> None:
    report = decrypt_capture(lab.path, psks={PSK_IDENTITY: PSK})
    session = by_port(report, PORTS["psk"])
    assert session.method == f"PSK {PSK_IDENTITY!r} from --psk"
    assert_exact(session)


def test_wrong_rsa_key_and_wrong_psk_are_named(lab: Lab) -> None:
    keys = load_vector("keys.json")
    other = serialization.load_der_private_key(bytes.fromhex(keys["rsa_identity_key_pkcs8"]), None)
    report = decrypt_capture(lab.path, rsa_key=other, psks={PSK_IDENTITY: b"\x01" * 32})  # type: ignore[arg-type]
    rsa_session = by_port(report, PORTS["rsa"])
    assert not rsa_session.decrypted
    assert "not the one this server used" in rsa_session.reason
    psk = by_port(report, PORTS["psk"])
    assert not psk.decrypted
    assert (
        "no PSK for identity 'lab-client-1' matches the server's FINISHED: tried PSK" in psk.reason
    )


def test_half_a_key_log_opens_one_direction(lab: Lab) -> None:
    client_only = "".join(
        line + "\n" for line in lab.keylog.splitlines() if line.startswith("CLIENT_")
    )
    session = by_port(decrypt_capture(lab.path, keylog=parse_keylog(client_only)), PORTS["dhe"])
    assert session.decrypted
    assert app_data(session, "client") == b"".join(CLIENT_MESSAGES)
    assert all(r.plaintext is None for r in session.records if r.sender == "server")
    assert "no traffic secret for the server's records" in session.reason


def test_a_wrong_key_log_secret_does_not_pass_for_plaintext(lab: Lab) -> None:
    cr = lab.sessions["dhe"].complete.client_random.hex()
    bogus = f"CLIENT_TRAFFIC_SECRET_0 {cr} {'11' * 32}\nSERVER_TRAFFIC_SECRET_0 {cr} {'22' * 32}\n"
    session = by_port(decrypt_capture(lab.path, keylog=parse_keylog(bogus)), PORTS["dhe"])
    assert not session.decrypted
    assert "do not open" in session.reason
    assert all(r.plaintext is None for r in session.records)
    assert "fails authentication" in session.records[0].note


def test_session_recorded_before_the_rsa_key_leaks(tmp_path: Path, keys: LabKeys) -> None:
    capture = tmp_path / "before-the-leak.pcap"
    with PcapWriter(capture) as writer:
        record_lab(writer, keys, PORTS)
    # Only now, long after the sessions ended, does the server key "leak".
    leaked = tmp_path / "server-key.pem"
    leaked.write_bytes(
        keys.rsa.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    code, out, err = run_cli(str(capture), "--rsa-key", str(leaked), "--json")
    assert code == 0, err
    doc = json.loads(out)
    by_kex = {s["kex"]: s for s in doc["sessions"]}
    rsa_records = [
        r["plaintext"] for r in by_kex["rsa"]["records"] if r["content_type"] == "application_data"
    ]
    assert "".join(rsa_records).encode() == b"".join(CLIENT_MESSAGES + SERVER_MESSAGES)
    assert by_kex["rsa"]["decrypted"] is True
    assert by_kex["dhe"]["decrypted"] is False and by_kex["dhe"]["forward_secret"] is True
    assert all(r["plaintext"] is None for r in by_kex["dhe"]["records"])


# --------------------------------------------------------------------------- PSKs on MQTT


@pytest.mark.parametrize("version", [4, 5])
def test_psk_published_on_mqtt_opens_the_session(
    tmp_path: Path, keys: LabKeys, version: int
) -> None:
    path = tmp_path / "mqtt.pcap"
    topic = f"kexlab/v1/{SERVER_ID}/psk/{PSK_IDENTITY}"
    with PcapWriter(path) as writer:
        alias = b"\x23\x00\x01" if version == 5 else b""  # MQTT 5: topic alias 1
        write_mqtt(
            writer,
            [
                connect(version),
                publish(f"kexlab/v1/{SERVER_ID}/fingerprint", b'{"key_sha256": "ab"}', version),
                publish(topic, psk_payload(PSK_IDENTITY, b"\x05" * 32), version, props=alias),
                publish(topic, psk_payload(PSK_IDENTITY, PSK), version, qos=0, props=alias),
            ],
            client_port=45000,
        )
        sessions = record_lab(writer, keys, PORTS)
    report = decrypt_capture(path)
    assert [(p.identity, p.key, p.topic) for p in report.psks_found] == [
        (PSK_IDENTITY, b"\x05" * 32, topic),
        (PSK_IDENTITY, PSK, topic),
    ]
    session = by_port(report, PORTS["psk"])
    # the stale key published first does not match the FINISHED; the second one does
    assert session.method.startswith(f"PSK {PSK_IDENTITY!r} found in an MQTT PUBLISH on {topic}")
    assert session.client_random == sessions["psk"].complete.client_random
    assert_exact(session)
    assert not by_port(report, PORTS["dhe"]).decrypted


def test_mqtt_5_topic_alias_and_a_broker_delivery(tmp_path: Path, keys: LabKeys) -> None:
    path = tmp_path / "mqtt5.pcap"
    topic = f"kexlab/v1/{SERVER_ID}/psk/{PSK_IDENTITY}"
    props = b"\x01\x01" + b"\x23\x00\x02" + b"\x26" + mqtt_str("k") + mqtt_str("v")
    with PcapWriter(path) as writer:
        # the subscriber's side: the broker delivers the PUBLISH, the second one by alias only
        write_mqtt(
            writer,
            [
                connect(5, "server"),
                publish(topic, b"{}", 5, props=props),
                publish("", psk_payload(PSK_IDENTITY, PSK), 5, props=b"\x23\x00\x02"),
            ],
            client_port=45001,
            to_client=True,
        )
        record_lab(writer, keys, PORTS)
    report = decrypt_capture(path)
    assert [(p.identity, p.topic, p.src[1]) for p in report.psks_found] == [
        (PSK_IDENTITY, topic, 1883)
    ]
    assert_exact(by_port(report, PORTS["psk"]))


def test_mqtt_on_another_port_is_found_by_its_connect(tmp_path: Path, keys: LabKeys) -> None:
    path = tmp_path / "mqtt-port.pcap"
    topic = f"kexlab/v1/{SERVER_ID}/psk/{PSK_IDENTITY}"
    with PcapWriter(path) as writer:
        write_mqtt(
            writer,
            [connect(4), publish(topic, psk_payload(PSK_IDENTITY, PSK), 4)],
            client_port=45002,
            broker_port=11883,
        )
        # bytes that merely look like a PUBLISH on a port that is neither 1883 nor MQTT
        noise = writer.flow(("127.0.0.1", 45003), ("127.0.0.1", 8080))
        noise.sent(publish(topic, psk_payload(PSK_IDENTITY, b"\x09" * 32), 4))
        record_lab(writer, keys, PORTS)
    report = decrypt_capture(path)
    assert [p.key for p in report.psks_found] == [PSK]
    assert by_port(report, PORTS["psk"]).decrypted


def test_mqtt_parsing_edges() -> None:
    assert psk_topic("kexlab/v1/srv/psk/id") == ("srv", "id")
    for bad in ("kexlab/v1/srv/psk", "kexlab/v2/srv/psk/id", "kexlab/v1//psk/id", "a/v1/s/psk/i"):
        assert psk_topic(bad) is None
    packet = publish("t", b"x", 4)
    assert [p[0] for p in control_packets(packet + packet[:3])] == [3]  # a cut packet is left
    assert list(control_packets(b"\x30\xff\xff\xff\xff\x01")) == []  # a 5-byte length is bad


# --------------------------------------------------------------------------- capture shapes


def test_pcapng_is_read_too(tmp_path: Path, lab: Lab) -> None:
    path = tmp_path / "lab.pcapng"
    with open(path, "wb") as out:
        writer = dpkt.pcapng.Writer(out, snaplen=65535)
        for ts, buf in read_pcap(lab.path):
            writer.writepkt(buf, ts=ts)
    report = decrypt_capture(path, keylog=parse_keylog(lab.keylog))
    assert len(report.sessions) == 3
    for port in PORTS.values():
        assert_exact(by_port(report, port))


def test_out_of_order_and_retransmitted_segments(tmp_path: Path, lab: Lab) -> None:
    packets = read_pcap(lab.path)
    rng = random.Random(5)
    shuffled: list[tuple[float, bytes]] = []
    window: list[tuple[float, bytes]] = []
    for pkt in packets:
        window.append(pkt)
        if tcp_len(pkt[1]) and rng.random() < 0.3:
            shuffled.append(pkt)  # a retransmission: the same segment twice
        if len(window) == 4:
            rng.shuffle(window)
            shuffled += window
            window = []
    shuffled += window
    assert shuffled != packets
    path = tmp_path / "shuffled.pcap"
    rewrite(lab.path, path, iter(shuffled))
    report = decrypt_capture(path, keylog=parse_keylog(lab.keylog))
    for port in PORTS.values():
        assert_exact(by_port(report, port))
    conn = read_capture(path).connections[0]
    assert conn.a.duplicates > 0


def test_overlapping_segments_keep_the_first_copy(tmp_path: Path, lab: Lab) -> None:
    edited: list[tuple[float, bytes]] = []
    for ts, buf in read_pcap(lab.path):
        eth = dpkt.ethernet.Ethernet(buf)
        tcp = eth.data.data
        if len(tcp.data) == 1460:
            # resend the second half of the segment first, then the whole one
            tail = dpkt.tcp.TCP(bytes(tcp))
            tail.seq, tail.data, tail.sum = tcp.seq + 700, tcp.data[700:], 0
            ip = dpkt.ip.IP(bytes(eth.data))
            ip.data, ip.len, ip.sum = tail, 0, 0
            ip.len = len(bytes(ip))
            edited.append(
                (
                    ts,
                    bytes(dpkt.ethernet.Ethernet(src=eth.src, dst=eth.dst, type=eth.type, data=ip)),
                )
            )
        edited.append((ts, buf))
    path = tmp_path / "overlap.pcap"
    rewrite(lab.path, path, iter(edited))
    report = decrypt_capture(path, keylog=parse_keylog(lab.keylog))
    for port in PORTS.values():
        assert_exact(by_port(report, port))


def test_a_hole_in_the_capture_is_reported_not_fatal(tmp_path: Path, lab: Lab) -> None:
    packets = read_pcap(lab.path)
    big = [i for i, (_, buf) in enumerate(packets) if tcp_len(buf) == 1460]
    del packets[big[10]]  # a segment inside the rsa session's 70000-byte message
    path = tmp_path / "hole.pcap"
    rewrite(lab.path, path, iter(packets))
    report = decrypt_capture(path, keylog=parse_keylog(lab.keylog))
    rsa_session = by_port(report, PORTS["rsa"])
    assert any("misses bytes" in note for note in rsa_session.notes)
    first = next(r for r in rsa_session.records if r.sender == "client")
    assert first.plaintext == CLIENT_MESSAGES[0]
    assert app_data(rsa_session, "server") == b"".join(SERVER_MESSAGES)
    assert_exact(by_port(report, PORTS["dhe"]))


def test_capture_started_after_the_syn(tmp_path: Path, lab: Lab) -> None:
    packets = read_pcap(lab.path)[3:]  # no SYN, SYN-ACK, ACK of the first connection
    path = tmp_path / "nosyn.pcap"
    rewrite(lab.path, path, iter(packets))
    report = decrypt_capture(path, keylog=parse_keylog(lab.keylog))
    assert_exact(by_port(report, PORTS["rsa"]))


def test_truncated_capture_gives_a_warning_and_what_it_holds(tmp_path: Path, lab: Lab) -> None:
    data = lab.path.read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: int(len(data) * 0.8)])
    report = decrypt_capture(path, keylog=parse_keylog(lab.keylog))
    assert report.warnings and "cut short" in report.warnings[0]
    assert_exact(by_port(report, PORTS["rsa"]))
    assert len(report.sessions) == 3  # the psk session is there, cut
    for cut in (25, 40):  # inside the first packet header / record
        path.write_bytes(data[:cut])
        assert decrypt_capture(path).sessions == []


def test_corrupted_captures_never_crash(tmp_path: Path, lab: Lab) -> None:
    data = lab.path.read_bytes()
    rng = random.Random(11)
    keylog = parse_keylog(lab.keylog)
    path = tmp_path / "corrupt.pcap"
    outcomes = set()
    for _ in range(40):
        damaged = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            damaged[rng.randrange(24, len(damaged))] = rng.randrange(256)
        path.write_bytes(bytes(damaged[: rng.randrange(24, len(damaged) + 1)]))
        report = decrypt_capture(path, keylog=keylog, rsa_key=lab.keys.rsa)  # must not raise
        outcomes.add(bool(report.warnings))
        for session in report.sessions:
            assert session.decrypted or session.reason or not session.records
    assert outcomes == {True, False}  # some damage is noticed, some only garbles payloads


def test_port_reuse_makes_two_sessions(tmp_path: Path, keys: LabKeys) -> None:
    path = tmp_path / "reuse.pcap"
    with PcapWriter(path) as writer:
        first = record_lab(writer, keys, {"rsa": 50020, "dhe": 50021, "psk": 50022})
        second = record_lab(writer, keys, {"rsa": 50020, "dhe": 50021, "psk": 50022})
    keylog = "".join(r.keylog for r in [*first.values(), *second.values()])
    report = decrypt_capture(path, keylog=parse_keylog(keylog))
    assert len(report.sessions) == 6
    for session in report.sessions:
        assert_exact(session)


def test_failed_handshake_and_other_ports(tmp_path: Path, keys: LabKeys) -> None:
    path = tmp_path / "failed.pcap"
    with PcapWriter(path) as writer:
        record_session(
            writer,
            client_config(Kex.PSK, psk_identity="nobody"),
            server_config(keys),
            client_addr=("127.0.0.1", 50030),
            server_addr=("127.0.0.1", 4433),
        )
        http = writer.flow(("127.0.0.1", 50031), ("127.0.0.1", 80))
        http.sent(b"GET / HTTP/1.1\r\n\r\n")
        http.close()
    (session,) = decrypt_capture(path, psks={"nobody": PSK}).sessions
    assert session.server == ("127.0.0.1", 4433)
    assert not session.decrypted
    assert "unknown_psk_identity" in session.reason
    (alert,) = session.records
    assert (alert.sender, alert.content_type, alert.epoch) == ("server", "alert", None)
    assert alert.note == "unknown_psk_identity: unknown psk identity 'nobody'"


# --------------------------------------------------------------------------- inputs and CLI


def test_input_loaders(tmp_path: Path, keys: LabKeys) -> None:
    assert parse_psk("id=" + "ab" * 16) == ("id", b"\xab" * 16)
    for bad in ("noequals", "=abcd", "id=zz", "id=abcd"):
        with pytest.raises(InputError):
            parse_psk(bad)
    der = tmp_path / "key.der"
    der.write_bytes(
        keys.rsa.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert load_rsa_key(der).private_numbers() == keys.rsa.private_numbers()
    ed = tmp_path / "ed.pem"
    ed.write_bytes(
        keys.ed25519.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(InputError, match="not an RSA private key"):
        load_rsa_key(ed)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        keys.rsa.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(InputError, match="encrypted"):
        load_rsa_key(locked)
    log = tmp_path / "keys.log"
    log.write_text("# comment\nnot a key log line\n")
    with pytest.raises(InputError, match="no key log lines"):
        load_keylog(log)


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (b"", ["x.pcap"], "empty file"),
        (b"this is not a capture at all", ["x.pcap"], "not a pcap or pcapng"),
        (bytes.fromhex("d4c3b2a1") + b"\x02", ["x.pcap"], "damaged capture header"),
        (bytes.fromhex("0a0d0d0a") + b"\x00" * 8, ["x.pcap"], "damaged capture header"),
        ("lab", ["x.pcap", "--rsa-key", "x.pcap"], "not a private key"),
        # Missing files and malformed --psk are usage mistakes: tests/test_cli_usage.py.
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    tmp_path: Path,
    lab: Lab,
    monkeypatch: pytest.MonkeyPatch,
    setup: bytes | str | None,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if setup == "lab":
        (tmp_path / "x.pcap").write_bytes(lab.path.read_bytes())
    elif isinstance(setup, bytes):
        (tmp_path / "x.pcap").write_bytes(setup)
    code, out, err = run_cli(*args)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_cli_table_shows_plaintexts_and_the_forward_secrecy_verdict(
    tmp_path: Path, lab: Lab
) -> None:
    log = tmp_path / "keys.log"
    log.write_text(lab.sessions["rsa"].keylog)
    psk_arg = f"{PSK_IDENTITY}={PSK.hex()}"
    code, out, err = run_cli(str(lab.path), "--keylog", str(log), "--psk", psk_arg)
    assert code == 0, err
    assert "session 1: 127.0.0.1:50011 → 127.0.0.1:9700" in out
    assert out.count("decrypted with key log") == 1
    assert f"decrypted with PSK {PSK_IDENTITY!r} from --psk" in out
    assert "not decrypted, forward secret" in out
    assert "first secret" in out and "server reply" in out
    assert "(65536 bytes)" in out  # a long record is previewed, not dumped
    assert "close_notify" in out and "request_update=1" in out


def test_cli_json_holds_every_record(tmp_path: Path, lab: Lab) -> None:
    log = tmp_path / "keys.log"
    log.write_text(lab.keylog)
    code, out, err = run_cli(str(lab.path), "--keylog", str(log), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["packets"] > 0 and doc["warnings"] == []
    assert [s["kex"] for s in doc["sessions"]] == ["rsa", "dhe", "psk"]
    for s in doc["sessions"]:
        sent = [
            bytes.fromhex(r["plaintext_hex"])
            for r in s["records"]
            if r["direction"] == "client->server" and r["content_type"] == "application_data"
        ]
        assert b"".join(sent) == b"".join(CLIENT_MESSAGES)
        assert s["method"] == "key log" and s["decrypted"] is True
        assert len(s["client_random"]) == 64


def test_preview_forms() -> None:
    from capture.decrypt import Record

    assert preview(Record(0, "client", 0, 0, "application_data", b"hi\n")) == "hi\\n"
    assert preview(Record(0, "client", 0, 0, "application_data", b"\xff\x00")) == "ff00"
    long = preview(Record(0, "client", 0, 0, "application_data", b"a" * 500), limit=20)
    assert long == "a" * 19 + "… (500 bytes)"
    assert preview(Record(0, "server", None, 3, "encrypted", None)) == "(encrypted)"


# --------------------------------------------------------------------------- real capture


LIVE_MESSAGES = (b"real loopback ping", b"w" * 100000, b"real loopback end")


@pytest.fixture(scope="module")
def live(
    tmp_path_factory: pytest.TempPathFactory, keys: LabKeys
) -> tuple[Path, dict[str, LiveResult]]:
    """A tcpdump capture of an rsa, a dhe and a psk echo session over 127.0.0.1."""
    require_tool("tcpdump")
    path = tmp_path_factory.mktemp("live") / "lo.pcap"
    _port, results = asyncio.run(live_sessions(path, keys, LIVE_MESSAGES))
    return path, results


def test_real_tcpdump_capture_decrypts_exactly(
    live: tuple[Path, dict[str, LiveResult]], keys: LabKeys
) -> None:
    path, results = live
    keylog = "".join(r.complete.keylog for r in results.values())
    report = decrypt_capture(path, keylog=parse_keylog(keylog))
    assert len(report.sessions) == 3
    for name, result in results.items():
        session = by_port(report, result.client_port)
        assert session.kex == name and session.method == "key log"
        assert app_data(session, "client") == b"".join(LIVE_MESSAGES)
        assert app_data(session, "server") == b"".join(LIVE_MESSAGES)  # the echoes
        assert [r.epoch for r in session.records if r.content_type == "key_update"] == [0, 0]
    by_rsa_key = decrypt_capture(path, rsa_key=keys.rsa)
    rsa_session = by_port(by_rsa_key, results["rsa"].client_port)
    assert app_data(rsa_session, "server") == b"".join(LIVE_MESSAGES)
    dhe = by_port(by_rsa_key, results["dhe"].client_port)
    assert dhe.forward_secret and not dhe.decrypted


def test_a_wrong_psk_argument_is_named_when_a_key_from_mqtt_opens_the_session(
    tmp_path: Path, keys: LabKeys
) -> None:
    # Issue 12 item 6: the MQTT key was used silently, and nothing said --psk was wrong.
    path = tmp_path / "mqtt.pcap"
    topic = f"kexlab/v1/{SERVER_ID}/psk/{PSK_IDENTITY}"
    with PcapWriter(path) as writer:
        write_mqtt(
            writer,
            [connect(4), publish(topic, psk_payload(PSK_IDENTITY, PSK), 4)],
            client_port=45000,
        )
        record_lab(writer, keys, PORTS)
    report = decrypt_capture(path, psks={PSK_IDENTITY: b"\x01" * 32})
    session = by_port(report, PORTS["psk"])
    assert session.decrypted
    assert session.method.startswith(f"PSK {PSK_IDENTITY!r} found in an MQTT PUBLISH on {topic}")
    assert session.notes == [
        f"PSK {PSK_IDENTITY!r} from --psk does not match the server's FINISHED: not used"
    ]
