"""Error classes shared by tfprune's tools: each carries the exit code its command returns."""

from __future__ import annotations


class ToolError(Exception):
    """Base class; `exit_code` is what a command-line tool returns for it."""

    exit_code = 1


class ToolUsageError(ToolError, ValueError):
    """Bad input from the caller (missing path, bad flag value, existing output...): exit code 2."""

    exit_code = 2


class ToolFailure(ToolError, RuntimeError):
    """The work itself failed (corrupt file, conversion or write error): exit code 1."""

    exit_code = 1


def first_line(err: BaseException) -> str:
    """`TypeName: first line of the message`, for one-line error reports."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
