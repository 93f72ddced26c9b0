"""The §5 secrets of a session as rows, for ``--show-secrets`` (values shown only on request)."""

from __future__ import annotations

from protocol.constants import (
    SUITES,
    CipherSuite,
    Kex,
)
from protocol.events import HandshakeComplete
from protocol.keyschedule import KeySchedule, TrafficKeys

from .rows import SECRET_OFFSET, Row
from .words import hash_name


def epoch_keys(cipher_suite: int, secret_0: bytes, epoch: int) -> TrafficKeys:
    """Key and iv of a direction's traffic secret after ``epoch`` key updates (§5, §6)."""
    schedule = KeySchedule(SUITES[CipherSuite(cipher_suite)])
    secret = secret_0
    for _ in range(epoch):
        secret = schedule.next_secret(secret)
    return schedule.traffic_keys(secret)


def annotate_secrets(
    complete: HandshakeComplete,
    *,
    shared_secret: bytes | None = None,
    client_epoch: int = 0,
    server_epoch: int = 0,
) -> list[Row]:
    """The §5 secrets of a session as rows (offset ``SECRET_OFFSET``): for ``--show-secrets``."""
    s = complete.secrets
    suite_hash = hash_name(SUITES[complete.cipher_suite].hash_len)
    rows: list[Row] = []
    if shared_secret is not None:
        source = {
            Kex.RSA: "the 32-byte premaster the client wrapped with RSA-OAEP",
            Kex.DHE: "the DH output; it never crossed the wire",
            Kex.PSK: "the pre-shared key",
        }[complete.kex]
        rows.append(Row(SECRET_OFFSET, "shared_secret", shared_secret, source))
    rows.append(
        Row(
            SECRET_OFFSET,
            "master",
            s.master,
            f"HKDF-Extract-{suite_hash}(0^HashLen, shared_secret)",
        )
    )
    for name, label, value in (
        ("c_ap_0", "c ap traffic", s.c_ap_0),
        ("s_ap_0", "s ap traffic", s.s_ap_0),
        ("c_finished", "c finished", s.c_finished),
        ("s_finished", "s finished", s.s_finished),
    ):
        rows.append(
            Row(SECRET_OFFSET, name, value, f'HKDF-Expand-Label(master, "{label}", TH_keys)')
        )
    for side, secret_0, epoch, direction in (
        ("c", s.c_ap_0, client_epoch, "client → server"),
        ("s", s.s_ap_0, server_epoch, "server → client"),
    ):
        keys = epoch_keys(complete.cipher_suite, secret_0, epoch)
        name = f"{side}_ap_{epoch}"
        if epoch:
            rows.append(
                Row(SECRET_OFFSET, name, keys.secret, f'"traffic upd" applied {epoch} time(s)')
            )
        rows.append(
            Row(SECRET_OFFSET, f"{name}.key", keys.key, f"AES-GCM key of the {direction} records")
        )
        rows.append(
            Row(SECRET_OFFSET, f"{name}.iv", keys.iv, "nonce base: nonce = iv XOR (0^4 || seq)")
        )
    return rows
