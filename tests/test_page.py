"""The session page (``--html``): what it shows and from what, escaped, bounded; ``--deterministic``.

The pages are read back with the standard library's HTML parser; the browser tests
(test_page_browser.py) open them in Chromium.
"""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from kxp_sessions import PSK, PSK_IDENTITY, client_config, lab_keys, server_config
from page_sessions import (
    Lab,
    big_transfer,
    frames_of,
    live_page,
    mitm_session,
    page_of,
    record_lab,
    tampered_session,
    traced,
    wrong_psk_session,
)
from support_net import (  # noqa: F401  (home_fixture provides the `home` fixture)
    PSK_HEX,
    REPO,
    ServerProcess,
    free_port,
    home_fixture,
)
from typer.testing import CliRunner

from capture.decrypt import decrypt_capture
from cli.main import app
from explain.annotate import annotate_frame
from protocol import (
    ClientConnection,
    FrameTraced,
    HandshakeComplete,
    Kex,
    ServerConnection,
    parse_keylog,
)
from protocol.constants import SUITES
from protocol.keyschedule import KeySchedule, hkdf_label
from protocol.seeded import SeededRandom
from server.page_log import PageLog
from webpage import capture_stories, render
from webpage.model import Step, StepGroup
from webpage.steps import HEAD, TAIL

runner = CliRunner()
SECRET_CLASS = 'secret-value"'
"""What a value marked secret carries in its class attribute (the style sheet names it too)."""


class Page(HTMLParser):
    """The parts of a page the tests look at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.arrows: list[dict[str, str]] = []
        self.details: list[str] = []
        self.classes: list[str] = []
        self.scripts = 0
        self.th_scopes: list[str] = []
        self.links: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.classes += a.get("class", "").split()
        if tag == "li" and "arrow" in a.get("class", "").split():
            self.arrows.append(a)
        elif tag == "details":
            self.details.append(a.get("id", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "th":
            self.th_scopes.append(a.get("scope", ""))
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """rsa, dhe and psk sessions in one capture."""
    return record_lab(tmp_path_factory.mktemp("page") / "lab.pcap")


def hexes(value: bytes) -> str:
    """How the page prints a value of up to 16 bytes per line (groups of two bytes)."""
    lines = []
    for start in range(0, len(value), 16):
        chunk = value[start : start + 16].hex()
        lines.append(" ".join(chunk[i : i + 4] for i in range(0, len(chunk), 4)))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the core's parts


def test_seeded_randomness_repeats_per_seed_and_role() -> None:
    a, b = SeededRandom("lesson 3", "client"), SeededRandom("lesson 3", "client")
    assert a(32) + a(7) == b(39)  # one stream, however it is drawn
    assert SeededRandom("lesson 3", "server")(32) != SeededRandom("lesson 3", "client")(32)
    assert SeededRandom("lesson 4", "client")(32) != SeededRandom("lesson 3", "client")(32)


def test_hkdf_label_is_the_spec_example() -> None:
    # docs/protocol.md §5: the HkdfLabel for "key" of AES-128-GCM.
    assert hkdf_label(b"key", b"", 16).hex() == "0010" + "0a" + b"kexlab key".hex() + "00"


# --------------------------------------------------------------------------- capture pages


def test_one_arrow_and_one_annotated_table_per_frame(lab: Lab) -> None:
    report = lab.report(keylog=True)
    for session, (_, story) in zip(report.sessions, capture_stories(report), strict=True):
        page = Page(render(story))
        assert story.frames == len(session.frames) == len(page.arrows) > 8
        assert page.details == [f"frame-{i}" for i in range(1, story.frames + 1)]
        for seen, step in zip(session.frames, story.steps, strict=True):
            assert isinstance(step, Step)
            rows = annotate_frame(seen.data, hash_len=32)  # the lab's suite is aes128/SHA-256
            # The same fields, from the same annotator as --explain (the record rows
            # differ only in the decrypted content it is told about).
            assert [f.name for f in step.fields] == [r.field for r in rows]
            assert [f.offset for f in step.fields] == [r.offset for r in rows]
        assert set(page.th_scopes) >= {"col", "row"}
        assert page.scripts == 1
        assert all(link.startswith("#") for link in page.links), page.links


def test_the_schedule_is_what_the_endpoints_derived(lab: Lab) -> None:
    story = page_of(lab.report(rsa=True), "rsa")
    done = lab.sessions["rsa"].complete
    (leg,) = story.legs
    values = {d.name: d for d in leg.schedule}
    assert values["master"].value == done.secrets.master
    assert values["shared_secret"].value == done.secrets.shared_secret
    assert values["c_ap_0"].value == done.secrets.c_ap_0
    # The context shown is the one the endpoints used: it derives the same secret.
    th_keys = values["TH_keys"].value
    assert th_keys is not None and values["c_ap_0"].context_value == th_keys
    schedule = KeySchedule(SUITES[done.cipher_suite])
    assert schedule.expand_label(done.secrets.master, b"c ap traffic", th_keys, 32) == (
        done.secrets.c_ap_0
    )
    assert values["sas"].value == done.sas
    assert leg.sas == done.sas_display
    assert values["c_ap_1.key"].value is not None  # after the key update
    assert leg.claims[0].holds == "no"  # rsa: no forward secrecy


def test_secret_values_only_on_a_page_made_with_secrets(lab: Lab) -> None:
    done = lab.sessions["dhe"].complete
    secret = hexes(done.secrets.c_ap_0)
    without = render(page_of(lab.report(), "dhe"))
    assert secret not in without and SECRET_CLASS not in without
    with_keys = render(page_of(lab.report(keylog=True), "dhe"))
    assert secret in with_keys and SECRET_CLASS in with_keys
    assert "This page holds secrets" in with_keys
    live_plain = render(live_page(lab.sessions["dhe"].client_events))
    live_secrets = render(live_page(lab.sessions["dhe"].client_events, secrets=True))
    assert secret not in live_plain and "--show-secrets" in live_plain
    assert secret in live_secrets and hexes(done.secrets.master) in live_secrets


def test_a_forward_secret_session_says_why_it_stays_sealed(lab: Lab) -> None:
    story = page_of(lab.report(rsa=True), "dhe")  # the RSA key opens rsa, not dhe
    (leg,) = story.legs
    assert not leg.opened and "forward secret" in leg.sealed_reason
    assert leg.claims[0].topic == "Forward secrecy" and leg.claims[0].holds == "yes"
    html = render(story)
    assert "Why this session stays sealed" in html
    assert "not opened" in html and SECRET_CLASS not in html
    assert all(d.value is None for d in leg.schedule if d.secret)


def test_records_show_seq_nonce_plaintext_and_the_key_update(lab: Lab) -> None:
    story = page_of(lab.report(psk=True), "psk")
    records = [s for s in story.steps if isinstance(s, Step) and s.record is not None]
    first = records[0].record
    assert first is not None and first.seq == 0 and first.iv is not None
    assert first.nonce == (int.from_bytes(first.iv, "big") ^ 0).to_bytes(12, "big")
    assert first.plaintext == b"my card is 4111 1111 1111 1111"
    updates = [s for s in records if s.kind == "key_update"]
    assert updates and "request_update=1" in updates[0].note
    after = next(s for s in records[records.index(updates[0]) + 1 :] if s.sender == "client")
    assert after.record is not None and after.record.epoch == 1 and after.record.seq == 0
    html = render(story)
    assert 'class="arrow ltr span-01 kind-key_update"' in html
    assert first.nonce.hex() in html


def test_hostile_text_is_shown_and_never_runs(lab: Lab) -> None:
    html = render(page_of(lab.report(keylog=True), "rsa"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<img" not in html and html.count("<script>") == 1
    assert "\x1b" not in html and "\u202e" not in html
    assert "\\x1b[2J\\u202eevil" in html
    assert "default-src 'none'" in html  # and nothing could load even if markup slipped in


@pytest.mark.parametrize(
    ("how", "diagnosis", "alert"),
    [
        ("flip", "record seq 0 fails authentication", "bad_record_mac"),
        ("replay", "replayed record: seq 0, expected 1 (epoch 0)", "unexpected_message"),
    ],
)
def test_a_tampered_record_shows_the_diagnosis(
    tmp_path: Path, how: str, diagnosis: str, alert: str
) -> None:
    rec = tampered_session(tmp_path / "t.pcap", how)
    report = decrypt_capture(tmp_path / "t.pcap", keylog=parse_keylog(rec.keylog))
    (story,) = [s for _, s in capture_stories(report)]
    bad = [s for s in story.steps if isinstance(s, Step) and s.record and s.record.diagnosis]
    assert bad and bad[0].record is not None
    assert bad[0].record.diagnosis == diagnosis
    assert alert in story.legs[0].outcome
    assert diagnosis in render(story)


def test_a_failed_handshake_says_how_it_ended(tmp_path: Path) -> None:
    rec = wrong_psk_session(tmp_path / "w.pcap")
    story = live_page(rec.client_events)
    (leg,) = story.legs
    assert "decrypt_error" in leg.outcome and not leg.opened
    page = Page(render(story))
    kinds = [a["class"].split()[-1] for a in page.arrows]
    assert kinds[-1] == "kind-alert" and len(page.arrows) == story.frames
    assert "The handshake did not complete" in render(story)


def test_a_man_in_the_middle_is_one_page_with_three_columns(tmp_path: Path) -> None:
    mitm_session(tmp_path / "m.pcap")
    report = decrypt_capture(tmp_path / "m.pcap", psks={PSK_IDENTITY: PSK})
    assert len(report.sessions) == 2
    [(name, story)] = capture_stories(report)
    assert name.startswith("mitm-")
    assert [p.key for p in story.parties] == ["client", "attacker", "server"]
    assert {s.leg for s in story.steps if isinstance(s, Step)} == {1, 2}
    assert "man in the middle" in story.notes[0]
    sas = [leg.sas for leg in story.legs]
    assert None not in sas and sas[0] != sas[1]
    html = render(story)
    assert "The two legs show different SAS values" in html
    assert "sent 100 to eve" in html and "send 100 to bob" in html
    assert len(Page(html).arrows) == story.frames == 16


def test_a_long_transfer_is_folded_and_the_page_stays_small() -> None:
    live = big_transfer(20 << 20)
    story = live.story()
    html = render(story)
    groups = [s for s in story.steps if isinstance(s, StepGroup)]
    whole = [s for s in story.steps if isinstance(s, Step)]
    assert story.frames == 4 + 320 + 2  # handshake, 320 records of 64 KiB, close_notify both ways
    assert len(whole) == HEAD + TAIL and len(groups) == 1
    assert groups[0].count == story.frames - HEAD - TAIL == len(groups[0].lines)
    assert len(html) < 1 << 20
    assert len(Page(html).arrows) == HEAD + TAIL + 1


def test_live_and_captured_pages_annotate_alike(lab: Lab) -> None:
    live = live_page(lab.sessions["psk"].client_events)
    captured = page_of(lab.report(), "psk")
    for a, b in zip(live.steps, captured.steps, strict=True):
        assert isinstance(a, Step) and isinstance(b, Step)
        assert (a.frame_type, a.size, a.sender, a.receiver) == (
            b.frame_type,
            b.size,
            b.sender,
            b.receiver,
        )
        if a.kind == "handshake":  # records differ: the live side knows their plaintext
            assert a.fields == b.fields and a.title == b.title


# --------------------------------------------------------------------------- --deterministic


def _seeded_session(seed: str, kex: Kex) -> tuple[list[bytes], str]:
    keys = lab_keys()
    client = ClientConnection(
        dataclasses.replace(traced(client_config(kex)), rng=SeededRandom(seed, "client"))
    )
    cfg = server_config(keys)
    cfg.rng = SeededRandom(seed, "server")
    server = ServerConnection(cfg)
    client.start()
    events = []
    for _ in range(8):
        for src, dst in ((client, server), (server, client)):
            data = src.data_to_send()
            if data:
                dst.receive_data(data)
        for conn in (client, server):
            while (event := conn.next_event()) is not None:
                if conn is client:
                    events.append(event)
        if client.handshake_complete and server.handshake_complete and len(events) < 8:
            client.send_data(b"the same every time")
    assert any(isinstance(e, HandshakeComplete) for e in events)
    frames = [e.frame for e in events if isinstance(e, FrameTraced)]
    return frames, render(live_page(events, secrets=True, seed=seed))


@pytest.mark.parametrize("kex", [Kex.PSK, Kex.DHE])
def test_one_seed_gives_the_same_bytes_and_the_same_page(kex: Kex) -> None:
    frames, html = _seeded_session("lesson 3", kex)
    again, html_again = _seeded_session("lesson 3", kex)
    other, _ = _seeded_session("lesson 4", kex)
    assert frames == again and html == html_again
    assert frames[0] != other[0]
    assert "Deterministic, insecure" in html
    assert html.count('<tr class="seeded">') >= 4  # randoms and shares, verify_data, records


@pytest.mark.parametrize("command", ["client", "server"])
def test_deterministic_is_refused_without_insecure(command: str) -> None:
    target = ["127.0.0.1:9"] if command == "client" else []
    result = runner.invoke(app, [command, *target, "--deterministic", "7"])
    assert result.exit_code == 2
    assert "--insecure" in result.stderr and "anyone who knows SEED" in result.stderr
    result = runner.invoke(app, [command, *target, "--insecure"])
    assert result.exit_code == 2 and "only --deterministic needs it" in result.stderr


class FixedPortServer(ServerProcess):
    """A lesson's server listens where the handout says: the same port each run."""

    PORT = 0

    def port_args(self) -> list[str]:
        return ["--port", str(self.PORT)]


def _lesson(tmp: Path) -> tuple[str, str, str]:
    pages = tmp / "server-pages"
    with FixedPortServer(
        "--psk", f"alice={PSK_HEX}", "--html", str(pages), "--deterministic", "s", "--insecure"
    ) as srv:
        result = runner.invoke(
            app,
            [
                "client",
                srv.address,
                "--psk",
                f"alice={PSK_HEX}",
                "--send",
                "hello",
                "--html",
                str(tmp / "client.html"),
                "--deterministic",
                "c",
                "--insecure",
            ],
        )
        assert result.exit_code == 0, result.output
        srv.wait_for(r"page: path=\S+connection-0001.html")
        _, err = srv.stop()
    assert "DETERMINISTIC (seed 's', insecure)" in err
    assert "DETERMINISTIC (seed 'c', insecure)" in result.stderr
    assert f"page: {tmp / 'client.html'}" in result.stderr
    server_page = (pages / "connection-0001.html").read_text(encoding="utf-8")
    return (tmp / "client.html").read_text(encoding="utf-8"), server_page, result.stdout


@pytest.mark.slow
def test_a_lesson_with_seeds_repeats_page_for_page(tmp_path: Path, home: Path) -> None:
    FixedPortServer.PORT = free_port()
    client_1, server_1, out_1 = _lesson(tmp_path / "one")
    client_2, server_2, out_2 = _lesson(tmp_path / "two")
    assert client_1 == client_2 and server_1 == server_2
    sas = re.search(r"SAS ([0-9a-f ]{19})", out_1)
    assert sas is not None and sas.group(1) in out_2 and sas.group(1) in client_1
    assert "as the server saw it" in server_1 and "as the client saw it" in client_1
    assert "seeded" in client_1 and "seeded" in server_1


def test_decrypt_html_writes_a_page_per_session_and_an_index(lab: Lab, tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    keylog.write_text("".join(r.keylog for r in lab.sessions.values()), encoding="utf-8")
    out = tmp_path / "pages"
    result = runner.invoke(
        app, ["decrypt", str(lab.path), "--keylog", str(keylog), "--html", str(out)]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["index.html", "session-001.html", "session-002.html", "session-003.html"]
    assert "pages: 3 in" in result.stderr
    index = (out / "index.html").read_text(encoding="utf-8")
    assert index.count("<li>") == 3
    assert (out / "session-001.html").stat().st_mode & 0o077 == 0  # it holds secrets


def test_a_server_writes_at_most_its_page_limit(lab: Lab, tmp_path: Path) -> None:
    log = PageLog("json", explain=False, show_secrets=False, pages=tmp_path, max_pages=1)
    frames = frames_of(lab.sessions["psk"])
    done = lab.sessions["psk"].complete
    lines = []
    log.emit = lambda event, peer="", **fields: lines.append(event)  # type: ignore[method-assign]
    for peer in ("10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"):
        log.log("connect", peer, {})
        for frame in frames:
            log.frame(peer, frame)
        log.handshake(peer, done, 1.0)
        log.log("closed", peer, {})
    assert [p.name for p in tmp_path.iterdir()] == ["connection-0001.html"]
    assert lines.count("page") == 1 and lines.count("page-limit") == 1
    story_html = (tmp_path / "connection-0001.html").read_text(encoding="utf-8")
    assert "client 10.0.0.1" in story_html and "10.0.0.1:1" not in story_html


def test_the_readme_shows_a_real_screenshot_and_the_command_that_makes_the_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "](docs/session-page.png)" in readme
    assert re.search(r"^kexlab client 127\.0\.0\.1 .*--html session\.html$", readme, re.M)
    png = (REPO / "docs" / "session-page.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 1000 and height >= 1000 and len(png) > 50_000
    for lesson in (REPO / "docs" / "lessons").glob("*.md"):
        last = lesson.read_text(encoding="utf-8").rstrip().rsplit("## ", 1)[-1]
        assert "--html" in last, f"{lesson.name} does not end with the command making its page"
