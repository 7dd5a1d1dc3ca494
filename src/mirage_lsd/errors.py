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
