"""tfprune-summary: print the per-layer sparsity of a saved model or of a TensorBoard log directory.

Example:
    tfprune-summary pruned.keras
    tfprune-summary logs/prune --json

A `.keras` model saved during pruning is read from its masks; a plain or stripped model from the
zeros of its prunable weights. A log directory written by tfprune.PruningSummaries gives the last
logged sparsity, target and threshold of every pruned weight, and the model's sparsity, per run.

Exit codes: 0 success, 2 usage error (missing path, not a .keras file, no event files),
1 failure (corrupt model or event file). Errors are one line on stderr.
"""

from __future__ import annotations

import json
import os

from absl import flags

from tfprune.cli.common import UsageError, run_cli

PROG = "tfprune-summary"


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_boolean("json", False, "Print one JSON object instead of tables.", flag_values=fv)
    return fv


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates positional arguments (the path) from flags, so `run_cli` sees flags only."""
    flags_part, positional = [argv[0]], []
    for arg in argv[1:]:
        (flags_part if arg.startswith("-") and arg != "-" else positional).append(arg)
    return flags_part, positional


def run(argv: list[str] | None = None) -> None:
    """Console entry point: `tfprune-summary MODEL_OR_LOGDIR [--json]`."""
    import sys

    flag_argv, positional = _split(list(sys.argv if argv is None else argv))

    def main(fv: flags.FlagValues) -> int:
        if len(positional) != 1:
            got = "no path" if not positional else f"{len(positional)} paths {positional}"
            raise UsageError(f"expected one MODEL_OR_LOGDIR, got {got}. Fix: tfprune-summary model.keras [--json]")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import warnings

        warnings.filterwarnings("ignore")
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
        from tfprune.summary import format_summary, summarize

        summary = summarize(positional[0])
        print(json.dumps(summary) if fv.json else format_summary(summary))
        return 0

    run_cli(PROG, __doc__, define_flags, main, flag_argv)


if __name__ == "__main__":
    run()
