"""``kexlab known-hosts list`` and ``kexlab known-hosts forget HOST[:PORT]``: the tofu file.

A client refuses a server whose key changed ("possible man in the middle") and names
the ``forget`` command; after checking (out of band!) that the change was on purpose,
the user forgets the old key and the next connection is a first use again.
"""

from __future__ import annotations

from typing import Annotated

import typer

from explain.console import out
from keystore import KeyFileError, KnownHosts, known_hosts_path, long_fingerprint
from transport.address import host_port

from .errors import HELP_MARKUP, KexlabCommand, fail
from .parsing import parse_address

known_hosts_app = typer.Typer(
    help="List or forget the server keys trusted on first use.",
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)


def _host_port(text: str) -> str:
    return host_port(*parse_address(text))


@known_hosts_app.command("list", cls=KexlabCommand)
def list_hosts() -> None:
    """List every pinned server: host:port, fingerprint, line in the file.

    A line that cannot be read is shown too ($KEXLAB_HOME/known_hosts).
    """
    hosts = KnownHosts(known_hosts_path())
    try:
        lines = hosts.lines()
    except KeyFileError as exc:
        fail(str(exc))
    out(f"# {hosts.path}")
    for line in lines:
        if line.problem is not None:
            out(f"line {line.number}: cannot be read ({line.problem}): {line.text.strip()}")
        elif line.entry:
            assert line.sha256 is not None
            out(f"{line.host_port} {long_fingerprint(line.sha256)} (line {line.number})")
    loose = hosts.loose_mode()
    if loose is not None:
        out(f"warning: {loose}")


@known_hosts_app.command("forget", cls=KexlabCommand)
def forget(
    address: Annotated[
        str,
        typer.Argument(
            metavar="HOST[:PORT]", help="The server to forget (port 9700 unless given)."
        ),
    ],
) -> None:
    """Forget a server's key: the next connection to it is a first use again."""
    host_port = _host_port(address)
    hosts = KnownHosts(known_hosts_path())
    try:
        gone = hosts.remove(host_port)
    except (KeyFileError, OSError) as exc:
        fail(str(exc))
    if not gone:
        fail(f"{host_port} is not in {hosts.path} (kexlab known-hosts list shows what is)")
    out(f"forgot {host_port}: {gone} line(s) removed from {hosts.path}")
