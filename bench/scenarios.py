"""What the bench measures: handshake pairings, message sizes, selection names and targets."""

from __future__ import annotations

from dataclasses import dataclass

from protocol import Group, Kex

READ_SIZE = 262144
"""Every peer (kexlab, TLS, TCP) reads at most this many bytes per ``StreamReader.read``."""
CONCURRENCY = 64
IDLE_CONNECTIONS = 1000
CROWD_CLIENTS = 1000
CROWD_MESSAGES = 100
"""The crowd row: this many clients at once, each a handshake and this many echoed messages."""
PING_SIZE = 64
HOST = "127.0.0.1"
TLS_HOSTNAME = "localhost"
PSK_IDENTITY = "bench"

# glibc's thresholds adapt to the program's history unless fixed; fixed, throughput stops
# flipping between two modes from run to run (the issue measured 650 vs 1,070 MB/s).
MALLOC_ENV = {
    "MALLOC_TRIM_THRESHOLD_": str(64 * 1024 * 1024),
    "MALLOC_MMAP_THRESHOLD_": str(8 * 1024 * 1024),
}

MODE_PING = b"P"
"""First application message: echo every message (ping-pong, idle connections)."""
MODE_BULK = b"B"
"""First application message: count bytes; a message ending in END_MARK gets the count back."""
END_MARK = 1
"""Bulk payload bytes are zero, so a read or record whose last byte is 1 ends a phase."""


@dataclass(frozen=True)
class Pairing:
    """One handshake row: a kexlab configuration and the TLS configuration it is measured against."""

    name: str
    kex: Kex
    group: Group
    kexlab_label: str
    tls_key: str | None
    """Key type of the TLS certificate (a ``keys.KEY_TYPES`` name), None: no TLS counterpart."""
    tls_group: str | None
    """OpenSSL name of the TLS key exchange group, pinned on both sides."""
    tls_label: str
    target: float | None
    """The issue's goal for kexlab/TLS handshakes/s on this row (None: no goal)."""


PAIRINGS: tuple[Pairing, ...] = (
    Pairing(
        "rsa",
        Kex.RSA,
        Group.NONE,
        "rsa, RSA-2048",
        "rsa",
        "X25519",
        "RSA-2048 cert, x25519",
        2.0,
    ),
    Pairing(
        "dhe",
        Kex.DHE,
        Group.X25519,
        "dhe x25519 + Ed25519",
        "ed25519",
        "X25519",
        "Ed25519 cert, x25519",
        2.0,
    ),
    Pairing(
        "p256",
        Kex.DHE,
        Group.SECP256R1,
        "dhe P-256 + Ed25519",
        "p256",
        "prime256v1",
        "ECDSA P-256 cert, P-256",
        2.0,
    ),
    Pairing(
        "ffdhe",
        Kex.DHE,
        Group.FFDHE2048,
        "dhe ffdhe2048 + Ed25519",
        "ed25519",
        "ffdhe2048",
        "Ed25519 cert, ffdhe2048",
        1.0,
    ),
    Pairing(
        "psk", Kex.PSK, Group.NONE, "psk (32-byte key)", None, None, "no PSK in Python's ssl", None
    ),
)
PAIRING_BY_NAME = {p.name: p for p in PAIRINGS}

BULK_SIZES: dict[str, int] = {
    "64": 64,
    "1k": 1024,
    "16k": 16 * 1024,
    "64k": 64 * 1024,
    "1m": 1024 * 1024,
}
DATA_PAIRING = "dhe"
"""Bulk, ping-pong and idle connections run over this pairing (x25519 + Ed25519, AES-256-GCM)."""

ALL_ITEMS: tuple[str, ...] = (
    *(f"handshake-{p.name}" for p in PAIRINGS),
    *(f"bulk-{s}" for s in BULK_SIZES),
    "pingpong",
    "memory",
    "crowd",
)
GROUPS = ("handshake", "bulk")


def parse_only(spec: str | None) -> list[str]:
    """Names of the measurements to run: every one, or those a comma list picks (groups allowed)."""
    if not spec:
        return list(ALL_ITEMS)
    chosen: set[str] = set()
    for raw in spec.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name in GROUPS:
            chosen.update(i for i in ALL_ITEMS if i.startswith(name + "-"))
        elif name in ALL_ITEMS:
            chosen.add(name)
        else:
            raise ValueError(
                f"unknown measurement {name!r}; choose from {', '.join((*GROUPS, *ALL_ITEMS))}"
            )
    return [i for i in ALL_ITEMS if i in chosen]


def size_label(size: int) -> str:
    """64 B, 1 KiB, 64 KiB, 1 MiB."""
    if size >= 1024 * 1024:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024:
        return f"{size // 1024} KiB"
    return f"{size} B"
