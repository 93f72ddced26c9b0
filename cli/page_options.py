"""``--html``, ``--deterministic SEED`` and ``--insecure``: spelled once for the commands taking them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from capture.report import DecryptReport
from explain.console import error_line
from explain.teaching import SeedFlags
from protocol import Event
from protocol.seeded import SeededRandom
from transport import EventHook
from webpage import LiveSession, capture_stories, write_index, write_page

from .errors import fail

HtmlFileOption = Annotated[
    Path | None,
    typer.Option(
        "--html",
        metavar="FILE",
        help="Write the session as an illustrated web page to FILE: every frame, byte by byte,"
        " the key schedule and the records (one self-contained HTML file; secret values only"
        " with --show-secrets).",
        show_default=False,
    ),
]
HtmlDirOption = Annotated[
    Path | None,
    typer.Option(
        "--html",
        metavar="DIR",
        help="Write one illustrated web page per connection into DIR (created if needed).",
        show_default=False,
    ),
]
DeterministicOption = Annotated[
    str | None,
    typer.Option(
        "--deterministic",
        metavar="SEED",
        help="Teaching mode: draw every random value from SEED, so a lesson repeats byte for"
        " byte. INSECURE: anyone who knows SEED can decrypt; needs --insecure.",
        show_default=False,
    ),
]
InsecureOption = Annotated[
    bool, typer.Option("--insecure", help="Allow --deterministic (for teaching only).")
]


def seed_of(deterministic: str | None, insecure: bool) -> str | None:
    """The ``--deterministic`` seed, refused (usage error) without ``--insecure``."""
    if deterministic is None:
        if insecure:
            raise typer.BadParameter(
                "only --deterministic needs it: leave it out", param_hint="'--insecure'"
            )
        return None
    if not insecure:
        raise typer.BadParameter(
            "draws every random value from SEED, so anyone who knows SEED can decrypt the"
            " sessions: add --insecure to use it for teaching",
            param_hint="'--deterministic'",
        )
    if not deterministic:
        raise typer.BadParameter("SEED is empty", param_hint="'--deterministic'")
    return deterministic


def seeded(seed: str | None, role: str) -> SeededRandom | None:
    """The randomness of a ``--deterministic`` program, announced in red; None otherwise."""
    if seed is None:
        return None
    SeedFlags(seed, role, frames=False).start()
    return SeededRandom(seed, role)


def html_dir(path: Path) -> Path:
    """``--html DIR`` created and writable, or a one-line error before anything starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--html {path}: {(exc.strerror or str(exc)).lower()}")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"--html {path}: not writable")
    return path


class ClientPage:
    """``kexlab client --html FILE``: the session recorded as it runs, written when it ends."""

    def __init__(self, path: Path, address: str, show_secrets: bool, seed: str | None) -> None:
        folder = path.parent
        if path.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK):
            raise typer.BadParameter(
                f"{path}: {'a directory' if path.is_dir() else 'its folder is not writable'}",
                param_hint="'--html'",
            )
        self.path = path
        self.live = LiveSession(
            "client", peer=f"server {address}", show_secrets=show_secrets, seed=seed
        )

    def write(self) -> None:
        """Write the page (a line on stderr says where, or why not)."""
        if self.live.log.count == 0:
            error_line(f"--html {self.path}: no page, no frame crossed the wire")
            return
        try:
            write_page(self.path, self.live.story())
        except OSError as exc:
            error_line(f"--html {self.path}: {(exc.strerror or str(exc)).lower()}")
            return
        error_line(f"page: {self.path} ({self.live.log.count} frames)")


def client_hooks(
    html: Path | None, address: str, show_secrets: bool, seed: str | None, explain: bool
) -> tuple[ClientPage | None, EventHook | None]:
    """The client's page (``--html``) and the event hook feeding it and the seed's flags."""
    page = ClientPage(html, address, show_secrets, seed) if html is not None else None
    flags = SeedFlags(seed, "client", frames=explain) if seed is not None else None
    if page is None and flags is None:
        return None, None

    def hook(event: Event) -> None:
        if flags is not None:
            flags.on_event(event)
        if page is not None:
            page.live.on_event(event)

    return page, hook


def capture_pages(report: DecryptReport, folder: Path) -> None:
    """``kexlab decrypt --html DIR``: one page per session (a MITM's legs on one), and an index."""
    pages = capture_stories(report)
    if not pages:
        error_line(f"--html {folder}: no KXP session in {report.capture}, no page")
        return
    try:
        for name, story in pages:
            write_page(folder / name, story)
        index = write_index(folder, f"kexlab sessions of {report.capture}", pages)
    except OSError as exc:
        fail(f"--html {folder}: {(exc.strerror or str(exc)).lower()}")
    error_line(f"pages: {len(pages)} in {folder}, start at {index}")
