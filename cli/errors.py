"""One-line errors and exit codes for every kexlab command.

An error is one line on stderr: exit 1 for a failure, 2 for a usage mistake. No
traceback reaches a user (set ``KEXLAB_DEBUG=1`` to see one while developing). Only
typer's public API is used: ``typer.TyperException`` is the root of the command-line
exceptions since typer 0.28 (pinned in pyproject.toml).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from explain.console import error_line

DEBUG_ENV = "KEXLAB_DEBUG"
USAGE = 2
"""The exit code of a usage mistake (click's, and the README's promise)."""


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    error_line(f"error: {message}")
    raise typer.Exit(code)


def _one_line_errors(run: Callable[[], Any], prog_name: str | None) -> NoReturn:
    """Run a command in non-standalone mode; every escaping error becomes one line + exit code."""
    try:
        rv = run()
    except typer.TyperException as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError" and hasattr(exc, "show"):
            exc.show()  # no arguments at all: the help itself, as it is (typer does the same)
        elif exc.exit_code == USAGE:
            ctx = getattr(exc, "ctx", None)
            name = ctx.command_path if ctx is not None else (prog_name or "kexlab")
            if message:
                error_line(f"{name}: error: {message} (see '{name} --help')")
        else:
            error_line(f"error: {message}")
        sys.exit(exc.exit_code)
    except typer.Abort:
        error_line("aborted")
        sys.exit(1)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        error_line(f"internal error: {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for details)")
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


class _OneLineErrorsMixin:
    """``main`` like typer's, with usage and internal errors as one line (exit 2 and 1)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Like typer's, with one-line errors in standalone mode."""

        def run() -> Any:
            return super(_OneLineErrorsMixin, self).main(  # type: ignore[misc]
                args, prog_name, complete_var, False, windows_expand_args, **extra
            )

        if not standalone_mode:
            return run()
        _one_line_errors(run, prog_name)


class KexlabGroup(_OneLineErrorsMixin, TyperGroup):
    """The ``kexlab`` group: usage and internal errors are one line (exit 2 and 1)."""


class KexlabCommand(_OneLineErrorsMixin, TyperCommand):
    """A kexlab command: one-line errors, and help that names each value, never its type.

    Help is click's plain layout (``HELP_MARKUP``): it wraps between words at any width,
    where a rich panel cuts long words with "…". An argument is shown by its metavar
    alone: typer would add its Python type (``HOST[:PORT] <str>``), which tells a
    student nothing about what to type.
    """

    def format_options(self, ctx: typer.Context, formatter: Any) -> None:
        """The Arguments and Options sections, arguments by their metavar only."""
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):
                arguments.append((param.metavar or (param.name or "").upper(), record[1]))
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


HELP_MARKUP = None
"""typer's ``rich_markup_mode`` for every kexlab app: None, click's plain help."""


def single_command_app(function: Any, name: str, help_text: str) -> typer.Typer:
    """A typer app that is exactly one command (for ``python -m server`` / ``client``)."""
    app = typer.Typer(
        name=name,
        help=help_text,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=HELP_MARKUP,
    )
    app.command(name=name, cls=KexlabCommand)(function)
    return app
