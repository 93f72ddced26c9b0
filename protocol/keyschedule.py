"""Key schedule (docs/protocol.md §5), transcript hash (§4), SAS and key log lines (§5, §9)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from .constants import SuiteParams

LABEL_PREFIX = b"kexlab "


def hkdf_extract(algorithm: hashes.HashAlgorithm, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract(salt, IKM) (RFC 5869 §2.2)."""
    return HKDF.extract(algorithm, salt, ikm)


def hkdf_label(label: bytes, context: bytes, length: int, prefix: bytes = LABEL_PREFIX) -> bytes:
    """HkdfLabel: u16 length || label<7..255> with ``prefix`` || context<0..255> (§5)."""
    full = prefix + label
    return length.to_bytes(2, "big") + bytes((len(full),)) + full + bytes((len(context),)) + context


def hkdf_expand_label(
    algorithm: hashes.HashAlgorithm,
    secret: bytes,
    label: bytes,
    context: bytes,
    length: int,
    prefix: bytes = LABEL_PREFIX,
) -> bytes:
    """HKDF-Expand(Secret, HkdfLabel, Length), RFC 8446 §7.1 with ``prefix`` for "tls13 "."""
    info = hkdf_label(label, context, length, prefix)
    return HKDFExpand(algorithm, length, info).derive(secret)


def hmac_hash(algorithm: hashes.HashAlgorithm, key: bytes, data: bytes) -> bytes:
    """HMAC-Hash(key, data) for FINISHED."""
    h = hmac.HMAC(key, algorithm)
    h.update(data)
    return h.finalize()


class TranscriptHash:
    """The running hash of every handshake frame in wire order (§4), with snapshots."""

    def __init__(self, algorithm: hashes.HashAlgorithm) -> None:
        self._hash = hashes.Hash(algorithm)

    def update(self, frame: bytes) -> None:
        """Append one complete handshake frame (header and payload)."""
        self._hash.update(frame)

    def digest(self) -> bytes:
        """TH of everything so far; the running hash goes on."""
        return self._hash.copy().finalize()


@dataclass(frozen=True)
class TrafficKeys:
    """key and iv of one traffic secret."""

    secret: bytes
    key: bytes
    iv: bytes


@dataclass(frozen=True)
class HandshakeSecrets:
    """The shared secret and everything §5 derives from it and TH_keys."""

    shared_secret: bytes = field(repr=False)
    master: bytes
    c_ap_0: bytes
    s_ap_0: bytes
    c_finished: bytes
    s_finished: bytes


class KeySchedule:
    """§5 for one negotiated suite."""

    def __init__(self, suite: SuiteParams) -> None:
        self.suite = suite
        self.algorithm = suite.hash()

    def expand_label(self, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
        """HKDF-Expand-Label with this suite's hash."""
        return hkdf_expand_label(self.algorithm, secret, label, context, length)

    def derive(self, shared_secret: bytes, th_keys: bytes) -> HandshakeSecrets:
        """master = HKDF-Extract(0^HashLen, shared_secret); then the four TH_keys secrets."""
        n = self.suite.hash_len
        master = hkdf_extract(self.algorithm, b"\x00" * n, shared_secret)
        return HandshakeSecrets(
            shared_secret=shared_secret,
            master=master,
            c_ap_0=self.expand_label(master, b"c ap traffic", th_keys, n),
            s_ap_0=self.expand_label(master, b"s ap traffic", th_keys, n),
            c_finished=self.expand_label(master, b"c finished", th_keys, n),
            s_finished=self.expand_label(master, b"s finished", th_keys, n),
        )

    def traffic_keys(self, secret: bytes) -> TrafficKeys:
        """key = Expand-Label(secret, "key", "", key_len); iv = ... "iv" ... 12."""
        return TrafficKeys(
            secret=secret,
            key=self.expand_label(secret, b"key", b"", self.suite.key_len),
            iv=self.expand_label(secret, b"iv", b"", 12),
        )

    def next_secret(self, secret: bytes) -> bytes:
        """next secret = Expand-Label(secret, "traffic upd", "", HashLen)."""
        return self.expand_label(secret, b"traffic upd", b"", self.suite.hash_len)

    def verify_data(self, finished_key: bytes, transcript_hash: bytes) -> bytes:
        """HMAC-Hash(finished_key, TH(...))."""
        return hmac_hash(self.algorithm, finished_key, transcript_hash)

    def sas(self, master: bytes, th_all: bytes) -> bytes:
        """sas = Expand-Label(master, "sas", TH(all handshake frames), HashLen)."""
        return self.expand_label(master, b"sas", th_all, self.suite.hash_len)


def sas_display(sas: bytes) -> str:
    """The first 8 bytes as four groups of four hex digits (§5), for people."""
    h = sas[:8].hex()
    return " ".join(h[i : i + 4] for i in range(0, 16, 4))


def keylog_lines(client_random: bytes, c_ap_0: bytes, s_ap_0: bytes) -> str:
    """The two NSS-style key log lines of §9, newline-terminated."""
    cr = client_random.hex()
    return (
        f"CLIENT_TRAFFIC_SECRET_0 {cr} {c_ap_0.hex()}\n"
        f"SERVER_TRAFFIC_SECRET_0 {cr} {s_ap_0.hex()}\n"
    )


def parse_keylog(text: str) -> dict[bytes, dict[str, bytes]]:
    """Read §9 lines: client_random -> {"CLIENT_TRAFFIC_SECRET_0": ..., ...}; others ignored."""
    out: dict[bytes, dict[str, bytes]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[0].startswith("#"):
            continue
        label, cr_hex, secret_hex = parts
        try:
            cr, secret = bytes.fromhex(cr_hex), bytes.fromhex(secret_hex)
        except ValueError:
            continue
        out.setdefault(cr, {})[label] = secret
    return out
