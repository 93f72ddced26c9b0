"""Parsers of the values people type (``--kex``, ``--group``, ``HOST:PORT``, ``--psk``).

Each raises ``typer.BadParameter``, a usage mistake (exit 2), with what was wrong and
what would be right.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer

from keystore import parse_psk_spec, psk_note, read_psk_spec
from protocol import GROUP_NAMES, KEX_NAMES, SUITE_NAMES, CipherSuite, Group, Kex
from protocol.constants import DEFAULT_PORT

T = TypeVar("T", bound=str | None)

KEX_BY_NAME = {name: kex for kex, name in KEX_NAMES.items()}
SUITE_BY_NAME = {name: suite for suite, name in SUITE_NAMES.items()}

GROUP_BY_NAME: dict[str, Group] = {
    **{name: g for g, name in GROUP_NAMES.items() if g is not Group.NONE},
    "p256": Group.SECP256R1,
    "p-256": Group.SECP256R1,
    "p384": Group.SECP384R1,
    "p-384": Group.SECP384R1,
}


def checks(parse: Callable[[str], object]) -> Callable[[T], T]:
    """An option's callback: a usage error for what ``parse`` refuses; the text passes on.

    The command parses the text again where it needs the value; the callback only makes
    the mistake a usage error that typer reports before anything runs.
    """

    def callback(value: T) -> T:
        if value is not None:
            parse(value)
        return value

    return callback


def _choice(value: str, table: dict[str, Any], what: str, shown: Sequence[str] = ()) -> Any:
    key = value.strip().lower()
    if key not in table:
        raise typer.BadParameter(f"unknown {what} {value!r}: use {', '.join(shown or table)}")
    return table[key]


def parse_kex(value: str) -> Kex:
    """rsa | dhe | psk."""
    kex: Kex = _choice(value, KEX_BY_NAME, "key exchange")
    return kex


def parse_kex_list(value: str) -> frozenset[Kex]:
    """A comma-separated list of methods (``rsa,dhe,psk``)."""
    names = [part for part in value.split(",") if part.strip()]
    if not names:
        raise typer.BadParameter("name at least one method: rsa, dhe, psk")
    return frozenset(parse_kex(name) for name in names)


def parse_suite(value: str) -> CipherSuite:
    """aes128 | aes256."""
    suite: CipherSuite = _choice(value, SUITE_BY_NAME, "cipher suite")
    return suite


def parse_group(value: str) -> Group:
    """x25519 | secp256r1 | secp384r1 | ffdhe2048 | ffdhe3072 (p256/p384 accepted)."""
    shown = [n for g, n in GROUP_NAMES.items() if g is not Group.NONE]
    group: Group = _choice(value, GROUP_BY_NAME, "group", shown)
    return group


def parse_psk(spec: str) -> tuple[str, bytes]:
    """``IDENTITY=HEX`` (or base64): a §3 identity and a key of at least 16 bytes."""
    try:
        return parse_psk_spec(spec)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def check_psks(values: list[str] | None) -> list[str] | None:
    """Callback of a repeatable ``--psk``: each one must parse (usage error otherwise)."""
    for spec in values or []:
        parse_psk(spec)
    return values


def psk_notes(specs: Sequence[str]) -> list[str]:
    """One line per ``--psk`` whose key was read as base64, to say so (after parse_psk)."""
    notes = (psk_note(read_psk_spec(spec)) for spec in specs)
    return [note for note in notes if note is not None]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``V6``, ``[V6]`` or ``[V6]:PORT`` (port 9700 by default).

    As ssh and curl read them: an address with two colons or more is IPv6 and has no
    port; a port after an IPv6 address needs the brackets (``[::1]:9701``).
    ``address_note`` says when a form could be read as the other.
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise typer.BadParameter(f"{text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise typer.BadParameter(f"{text!r} is not [HOST]:PORT")
        port_text = rest[1:]
        if not _is_ipv6(host):
            raise typer.BadParameter(f"{host!r} in brackets is not an IPv6 address")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif ":" in text and not _is_ipv6(text):
        raise typer.BadParameter(
            f"{text!r} is neither HOST:PORT nor an IPv6 address (an IPv6 address with a"
            " port is written [::1]:9701)"
        )
    if not host:
        raise typer.BadParameter(f"{text!r} has no host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise typer.BadParameter(f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def address_note(text: str) -> str | None:
    """A note when ``text`` is an IPv6 address whose last group looks like a port.

    ``::1:9701`` is the address ::1:9701 on port 9700, not ::1 on port 9701: say so.
    """
    text = text.strip()
    head, _, tail = text.rpartition(":")
    if text.startswith("[") or text.count(":") < 2 or not tail.isdigit():
        return None
    if not _is_ipv6(head.rstrip(":") if head.endswith("::") else head):
        return None
    return (
        f"note: {text!r} is read as the IPv6 address {text}, port {DEFAULT_PORT};"
        f" for {head} on port {tail} write [{head}]:{tail}"
    )


def parse_listen_host(text: str) -> str:
    """``--host``: an address or name to listen on; an IPv6 address with or without brackets."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        raise typer.BadParameter("name an address to listen on, e.g. 127.0.0.1 or ::1")
    if ":" in text and not _is_ipv6(text):
        raise typer.BadParameter(
            f"{text!r} is not an IPv6 address (--host takes no port: use --port)"
        )
    return text


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text.split("%")[0])  # fe80::1%eth0: a zone is allowed
    except ValueError:
        return False
    return True
