"""``kexlab broker`` and ``kexlab psk send``: the two out-of-band commands that need no KXP peer.

Register them in ``cli/main.py``::

    app.command("broker")(broker)
    psk_app = typer.Typer(help="Hand PSKs to a server out of band.")
    psk_app.command("send")(psk_send)
    app.add_typer(psk_app, name="psk")
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from cli.errors import fail
from cli.options import (
    CaOption,
    OobOption,
    PasswordFileOption,
    UsernameOption,
    check_server_id_option,
    mqtt_settings,
)
from explain.console import error_line, note_line
from oob import (
    DEFAULT_TTL,
    DEFAULT_URL,
    EmbeddedBroker,
    OobError,
    PskPublication,
    format_shared_psk,
    generate_identity,
    generate_psk,
    is_loopback,
    publish_psk,
)
from oob.broker import DEFAULT_HOST, DEFAULT_PORT
from transport.signals import stop_on_signals


def broker(
    host: Annotated[
        str,
        typer.Option(
            metavar="ADDRESS", help="Address to listen on (loopback unless you mean otherwise)."
        ),
    ] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, metavar="PORT", help="TCP port.")
    ] = DEFAULT_PORT,
) -> None:
    """Run an open MQTT broker (embedded amqtt) until Ctrl-C. For machines without Mosquitto."""
    try:
        asyncio.run(_serve(host, port))
    except OobError as exc:
        fail(str(exc))


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    with stop_on_signals(stop):
        async with EmbeddedBroker(host, port) as running:
            _say(f"kexlab broker: listening on {running.url} (embedded amqtt)")
            _say(
                "kexlab broker: open lab broker: no login, no ACL, no TLS; anyone who can "
                "connect reads every key (mosquitto_sub -t 'kexlab/#' -v)"
            )
            if not is_loopback(host):
                error_line(
                    f"warning: listening on {host}, not loopback: other machines can reach "
                    "this broker and read every key that crosses it"
                )
            await stop.wait()
        _say("kexlab broker: stopped")


def _check_identity(value: str | None) -> str | None:
    """``--identity``: one the client can paste back as IDENTITY=HEX (usage error otherwise)."""
    if value is not None:
        try:
            format_shared_psk(value, b"")
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def psk_send(
    server_id: Annotated[
        str,
        typer.Option(
            "--server-id",
            metavar="NAME",
            callback=check_server_id_option,
            help="The server's --server-id (its host name there).",
        ),
    ],
    oob: OobOption = DEFAULT_URL,
    identity: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            callback=_check_identity,
            help="PSK identity (default: a fresh random one).",
            show_default=False,
        ),
    ] = None,
    ttl: Annotated[
        float,
        typer.Option(min=1, metavar="SECONDS", help="Seconds until the server forgets the key."),
    ] = DEFAULT_TTL,
    mqtt_username: UsernameOption = None,
    mqtt_password_file: PasswordFileOption = None,
    mqtt_ca: CaOption = None,
) -> None:
    """Hand a server a fresh PSK over MQTT. Prints IDENTITY=HEX, a 32-byte key, for the client side."""
    settings = mqtt_settings(oob, mqtt_username, mqtt_password_file, mqtt_ca)
    key, name = generate_psk(), identity or generate_identity()
    try:
        publication = asyncio.run(publish_psk(settings, server_id, name, key, ttl))
    except (OobError, ValueError) as exc:
        fail(str(exc))
    _report(publication)


def _report(publication: PskPublication) -> None:
    # stdout carries only the key line, so `kexlab psk send ... > key.txt` captures just it.
    _say(publication.summary())
    _say("give the client this line (e.g. kexlab client --kex psk --psk IDENTITY=HEX):")
    typer.echo(publication.shareable)


def _say(text: str) -> None:
    note_line(text)  # stderr; broken between words on a terminal, one line to a file
