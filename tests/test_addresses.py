"""Addresses as ssh and curl users write them, and the lines that say what went wrong with one.

Issue 12 items 13 (port in use), 14 (a host name that does not resolve), 15 (IPv6).
"""

from __future__ import annotations

import re
import socket

import pytest
import typer
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    free_port,
    home_fixture,
    one_error_line,
)
from typer.testing import CliRunner

from cli.main import app
from cli.parsing import address_note, parse_address, parse_listen_host
from transport.address import host_port

pytestmark = pytest.mark.usefixtures("home")
runner = CliRunner()


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1", "127.0.0.1", 9700),
        ("127.0.0.1:9701", "127.0.0.1", 9701),
        ("localhost:9701", "localhost", 9701),
        ("::1", "::1", 9700),  # was: host ':' ... connection refused with no hint
        ("[::1]", "::1", 9700),
        ("[::1]:9701", "::1", 9701),
        ("::1:9701", "::1:9701", 9700),  # an IPv6 address, as ssh reads it (and says so)
        ("fe80::1%lo", "fe80::1%lo", 9700),
    ],
)
def test_parse_address(text: str, host: str, port: int) -> None:
    assert parse_address(text) == (host, port)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1:2:3", "'1:2:3' is neither HOST:PORT nor an IPv6 address"),
        ("[host]:1", "'host' in brackets is not an IPv6 address"),
        ("[::1]x", "is not [HOST]:PORT"),
        ("h:0", "port '0' is not a number from 1 to 65535"),
    ],
)
def test_bad_addresses(text: str, message: str) -> None:
    with pytest.raises(typer.BadParameter, match=re.escape(message)):
        parse_address(text)


def test_the_form_understood_is_said_where_it_could_be_either() -> None:
    assert address_note("::1:9701") == (
        "note: '::1:9701' is read as the IPv6 address ::1:9701, port 9700;"
        " for ::1 on port 9701 write [::1]:9701"
    )
    for plain in ("::1", "[::1]:9701", "127.0.0.1:9701", "2001:db8::1", "localhost"):
        assert address_note(plain) is None, plain


def test_client_names_the_understood_form_and_brackets_ipv6() -> None:
    # Was: "cannot connect to ::1:9701:9700".
    result = runner.invoke(app, ["client", "::1:9701", "--send", "x", "--timeout", "2"])
    assert result.exit_code == 1
    note, error = [line for line in result.stderr.splitlines() if line]
    assert note.startswith("note: '::1:9701' is read as the IPv6 address ::1:9701, port 9700")
    assert error.startswith("error: cannot connect to [::1:9701]:9700: ")


def test_a_refused_ipv6_client_is_told_where_the_server_listens() -> None:
    port = free_port()
    result = runner.invoke(app, ["client", "::1", "--send", "x"])
    line = one_error_line(result.stderr)
    assert line.startswith("error: cannot connect to [::1]:9700: "), line
    if "connection refused" in line:  # no IPv6 loopback at all says so instead
        assert line.endswith(
            "connection refused; kexlab server listens on 127.0.0.1 only,"
            " unless started with --host ::1"
        )
    result = runner.invoke(app, ["client", f"127.0.0.1:{port}", "--send", "x"])
    assert one_error_line(result.stderr) == (
        f"error: cannot connect to 127.0.0.1:{port}: connection refused;"
        f" is a kexlab server running with --port {port}?"
    )


def test_port_in_use_names_the_address_and_the_fix() -> None:
    # Was: "error: error while attempting to bind on address ('127.0.0.1', 9700): ...".
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = runner.invoke(app, ["server", "--port", str(port)])
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        f"error: cannot listen on 127.0.0.1:{port}: address already in use; another program"
        " holds that port (a kexlab server already running?): stop it, or choose another"
        " port with --port (--port 0 picks a free one)"
    )


def test_a_host_that_does_not_resolve_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # Was: "error: name or service not known", without the name. The resolver is stubbed:
    # asking the real one would send a DNS query off this machine.
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "127.0.0.l":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    result = runner.invoke(app, ["server", "--host", "127.0.0.l", "--port", "0"])
    assert result.exit_code == 1
    assert one_error_line(result.stderr) == (
        "error: cannot listen on 127.0.0.l:0: name or service not known; --host takes an"
        " address of this machine (127.0.0.1, ::1) or a name for one"
    )


@pytest.mark.parametrize(
    ("text", "host"), [("::1", "::1"), ("[::1]", "::1"), (" 127.0.0.2 ", "127.0.0.2")]
)
def test_listen_host(text: str, host: str) -> None:
    assert parse_listen_host(text) == host


def test_listen_host_takes_no_port() -> None:
    result = runner.invoke(app, ["server", "--host", "127.0.0.1:9700"])
    assert result.exit_code == 2
    assert "(--host takes no port: use --port)" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("host", "port", "shown"),
    [
        ("127.0.0.1", 9700, "127.0.0.1:9700"),
        ("localhost", 1, "localhost:1"),
        ("::1", 9701, "[::1]:9701"),
        ("fe80::1%lo", 9700, "[fe80::1%lo]:9700"),
    ],
)
def test_host_port_puts_ipv6_in_brackets_and_reads_back(host: str, port: int, shown: str) -> None:
    assert host_port(host, port) == shown
    assert parse_address(shown) == (host, port)
