"""``kexlab mitm``: a man in the middle between kexlab clients and a kexlab server.

For the lesson (docs/lessons/man-in-the-middle.md): it wins against a client that
accepts any key (``--trust none``), against tofu on first contact, and against psk when
it can read the key on an open broker; it is caught by a pinned or known key, by a PSK
it does not hold, by the SAS compared over an honest channel or aloud, and (``--relay``)
by the record layer and FINISHED when it changes a single bit.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric import rsa
from rich.console import Console
from rich.table import Table

from capture.tap import CaptureFileError, close_pcap, open_pcap
from explain.console import describe_error, out
from keystore import (
    KeyFileError,
    data_dir,
    ensure_server_keys,
    fingerprint,
    load_private_key,
    load_rsa_private_key,
)
from mitm import MitmOptions, MitmProxy, Tally, Tamper
from oob import DEFAULT_PSK_WAIT, MqttSettings, OobError, SasForger, ServerChannel
from protocol import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_PORT
from protocol.kex import ServerPrivateKey
from transport.signals import stop_on_signals

from .errors import fail
from .options import (
    CaOption,
    OptionalOobOption,
    PasswordFileOption,
    PcapOption,
    ServerIdOption,
    UsernameOption,
    default_server_id,
    mqtt_options_need_oob,
    mqtt_settings,
)
from .parsing import checks, parse_address

DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT + 1}"
DEFAULT_UPSTREAM = f"127.0.0.1:{DEFAULT_PORT}"
FORGE_WAIT = 1.0
"""Seconds to wait for a side to publish its SAS (one that does not compare publishes none)."""


def _check_rewrites(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        _rewrite(value)
    return values


def _rewrite(value: str) -> tuple[bytes, bytes]:
    old, sep, new = value.partition("=")
    if not sep or not old:
        raise typer.BadParameter(f"{value!r} is not OLD=NEW (OLD not empty)")
    return old.encode("utf-8", "surrogateescape"), new.encode("utf-8", "surrogateescape")


def mitm(
    listen: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT", callback=checks(parse_address), help="Where victims connect to us."
        ),
    ] = DEFAULT_LISTEN,
    upstream: Annotated[
        str,
        typer.Option(
            metavar="HOST:PORT",
            callback=checks(parse_address),
            help="The real server we connect to.",
        ),
    ] = DEFAULT_UPSTREAM,
    rsa_key: Annotated[
        Path | None,
        typer.Option(
            "--rsa-key",
            metavar="FILE",
            help="Our RSA key, shown to rsa clients and (by default) signing our dhe shares."
            " Default: $KEXLAB_HOME/mitm/server-rsa.pem, created on first run.",
        ),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key", metavar="FILE", help="Our identity key for dhe (RSA or Ed25519)."
        ),
    ] = None,
    anonymous: Annotated[
        bool,
        typer.Option(
            "--anonymous",
            help="Answer dhe with no key at all (only a client with --trust none accepts it).",
        ),
    ] = False,
    rewrite: Annotated[
        list[str] | None,
        typer.Option(
            metavar="OLD=NEW",
            callback=_check_rewrites,
            help="Replace OLD by NEW in every record we relay, both ways (repeatable).",
        ),
    ] = None,
    relay: Annotated[
        bool,
        typer.Option(
            "--relay",
            help="Hold no keys: pass every frame through, changing only what a tamper flag says.",
        ),
    ] = False,
    flip: Annotated[
        bool, typer.Option("--flip", help="With --relay: flip a bit of the client's first record.")
    ] = False,
    drop: Annotated[
        bool, typer.Option("--drop", help="With --relay: drop the client's first record.")
    ] = False,
    replay: Annotated[
        bool, typer.Option("--replay", help="With --relay: send the client's first record twice.")
    ] = False,
    reorder: Annotated[
        bool,
        typer.Option("--reorder", help="With --relay: swap the client's first two records."),
    ] = False,
    downgrade: Annotated[
        str | None,
        typer.Option(
            metavar="suite|anonymous",
            help="With --relay: ask the server for AES-128 instead of AES-256 (suite), or strip"
            " the server's key and signature (anonymous).",
            show_default=False,
        ),
    ] = None,
    oob: OptionalOobOption = None,
    server_id: ServerIdOption = None,
    forge_sas: Annotated[
        bool,
        typer.Option(
            "--forge-sas",
            help="With --oob: answer each side's SAS over MQTT with the SAS of its own leg"
            " (a match on a broker that lets us publish there).",
        ),
    ] = False,
    psk_wait: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help="With --oob: seconds to wait for a PSK to cross the broker.",
        ),
    ] = DEFAULT_PSK_WAIT,
    mqtt_username: UsernameOption = None,
    mqtt_password_file: PasswordFileOption = None,
    mqtt_ca: CaOption = None,
    pcap: PcapOption = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.01, metavar="SECONDS", help="Seconds for each handshake and for connecting."
        ),
    ] = DEFAULT_HANDSHAKE_TIMEOUT,
) -> None:
    """Stand in the middle: read and change what the two ends say.

    Where a client lets us: it accepts any key (--trust none), meets us first (tofu), or
    hands its PSK over an open broker we read (--oob). Caught everywhere else.
    """
    tamper = _tamper(relay, flip, drop, replay, reorder, downgrade)
    if relay and (rewrite or anonymous or rsa_key or sign_key):
        raise typer.BadParameter(
            "--relay holds no keys: --rewrite, --anonymous, --rsa-key and --sign-key need"
            " the intercepting mode (leave out --relay)",
            param_hint="'--relay'",
        )
    if anonymous and sign_key is not None:
        raise typer.BadParameter(
            "--anonymous and --sign-key exclude each other", param_hint="'--anonymous'"
        )
    mqtt_options_need_oob(
        oob,
        username=mqtt_username,
        password_file=mqtt_password_file,
        ca_file=mqtt_ca,
        server_id=server_id,
        forge_sas=forge_sas,
    )
    if forge_sas and relay:
        raise typer.BadParameter(
            "--relay holds no keys and knows no SAS to forge", param_hint="'--forge-sas'"
        )
    listen_at, upstream_at = parse_address(listen), parse_address(upstream)
    settings = None
    if oob is not None:
        try:
            settings = mqtt_settings(oob, mqtt_username, mqtt_password_file, mqtt_ca)
        except OobError as exc:
            fail(str(exc))
    sid = default_server_id(server_id) if oob is not None else ""
    try:
        our_rsa, sign = (None, None) if relay else _keys(rsa_key, sign_key, anonymous)
    except KeyFileError as exc:
        fail(str(exc))
    options = MitmOptions(
        upstream=upstream_at,
        rsa_key=our_rsa,
        sign_key=sign,
        rewrites=[_rewrite(r) for r in rewrite or []],
        timeout=timeout,
    )
    try:
        options.pcap = open_pcap(pcap) if pcap is not None else None
    except CaptureFileError as exc:
        fail(str(exc))
    try:
        tally = asyncio.run(_run(listen_at, options, tamper, settings, sid, psk_wait, forge_sas))
    except (OSError, OobError) as exc:
        fail(describe_error(exc))
    finally:
        if options.pcap is not None and pcap is not None:
            try:
                close_pcap(options.pcap, pcap)  # after the legs closed: every flow has its FINs
            except CaptureFileError as exc:
                fail(str(exc))
    _summary(tally)


def _tamper(
    relay: bool, flip: bool, drop: bool, replay: bool, reorder: bool, downgrade: str | None
) -> Tamper | None:
    chosen = [
        t
        for t, on in (
            (Tamper.FLIP, flip),
            (Tamper.DROP, drop),
            (Tamper.REPLAY, replay),
            (Tamper.REORDER, reorder),
        )
        if on
    ]
    if downgrade is not None:
        if downgrade not in ("suite", "anonymous"):
            raise typer.BadParameter(
                f"unknown downgrade {downgrade!r}: use suite or anonymous",
                param_hint="'--downgrade'",
            )
        chosen.append(Tamper(f"downgrade-{downgrade}"))
    if len(chosen) > 1:
        raise typer.BadParameter("choose one tampering at a time", param_hint="'--relay'")
    if chosen and not relay:
        raise typer.BadParameter(
            f"--{chosen[0].value.split('-')[0]} changes frames it relays: add --relay",
            param_hint="'--relay'",
        )
    if relay and not chosen:
        return Tamper.NONE  # a plain relay: shows the frames, changes nothing
    return chosen[0] if chosen else None


def _keys(
    rsa_path: Path | None, sign_path: Path | None, anonymous: bool
) -> tuple[rsa.RSAPrivateKey, ServerPrivateKey | None]:
    """The attacker's own keys: never the real server's (it does not have them)."""
    if rsa_path is not None:
        key = load_rsa_private_key(rsa_path)
    else:
        keys = ensure_server_keys(data_dir() / "mitm")
        key = keys.rsa_key
    out(f"our key: SHA256:{fingerprint(key)} (clients that pin the real server's key refuse it)")
    sign: ServerPrivateKey | None = key
    if anonymous:
        sign = None
    elif sign_path is not None:
        sign = load_private_key(sign_path)
    return key, sign


async def _run(
    listen: tuple[str, int],
    options: MitmOptions,
    tamper: Tamper | None,
    settings: MqttSettings | None,
    server_id: str,
    psk_wait: float,
    forge_sas: bool = False,
) -> Tally:
    async with contextlib.AsyncExitStack() as stack:
        if settings is not None:
            channel = ServerChannel(settings, server_id)
            channel.start()
            stack.push_async_callback(channel.stop)
            options.psk_source = channel.provider(psk_wait)
            out(f"listening on the broker for PSKs of server id {server_id!r}")
        if settings is not None and forge_sas:
            forger = await stack.enter_async_context(SasForger(settings, server_id))
            options.forge_sas = lambda cr, victim, sas: forger.answer(cr, victim, sas, FORGE_WAIT)
            out(f"forging SAS answers on kexlab/v1/{server_id}/sas/+/+")
        return await _serve(listen, options, tamper)


async def _serve(listen: tuple[str, int], options: MitmOptions, tamper: Tamper | None) -> Tally:
    proxy = MitmProxy(listen, options, out, tamper)
    host, port = await proxy.start()
    mode = f"relaying ({tamper.value})" if tamper is not None else "intercepting"
    upstream = f"{options.upstream[0]}:{options.upstream[1]}"
    out(f"mitm listening on {host}:{port}, upstream {upstream}, {mode}")
    stop = asyncio.Event()
    try:
        with stop_on_signals(stop):
            await stop.wait()
    finally:
        await proxy.stop()
    return proxy.tally


def _summary(tally: Tally) -> None:
    """The table printed when the attacker stops."""
    table = Table(title="kexlab mitm: what we got", title_justify="left")
    for column in ("#", "kex", "verdict", "SAS client saw", "SAS server saw"):
        table.add_column(column)
    for number, v in enumerate(tally.verdicts, 1):
        table.add_row(str(number), v.kex, v.line, v.client_sas or "-", v.server_sas or "-")
    console = Console(highlight=False)
    console.print(table)
    counts = ", ".join(f"{n} {what}" for what, n in sorted(tally.counts.items())) or "none"
    console.print(f"connections: {counts}", markup=False)
