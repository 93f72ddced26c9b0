"""Read pcap/pcapng captures (dpkt) and reassemble their TCP streams.

Each direction of each TCP connection becomes one byte string, put together from
its segments by sequence number: retransmitted and overlapping segments count
once (the first copy in sequence order wins), out-of-order segments are put back
in order, and a hole the capture never saw ends the usable stream there (a frame
decoder cannot resynchronise across missing bytes). Each byte keeps the time its
segment was captured, so a frame can be dated by when it was complete.

A capture that is cut short or holds packets dpkt cannot parse never raises: what
could be read is returned, with a warning saying what was lost.
"""

from __future__ import annotations

import bisect
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dpkt  # type: ignore[import-untyped]

from protocol import KexlabError

Address = tuple[str, int]

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
PCAP_MAGICS = {
    bytes.fromhex(m) for m in ("a1b2c3d4", "d4c3b2a1", "a1b23c4d", "4d3cb2a1")
}  # micro- and nanosecond pcap, either byte order

# Link-layer types (tcpdump.org/linktypes.html) we can take IP packets out of.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_RAW_ALIASES = {12, 14}  # DLT_RAW as some BSDs number it

_IP_ETHERTYPES = {dpkt.ethernet.ETH_TYPE_IP, dpkt.ethernet.ETH_TYPE_IP6}
_HALF = 1 << 31
_MOD = 1 << 32
_PARSE_ERRORS = (dpkt.Error, ValueError, struct.error, IndexError, TypeError, OSError)


class CaptureError(KexlabError):
    """The file is not a capture we can read at all (missing, unreadable, not pcap/pcapng)."""


@dataclass
class _Segment:
    rel: int
    data: bytes
    time: float
    order: int


@dataclass
class TcpStream:
    """One direction of a TCP connection, reassembled."""

    src: Address
    dst: Address
    data: bytes = b""
    syn: bool = False
    fin: bool = False
    gap: int | None = None
    """Stream offset of the first byte the capture missed, if any; ``data`` ends there."""
    duplicates: int = 0
    """Segments whose bytes had already been seen (retransmissions, overlaps)."""
    _starts: list[int] = field(default_factory=list, repr=False)
    _times: list[float] = field(default_factory=list, repr=False)

    def time_at(self, start: int, end: int) -> float:
        """When bytes [start, end) were all captured (the latest of their segments)."""
        if not self._starts:
            return 0.0
        lo = max(bisect.bisect_right(self._starts, start) - 1, 0)
        hi = max(bisect.bisect_right(self._starts, max(end - 1, start)) - 1, lo)
        return max(self._times[lo : hi + 1])

    @property
    def first_time(self) -> float | None:
        """Capture time of the stream's first byte."""
        return self._times[0] if self._times else None


@dataclass
class TcpConnection:
    """Both directions of one TCP connection; ``a`` sent the SYN (or the first packet seen)."""

    a: TcpStream
    b: TcpStream
    first_time: float

    def streams(self) -> tuple[TcpStream, TcpStream]:
        """(a -> b, b -> a)."""
        return self.a, self.b


@dataclass
class Capture:
    """Everything read from one capture file."""

    path: str
    packets: int
    connections: list[TcpConnection]
    warnings: list[str]


class _Direction:
    def __init__(self, src: Address, dst: Address) -> None:
        self.src, self.dst = src, dst
        self.isn: int | None = None
        self.first_seq: int | None = None
        self.segments: list[tuple[int, bytes, float, int]] = []
        self.fin = False

    def assemble(self) -> TcpStream:
        stream = TcpStream(self.src, self.dst, syn=self.isn is not None, fin=self.fin)
        if not self.segments:
            return stream
        if self.isn is not None:
            base = (self.isn + 1) % _MOD
        else:
            # No SYN in the capture: start at the lowest sequence number seen.
            assert self.first_seq is not None
            base = min(
                ((seq - self.first_seq + _HALF) % _MOD - _HALF for seq, _, _, _ in self.segments),
                default=0,
            )
            base = (self.first_seq + base) % _MOD
        segs = []
        for seq, data, ts, order in self.segments:
            rel = (seq - base + _HALF) % _MOD - _HALF  # signed distance, wraps at 2^32
            if rel < 0:
                data, rel = data[-rel:], 0
            if data:
                segs.append(_Segment(rel, data, ts, order))
        segs.sort(key=lambda s: (s.rel, s.order))
        out = bytearray()
        for seg in segs:
            end = seg.rel + len(seg.data)
            if end <= len(out):
                stream.duplicates += 1
                continue
            if seg.rel > len(out):
                stream.gap = len(out)
                break
            if seg.rel < len(out):
                stream.duplicates += 1  # overlap: keep the bytes we already have
            stream._starts.append(len(out))
            stream._times.append(seg.time)
            out += seg.data[len(out) - seg.rel :]
        stream.data = bytes(out)
        return stream


class _Conn:
    def __init__(self, src: Address, dst: Address, ts: float) -> None:
        self.dirs = {(src, dst): _Direction(src, dst), (dst, src): _Direction(dst, src)}
        self.a = (src, dst)
        self.first_time = ts
        self.closing = False

    def build(self) -> TcpConnection:
        a = self.dirs[self.a].assemble()
        b = self.dirs[(self.a[1], self.a[0])].assemble()
        return TcpConnection(a, b, self.first_time)


def _open(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
    except OSError as exc:
        raise CaptureError(f"cannot read {os.fspath(path)}: {exc.strerror or exc}") from None
    magic = fh.read(4)
    fh.seek(0)
    try:
        if magic == PCAPNG_MAGIC:
            return fh, dpkt.pcapng.Reader(fh)
        if magic in PCAP_MAGICS:
            return fh, dpkt.pcap.Reader(fh)
    except _PARSE_ERRORS as exc:
        fh.close()
        raise CaptureError(f"{os.fspath(path)}: damaged capture header ({exc})") from None
    fh.close()
    what = "an empty file" if not magic else "not a pcap or pcapng capture"
    raise CaptureError(f"{os.fspath(path)} is {what}")


def _packets(reader: Any, warnings: list[str]) -> Iterator[tuple[float, bytes]]:
    it = iter(reader)
    count = 0
    while True:
        try:
            ts, buf = next(it)
        except StopIteration:
            return
        except (*_PARSE_ERRORS, EOFError) as exc:
            warnings.append(f"capture is cut short or damaged after packet {count} ({exc!s})")
            return
        count += 1
        yield float(ts), bytes(buf)


def _ip_layer(linktype: int, buf: bytes) -> Any:
    """The IPv4/IPv6 packet inside one link-layer frame, or None.

    dpkt leaves a layer it cannot parse as bytes; for an IP packet that means it
    was cut short, which is raised as ValueError so that it is counted.
    """
    if linktype == LINKTYPE_ETHERNET:
        layer = dpkt.ethernet.Ethernet(buf)
    elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        layer = dpkt.loopback.Loopback(buf)
    elif linktype == LINKTYPE_LINUX_SLL:
        layer = dpkt.sll.SLL(buf)
    elif linktype == LINKTYPE_LINUX_SLL2:
        layer = dpkt.sll2.SLL2(buf)
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6) or linktype in _RAW_ALIASES:
        if not buf:
            raise ValueError("empty packet")
        return dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
    else:
        return None
    ip_type = getattr(layer, "type", getattr(layer, "ethtype", None))
    if isinstance(layer.data, bytes) and ip_type in _IP_ETHERTYPES:
        raise ValueError("IP packet cut short")
    return layer.data


def _tcp_of(ip: Any) -> tuple[Address, Address, Any, bool] | None:
    """(src, dst, tcp, cut short) of an IP packet carrying TCP, else None."""
    if isinstance(ip, dpkt.ip.IP):
        if ip.mf or ip.offset:
            return None  # IP fragments: TCP over loopback and Ethernet does not fragment
        family = socket.AF_INET
    elif isinstance(ip, dpkt.ip6.IP6):
        family = socket.AF_INET6
    else:
        return None
    tcp = ip.data
    if not isinstance(tcp, dpkt.tcp.TCP):
        return None
    # What the IP header says the segment carried, against what the capture holds.
    if family == socket.AF_INET:
        carried = ip.len - ip.hl * 4 - tcp.off * 4
    else:
        carried = ip.plen - tcp.off * 4 if ip.nxt == dpkt.ip.IP_PROTO_TCP else 0
    src = (socket.inet_ntop(family, ip.src), tcp.sport)
    dst = (socket.inet_ntop(family, ip.dst), tcp.dport)
    return src, dst, tcp, len(tcp.data) < carried


def read_capture(path: str | os.PathLike[str]) -> Capture:
    """Read a pcap or pcapng file and reassemble every TCP connection in it."""
    fh, reader = _open(path)
    warnings: list[str] = []
    live: dict[frozenset[Address], _Conn] = {}
    done: list[_Conn] = []
    packets = short = 0
    with fh:
        linktype = reader.datalink()
        known = {
            LINKTYPE_NULL,
            LINKTYPE_ETHERNET,
            LINKTYPE_RAW,
            LINKTYPE_LOOP,
            LINKTYPE_LINUX_SLL,
            LINKTYPE_LINUX_SLL2,
            LINKTYPE_IPV4,
            LINKTYPE_IPV6,
            *_RAW_ALIASES,
        }
        if linktype not in known:
            warnings.append(f"link-layer type {linktype} is not supported; no packets read")
        for ts, buf in _packets(reader, warnings):
            packets += 1
            if linktype not in known:
                continue
            try:
                found = _tcp_of(_ip_layer(linktype, buf))
            except _PARSE_ERRORS:
                short += 1  # a header dpkt cannot parse: almost always a packet cut short
                continue
            if found is None:
                continue
            src, dst, tcp, cut = found
            short += cut
            _add_segment(live, done, src, dst, tcp, ts)
    if short:
        warnings.append(
            f"{short} packet(s) are cut short or damaged (a file cut short, or a small snap "
            "length): their streams may have holes"
        )
    conns = sorted(done + list(live.values()), key=lambda c: c.first_time)
    return Capture(os.fspath(path), packets, [c.build() for c in conns], warnings)


def _add_segment(
    live: dict[frozenset[Address], _Conn],
    done: list[_Conn],
    src: Address,
    dst: Address,
    tcp: Any,
    ts: float,
) -> None:
    key = frozenset((src, dst))
    syn = bool(tcp.flags & dpkt.tcp.TH_SYN)
    ack = bool(tcp.flags & dpkt.tcp.TH_ACK)
    conn = live.get(key)
    if conn is not None and syn and not ack:
        d = conn.dirs[(src, dst)]
        # A new SYN with another ISN on a used 4-tuple is a new connection (port reuse).
        if (d.isn is not None and d.isn != tcp.seq) or (d.isn is None and d.segments):
            done.append(conn)
            conn = None
    if conn is None:
        conn = _Conn(src, dst, ts)
        if syn and ack:  # we missed the SYN; the SYN-ACK's receiver opened the connection
            conn.a = (dst, src)
        live[key] = conn
    d = conn.dirs[(src, dst)]
    payload = bytes(tcp.data)
    if syn:
        d.isn = tcp.seq
    if d.first_seq is None:
        d.first_seq = tcp.seq
    if tcp.flags & dpkt.tcp.TH_FIN:
        d.fin = True
    if payload:
        seq = (tcp.seq + 1) % _MOD if syn else tcp.seq  # data on a SYN follows the ISN
        d.segments.append((seq, payload, ts, len(d.segments)))
