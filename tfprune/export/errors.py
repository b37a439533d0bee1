"""Errors raised by `tfprune.export`: each message names the problem and the fix."""

from __future__ import annotations

from tfprune.errors import ToolError, ToolFailure, ToolUsageError, first_line

__all__ = ["ExportError", "ExportFailure", "ExportUsageError", "first_line"]


class ExportError(ToolError):
    """Base class of export errors. `exit_code` is what the CLI returns."""


class ExportUsageError(ExportError, ToolUsageError):
    """Bad input from the caller (missing directory, unknown format, existing output...): exit code 2."""


class ExportFailure(ExportError, ToolFailure):
    """The work itself failed (corrupt checkpoint, conversion error, write error): exit code 1."""
