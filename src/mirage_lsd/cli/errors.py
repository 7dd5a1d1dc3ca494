"""How the CLI reports failures: one line and an exit code, a traceback only with --debug."""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from mirage_lsd.errors import UserError, first_line

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


def redacted(text: str) -> str:
    """`text` with URLs' secrets hidden as in the one-line errors: first the command's
    own URL arguments whole (a password may hold a quote or a space, where a URL found in
    text would end), then any other URL in it."""
    from mirage_lsd.sources.network import redact_url, redact_urls

    for arg in sys.argv[1:]:
        if "://" in arg:
            text = text.replace(arg, redact_url(arg))
    return redact_urls(text)


class RedactingFormatter(logging.Formatter):
    """Log lines, exception tracebacks included, with URLs' secrets hidden (`redacted`):
    --debug logs a failing thread's traceback, where FFmpeg quotes the raw URL."""

    def format(self, record: logging.LogRecord) -> str:
        return redacted(super().format(record))


def setup_logging(debug: bool) -> None:
    """Warnings (all of it with --debug) to stderr, URLs' secrets hidden."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))


def debug_exit(exc: BaseException, code: int) -> NoReturn:
    """Print `exc`'s traceback, URLs' secrets hidden (it gets pasted into bug reports,
    and FFmpeg's messages quote the URL they failed on), and exit with `code`."""
    sys.stderr.write(redacted("".join(traceback.format_exception(exc))))
    sys.exit(code)


def guarded(debug: bool, body: Callable[[], T]) -> T:
    """Run a command body, turning errors into one line (or a traceback with --debug)."""
    try:
        return body()
    except UserError as exc:
        if debug:
            debug_exit(exc, exc.exit_code)
        fail(first_line(exc), exc.exit_code)
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:
        machine = isinstance(exc, OSError) and exc.errno in MACHINE_SAID_NO  # the user can fix
        if debug:
            debug_exit(exc, 2 if machine else 1)
        if machine:
            assert isinstance(exc, OSError)
            what = f"cannot use {exc.filename}: " if exc.filename else ""
            fail(f"{what}{exc.strerror or type(exc).__name__}", 2)
        what = type(exc).__name__ + (f": {str(exc).splitlines()[0]}" if str(exc) else "")
        fail(f"{what} (run again with --debug for details)", 1)
    raise AssertionError("unreachable")
