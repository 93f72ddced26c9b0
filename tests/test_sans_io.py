"""The core stays sans-I/O (STYLE.md): no module in protocol/ imports I/O, clocks, threads, MQTT
or CLI code, or reads the environment. An AST scan, so a comment or a string cannot fool it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL = Path(__file__).resolve().parent.parent / "protocol"

FORBIDDEN_MODULES = frozenset(
    {
        "asyncio",
        "socket",
        "threading",
        "selectors",
        "time",
        "datetime",
        "subprocess",
        "aiomqtt",
        "amqtt",
        "typer",
        "rich",
    }
)
ENV_NAMES = frozenset({"environ", "environb", "getenv", "getenvb"})


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Every forbidden import or environment read in one module's source."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    os_aliases = {"os"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
                if alias.name == "os" and alias.asname:
                    os_aliases.add(alias.asname)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {module} import ...")
            if node.level == 0 and module == "os":
                found += [
                    f"line {node.lineno}: from os import {a.name}"
                    for a in node.names
                    if a.name in ENV_NAMES
                ]
        elif isinstance(node, ast.Call):
            # importlib.import_module("socket") / __import__("socket") dodge the statements above
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if (
                    isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and arg.value.split(".")[0] in FORBIDDEN_MODULES
                ):
                    found.append(f"line {node.lineno}: {name}({arg.value!r})")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENV_NAMES
            and isinstance(node.value, ast.Name)
            and node.value.id in os_aliases
        ):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def protocol_modules() -> list[Path]:
    """Every Python module of the core."""
    return sorted(PROTOCOL.rglob("*.py"))


def test_the_scan_sees_the_whole_core() -> None:
    """The scan covers protocol/ as it is, not an empty or stale list."""
    names = {p.name for p in protocol_modules()}
    assert {"__init__.py", "connection.py", "frames.py", "kex.py", "records.py"} <= names


@pytest.mark.parametrize("path", protocol_modules(), ids=lambda p: p.name)
def test_module_is_sans_io(path: Path) -> None:
    """No forbidden import and no environment read in this module."""
    assert violations(path.read_text(encoding="utf-8"), str(path)) == []


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio",
        "import socket as s",
        "import os, threading",
        "import selectors",
        "import time",
        "from datetime import datetime",
        "import subprocess",
        "import aiomqtt",
        "from amqtt.broker import Broker",
        "import typer",
        "from rich.console import Console",
        "import asyncio.streams",
        "def f():\n    import time\n    return time.monotonic()",
        "try:\n    import socket\nexcept ImportError:\n    pass",
        "import os\nkey = os.environ['KEXLAB_KEYLOGFILE']",
        "import os\nkey = os.environ.get('X')",
        "import os\nkey = os.getenv('X')",
        "import os as o\nkey = o.getenv('X')",
        "from os import environ",
        "from os import getenv as g",
        "import importlib\nm = importlib.import_module('socket')",
        "m = __import__('time')",
    ],
)
def test_the_scan_catches(source: str) -> None:
    """Each forbidden form is reported, so the scan above can fail."""
    assert violations(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import os\nsep = os.sep",
        "import secrets",
        "from .frames import FrameDecoder",
        "# import socket\nx = 'import time'",
        "from cryptography.hazmat.primitives import hashes",
        "timeout = 10.0  # seconds, driven by the caller",
    ],
)
def test_the_scan_allows(source: str) -> None:
    """What the core may do is not reported (no false alarms that would get the test muted)."""
    assert violations(source) == []
