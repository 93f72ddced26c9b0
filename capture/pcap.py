"""A pcap writer for ``--pcap FILE``: what crossed each connection, no root needed.

The program only sees the bytes of its own sockets, so the Ethernet, IP and TCP
headers around them are synthesised: the real addresses and ports, a SYN /
SYN-ACK / ACK at the start, consistent sequence and acknowledgement numbers, and
FINs at the close. Wireshark, tshark and ``kexlab decrypt`` then read the file as
if it had been captured on the wire. dpkt builds the packets and the file.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO

import dpkt  # type: ignore[import-untyped]

Address = tuple[str, int]

# Segments the size of an Ethernet MSS, so a large record spans several packets and
# a reader has to reassemble it, as it would on a real network.
MSS = 1460
SNAPLEN = 65535
WINDOW = 65535
TTL = 64
# Locally administered unicast addresses: obviously synthetic, never a real vendor's.
LOCAL_MAC = bytes.fromhex("020000000001")
REMOTE_MAC = bytes.fromhex("020000000002")

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(host: str) -> _IPAddress:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        raise ValueError(f"not a numeric IP address: {host!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return addr


class PcapWriter:
    """One pcap file shared by every connection of a program; writes are serialised by a lock."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time):
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._pcap = dpkt.pcap.Writer(self._file, snaplen=SNAPLEN, linktype=dpkt.pcap.DLT_EN10MB)
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self.packets = 0

    def flow(self, local: Address, remote: Address, *, initiated_by_local: bool = True) -> Flow:
        """A new TCP connection between ``local`` and ``remote``; writes its three-way handshake.

        ``initiated_by_local`` is True for a client (it sent the SYN), False for a
        server's accepted connection.
        """
        return Flow(self, local, remote, initiated_by_local)

    def write(self, frame: bytes) -> None:
        """Append one link-layer frame stamped with the clock; a no-op once closed."""
        with self._lock:
            if self._closed:
                return
            self._pcap.writepkt(frame, ts=self._clock())
            self._file.flush()  # the file stays readable while the program runs or if it dies
            self.packets += 1

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called."""
        return self._closed

    def close(self) -> None:
        """Flush and close the file; later writes are ignored."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Side:
    """One end of the synthesised TCP connection: its address and next sequence number."""

    def __init__(self, addr: Address, ip: _IPAddress, mac: bytes) -> None:
        self.port = addr[1]
        self.ip = ip
        self.mac = mac
        self.seq = secrets.randbits(32)  # a random ISN, as a real stack picks
        self.fin_sent = False

    def advance(self, n: int) -> None:
        self.seq = (self.seq + n) & 0xFFFFFFFF


class Flow:
    """One connection in a ``PcapWriter``: record what was sent and received, then ``close``."""

    def __init__(
        self, writer: PcapWriter, local: Address, remote: Address, initiated_by_local: bool
    ) -> None:
        local_ip, remote_ip = _ip(local[0]), _ip(remote[0])
        if local_ip.version != remote_ip.version:
            raise ValueError(f"address families differ: {local[0]} and {remote[0]}")
        self._writer = writer
        self._local = _Side(local, local_ip, LOCAL_MAC)
        self._remote = _Side(remote, remote_ip, REMOTE_MAC)
        self._ip_id = 0
        self._closed = False
        a, b = (self._local, self._remote) if initiated_by_local else (self._remote, self._local)
        self._segment(a, b, dpkt.tcp.TH_SYN, b"", ack=False)
        a.advance(1)  # SYN consumes one sequence number
        self._segment(b, a, dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, b"")
        b.advance(1)
        self._segment(a, b, dpkt.tcp.TH_ACK, b"")

    def sent(self, data: bytes) -> None:
        """Bytes this side wrote to the socket."""
        self._data(self._local, self._remote, data)

    def received(self, data: bytes) -> None:
        """Bytes this side read from the socket."""
        self._data(self._remote, self._local, data)

    def received_eof(self) -> None:
        """The peer closed its sending side (its FIN)."""
        self._fin(self._remote, self._local)

    def close(self) -> None:
        """The connection is over: FINs both ways (those not yet written) and the last ACK."""
        if self._closed:
            return
        self._closed = True
        first, second = self._local, self._remote
        if self._remote.fin_sent:
            first, second = self._remote, self._local
        self._fin(first, second)
        self._fin(second, first)
        self._segment(first, second, dpkt.tcp.TH_ACK, b"")

    def _data(self, src: _Side, dst: _Side, data: bytes) -> None:
        if self._closed or src.fin_sent:
            return
        for start in range(0, len(data), MSS):
            chunk = data[start : start + MSS]
            self._segment(src, dst, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, chunk)
            src.advance(len(chunk))

    def _fin(self, src: _Side, dst: _Side) -> None:
        if src.fin_sent:
            return
        self._segment(src, dst, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK, b"")
        src.advance(1)  # FIN consumes one sequence number
        src.fin_sent = True

    def _segment(
        self, src: _Side, dst: _Side, flags: int, payload: bytes, ack: bool = True
    ) -> None:
        tcp = dpkt.tcp.TCP(
            sport=src.port,
            dport=dst.port,
            seq=src.seq,
            ack=dst.seq if ack else 0,
            flags=flags,
            win=WINDOW,
            data=payload,
        )
        ip: dpkt.Packet
        if src.ip.version == 4:
            self._ip_id = (self._ip_id + 1) & 0xFFFF
            ip = dpkt.ip.IP(
                src=src.ip.packed,
                dst=dst.ip.packed,
                p=dpkt.ip.IP_PROTO_TCP,
                ttl=TTL,
                id=self._ip_id,
                df=1,  # what a Linux stack sets on TCP
                data=tcp,
            )
            eth_type = dpkt.ethernet.ETH_TYPE_IP
        else:
            ip = dpkt.ip6.IP6(
                src=src.ip.packed,
                dst=dst.ip.packed,
                nxt=dpkt.ip.IP_PROTO_TCP,
                hlim=TTL,
                plen=len(tcp),  # dpkt leaves the IPv6 payload length to the caller
                data=tcp,
            )
            eth_type = dpkt.ethernet.ETH_TYPE_IP6
        frame = dpkt.ethernet.Ethernet(src=src.mac, dst=dst.mac, type=eth_type, data=ip)
        self._writer.write(bytes(frame))
