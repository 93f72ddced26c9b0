"""``kexlab demo``: a server and three clients (rsa, dhe, psk) in one process, explained.

Everything is real: TCP on a free loopback port, keys made in a temporary directory,
the PSK generated and handed to both sides "by hand" (printed, then passed), frames
annotated as they cross. Then the same over MQTT (docs/protocol.md §8): an embedded broker on
a free loopback port, a PSK delivered over it, the server's fingerprint pinned from it,
and each session's SAS compared over it (frames are not shown again for these). It ends
with a table of each session's SAS as both sides saw it.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from cli.errors import fail
from client.oob import ClientOob
from client.session import ClientOptions, ClientSession
from explain.console import describe_error
from explain.explainer import Explainer
from explain.render import render_summary_line
from keystore import MqttPinPolicy, PinPolicy, ServerKeys, ensure_server_keys, long_fingerprint
from oob import EmbeddedBroker, MqttSettings, OobError
from protocol import (
    GROUP_NAMES,
    KEX_NAMES,
    SUITE_NAMES,
    CipherSuite,
    Group,
    HandshakeComplete,
    Kex,
    ProtocolError,
)
from server.oob import ServerOob
from server.server import KexlabServer, ServerObserver, ServerOptions
from transport import TransportError

PSK_IDENTITY = "demo-psk"
SERVER_ID = "kexlab-demo"
MQTT_READY_TIMEOUT = 5.0


@dataclass(frozen=True)
class Run:
    """One demo session to run."""

    title: str
    kex: Kex
    group: Group
    suite: CipherSuite
    messages: tuple[str, ...]
    rekey: bool = False


RUNS = (
    Run(
        "rsa: a fresh secret wrapped with the server's RSA key (no forward secrecy)",
        Kex.RSA,
        Group.NONE,
        CipherSuite.AES_128_GCM_SHA256,
        ("hello over rsa", "the server's RSA key decrypted our premaster"),
    ),
    Run(
        "dhe: ephemeral x25519, the server signs its share (forward secrecy)",
        Kex.DHE,
        Group.X25519,
        CipherSuite.AES_256_GCM_SHA384,
        ("hello over dhe", "and again after a key update"),
        rekey=True,
    ),
    Run(
        "psk: a key handed over out of band before the connection",
        Kex.PSK,
        Group.NONE,
        CipherSuite.AES_256_GCM_SHA384,
        ("hello over psk",),
    ),
)


class _ServerSide(ServerObserver):
    """Keeps what the server saw of each handshake, to compare SAS with the client's."""

    def __init__(self) -> None:
        self.handshakes: dict[bytes, HandshakeComplete] = {}

    def handshake(self, peer: str, hc: HandshakeComplete, ms: float) -> None:
        """Remember the server's view, keyed by client_random."""
        self.handshakes[hc.client_random] = hc

    def log(self, event: str, peer: str, fields: dict[str, Any]) -> None:
        """Quiet: the demo prints the client's view."""


def demo(
    explain: Annotated[
        bool,
        typer.Option("--explain/--no-explain", help="Print every frame as an annotated table."),
    ] = True,
    show_secrets: Annotated[
        bool,
        typer.Option(
            "--show-secrets",
            help="Also print each session's secret values (shared secret, master, traffic keys).",
        ),
    ] = False,
) -> None:
    """Run rsa, dhe and psk sessions and compare their SAS. Server and clients run in this process."""
    console = Console(highlight=False)
    try:
        asyncio.run(_demo(console, explain, show_secrets))
    except (ProtocolError, TransportError, OSError, ValueError) as exc:
        fail(f"demo failed: {describe_error(exc, peer='server')}")
    except OobError as exc:
        fail(f"demo failed: {exc}")


async def _demo(console: Console, explain: bool, show_secrets: bool) -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kexlab-demo-") as tmp:
        keys = ensure_server_keys(Path(tmp))
        psk = secrets.token_bytes(32)
        # soft_wrap: a fingerprint or key broken across lines cannot be copied or grepped.
        console.print(
            f"server key (RSA-2048, made just now): {long_fingerprint(keys.fingerprint)}",
            soft_wrap=True,
        )
        console.print(
            f"PSK handed over by hand to both sides: identity {PSK_IDENTITY!r},"
            f" key {psk.hex()} (32 random bytes)",
            soft_wrap=True,
        )
        observer = _ServerSide()
        server = KexlabServer(
            ServerOptions(
                host="127.0.0.1",
                port=0,
                rsa_key=keys.rsa_key,
                sign_key=keys.rsa_key,
                psks={PSK_IDENTITY: psk},
                inbox=Path(tmp) / "inbox",
            ),
            observer,
        )
        host, port = await server.start()
        console.print(f"server listening on {host}:{port} (rsa, dhe, psk; echo)\n")
        results = []
        try:
            for run in RUNS:
                results.append(
                    await _session(
                        console, run, host, port, keys.fingerprint, psk, explain, show_secrets
                    )
                )
        finally:
            await server.shutdown()
        results += await _over_mqtt(console, keys, Path(tmp), observer, show_secrets)
    table = Table(
        title="kexlab demo: three ways to agree on a key",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,  # room for the "*" of the MQTT rows in 80 columns
    )
    for column in ("method", "client SAS", "server SAS", "same", "time"):
        table.add_column(column, no_wrap=True)
    for n, (hc, ms) in enumerate(results):
        theirs = observer.handshakes.get(hc.client_random)
        method = "/".join(
            [KEX_NAMES[hc.kex]]
            + ([GROUP_NAMES[hc.group]] if hc.group is not Group.NONE else [])
            + [SUITE_NAMES[hc.cipher_suite]]
        ) + ("*" if n >= len(RUNS) else "")
        table.add_row(
            method,
            hc.sas_display,
            theirs.sas_display if theirs else "?",
            "yes" if theirs is not None and theirs.sas == hc.sas else "NO",
            f"{ms:.1f} ms",
        )
    console.print(table)
    console.print(
        "* over MQTT: the key (psk) or the pin of the server key (dhe) came from the broker,"
        " and both sides compared the full SAS over it."
    )
    console.print(
        "Same SAS on both sides: nobody in the middle. Compare it aloud to be sure."
        f"  (demo took {time.perf_counter() - started:.1f} s)"
    )


async def _session(
    console: Console,
    run: Run,
    host: str,
    port: int,
    fingerprint: str,
    psk: bytes,
    explain: bool,
    show_secrets: bool,
) -> tuple[HandshakeComplete, float]:
    console.print(Rule(run.title))
    policy = PinPolicy(fingerprint, "the server's key file")
    options = ClientOptions(
        host=host,
        port=port,
        kex=run.kex,
        group=run.group,
        suite=run.suite,
        psk_identity=PSK_IDENTITY if run.kex is Kex.PSK else "",
        psk=psk if run.kex is Kex.PSK else b"",
        trust=policy.decide,
        explain=explain,
        timeout=5.0,
    )
    explainer = Explainer(console, "client", frames=explain, show_secrets=show_secrets)
    session = await ClientSession.open(options, on_event=explainer.on_event)
    render_summary_line(console, session.handshake, session.handshake_ms, "client")
    for n, text in enumerate(run.messages):
        if run.rekey and n == len(run.messages) - 1:
            await session.key_update()
            explainer.key_update_sent()
        echo = await session.request(text.encode("utf-8"))
        console.print(f"sent {text!r}, echo {echo.decode('utf-8', 'replace')!r}")
    await session.close()
    console.print()
    return session.handshake, session.handshake_ms


async def _over_mqtt(
    console: Console, keys: ServerKeys, tmp: Path, observer: _ServerSide, show_secrets: bool
) -> list[tuple[HandshakeComplete, float]]:
    """psk delivered, fingerprint pinned and SAS compared over an embedded MQTT broker."""
    console.print(Rule("out of band over MQTT (docs/protocol.md section 8)"))
    async with EmbeddedBroker("127.0.0.1", 0) as broker:
        settings = MqttSettings.from_url(broker.url, env={})
        console.print(
            f"embedded MQTT broker on {broker.url}: an open lab broker, so anyone connected"
            " to it reads every key that crosses it (mosquitto_sub -t 'kexlab/#' -v)"
        )
        options = ServerOptions(
            host="127.0.0.1",
            port=0,
            rsa_key=keys.rsa_key,
            sign_key=keys.rsa_key,
            inbox=tmp / "inbox",
        )
        mqtt = ServerOob(settings, SERVER_ID, verify_sas=True)
        channel = mqtt.attach(options)
        server = KexlabServer(options, observer)
        host, port = await server.start()
        mqtt.start(options, f"{host}:{port}")
        try:
            # A PSK message is not retained: the server must be subscribed before it goes out.
            if not await channel.wait_ready(MQTT_READY_TIMEOUT):
                raise OobError(f"the demo server did not subscribe on {broker.url}")
            console.print(
                f"server {SERVER_ID!r} on {host}:{port} subscribes to kexlab/v1/{SERVER_ID}/psk/+"
                " and announces its key fingerprint (retained)\n"
            )
            results = []
            for kex in (Kex.PSK, Kex.DHE):
                client = ClientOptions(host=host, port=port, kex=kex, timeout=5.0)
                results.append(await _mqtt_session(console, client, settings, show_secrets))
        finally:
            await server.shutdown()
            await mqtt.stop()
    return results


async def _mqtt_session(
    console: Console, options: ClientOptions, settings: MqttSettings, show_secrets: bool
) -> tuple[HandshakeComplete, float]:
    """One client over MQTT: psk delivered, or dhe pinned; the SAS compared either way."""
    psk = options.kex is Kex.PSK
    title = (
        "psk over MQTT: the client publishes a fresh key, then connects"
        if psk
        else "dhe, the server key pinned from its fingerprint on the broker"
    )
    console.print(Rule(title))
    mqtt = ClientOob(settings, SERVER_ID, verify_sas=True, publish_psk=psk)
    policy: MqttPinPolicy | None = None  # psk: there is no server key to pin
    if psk:
        mqtt.new_psk(options)
    else:
        policy = MqttPinPolicy()
        options.trust = policy.decide
    notes = await mqtt.before_connect(options, policy)
    for note in notes + (policy.notes if policy is not None else []):
        console.print(note, markup=False, soft_wrap=True)
    explainer = Explainer(console, "client", frames=False, show_secrets=show_secrets)
    session = await mqtt.open(options, explainer.on_event)
    render_summary_line(console, session.handshake, session.handshake_ms, "client")
    try:
        line, verified = await mqtt.check_sas(session)
        style = "green" if verified else "yellow"  # an open broker backs no "verified"
        console.print(line, style=style, markup=False, soft_wrap=True)
        text = f"hello over {'psk' if psk else 'dhe'}, via MQTT"
        echo = await session.request(text.encode("utf-8"))
    except BaseException:
        await session.wait_closed()
        raise
    console.print(f"sent {text!r}, echo {echo.decode('utf-8', 'replace')!r}")
    await session.close()
    console.print()
    return session.handshake, session.handshake_ms
