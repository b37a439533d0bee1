"""Shared command-line plumbing: one-line errors, exit codes (2 usage, 1 failure), no tracebacks."""

from __future__ import annotations

import sys
from typing import Callable

from absl import flags

from tfprune.errors import ToolFailure, ToolUsageError, first_line


class UsageError(ToolUsageError):
    """Bad command line: exit code 2."""


class Failure(ToolFailure):
    """The work itself failed: exit code 1."""


def run_cli(
    prog: str,
    doc: str,
    define_flags: Callable[[], flags.FlagValues],
    main: Callable[[flags.FlagValues], int],
    argv: list[str] | None = None,
) -> None:
    """Parses flags, runs `main`, and exits with 0, 1 or 2 after a one-line message on error.

    Exceptions with an `exit_code` attribute (2 for usage errors, 1 for failures) print their
    message; anything else is reported as unexpected with exit code 1.
    """
    argv = list(sys.argv if argv is None else argv)
    fv = define_flags()
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
        print(doc.strip() + "\n\nFlags:\n" + fv.get_help())
        sys.exit(0)
    try:
        remaining = fv(argv)
        if len(remaining) > 1:
            raise UsageError(f"unexpected arguments {remaining[1:]}. Fix: use --flag value pairs only.")
        code = main(fv)
    except flags.Error as err:
        print(f"{prog}: error: {first_line(err).split(': ', 1)[-1]}. Fix: see --help.", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 1
    except Exception as err:  # noqa: BLE001 - never a traceback
        code = getattr(err, "exit_code", None)
        if code is None:
            print(f"{prog}: error: unexpected {first_line(err)}", file=sys.stderr)
            code = 1
        else:
            print(f"{prog}: error: {err}", file=sys.stderr)
    sys.exit(code)
