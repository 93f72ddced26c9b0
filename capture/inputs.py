"""The key sources a user hands ``kexlab decrypt``: a key log, a leaked RSA key, PSKs."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from keystore import KeyFileError, load_private_key, parse_psk_spec
from protocol import KexlabError
from protocol.keyschedule import parse_keylog

CLIENT_KEY = "CLIENT_TRAFFIC_SECRET_0"
SERVER_KEY = "SERVER_TRAFFIC_SECRET_0"


class InputError(KexlabError):
    """A key source given by the user cannot be used (unreadable file, bad format)."""


def load_keylog(path: str | os.PathLike[str]) -> dict[bytes, list[dict[str, bytes]]]:
    """Read a §9 key log file: per client_random, every set of secrets logged for it.

    One client_random usually has one set. A man in the middle's two legs share it (the
    attacker copies the client's random) and an endpoint of each leg logs its own secrets:
    both sets are kept, in file order, and the decryptor uses the one that opens the
    records. A file without a single key log line is an error.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read key log {os.fspath(path)}: {exc.strerror or exc}") from None
    entries: dict[bytes, list[dict[str, bytes]]] = {}
    for line in text.splitlines():
        for client_random, labels in parse_keylog(line).items():  # one line, one secret
            sets = entries.setdefault(client_random, [])
            for label, secret in labels.items():
                if not sets or label in sets[-1]:
                    sets.append({})  # this label again: the secrets of another connection
                sets[-1][label] = secret
    entries = {
        cr: kept
        for cr, sets in entries.items()
        if (kept := [e for e in sets if CLIENT_KEY in e or SERVER_KEY in e])
    }
    if not entries:
        raise InputError(f"{os.fspath(path)} holds no key log lines ({CLIENT_KEY} ...)")
    return entries


def load_rsa_key(path: str | os.PathLike[str]) -> rsa.RSAPrivateKey:
    """Read an unencrypted RSA private key (PEM or DER, PKCS#8 or PKCS#1), whatever its mode."""
    try:
        key = load_private_key(Path(path), own=False)
    except KeyFileError as exc:
        raise InputError(str(exc)) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InputError(f"{os.fspath(path)} is not an RSA private key")
    return key


def parse_psk(text: str) -> tuple[str, bytes]:
    """``ID=HEX`` or ``ID=BASE64`` -> (identity, key), as every command reads ``--psk``."""
    try:
        return parse_psk_spec(text)
    except ValueError as exc:
        raise InputError(f"--psk: {exc}") from None
