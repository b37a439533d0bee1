"""tfprune-prune-filters: structured (filter) pruning of a saved .keras model.

Example:
    tfprune-prune-filters --model in.keras --output out.keras --pruning_ratio 0.5 \\
        --importance fpgm --round_to 8
    tfprune-prune-filters --model in.keras --output out.keras --target_macs 0.5 --round_to 8
    tfprune-prune-filters --model in.keras --output out.keras --target_latency 0.5 \\
        --runtime tflite --threads 1 --latency_table latency.json --round_to 8

A budget (--target_macs, --target_params or --target_latency: a fraction of the original) replaces
--pruning_ratio: each group keeps the channels that keep the most importance under the budget.
--target_latency measures the model's blocks in --runtime (cached in --latency_table), plans with
them, then times each plan against the original and plans again until the measured latency is
within --latency_tolerance of the budget (--latency_check predict skips that); an unreachable
budget is an error that says the smallest reachable cost. --remove_blocks lets the plan remove whole
residual branches too (TensorFlow at batch 1 pays per operator, whatever its width).

With --layer_norm exact (the default), LayerNormalization over pruned channels becomes
tfprune.structured.PrunedLayerNormalization: load the output after `import tfprune`.

Exit codes: 0 success, 2 usage error (bad or missing argument, existing output without
--overwrite), 1 failure while loading, pruning or saving. Errors are one line on stderr; the
output file is written to a temporary file in the same directory and renamed, so it is either
complete or absent.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from absl import flags

from tfprune.cli.common import Failure, UsageError, run_cli
from tfprune.cli.common import first_line as _first_line

PROG = "tfprune-prune-filters"


def cli_importances() -> list[str]:
    """The registered criteria that need no data (the ones a command line can use)."""
    from tfprune.structured.importance import IMPORTANCES, NEEDS_DATA

    return [name for name in IMPORTANCES if name not in NEEDS_DATA]


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("model", None, "Input model (.keras).", flag_values=fv)
    flags.DEFINE_string("output", None, "Where to write the pruned model (.keras).", flag_values=fv)
    flags.DEFINE_float("pruning_ratio", 0.5, "Fraction of channels to remove, in [0, 1).", flag_values=fv)
    flags.DEFINE_string("importance", "l1", f"One of {', '.join(cli_importances())}, or module:Class for your "
                        "own tfprune.structured.Importance (the module must be importable).", flag_values=fv)
    flags.DEFINE_integer("round_to", None, "Keep channel counts a multiple of this number.", flag_values=fv)
    flags.DEFINE_boolean("global_pruning", False, "Rank channels across all layers.", flag_values=fv)
    flags.DEFINE_float("max_pruning_ratio", 0.9, "Upper bound per group, in (0, 1].", flag_values=fv)
    flags.DEFINE_list("ignored_layers", [], "Comma-separated names of layers whose output channels must stay.",
                      flag_values=fv)
    flags.DEFINE_enum("layer_norm", "exact", ["exact", "approximate", "keep"],
                      "LayerNormalization over pruned channels: exact (a tfprune layer; loading the output "
                      "needs tfprune imported), approximate (plain Keras, not exact) or keep (not pruned).",
                      flag_values=fv)
    flags.DEFINE_float("target_macs", None, "Budget: fraction of the original MACs to keep, in (0, 1].", flag_values=fv)
    flags.DEFINE_float("target_params", None, "Budget: fraction of the original parameters, in (0, 1].",
                       flag_values=fv)
    flags.DEFINE_float("target_latency", None, "Budget: fraction of the original latency in --runtime, in (0, 1] "
                       "(needs --latency_table).", flag_values=fv)
    flags.DEFINE_boolean("remove_blocks", False, "With a budget: the plan may also remove whole residual branches "
                         "(the Add keeps its shortcut), for runtimes with a fixed cost per operator (--runtime tf "
                         "at batch 1). Fine-tune the output.", flag_values=fv)
    flags.DEFINE_enum("runtime", "tflite", ["tflite", "tf"], "Where --target_latency is measured: the TFLite "
                      "interpreter (XNNPACK) or TensorFlow.", flag_values=fv)
    flags.DEFINE_string("latency_table", None, "JSON cache of latency measurements (created or updated).",
                        flag_values=fv)
    flags.DEFINE_integer("threads", 1, "Threads of the latency measurements.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 1, "Batch size of the latency measurements.", flag_values=fv)
    flags.DEFINE_integer("latency_repeats", 20, "Timed calls per latency measurement.", flag_values=fv)
    flags.DEFINE_float("latency_min_seconds", 0.0, "End-to-end timings of whole models (each plan against the "
                       "original) go on past --latency_repeats until the timed calls add up to this many seconds; "
                       "on a busy host about 10 keeps --runtime tf at batch 1 within ~3%.", flag_values=fv)
    flags.DEFINE_enum("latency_check", "measure", ["measure", "predict"], "measure: each plan is timed against the "
                      "original model and planned again until within --latency_tolerance of the budget; predict: "
                      "trust the latency table's prediction.", flag_values=fv)
    flags.DEFINE_float("latency_tolerance", 0.05, "With --latency_check measure: the measured latency may miss the "
                       "budget by this fraction, in (0, 1).", flag_values=fv)
    flags.DEFINE_integer("calibration_samples", 0, "Before planning, time this many pruned versions of the model end "
                         "to end to fit the latency table to whole models (kept in --latency_table).",
                         flag_values=fv)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing output file.", flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print the report as one JSON object instead of tables.", flag_values=fv)
    return fv


def check_arguments(fv: flags.FlagValues) -> None:
    """Everything that can be checked before loading TensorFlow."""
    if not fv.model:
        raise UsageError("--model is required. Fix: --model path/to/model.keras")
    if not fv.output:
        raise UsageError("--output is required. Fix: --output path/to/pruned.keras")
    if not os.path.isfile(fv.model):
        raise UsageError(
            f"model file {fv.model!r} does not exist. Fix: pass the path of a saved .keras model."
        )
    if not 0 <= fv.pruning_ratio < 1:
        raise UsageError(
            f"--pruning_ratio must be in [0, 1), received {fv.pruning_ratio}. Fix: e.g. --pruning_ratio 0.5"
        )
    if not 0 < fv.max_pruning_ratio <= 1:
        raise UsageError(
            f"--max_pruning_ratio must be in (0, 1], received {fv.max_pruning_ratio}. Fix: e.g. --max_pruning_ratio 0.9"
        )
    if ":" in fv.importance:
        from tfprune.structured.importance import load_importance

        try:
            load_importance(fv.importance)  # prune_filters loads it again by the same name
        except ValueError as err:
            raise UsageError(f"--importance {fv.importance!r}: {err}") from None
    elif fv.importance not in cli_importances():
        from tfprune.structured.importance import NEEDS_DATA

        hint = f" ({fv.importance!r} needs data: use the Python API)" if fv.importance in NEEDS_DATA else ""
        raise UsageError(
            f"unknown --importance {fv.importance!r}{hint}. Fix: use one of {', '.join(cli_importances())}, "
            "or module:Class."
        )
    targets = [name for name in ("target_macs", "target_params", "target_latency") if fv[name].value is not None]
    if len(targets) > 1:
        raise UsageError(f"pass one budget, received {', '.join('--' + t for t in targets)}. Fix: keep one of them.")
    for name in targets:
        value = fv[name].value
        if not 0 < value <= 1:
            raise UsageError(f"--{name} must be a fraction in (0, 1], received {value}. Fix: e.g. --{name} 0.5")
    if fv.remove_blocks and not targets:
        raise UsageError("--remove_blocks needs a budget. Fix: add --target_latency, --target_macs or --target_params.")
    if targets and fv.global_pruning:
        raise UsageError("--global_pruning cannot be combined with a budget. Fix: drop --global_pruning.")
    if fv.target_latency is not None and not fv.latency_table:
        raise UsageError("--target_latency needs --latency_table. Fix: e.g. --latency_table latency.json "
                         "(created if missing, reused next time).")
    if fv.latency_table:
        table_dir = os.path.dirname(os.path.abspath(fv.latency_table))
        if not os.path.isdir(table_dir):
            raise UsageError(f"--latency_table directory {table_dir!r} does not exist. Fix: create it.")
    for name in ("threads", "batch_size", "latency_repeats"):
        if fv[name].value < 1:
            raise UsageError(f"--{name} must be a positive integer, received {fv[name].value}.")
    if not fv.latency_min_seconds >= 0 or fv.latency_min_seconds == float("inf"):
        raise UsageError(f"--latency_min_seconds must be a finite number >= 0, received {fv.latency_min_seconds}. "
                         "Fix: e.g. --latency_min_seconds 10")
    if not 0 < fv.latency_tolerance < 1:
        raise UsageError(f"--latency_tolerance must be a fraction in (0, 1), received {fv.latency_tolerance}. "
                         "Fix: e.g. --latency_tolerance 0.05")
    if fv.calibration_samples < 0:
        raise UsageError(f"--calibration_samples must be >= 0, received {fv.calibration_samples}. Fix: e.g. 8.")
    if fv.round_to is not None and fv.round_to < 1:
        raise UsageError(
            f"--round_to must be a positive integer, received {fv.round_to}. Fix: e.g. --round_to 8"
        )
    if not fv.output.endswith(".keras"):
        raise UsageError(
            f"--output must end with .keras, received {fv.output!r}. Fix: e.g. --output pruned.keras"
        )
    out_dir = os.path.dirname(os.path.abspath(fv.output))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output directory {out_dir!r} does not exist. Fix: create it or choose another --output.")
    if not os.access(out_dir, os.W_OK):
        raise UsageError(f"output directory {out_dir!r} is not writable. Fix: choose a writable --output location.")
    if os.path.exists(fv.output) and not fv.overwrite:
        raise UsageError(f"output {fv.output!r} already exists. Fix: add --overwrite or choose another --output.")


def save_atomically(model, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tfprune-", suffix=".keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(fv: flags.FlagValues) -> int:
    check_arguments(fv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from tfprune import analysis
    from tfprune.structured import prune_filters

    try:
        model = keras.saving.load_model(fv.model, compile=False)
    except Exception as err:  # noqa: BLE001 - any load error is reported in one line
        raise Failure(
            f"could not load {fv.model!r} ({_first_line(err)}). Fix: pass a .keras file written by model.save()."
        ) from None
    try:
        table = None
        if fv.target_latency is not None:
            from tfprune.structured import LatencyTable

            table = LatencyTable(runtime=fv.runtime, threads=fv.threads, batch_size=fv.batch_size,
                                 round_to=fv.round_to or 8, cache=fv.latency_table, repeats=fv.latency_repeats,
                                 min_seconds=fv.latency_min_seconds, verbose=0 if fv.json else 1)
            if fv.calibration_samples:
                table.calibrate(model, samples=fv.calibration_samples, max_pruning_ratio=fv.max_pruning_ratio)
        pruned, report = prune_filters(
            model, pruning_ratio=fv.pruning_ratio, importance=fv.importance,
            global_pruning=fv.global_pruning, max_pruning_ratio=fv.max_pruning_ratio,
            round_to=fv.round_to, ignored_layers=fv.ignored_layers or None, layer_norm=fv.layer_norm,
            target_macs=fv.target_macs, target_params=fv.target_params, target_latency=fv.target_latency,
            latency_table=table,
            latency_tolerance=fv.latency_tolerance if fv.latency_check == "measure" else None,
            remove_blocks=fv.remove_blocks,
        )
    except (ValueError, TypeError) as err:
        raise Failure(f"could not prune {fv.model!r}: {_first_line(err)}") from None
    try:
        save_atomically(pruned, fv.output)
    except Exception as err:  # noqa: BLE001
        raise Failure(
            f"could not write {fv.output!r} ({_first_line(err)}). Fix: check the location and disk space."
        ) from None
    if fv.json:
        print(json.dumps(dict(report.to_dict(), output=fv.output)))
    else:
        print(analysis.comparison_table(model, pruned))
        print()
        print(report)
        print(f"\nwrote {fv.output}")
    return 0


def run(argv: list[str] | None = None) -> None:
    """Console entry point."""
    run_cli(PROG, __doc__, define_flags, main, argv)


if __name__ == "__main__":
    run()
