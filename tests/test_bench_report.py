"""Issue 12 item 24: a target that `kexlab bench` finds unmet points to the explanation."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from bench.report import PERFORMANCE_DOC, WHY_NOT_MET, WHY_SECTION, render

REPO = Path(__file__).resolve().parent.parent


def _render(targets: list[dict]) -> str:  # type: ignore[type-arg]
    console = Console(file=io.StringIO(), width=100, color_system=None)
    result = {"handshakes": [], "bulk": [], "targets": targets}
    result["run"] = {
        "mode": "quick",
        "repeats": 1,
        "duration_s": 0.4,
        "processes": "split",
        "malloc_env": {},
        "wall_s": 1,
    }
    result["machine"] = {"python": "3", "openssl": "o", "cryptography": "c", "cpus": 2}
    render(console, result)
    return " ".join(console.file.getvalue().split())  # type: ignore[attr-defined]


def _target(met: bool | None) -> dict:  # type: ignore[type-arg]
    return {
        "target": "handshakes/s, rsa sequential: kexlab/TLS",
        "value": 1.38,
        "goal": 2,
        "at_most": False,
        "met": met,
    }


def test_an_unmet_target_says_where_to_read_why() -> None:
    text = _render([_target(True), _target(False)])
    assert "│ ≥ 2× │ no │" in text
    assert " ".join(WHY_NOT_MET.split()) in text


def test_all_met_needs_no_pointer() -> None:
    assert WHY_SECTION not in _render([_target(True), _target(None)])


def test_the_pointer_leads_to_a_real_section() -> None:
    doc = (REPO / PERFORMANCE_DOC).read_text(encoding="utf-8")
    assert f"## {WHY_SECTION}\n" in doc
