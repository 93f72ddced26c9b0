"""``kexlab server`` (and ``python -m server``): options -> keys -> a listening KexlabServer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from capture.tap import CaptureFileError, close_pcap, open_pcap
from explain.console import describe_error, error_line
from keystore import KeyFileError, data_dir
from oob import DEFAULT_PSK_WAIT
from protocol import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_PORT, KexlabError
from server.apps import APPS
from server.oob import ServerOob
from server.page_log import PageLog
from server.run import LOG_FORMATS, serve, server_options
from server.server import DEFAULT_MAX_CONNECTIONS

from .errors import fail, single_command_app
from .options import (
    CaOption,
    ExplainOption,
    KeylogOption,
    OptionalOobOption,
    PasswordFileOption,
    PcapOption,
    ServerIdOption,
    ShowSecretsOption,
    UsernameOption,
    VerifySasOption,
    check_keylog,
    default_server_id,
    input_file,
    mqtt_options_need_oob,
    mqtt_settings,
    output_file,
)
from .page_options import (
    DeterministicOption,
    HtmlDirOption,
    InsecureOption,
    html_dir,
    seed_of,
    seeded,
)
from .parsing import check_psks, checks, parse_kex_list, parse_listen_host, psk_notes
from .psk_options import PskFileOption, env_psks, given_psks, warn_about
from .server_limits import (
    DEFAULTS,
    HandshakeRateOption,
    IdleTimeoutOption,
    InboxMaxBytesOption,
    InboxMaxFilesOption,
    MaxHandshakesOption,
    MaxPerAddressOption,
    PskMaxLifetimeOption,
    UploadMaxFilesOption,
    apply_limits,
)


def _check_app(value: str) -> str:
    if value not in APPS:
        raise typer.BadParameter(f"unknown app {value!r}: use {', '.join(APPS)}")
    return value


def _check_log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise typer.BadParameter(f"unknown log format {value!r}: use text or json")
    return value


def server(
    host: Annotated[
        str,
        typer.Option(
            metavar="ADDRESS",
            callback=parse_listen_host,
            help="Address to listen on: 127.0.0.1 (loopback), ::1 (IPv6 loopback), localhost"
            " (both), or an address of this machine.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, metavar="PORT", help="TCP port to listen on (0: any free port)."
        ),
    ] = DEFAULT_PORT,
    kex: Annotated[
        str,
        typer.Option(
            metavar="LIST",
            callback=checks(parse_kex_list),
            help="Key exchange methods to enable, comma-separated: rsa, dhe, psk.",
        ),
    ] = "rsa,dhe,psk",
    rsa_key: Annotated[
        Path | None,
        typer.Option(
            "--rsa-key",
            metavar="FILE",
            help="RSA private key (>= 2048 bits) for rsa transport and, by default, dhe"
            " signatures. Default: $KEXLAB_HOME/server-rsa.pem (KEXLAB_HOME defaults to"
            " ~/.local/share/kexlab), created on first run.",
        ),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            metavar="FILE",
            help="Identity key (RSA or Ed25519) that signs dhe shares. Default: the RSA key.",
        ),
    ] = None,
    anonymous: Annotated[
        bool,
        typer.Option(
            "--anonymous",
            help="Serve dhe without a signature (clients must use --trust none).",
        ),
    ] = False,
    psk: Annotated[
        list[str] | None,
        typer.Option(
            "--psk",
            metavar="IDENTITY=HEX",
            callback=check_psks,
            help="A pre-shared key handed over out of band; the key in hex, or in base64 as"
            " the MQTT channel carries it (repeatable; shows in the process list: prefer"
            " --psk-file).",
        ),
    ] = None,
    psk_file: PskFileOption = None,
    oob: OptionalOobOption = None,
    server_id: ServerIdOption = None,
    psk_wait: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="SECONDS",
            help=f"With --oob: seconds to wait for the key of a PSK identity the server does"
            f" not know yet before answering unknown_psk_identity. Default: {DEFAULT_PSK_WAIT:g}.",
            show_default=False,
        ),
    ] = None,
    verify_sas: VerifySasOption = None,
    mqtt_username: UsernameOption = None,
    mqtt_password_file: PasswordFileOption = None,
    mqtt_ca: CaOption = None,
    app: Annotated[
        str,
        typer.Option(
            metavar="echo|chat",
            callback=_check_app,
            help="echo: every record comes back as is. chat: every message goes to every"
            " other client, prefixed with the sender's name.",
        ),
    ] = "echo",
    inbox: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Where received files go. Default: $KEXLAB_HOME/inbox."),
    ] = None,
    keylog: KeylogOption = None,
    pcap: PcapOption = None,
    explain: ExplainOption = False,
    show_secrets: ShowSecretsOption = False,
    max_connections: Annotated[
        int,
        typer.Option(min=1, metavar="N", help="Connections served at once; more are refused."),
    ] = DEFAULT_MAX_CONNECTIONS,
    handshake_timeout: Annotated[
        float,
        typer.Option(
            min=0.01, metavar="SECONDS", help="Seconds a client has to complete its handshake."
        ),
    ] = DEFAULT_HANDSHAKE_TIMEOUT,
    idle_timeout: IdleTimeoutOption = DEFAULTS["idle_timeout"],
    max_per_address: MaxPerAddressOption = DEFAULTS["max_per_address"],
    max_handshakes: MaxHandshakesOption = DEFAULTS["max_handshakes"],
    handshake_rate: HandshakeRateOption = DEFAULTS["handshake_rate"],
    inbox_max_files: InboxMaxFilesOption = DEFAULTS["inbox_max_files"],
    inbox_max_bytes: InboxMaxBytesOption = DEFAULTS["inbox_max_bytes"],
    upload_max_files: UploadMaxFilesOption = DEFAULTS["upload_max_files"],
    psk_max_lifetime: PskMaxLifetimeOption = DEFAULTS["psk_max_lifetime"],
    log_format: Annotated[
        str,
        typer.Option(
            metavar="text|json",
            callback=_check_log_format,
            help="text or json (one object per line).",
        ),
    ] = "text",
    html: HtmlDirOption = None,
    deterministic: DeterministicOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Serve KXP/1: agree on a key with each client, then echo. Methods: rsa, dhe, psk; --app chat relays."""
    if anonymous and sign_key is not None:
        raise typer.BadParameter(
            "--anonymous and --sign-key exclude each other", param_hint="'--anonymous'"
        )
    for path, option in ((rsa_key, "--rsa-key"), (sign_key, "--sign-key")):
        if path is not None:
            input_file(path, option)
    if inbox is not None and inbox.exists() and not inbox.is_dir():
        raise typer.BadParameter(f"{inbox}: not a directory", param_hint="'--inbox'")
    if keylog is not None:
        check_keylog(output_file(keylog, "--keylog"))
    if pcap is not None:
        output_file(pcap, "--pcap")
    mqtt = _mqtt(
        oob,
        server_id,
        psk_wait,
        verify_sas,
        mqtt_username,
        mqtt_password_file,
        mqtt_ca,
        handshake_timeout,
    )
    methods = parse_kex_list(kex)
    seed = seed_of(deterministic, insecure)
    pages = html_dir(html) if html is not None else None
    log = PageLog(log_format, explain=explain, show_secrets=show_secrets, pages=pages, seed=seed)
    try:
        options = server_options(
            methods, rsa_key, sign_key, anonymous, log, inbox or data_dir() / "inbox"
        )
    except (KeyFileError, ValueError, OSError) as exc:
        fail(describe_error(exc))
    options.host, options.port = host, port
    keys = given_psks(psk or [], psk_file)
    options.psks = dict(keys or env_psks())
    for note in psk_notes(psk or []):
        error_line(note)
    options.app, options.keylog, options.explain = app, keylog, explain
    options.max_connections = max_connections
    options.handshake_timeout = handshake_timeout
    apply_limits(
        options,
        max_per_address=max_per_address,
        max_handshakes=max_handshakes,
        handshake_rate=handshake_rate,
        idle_timeout=idle_timeout,
        inbox_max_files=inbox_max_files,
        inbox_max_bytes=inbox_max_bytes,
        upload_max_files=upload_max_files,
    )
    if mqtt is not None:
        mqtt.psk_max_lifetime = psk_max_lifetime
    options.trace, options.rng = html is not None, seeded(seed, "server")
    try:
        options.pcap = open_pcap(pcap) if pcap is not None else None
    except CaptureFileError as exc:
        fail(str(exc))
    if pcap is not None:
        log.emit("capture", path=str(pcap))
    warn_about(psk)
    try:
        asyncio.run(serve(options, log, mqtt))
    except (ValueError, OSError, KexlabError) as exc:
        fail(describe_error(exc))
    finally:
        if options.pcap is not None and pcap is not None:
            try:
                close_pcap(options.pcap, pcap)  # after shutdown: every flow has its FINs
            except CaptureFileError as exc:
                fail(str(exc))


def _mqtt(
    oob: str | None,
    server_id: str | None,
    psk_wait: float | None,
    verify_sas: str | None,
    username: str | None,
    password_file: Path | None,
    ca_file: Path | None,
    handshake_timeout: float,
) -> ServerOob | None:
    """The out-of-band options checked (usage errors first); None without --oob."""
    mqtt_options_need_oob(
        oob,
        username=username,
        password_file=password_file,
        ca_file=ca_file,
        server_id=server_id,
        verify_sas=verify_sas,
        psk_wait=psk_wait,
    )
    if oob is None:
        return None
    wait = DEFAULT_PSK_WAIT if psk_wait is None else psk_wait
    if wait >= handshake_timeout:
        # The client would be cut by the handshake timeout before the wait could end.
        raise typer.BadParameter(
            f"must be shorter than --handshake-timeout ({handshake_timeout:g} s)",
            param_hint="'--psk-wait'",
        )
    sid = default_server_id(server_id)
    settings = mqtt_settings(oob, username, password_file, ca_file)
    return ServerOob(settings, sid, psk_wait=wait, verify_sas=verify_sas is not None)


python_m_app = single_command_app(server, "server", "Serve KXP/1 (same as `kexlab server`).")
"""``python -m server``: server/__main__.py runs this module, which runs this app."""

if __name__ == "__main__":
    python_m_app(prog_name="python -m server")
