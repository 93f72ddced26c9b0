"""`--help` as a student reads it at 80 columns: every value named, nothing cut, no type labels."""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def _commands() -> list[list[str]]:
    """Every leaf command of ``kexlab`` as the words that name it (["psk", "send"])."""
    found: list[list[str]] = []

    def walk(command, path: list[str]) -> None:  # type: ignore[no-untyped-def]
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            found.append(path)
            return
        for name, sub in subcommands.items():
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


COMMANDS = _commands()


def _command(words: list[str]):  # type: ignore[no-untyped-def]
    command = get_command(app)
    for word in words:
        command = command.commands[word]  # type: ignore[attr-defined]
    return command


def test_every_command_is_covered() -> None:
    names = {" ".join(c) for c in COMMANDS}
    assert {"server", "client", "decrypt", "psk send", "bench", "broker"} <= names


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w))
def test_help_at_80_columns_names_values_and_cuts_nothing(words: list[str]) -> None:
    result = runner.invoke(app, [*words, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    # typer's type labels (<bool>, <str>, <float range>) say nothing about what to type, and
    # after a flag (`--explain <bool>`) they invite `--explain true`, which fails.
    assert not re.search(r"<(bool|str|int|float|path|file)[^>]*>", text), text
    assert "…" not in text  # a rich panel cuts long words; the plain layout wraps them
    assert max(len(line) for line in text.splitlines()) <= 80
    flags = [p for p in _command(words).params if getattr(p, "is_flag", False)]
    for flag in flags:  # a flag is followed by its help, never by a value placeholder
        shown = " / ".join(", ".join(o) for o in (flag.opts, flag.secondary_opts) if o)
        assert re.search(rf"^  {re.escape(shown)}(  |\n)", text, re.MULTILINE), shown


def test_the_command_list_shows_whole_sentences() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    commands = result.stdout.split("Commands:")[1]
    assert "..." not in commands  # a first sentence too long for the list is cut with "..."


def test_an_argument_is_shown_by_what_to_type() -> None:
    result = runner.invoke(app, ["client", "--help"], env={"COLUMNS": "80"})
    assert re.search(r"^\s+HOST\[:PORT\]\s+The server", result.stdout, re.MULTILINE)


def test_pcap_and_keylog_say_what_happens_to_an_existing_file() -> None:
    # Issue 12 item 23: --pcap replaced the file while --keylog appended, and nothing said so.
    for command in (["client"], ["server"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        text = " ".join(result.stdout.split())
        assert "FILE is replaced on each run, as tcpdump -w does; --keylog appends." in text
        assert "earlier sessions stay in it; a new FILE is created mode 0600." in text
