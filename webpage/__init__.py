"""Any kexlab session as one illustrated web page (``--html``): every byte explained.

``live.LiveSession`` turns a connection's own events into a page (``kexlab client|server
--html``), ``captured.capture_stories`` the sessions ``kexlab decrypt`` found in a capture
(both legs of a man in the middle on one page). Both annotate frames with ``explain``,
the annotator ``--explain`` uses; ``html.render`` writes the page: one file, inline CSS
and a few lines of script, no network access.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .captured import capture_stories
from .html import render, text
from .live import LiveSession
from .model import Story

__all__ = [
    "LiveSession",
    "PageError",
    "Story",
    "capture_stories",
    "render",
    "write_index",
    "write_page",
]


class PageError(OSError):
    """A page could not be written."""


def write_page(path: Path, story: Story) -> Path:
    """Write the page at once (never half a file); mode 0600 when it holds secrets."""
    data = render(story).encode("utf-8", "backslashreplace")
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=".kexlab-page-", suffix=".html", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600 if story.with_secrets else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_index(folder: Path, title: str, pages: list[tuple[str, Story]]) -> Path:
    """``index.html``: one link per page of ``folder``."""
    items = "".join(
        f'<li><a href="{text(name)}">{text(story.title)}</a> — {story.frames} frames</li>'
        for name, story in pages
    )
    body = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'">'
        f"<title>{text(title)}</title></head><body><main><h1>{text(title)}</h1>"
        f"<ol>{items}</ol></main></body></html>\n"
    )
    path = folder / "index.html"
    path.write_text(body, encoding="utf-8", errors="backslashreplace")
    return path
