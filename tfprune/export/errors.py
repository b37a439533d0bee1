"""Errors raised by `tfprune.export`: each message names the problem and the fix."""

from __future__ import annotations


class ExportError(Exception):
    """Base class of export errors. `exit_code` is what the CLI returns."""

    exit_code = 1


class ExportUsageError(ExportError, ValueError):
    """Bad input from the caller (missing directory, unknown format, existing output...): exit code 2."""

    exit_code = 2


class ExportFailure(ExportError, RuntimeError):
    """The work itself failed (corrupt checkpoint, conversion error, write error): exit code 1."""

    exit_code = 1


def first_line(err: BaseException) -> str:
    """`TypeName: first line of the message`, for one-line error reports."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
