"""The one rule for missing programs (external_tools.py), and that every test file follows it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from external_tools import find_tool, in_ci, require_tool

TESTS = Path(__file__).resolve().parent
MISSING = "kexlab-no-such-tool"
# support_net finds our own `kexlab` entry point, not an external program.
WHICH_ALLOWED = {"external_tools.py", "support_net.py"}


@pytest.mark.parametrize(
    ("value", "ci"), [("true", True), ("1", True), ("", False), ("false", False)]
)
def test_ci_variable(monkeypatch: pytest.MonkeyPatch, value: str, ci: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci


def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"{MISSING} is not installed.*under CI"):
        require_tool(MISSING, "this test")


def test_missing_tool_skips_with_the_reason_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING} is not installed .needed for x"):
        require_tool(MISSING, "x")


def test_present_tool_is_its_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require_tool("mytool") == str(tool) == find_tool("mytool")


def _calls(tree: ast.AST) -> list[str]:
    """Dotted names of everything called or used as a decorator (``pytest.mark.skipif`` ...)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute | ast.Name):
            base = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
            out.append(f"{base}.{node.attr}")
    return out


@pytest.mark.parametrize("path", sorted(TESTS.glob("*.py")), ids=lambda p: p.name)
def test_no_file_decides_about_tools_on_its_own(path: Path) -> None:
    """No shutil.which, skip or skipif outside external_tools.py: the rule lives in one place."""
    if path.name in ("external_tools.py", Path(__file__).name):  # the rule and its own tests
        return
    used = set(_calls(ast.parse(path.read_text(encoding="utf-8"))))
    banned = {"pytest.skip", "mark.skipif", "pytest.importorskip"}
    if path.name not in WHICH_ALLOWED:
        banned.add("shutil.which")
    assert not used & banned, f"{path.name} uses {sorted(used & banned)}: use require_tool"
