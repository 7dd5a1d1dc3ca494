"""How the CLI reports failures: one line and an exit code, a traceback only with --debug."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mirage_lsd.errors import UserError

T = TypeVar("T")
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` on one line to stderr and exit with `code`."""
    stderr.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


def guarded(debug: bool, body: Callable[[], T]) -> T:
    """Run a command body, turning errors into one line (or a traceback with --debug)."""
    try:
        return body()
    except UserError as exc:
        if debug:
            raise
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except OSError as exc:  # the machine said no: a folder that cannot be entered, a full disk
        if debug:
            raise
        what = f"cannot use {exc.filename}: " if exc.filename else ""
        fail(f"{what}{exc.strerror or exc}", 2)
    except Exception as exc:
        if debug:
            raise
        fail(f"{type(exc).__name__}: {exc} (run again with --debug for details)", 1)
    raise AssertionError("unreachable")
