"""The house has floors: no import runs back up, no module imports itself round a circle.

Bottom to top: ``protocol`` (sans-I/O, test_sans_io.py); ``keystore``, ``transport``,
``oob``, ``capture``, ``explain``, ``webpage``; ``server``, ``client``, ``mitm``, ``bench``; ``cli``,
the only package that knows typer. Read from the code's own import statements (AST), so
the picture cannot drift from the code; an import for the type checker alone (under
``if TYPE_CHECKING:``) counts too, since a reader follows it all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FLOORS: dict[str, int] = {
    "protocol": 0,
    "keystore": 1,
    "transport": 1,
    "oob": 1,
    "capture": 1,
    "explain": 1,
    "webpage": 1,
    "server": 2,
    "client": 2,
    "mitm": 2,
    "bench": 2,
    "cli": 3,
}
ONLY_CLI_KNOWS = ("typer", "click")


def modules() -> dict[str, Path]:
    """Every module of every package on a floor, by dotted name."""
    found: dict[str, Path] = {}
    for package in FLOORS:
        folder = REPO / package
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else []:
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import, relative ones made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod when there is one.
            out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            out.append((node.lineno, target))
    return out


def project_arrows() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    mods = modules()
    arrows: dict[str, set[str]] = {}
    for name, path in mods.items():
        arrows[name] = {target for _, target in imports_of(name, path) if target in mods} - {name}
    return arrows


def floor_of(module: str) -> int:
    return FLOORS[module.split(".")[0]]


def test_the_floors_are_the_packages_on_disk() -> None:
    """A new top-level package must be given a floor here (or it escapes the check)."""
    on_disk = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= set(FLOORS), f"packages without a floor: {sorted(on_disk - set(FLOORS))}"
    assert modules(), "no modules found: the scan is broken"


def test_no_import_runs_back_up() -> None:
    """A module imports only modules of its own floor or below."""
    mods = modules()
    up = [
        f"{mods[name].relative_to(REPO)}:{line} imports {target} "
        f"(floor {floor_of(target)} above floor {floor_of(name)})"
        for name in mods
        for line, target in imports_of(name, mods[name])
        if target in mods and floor_of(target) > floor_of(name)
    ]
    assert not up, "\n".join(up)


def _circles(arrows: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(arrows.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(arrows):
        if node not in index:
            visit(node)
    return groups


def test_no_circles_between_modules() -> None:
    """No module reaches itself through its imports (a package's __init__ re-exports aside)."""
    arrows = project_arrows()
    # A package's __init__ re-exports its own modules: an arrow from a module to its own
    # package's __init__ is an arrow to a sibling module, already counted.
    for name in arrows:
        arrows[name] = {t for t in arrows[name] if not name.startswith(t + ".")}
    assert _circles(arrows) == []


def test_no_circles_between_packages() -> None:
    """Packages on one floor may use each other, but never both ways."""
    arrows: dict[str, set[str]] = {}
    for name, targets in project_arrows().items():
        package = name.split(".")[0]
        arrows.setdefault(package, set()).update(t.split(".")[0] for t in targets)
    for package in arrows:
        arrows[package].discard(package)
    assert _circles(arrows) == []


@pytest.mark.parametrize("package", sorted(set(FLOORS) - {"cli"}))
def test_only_cli_knows_the_command_line_library(package: str) -> None:
    mods = modules()
    found = [
        f"{mods[name].relative_to(REPO)}:{line} imports {target}"
        for name in mods
        if name.split(".")[0] == package
        for line, target in imports_of(name, mods[name])
        if target.split(".")[0] in ONLY_CLI_KNOWS
    ]
    assert not found, "\n".join(found)


def test_the_checks_can_fail() -> None:
    """The scan sees an upward import, a relative one, and a circle."""
    arrows = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(arrows) == [["a", "b", "c"]]
    probe = REPO / "protocol" / "_layers_probe.py"
    try:
        probe.write_text("from cli import main\nfrom . import frames\n", encoding="utf-8")
        targets = {t for _, t in imports_of("protocol._layers_probe", probe)}
        assert {"cli", "cli.main", "protocol", "protocol.frames"} <= targets
    finally:
        probe.unlink()
