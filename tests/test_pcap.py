"""The ``--pcap`` writer (capture/pcap.py): a valid pcap with consistent synthesised TCP.

Read back with dpkt (an independent parser) and, where installed, with tshark,
whose TCP analysis flags any sequence/acknowledgement inconsistency and whose
checksum validation checks every header dpkt built.
"""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import dpkt  # type: ignore[import-untyped]
import pytest
from external_tools import require_tool
from kxp_sessions import tshark_env

from capture.pcap import MSS, PcapWriter
from capture.streams import read_capture

CLIENT = ("127.0.0.1", 51000)
SERVER = ("127.0.0.1", 9700)
SYN, ACK, FIN, PSH = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_PUSH


def read_packets(path: Path) -> list[tuple[float, object, dpkt.tcp.TCP]]:
    """(time, ip, tcp) of every packet, parsed by dpkt."""
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        out = []
        for ts, buf in reader:
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            assert isinstance(ip.data, dpkt.tcp.TCP)
            out.append((ts, ip, ip.data))
    return out


def endpoints(ip: object, tcp: dpkt.tcp.TCP) -> tuple[tuple[str, int], tuple[str, int]]:
    """(src, dst) of one packet."""
    family = socket.AF_INET if isinstance(ip, dpkt.ip.IP) else socket.AF_INET6
    src = socket.inet_ntop(family, ip.src)  # type: ignore[attr-defined]
    dst = socket.inet_ntop(family, ip.dst)  # type: ignore[attr-defined]
    return (src, tcp.sport), (dst, tcp.dport)


def check_tcp_consistency(packets: list[tuple[float, object, dpkt.tcp.TCP]]) -> dict[tuple, bytes]:
    """Assert every seq follows the sender's previous segment and every ack the peer's next
    byte; return each direction's payload."""
    next_seq: dict[tuple, int] = {}
    data: dict[tuple, bytes] = {}
    for _ts, ip, tcp in packets:
        src, dst = endpoints(ip, tcp)
        if tcp.flags & SYN:
            next_seq[src] = (tcp.seq + 1) % 2**32
        else:
            assert tcp.seq == next_seq[src], "a segment does not follow its predecessor"
            next_seq[src] = (tcp.seq + len(tcp.data) + (1 if tcp.flags & FIN else 0)) % 2**32
        if tcp.flags & ACK:
            assert tcp.ack == next_seq[dst], "an ACK does not acknowledge the peer's next byte"
        data[(src, dst)] = data.get((src, dst), b"") + bytes(tcp.data)
    return data


def test_client_flow_is_a_whole_tcp_conversation(tmp_path: Path) -> None:
    path = tmp_path / "client.pcap"
    with PcapWriter(path) as writer:
        flow = writer.flow(CLIENT, SERVER)
        flow.sent(b"hello")
        flow.received(b"world!")
        flow.sent(b"x" * 3000)
        flow.close()
    packets = read_packets(path)
    flags = [tcp.flags for _, _, tcp in packets]
    assert flags[:3] == [SYN, SYN | ACK, ACK]
    assert flags[-3:] == [FIN | ACK, FIN | ACK, ACK]
    assert endpoints(packets[0][1], packets[0][2]) == (CLIENT, SERVER)
    assert endpoints(packets[-3][1], packets[-3][2]) == (CLIENT, SERVER)  # we closed first
    assert all(flag & PSH for flag in flags[3:-3])
    data = check_tcp_consistency(packets)
    assert data[(CLIENT, SERVER)] == b"hello" + b"x" * 3000
    assert data[(SERVER, CLIENT)] == b"world!"
    assert packets[0][2].ack == 0 and not packets[0][2].flags & ACK


def test_large_writes_are_cut_at_the_mss(tmp_path: Path) -> None:
    path = tmp_path / "mss.pcap"
    with PcapWriter(path) as writer:
        flow = writer.flow(CLIENT, SERVER)
        flow.sent(bytes(range(256)) * 20)  # 5120 bytes
    sizes = [len(tcp.data) for _, _, tcp in read_packets(path) if tcp.data]
    assert sizes == [MSS, MSS, MSS, 5120 - 3 * MSS]


def test_server_side_flow_has_the_syn_from_the_peer(tmp_path: Path) -> None:
    path = tmp_path / "server.pcap"
    with PcapWriter(path) as writer:
        flow = writer.flow(SERVER, CLIENT, initiated_by_local=False)
        flow.received(b"CLIENT_HELLO")
        flow.sent(b"SERVER_HELLO")
        flow.received_eof()
        flow.close()
    packets = read_packets(path)
    assert endpoints(packets[0][1], packets[0][2]) == (CLIENT, SERVER)
    assert packets[0][2].flags == SYN
    # the peer's FIN came first, so ours answers it and the peer sends the last ACK
    fin_senders = [endpoints(ip, tcp)[0] for _, ip, tcp in packets if tcp.flags & FIN]
    assert fin_senders == [CLIENT, SERVER]
    assert endpoints(packets[-1][1], packets[-1][2])[0] == CLIENT
    data = check_tcp_consistency(packets)
    assert data[(CLIENT, SERVER)] == b"CLIENT_HELLO"


def test_ipv6_and_ipv4_mapped_addresses(tmp_path: Path) -> None:
    path = tmp_path / "v6.pcap"
    with PcapWriter(path) as writer:
        six = writer.flow(("::1", 40000), ("::1", 9700))
        six.sent(b"over ipv6")
        six.close()
        mapped = writer.flow(
            ("::ffff:127.0.0.1", 9700), ("127.0.0.2", 40001), initiated_by_local=False
        )
        mapped.sent(b"v4")
    packets = read_packets(path)
    assert isinstance(packets[0][1], dpkt.ip6.IP6)
    assert packets[0][1].plen == len(packets[0][2])
    v4 = [(ip, tcp) for _, ip, tcp in packets if isinstance(ip, dpkt.ip.IP)]
    assert v4 and endpoints(*v4[0]) == (("127.0.0.2", 40001), ("127.0.0.1", 9700))
    stream = read_capture(path).connections[0]
    assert stream.a.data == b"over ipv6"


def test_bad_addresses_are_refused(tmp_path: Path) -> None:
    with PcapWriter(tmp_path / "bad.pcap") as writer:
        with pytest.raises(ValueError, match="not a numeric IP address"):
            writer.flow(("localhost", 1), SERVER)
        with pytest.raises(ValueError, match="address families differ"):
            writer.flow(("::1", 1), SERVER)


def test_timestamps_come_from_the_clock(tmp_path: Path) -> None:
    ticks = iter(float(t) for t in range(1000, 2000))
    path = tmp_path / "clock.pcap"
    with PcapWriter(path, clock=lambda: next(ticks)) as writer:
        writer.flow(CLIENT, SERVER).sent(b"abc")
        assert writer.packets == 4
    assert [ts for ts, _, _ in read_packets(path)] == [1000.0, 1001.0, 1002.0, 1003.0]


def test_writes_after_close_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "closed.pcap"
    writer = PcapWriter(path)
    flow = writer.flow(CLIENT, SERVER)
    flow.close()
    flow.sent(b"late")  # after the flow's close
    flow.close()
    other = writer.flow(("127.0.0.1", 51001), SERVER)
    writer.close()
    writer.close()
    other.sent(b"later")  # after the writer's close
    assert writer.closed
    packets = read_packets(path)
    assert len(packets) == 6 + 3  # two handshakes, one close
    assert not any(tcp.data for _, _, tcp in packets)


def test_one_writer_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "threads.pcap"
    writer = PcapWriter(path)

    def talk(i: int) -> None:
        flow = writer.flow(("127.0.0.1", 52000 + i), SERVER)
        for n in range(40):
            flow.sent(f"c{i}-{n};".encode())
            flow.received(f"s{i}-{n};".encode() * 100)
        flow.close()

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    capture = read_capture(path)
    assert len(capture.connections) == 6
    for conn in capture.connections:
        i = conn.a.src[1] - 52000
        assert conn.a.data == b"".join(f"c{i}-{n};".encode() for n in range(40))
        assert conn.b.data == b"".join(f"s{i}-{n};".encode() * 100 for n in range(40))
        assert conn.a.gap is None and conn.b.gap is None and conn.a.fin and conn.b.fin


def test_tshark_finds_good_checksums_and_no_tcp_anomalies(tmp_path: Path) -> None:
    path = tmp_path / "tshark.pcap"
    with PcapWriter(path) as writer:
        flow = writer.flow(CLIENT, SERVER)
        flow.sent(b"a" * 4000)
        flow.received(b"b" * 10)
        flow.close()
        six = writer.flow(("::1", 40000), ("::1", 9700), initiated_by_local=False)
        six.received(b"c" * 2000)
        six.close()
    tshark = require_tool("tshark")
    args = [tshark, "-n", "-r", str(path), "-o", "tcp.check_checksum:TRUE"]
    args += ["-o", "ip.check_checksum:TRUE", "-T", "fields", "-e", "frame.number"]
    args += ["-e", "tcp.checksum.status", "-e", "ip.checksum.status", "-e", "tcp.analysis.flags"]
    args += ["-e", "_ws.malformed", "-E", "separator=|"]
    proc = subprocess.run(
        args, env=tshark_env(tmp_path / "home"), capture_output=True, text=True, check=True
    )
    rows = [line.split("|") for line in proc.stdout.splitlines()]
    assert len(rows) == (3 + 3 + 1 + 3) + (3 + 2 + 3)  # handshake, data, close per flow
    for number, tcp_ok, ip_ok, anomalies, malformed in rows:
        assert tcp_ok == "1", f"packet {number}: bad TCP checksum"
        assert ip_ok in ("1", ""), f"packet {number}: bad IPv4 header checksum"
        assert anomalies == "" and malformed == "", f"packet {number}: {anomalies}{malformed}"
