"""The ``kexlab`` command and its subcommands (console script ``cli.main:main``)."""

from __future__ import annotations

import typer

from cli.bench import bench
from cli.client_command import client
from cli.decrypt import decrypt
from cli.demo import demo
from cli.errors import HELP_MARKUP, KexlabCommand, KexlabGroup
from cli.keygen import keygen
from cli.known_hosts import known_hosts_app
from cli.local_lab import local_lab
from cli.mitm_command import mitm
from cli.oob_commands import broker, psk_send
from cli.server_command import server

app = typer.Typer(
    name="kexlab",
    cls=KexlabGroup,
    help="A key-exchange lab: watch a server and a client agree on a key by rsa, dhe or psk.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode=HELP_MARKUP,
)
app.command("keygen", cls=KexlabCommand)(keygen)
app.command("server", cls=KexlabCommand)(server)
app.command("client", cls=KexlabCommand)(client)
app.command("demo", cls=KexlabCommand)(demo)
app.command("mitm", cls=KexlabCommand)(mitm)
app.command("decrypt", cls=KexlabCommand)(decrypt)
app.command("bench", cls=KexlabCommand)(bench)
app.command("broker", cls=KexlabCommand)(broker)
app.command("local-lab", cls=KexlabCommand)(local_lab)

psk_app = typer.Typer(
    help="Hand PSKs over out of band.", no_args_is_help=True, rich_markup_mode=HELP_MARKUP
)
psk_app.command("send", cls=KexlabCommand)(psk_send)
app.add_typer(psk_app, name="psk")
app.add_typer(known_hosts_app, name="known-hosts")


def main() -> None:
    """Console script entry point."""
    app()


if __name__ == "__main__":
    main()
