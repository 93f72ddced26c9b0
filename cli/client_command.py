"""``kexlab client HOST[:PORT]`` (and ``python -m client``): one session from the terminal.

Modes, in this order: ``--send`` messages and/or ``--send-file``; else lines from stdin
when it is not a terminal; else an interactive prompt. Piped lines and typed lines obey
the same commands (/rekey, /sas, /quit).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from capture.tap import CaptureFileError, close_pcap, open_pcap
from client.oob import ClientOob
from client.session import ClientOptions, SessionError
from client.terminal import RunProgress, describe_failure, run
from explain.console import error_line, note_line
from keystore import KeyFileError, data_dir, parse_trust
from oob import OobError
from protocol import DEFAULT_HANDSHAKE_TIMEOUT, KEX_NAMES, METHODS, Kex, ProtocolError
from protocol.constants import MAX_CONTENT
from transport import TransportError

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
    HtmlFileOption,
    InsecureOption,
    client_hooks,
    seed_of,
    seeded,
)
from .parsing import (
    address_note,
    checks,
    parse_address,
    parse_group,
    parse_kex,
    parse_psk,
    parse_suite,
    psk_notes,
)
from .psk_options import PskFileOption, env_psks, given_psks, warn_about

DEFAULT_GROUP = "x25519"
DEFAULT_TRUST = "tofu"


def client(
    address: Annotated[
        str,
        typer.Argument(
            metavar="HOST[:PORT]",
            callback=checks(parse_address),
            help="The server: 127.0.0.1, 127.0.0.1:9701, localhost:9701, ::1 or [::1]:9701"
            " (port 9700 unless given; an IPv6 address with a port needs the brackets).",
        ),
    ],
    kex: Annotated[
        str | None,
        typer.Option(
            metavar="rsa|dhe|psk",
            callback=checks(parse_kex),
            help="rsa, dhe or psk. Default: dhe, or psk when --psk is given.",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            metavar="GROUP",
            callback=checks(parse_group),
            help="dhe group: x25519, secp256r1, secp384r1, ffdhe2048, ffdhe3072. Default: x25519.",
            show_default=False,
        ),
    ] = None,
    suite: Annotated[
        str,
        typer.Option(
            metavar="aes128|aes256",
            callback=checks(parse_suite),
            help="Cipher suite: aes128 or aes256.",
        ),
    ] = "aes256",
    psk: Annotated[
        str | None,
        typer.Option(
            metavar="IDENTITY=HEX",
            callback=checks(parse_psk),
            help="The pre-shared key, as handed over out of band; the key in hex, or in"
            " base64 as the MQTT channel carries it. Shows in the process list: prefer"
            " --psk-file.",
        ),
    ] = None,
    psk_file: PskFileOption = None,
    trust: Annotated[
        str | None,
        typer.Option(
            metavar="POLICY",
            help="How to trust the server key (rsa, dhe): tofu (record it on first use in"
            " $KEXLAB_HOME/known_hosts, keyed by host:port), none, pin:SHA256HEX or pin:FILE"
            " (a public key file), or mqtt (pin the fingerprint the server announces on"
            " the --oob broker: only as trustworthy as the broker's write permissions)."
            " Default: tofu.",
            show_default=False,
        ),
    ] = None,
    oob: OptionalOobOption = None,
    server_id: ServerIdOption = None,
    verify_sas: VerifySasOption = None,
    mqtt_username: UsernameOption = None,
    mqtt_password_file: PasswordFileOption = None,
    mqtt_ca: CaOption = None,
    send: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TEXT",
            help="Send TEXT, print what comes back as 'echo: ...' (repeatable); then exit."
            " Without --send, lines piped to stdin are sent the same way, and the lines"
            " /rekey, /sas and /quit are commands there, as at the prompt.",
        ),
    ] = None,
    send_file: Annotated[
        Path | None,
        typer.Option(
            "--send-file",
            metavar="PATH",
            help="Upload a file to the server's inbox; size and SHA-256 are checked.",
        ),
    ] = None,
    explain: ExplainOption = False,
    show_secrets: ShowSecretsOption = False,
    keylog: KeylogOption = None,
    pcap: PcapOption = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.01, metavar="SECONDS", help="Seconds for connect, handshake and each reply."
        ),
    ] = DEFAULT_HANDSHAKE_TIMEOUT,
    html: HtmlFileOption = None,
    deterministic: DeterministicOption = None,
    insecure: InsecureOption = False,
) -> None:
    """Connect to a server, agree on a key, talk over AES-GCM records."""
    host, port = parse_address(address)
    identity, key = _client_psk(psk, psk_file, kex, oob)
    method = parse_kex(kex) if kex is not None else (Kex.PSK if key else Kex.DHE)
    _check_combination(method, identity or None, oob, group, trust)
    seed = seed_of(deterministic, insecure)
    if send_file is not None:
        input_file(send_file, "--send-file")
    # The bytes as typed: os.fsencode undoes Python's decoding of argv, so a message that is
    # not UTF-8 is sent as it is (it was an internal error).
    messages = [os.fsencode(text) for text in send or []]
    for message in messages:
        if len(message) > MAX_CONTENT:
            raise typer.BadParameter(
                f"a message is at most {MAX_CONTENT} bytes (use --send-file)",
                param_hint="'--send'",
            )
    options = ClientOptions(
        host=host,
        port=port,
        kex=method,
        group=parse_group(group or DEFAULT_GROUP),
        suite=parse_suite(suite),
        psk_identity=identity,
        psk=key,
        explain=explain,
        keylog=keylog,
        timeout=timeout,
    )
    try:
        mqtt = client_oob(
            oob,
            server_id,
            verify_sas,
            mqtt_username,
            mqtt_password_file,
            mqtt_ca,
            publish_psk=METHODS[method].needs_psk and not key,
        )
    except OobError as exc:
        fail(str(exc))
    if mqtt is not None and mqtt.publish_psk:
        mqtt.new_psk(options)
    try:
        policy = parse_trust(
            trust or DEFAULT_TRUST,
            options.address,
            data_dir() / "known_hosts",
            mqtt=mqtt is not None,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--trust'") from None
    options.trust, options.allow_anonymous = policy.decide, policy.allow_anonymous
    options.confirm_trust = policy.confirm
    try:
        options.config()
    except ValueError as exc:
        fail(str(exc))
    if keylog is not None:
        check_keylog(output_file(keylog, "--keylog"))
    if pcap is not None:
        output_file(pcap, "--pcap")
    page, options.observe = client_hooks(html, options.address, show_secrets, seed, explain)
    options.rng = seeded(seed, "client")
    # No stdin at all (started with stdin closed): nothing to read, like an empty pipe.
    interactive = not send and send_file is None and sys.stdin is not None and sys.stdin.isatty()
    notes = [address_note(address), *psk_notes([psk] if psk else [])]
    for note in notes:  # which form was understood, where it could be either
        if note is not None:
            note_line(note)
    try:
        options.pcap = open_pcap(pcap) if pcap is not None else None
    except CaptureFileError as exc:
        fail(str(exc))
    options.on_pcap_error = lambda reason: error_line(f"warning: --pcap {pcap}: {reason}")
    progress = RunProgress()
    warn_about(psk)
    try:
        asyncio.run(
            run(options, policy, messages, send_file, show_secrets, interactive, mqtt, progress)
        )
    except KeyboardInterrupt:
        if not progress.connected:
            fail("interrupted (Ctrl-C) before the handshake completed")
        # What the user asked for, done cleanly: not an error (exit 0).
        note_line("closed (Ctrl-C): the session ended with close_notify")
    except (ProtocolError, TransportError, KeyFileError, OSError, SessionError) as exc:
        hint = f"; {policy.hint}" if policy.hint else ""  # how to recover (known-hosts forget)
        fail(describe_failure(exc, options) + hint)
    except OobError as exc:
        fail(str(exc))
    finally:
        if page is not None:
            page.write()
        if options.pcap is not None and pcap is not None:
            try:
                close_pcap(options.pcap, pcap)
            except CaptureFileError as exc:
                fail(str(exc))


def _client_psk(
    psk: str | None, psk_file: Path | None, kex: str | None, oob: str | None
) -> tuple[str, bytes]:
    """The one key of --psk or --psk-file; for --kex psk without either (and without --oob
    to hand over a fresh one), KEXLAB_PSK or KEXLAB_PSK_FILE. ("", b"") if none."""
    if psk is not None and psk_file is not None:
        raise typer.BadParameter("--psk and --psk-file exclude each other", param_hint="'--psk'")
    keys = given_psks([psk] if psk is not None else [], psk_file)
    if not keys and kex is not None and METHODS[parse_kex(kex)].needs_psk and oob is None:
        keys = env_psks()
    if len(keys) > 1:
        raise typer.BadParameter(
            f"holds {len(keys)} keys; a client uses one", param_hint="'--psk-file'"
        )
    return keys[0] if keys else ("", b"")


def _check_combination(
    method: Kex, psk: str | None, oob: str | None, group: str | None, trust: str | None
) -> None:
    """Usage errors for options that would be silently ignored with this method."""
    name, m = KEX_NAMES[method], METHODS[method]
    if m.needs_psk and not psk and oob is None:
        raise typer.BadParameter(
            "--kex psk needs --psk IDENTITY=HEX (or --oob mqtt://HOST:PORT to send a fresh"
            " key to the server over MQTT); --psk-file FILE or KEXLAB_PSK keep the key out of"
            " the process list",
            param_hint="'--psk'",
        )
    if not m.needs_psk and psk:
        raise typer.BadParameter(f"--psk is for --kex psk, not {name}", param_hint="'--psk'")
    if group is not None and not m.uses_group:
        raise typer.BadParameter(
            f"--group is for --kex dhe: {name} uses no Diffie-Hellman group",
            param_hint="'--group'",
        )
    if trust is not None and not m.server_key_role:
        raise typer.BadParameter(
            "--trust decides about the server key of rsa and dhe; with psk there is none:"
            " the pre-shared key itself authenticates the server",
            param_hint="'--trust'",
        )


def client_oob(
    oob: str | None,
    server_id: str | None,
    verify_sas: str | None,
    username: str | None,
    password_file: Path | None,
    ca_file: Path | None,
    *,
    publish_psk: bool,
) -> ClientOob | None:
    """The client's MQTT options checked (usage errors) and read (``OobError``); None without --oob."""
    mqtt_options_need_oob(
        oob,
        username=username,
        password_file=password_file,
        ca_file=ca_file,
        server_id=server_id,
        verify_sas=verify_sas,
    )
    if oob is None:
        return None
    return ClientOob(
        mqtt_settings(oob, username, password_file, ca_file),
        default_server_id(server_id),
        verify_sas=verify_sas is not None,
        publish_psk=publish_psk,
    )


python_m_app = single_command_app(
    client, "client", "Connect to a KXP/1 server (same as `kexlab client`)."
)
"""``python -m client``: client/__main__.py runs this module, which runs this app."""

if __name__ == "__main__":
    python_m_app(prog_name="python -m client")
