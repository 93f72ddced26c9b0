"""Every `kexlab` command line the docs show is one the command line accepts.

The README, the lessons and the broker guide are followed literally by students: an
option renamed or removed in the code must fail here, not in a classroom. Each command
in a fenced code block is parsed by the real command group (options, values, callbacks);
nothing runs and no file is opened.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from cli.main import app

REPO = Path(__file__).resolve().parent.parent
DOCS = [
    REPO / "README.md",
    REPO / "oob" / "mosquitto" / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
]
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
# What the shell would put in place of the substitutions the docs use.
SUBSTITUTIONS = {
    "$(cat alice.psk)": f"alice={KEY}",
    "$(cat /tmp/lab.psk)": KEY,
    "$(openssl rand -hex 32)": KEY,
}


def commands() -> list[tuple[str, str]]:
    """(where, command) for every `kexlab ...` line in the docs' code blocks."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                line = line.strip().removeprefix("$ ")
                if line.startswith("kexlab ") or line.startswith("python -m "):
                    found.append((doc.relative_to(REPO).as_posix(), line))
    return found


COMMANDS = commands()


def parse(line: str) -> None:
    """Parse ``line`` as the shell and then kexlab would, without running it."""
    for text, value in SUBSTITUTIONS.items():
        line = line.replace(text, value)
    words = [w for w in shlex.split(line, comments=True) if w not in ("...", "…")]
    for stop in ("|", ">", "2>", "&&", ";"):  # the shell's, not kexlab's
        if stop in words:
            words = words[: words.index(stop)]
    words = words[1:] if words[0] == "kexlab" else words[2:]  # `python -m server ARGS`
    if line.startswith("python -m "):
        words = [line.split()[2], *words]
    command = get_command(app)
    ctx = command.make_context("kexlab", list(words), resilient_parsing=False)
    while hasattr(command, "resolve_command"):  # a group: down to the leaf command
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        assert command is not None, line
        ctx = command.make_context(name, rest, parent=ctx)


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) > 30
    assert {where for where, _ in COMMANDS} >= {
        "README.md",
        "docs/lessons/forward-secrecy.md",
        "docs/lessons/stolen-psk.md",
        "oob/mosquitto/README.md",
    }


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[f"{w}: {c[:50]}" for w, c in COMMANDS])
def test_each_command_parses(where: str, line: str) -> None:
    try:
        parse(line)
    except typer.Exit:  # --help
        pass
    except Exception as exc:  # a usage mistake in the docs
        pytest.fail(f"{where}: {line}\n{type(exc).__name__}: {exc}")
