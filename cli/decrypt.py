"""``kexlab decrypt CAPTURE``: decrypt recorded KXP sessions, or say why they stay sealed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from capture.decrypt import (
    CaptureError,
    DecryptReport,
    InputError,
    Record,
    Session,
    decrypt_capture,
    load_keylog,
    load_rsa_key,
    report_to_json,
)
from cli.errors import fail
from cli.options import input_file
from cli.page_options import capture_pages, html_dir
from cli.parsing import check_psks, parse_psk, psk_notes
from explain.console import error_line
from transport.address import host_port

PREVIEW_CHARS = 60


def preview(record: Record, limit: int = PREVIEW_CHARS) -> str:
    """A short readable form of a record's content for the table."""
    if record.plaintext is None:
        return f"(encrypted) {record.note}".rstrip()
    if record.content_type == "alert":
        return f"alert {record.note}"
    if record.content_type == "key_update":
        return record.note
    data = record.plaintext
    try:
        shown = repr(data.decode("utf-8"))[1:-1]  # text, control characters escaped
    except UnicodeDecodeError:
        shown = data.hex()
    if len(shown) > limit:
        shown = f"{shown[: limit - 1]}… ({len(data)} bytes)"
    return shown


def session_heading(index: int, session: Session) -> str:
    """``session N: client → server  method``: the line above everything said of a session."""
    method = "/".join(p for p in (session.kex, session.group, session.cipher_suite) if p != "none")
    return f"session {index}: {host_port(*session.client)} → {host_port(*session.server)}  {method}"


def session_table(session: Session) -> Table:
    """One session's records as a rich table: time, direction, epoch/seq, type, plaintext."""
    table = Table(expand=False)
    table.add_column("time", justify="right", no_wrap=True)
    table.add_column("dir", no_wrap=True)
    table.add_column("epoch/seq", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("plaintext", overflow="fold")
    for record in session.records:
        where = (
            "-"
            if record.seq is None
            else f"{record.epoch if record.epoch is not None else '?'}/{record.seq}"
        )
        arrow = "C→S" if record.sender == "client" else "S→C"
        style = "" if record.plaintext is not None else "dim"
        table.add_row(
            f"+{record.time - session.start_time:.6f}",
            arrow,
            where,
            record.content_type,
            Text(preview(record), style=style),
        )
    return table


def render_report(console: Console, report: DecryptReport) -> None:
    """Every session of a report: a status line, its notes and its table."""
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    for leak in report.psks_found:
        console.print(
            f"[red]PSK found on MQTT:[/] identity {escape(repr(leak.identity))} "
            f"on {escape(leak.topic)} ({len(leak.key)} bytes, {leak.key.hex()[:16]}…)"
        )
    if not report.sessions:
        console.print(
            f"no KXP sessions found in {escape(report.capture)} ({report.packets} packets)"
        )
        return
    for i, session in enumerate(report.sessions, 1):
        # The heading first, then what was found, then the records: each session reads
        # top to bottom under its own name.
        console.print()
        console.print(Text(session_heading(i, session), style="bold"))
        if session.decrypted:
            console.print(f"[green]decrypted[/] with {escape(session.method)}")
        elif session.handshake_failed:
            console.print(f"[red]handshake failed:[/] {escape(session.reason)}")
        elif session.forward_secret:
            console.print(f"[cyan]not decrypted[/], {escape(session.reason)}")
        else:
            console.print(f"[yellow]not decrypted:[/] {escape(session.reason)}")
        if session.decrypted and session.reason:
            console.print(f"[yellow]partly:[/] {escape(session.reason)}")
        for note in session.notes:
            console.print(f"[dim]note: {escape(note)}[/]")
        if session.records:
            console.print(session_table(session))


def decrypt(
    capture: Annotated[
        Path,
        typer.Argument(
            metavar="CAPTURE", help="A pcap or pcapng file (tcpdump, Wireshark, --pcap)."
        ),
    ],
    keylog: Annotated[
        Path | None,
        typer.Option(
            "--keylog", metavar="FILE", help="Key log file (NSS style, as --keylog writes it)."
        ),
    ] = None,
    rsa_key: Annotated[
        Path | None,
        typer.Option(
            "--rsa-key",
            metavar="FILE",
            help="The server's RSA private key (PEM/DER): opens rsa sessions.",
        ),
    ] = None,
    psk: Annotated[
        list[str] | None,
        typer.Option(
            "--psk",
            metavar="IDENTITY=HEX",
            callback=check_psks,
            help="A pre-shared key as IDENTITY=HEX, or the key in base64 as an eavesdropper"
            " sees it on MQTT (repeatable).",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="DIR",
            help="Also write one illustrated web page per session into DIR (a man in the"
            " middle's two legs on one page), with index.html.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Decrypt recorded KXP sessions, or say why they stay sealed. Keys: a key log, the RSA key, PSKs (also found on MQTT)."""
    input_file(capture, "CAPTURE")
    for path, option in ((keylog, "--keylog"), (rsa_key, "--rsa-key")):
        if path is not None:
            input_file(path, option)
    psks = dict(parse_psk(item) for item in psk or [])
    for note in psk_notes(psk or []):
        error_line(note)
    try:
        entries = load_keylog(keylog) if keylog is not None else None
        key = load_rsa_key(rsa_key) if rsa_key is not None else None
        report = decrypt_capture(capture, keylog=entries, rsa_key=key, psks=psks)
    except (InputError, CaptureError) as exc:
        fail(str(exc))
    if html is not None:
        capture_pages(report, html_dir(html))
    if json_out:
        typer.echo(json.dumps(report_to_json(report), indent=2))
        return
    render_report(Console(), report)
