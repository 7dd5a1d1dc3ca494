"""Errors that reach users.

A `UserError` is something the user can fix (a wrong path, a bad size, a missing
device). Its message is one line that says what is wrong and what to do; the CLI
prints it without a traceback and exits with code 2.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment: shown to the user as one line, exit code 2."""

    exit_code = 2


class EndOfStream(Exception):
    """Raised by `Source.recv()` when the source has no more frames."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name if it has none):
    what a one-line error or warning shows of a failure it reports."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
