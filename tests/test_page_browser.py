"""Session pages in a real browser: headless Chromium (Debian's package) driven by Playwright.

Each page is opened once: one ladder arrow per frame with the right labels, a frame opens
to its fields (by mouse and by keyboard), secret values only on a page made with them, no
console error, no request leaving the page, text contrast of WCAG AA; a full-page
screenshot of each stays in the test's temporary folder (CI keeps it as an artifact).

Under CI (``CI`` set) a missing browser or driver fails these tests; elsewhere they are
skipped with the reason. ``KEXLAB_CHROMIUM`` names another Chromium binary.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from external_tools import find_tool, unavailable
from kxp_sessions import PSK, PSK_IDENTITY
from page_sessions import (
    big_transfer,
    live_page,
    mitm_session,
    page_of,
    record_lab,
    write,
    wrong_psk_session,
)

from capture.decrypt import decrypt_capture
from webpage import Story, capture_stories
from webpage.model import Step, StepGroup
from webpage.steps import HEAD, TAIL

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # the test extra is not installed
    sync_playwright = None

CHROMIUM = (
    os.environ.get("KEXLAB_CHROMIUM")
    or find_tool("chromium")
    or find_tool("chromium-browser")
    or find_tool("google-chrome")
)
MIN_SCREENSHOT = 20_000
"""Bytes: a full-page screenshot of a session page is far bigger than a blank page's."""

# WCAG 2.x relative luminance and contrast, run in the page on every element with text.
CONTRAST_JS = """
() => {
  const lum = (rgb) => {
    const c = rgb.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const parse = (s) => { const m = s.match(/[\\d.]+/g).map(Number); return [m.slice(0, 3), m.length > 3 ? m[3] : 1]; };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const [rgb, a] = parse(getComputedStyle(e).backgroundColor);
      if (a > 0.5) return rgb;
    }
    return [255, 255, 255];
  };
  const bad = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.getClientRects().length === 0) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || el.closest(".vh")) continue;
    checked++;
    const [fg] = parse(style.color);
    const [l1, l2] = [lum(fg), lum(background(el))].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName}.${el.className}: ${ratio.toFixed(2)} "${el.textContent.trim().slice(0, 40)}"`);
  }
  return {checked, bad};
}
"""


def _require_browser() -> str:
    missing = []
    if sync_playwright is None:
        missing.append("the Python package playwright (pip install -e '.[test]')")
    if CHROMIUM is None:
        missing.append("a Chromium binary (apt-get install chromium, or set KEXLAB_CHROMIUM)")
    if missing:
        unavailable("no browser for the page tests: missing " + " and ".join(missing))
    assert CHROMIUM is not None
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (Playwright's own download is never used)."""
    binary = _require_browser()
    assert sync_playwright is not None
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # root cannot use the sandbox
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=binary, args=args, headless=True)
        yield chromium
        chromium.close()


@dataclass
class Made:
    """A page on disk and the story it was made from."""

    path: Path
    story: Story


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Made]:
    """The pages the issue lists, made as the programs make them."""
    folder = tmp_path_factory.mktemp("pages")
    lab = record_lab(folder / "lab.pcap")
    stories = {
        "rsa": page_of(lab.report(rsa=True), "rsa"),
        "dhe": live_page(lab.sessions["dhe"].client_events, secrets=True),
        "psk-key-update": page_of(lab.report(psk=True), "psk"),
        "forward-secret": page_of(lab.report(rsa=True), "dhe"),
        "psk-no-secrets": live_page(lab.sessions["psk"].client_events),
        "alert": live_page(wrong_psk_session(folder / "alert.pcap").client_events),
    }
    mitm_session(folder / "mitm.pcap")
    [(_, stories["mitm"])] = capture_stories(
        decrypt_capture(folder / "mitm.pcap", psks={PSK_IDENTITY: PSK})
    )
    stories["transfer-20MiB"] = big_transfer(20 << 20).story()
    return {
        name: Made(write(story, folder, f"{name}.html"), story) for name, story in stories.items()
    }


@dataclass
class Visit:
    """One page loaded: what it asked for and what it complained about."""

    page: Page
    requests: list[str]
    errors: list[str]


@pytest.fixture
def visit(browser: Browser) -> Iterator[Any]:
    """Open a page file in a fresh context that records every request and console error."""
    contexts = []

    def open_page(path: Path, *, javascript: bool = True) -> Visit:
        context = browser.new_context(
            java_script_enabled=javascript, viewport={"width": 1280, "height": 900}
        )
        contexts.append(context)
        own = path.resolve().as_uri()
        requests: list[str] = []
        errors: list[str] = []

        def route(r: Any) -> None:
            requests.append(r.request.url)
            if r.request.url.split("#")[0] == own:
                r.continue_()
            else:
                r.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(own)
        page.wait_for_load_state("load")
        return Visit(page, requests, errors)

    yield open_page
    for context in contexts:
        context.close()


def _expected_labels(story: Story) -> list[str]:
    return [s.title if isinstance(s, Step) else f"{s.count} records folded" for s in story.steps]


def _screenshot(page: Page, folder: Path, name: str) -> Path:
    shot = folder / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > MIN_SCREENSHOT, shot.stat().st_size
    return shot


@pytest.mark.parametrize(
    "name",
    ["rsa", "dhe", "psk-key-update", "forward-secret", "psk-no-secrets", "alert", "mitm"],
)
def test_a_session_page_in_the_browser(
    name: str, pages: dict[str, Made], visit: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    made = pages[name]
    story = made.story
    v = visit(made.path)
    page = v.page
    # The ladder: one arrow per frame, in order, labelled with the frame's type and size.
    arrows = page.locator("ol.ladder > li")
    assert arrows.count() == story.frames == len(story.steps)
    labels = page.locator("ol.ladder > li .label").all_inner_texts()
    for label, expected in zip(labels, _expected_labels(story), strict=True):
        assert expected in label
    # Following the first arrow opens the first frame on its annotated bytes.
    first = story.steps[0]
    assert isinstance(first, Step)
    page.click("#arrow-1")
    assert page.locator("#frame-1").get_attribute("open") is not None
    rows = page.locator("#frame-1 tbody tr")
    assert rows.count() == len(first.fields)
    assert rows.first.is_visible() and "magic" in rows.first.inner_text()
    # The keyboard too: a frame's summary takes the focus and Enter opens it.
    page.focus("#frame-2 > summary")
    assert page.evaluate("document.activeElement.parentElement.id") == "frame-2"
    page.keyboard.press("Enter")
    assert page.locator("#frame-2").get_attribute("open") is not None
    # Secret values only on a page made with secrets.
    secrets = page.locator(".secret-value").count()
    assert (secrets > 0) == story.with_secrets, (secrets, story.with_secrets)
    # Alerts say so in words, not only in red.
    alerts = page.locator("ol.ladder > li.kind-alert .label").all_inner_texts()
    assert all("ALERT" in a or "alert" in a for a in alerts)
    if name == "alert":
        assert alerts and "decrypt_error" in alerts[-1]
    if name == "psk-key-update":
        assert page.locator("ol.ladder > li.kind-key_update").count() >= 2
    if name == "mitm":
        assert page.locator(".lanes.three .lane").all_inner_texts()[1].startswith("attacker")
        assert "different SAS values" in page.inner_text("#sas")
    if name == "forward-secret":
        assert "forward secret" in page.inner_text(".banner.lesson")
    _screenshot(page, tmp_path_factory.getbasetemp() / "page-screenshots", name)
    # Every text passes WCAG AA contrast, hidden frames included.
    page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    contrast = page.evaluate(CONTRAST_JS)
    assert contrast["checked"] > 100 and contrast["bad"] == [], contrast["bad"][:5]
    assert v.errors == [], v.errors
    assert v.requests == [made.path.resolve().as_uri()], v.requests


@pytest.fixture(scope="module", autouse=True)
def _screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    (tmp_path_factory.getbasetemp() / "page-screenshots").mkdir(exist_ok=True)


def test_a_20_mib_transfer_page_stays_usable(pages: dict[str, Made], visit: Any) -> None:
    made = pages["transfer-20MiB"]
    assert made.path.stat().st_size < 1 << 20
    v = visit(made.path)
    page = v.page
    groups = [s for s in made.story.steps if isinstance(s, StepGroup)]
    assert page.locator("ol.ladder > li").count() == HEAD + TAIL + len(groups) == 41
    page.click(f"#arrow-group-{groups[0].first}")
    listed = page.locator(f"#group-{groups[0].first} tbody tr")
    assert listed.count() == groups[0].count and listed.last.is_visible()
    assert v.errors == [] and len(v.requests) == 1


def test_the_page_reads_without_javascript_and_prints_every_frame(
    pages: dict[str, Made], visit: Any
) -> None:
    made = pages["rsa"]
    v = visit(made.path, javascript=False)
    page = v.page
    assert page.locator("ol.ladder > li").count() == made.story.frames
    assert not page.locator("#tools").is_visible()  # its buttons need the script
    page.click("#frame-3 > summary")  # the browser itself opens a frame
    assert page.locator("#frame-3 tbody tr").first.is_visible()
    page.emulate_media(media="print")
    closed = page.locator("#frame-5 tbody tr").first
    assert page.locator("#frame-5").get_attribute("open") is None and closed.is_visible()
    assert v.requests == [made.path.resolve().as_uri()]
