"""How the CLI reports failures: one line and an exit code, a traceback only with --debug."""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mirage_lsd.errors import UserError

T = TypeVar("T")
#: Errors of the machine, not of the program: no permission, a full or read-only disk, a
#: path that is not there or not a folder.
MACHINE_SAID_NO = frozenset(
    (errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENOENT,
     errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG)
)  # fmt: skip
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    """Print `error: message` on one line to stderr and exit with `code`."""
    stderr.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


def debug_exit(exc: BaseException, code: int) -> NoReturn:
    """Print `exc`'s traceback and exit with `code`. URLs in it are redacted as in the
    one-line errors: a traceback gets pasted into bug reports, and FFmpeg's messages
    quote the URL they failed on, password and stream key included."""
    from mirage_lsd.sources.network import redact_urls

    sys.stderr.write(redact_urls("".join(traceback.format_exception(exc))))
    sys.exit(code)


def guarded(debug: bool, body: Callable[[], T]) -> T:
    """Run a command body, turning errors into one line (or a traceback with --debug)."""
    try:
        return body()
    except UserError as exc:
        if debug:
            debug_exit(exc, exc.exit_code)
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:
        if debug:
            debug_exit(exc, 1)
        if isinstance(exc, OSError) and exc.errno in MACHINE_SAID_NO:  # the user can fix it
            what = f"cannot use {exc.filename}: " if exc.filename else ""
            fail(f"{what}{exc.strerror or type(exc).__name__}", 2)
        what = type(exc).__name__ + (f": {str(exc).splitlines()[0]}" if str(exc) else "")
        fail(f"{what} (run again with --debug for details)", 1)
    raise AssertionError("unreachable")
