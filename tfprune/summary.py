"""Per-layer sparsity of a saved model or of a TensorBoard log directory (`tfprune-summary`).

Example:
    >>> summary = summarize("pruned.keras")          # a wrapped, stripped or plain .keras model
    >>> print(format_summary(summary))
    >>> summary = summarize("logs/prune")            # last values logged by PruningSummaries

A wrapped model (saved during pruning) is read from its masks, exactly like
`tfprune.sparsity_report`; a plain or stripped model from the zeros of its prunable weights
(`tfprune.layers.prunable_weights`). A log directory gives, per run (directory holding event
files), the last logged `<layer>/<weight>/sparsity`, `.../threshold`, `.../target_sparsity` and
`model/sparsity`, `model/target_sparsity`.
"""

from __future__ import annotations

import glob
import os
import zipfile
from typing import Any

import numpy as np

from tfprune.errors import ToolError, ToolFailure, ToolUsageError, first_line

EVENT_PATTERN = "events.out.tfevents.*"
WEIGHT_TAGS = ("sparsity", "threshold", "target_sparsity")


class SummaryError(ToolError):
    """Base class of summary errors; `exit_code` is what the command returns."""


class SummaryUsageError(SummaryError, ToolUsageError):
    """Bad input: missing path, unsupported file, directory without event files (exit code 2)."""


class SummaryFailure(SummaryError, ToolFailure):
    """The input exists but cannot be read (corrupt model or event file): exit code 1."""




def summarize(path: str) -> dict:
    """The per-layer sparsity of a `.keras` model file or a TensorBoard log directory.

    Returns:
        `{"path", "kind", ...}` with kind `'wrapped_model'` or `'model'` (and `rows`, `totals`) or
        `'logdir'` (and `runs`: a list of `{"run", "step", "rows", "model"}`).

    Raises:
        SummaryUsageError: missing path, a file that is not `.keras`, a directory without event files.
        SummaryFailure: the model or an event file cannot be read.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SummaryUsageError(
            f"{path!r} does not exist. Fix: pass a saved .keras model or a TensorBoard log directory."
        )
    if os.path.isdir(path):
        return summarize_logdir(path)
    if not path.endswith(".keras"):
        raise SummaryUsageError(
            f"{path!r} is not a .keras model. Fix: pass a model saved with model.save('name.keras') "
            "or a TensorBoard log directory."
        )
    return summarize_model(path)


def _model_rows(model: Any) -> tuple[str, list[dict]]:
    from tfprune.prune import collect_wrappers
    from tfprune.sparsity import weight_rows

    wrapped = bool(collect_wrappers(model))
    return ("wrapped_model" if wrapped else "model"), weight_rows(model, wrapped_only=wrapped)


def summarize_model(path: str) -> dict:
    """Per prunable weight of a saved `.keras` model: shape, size, zeros, sparsity (and mask state if wrapped)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import tfprune.serialization  # noqa: F401  (registers the wrapper classes for loading)

    if not zipfile.is_zipfile(path):
        raise SummaryFailure(
            f"{path!r} is not a .keras archive (corrupt or truncated zip file). Fix: save the model again with "
            "model.save('name.keras')."
        )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001
        raise SummaryFailure(
            f"cannot load {path!r} ({first_line(err)}). Fix: pass an intact .keras file saved by Keras 3 "
            "(custom layers must be importable)."
        ) from None
    from tfprune.sparsity import totals

    kind, rows = _model_rows(model)
    return {"path": path, "kind": kind, "rows": rows, "totals": totals(rows)}


def _event_files(log_dir: str) -> dict[str, list[str]]:
    runs: dict[str, list[str]] = {}
    for root, _dirs, files in os.walk(log_dir):
        found = sorted(glob.glob(os.path.join(glob.escape(root), EVENT_PATTERN)))
        if found:
            run = os.path.relpath(root, log_dir)
            runs[run] = found
    return dict(sorted(runs.items()))


def _read_last_scalars(files: list[str]) -> dict[str, tuple[int, float, float]]:
    """{tag: (step, value, wall_time)} of the newest point (largest step, then latest write) per tag."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    last: dict[str, tuple[int, float, float]] = {}
    for path in files:
        try:
            for record in tf.data.TFRecordDataset(path):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.HasField("tensor"):
                        array = np.asarray(tf.make_ndarray(value.tensor))
                        if array.ndim or not np.issubdtype(array.dtype, np.number):
                            continue  # histograms, text (the model graph TensorBoard writes), images
                        number = float(array)
                    elif value.HasField("simple_value"):
                        number = float(value.simple_value)
                    else:
                        continue
                    point = (int(event.step), number, float(event.wall_time))
                    old = last.get(value.tag)
                    if old is None or (point[0], point[2]) >= (old[0], old[2]):
                        last[value.tag] = point
        except Exception as err:  # noqa: BLE001
            reason = "truncated or corrupt record" if isinstance(err, tf.errors.DataLossError) else first_line(err)
            raise SummaryFailure(
                f"cannot read event file {path!r} ({reason}). Fix: remove or replace the corrupt file."
            ) from None
    return last


def summarize_logdir(log_dir: str) -> dict:
    """The last logged pruning scalars of every run (directory with event files) under `log_dir`."""
    runs = _event_files(log_dir)
    if not runs:
        raise SummaryUsageError(
            f"no TensorBoard event files ({EVENT_PATTERN}) in {log_dir!r}. Fix: pass the log_dir given to "
            "tfprune.PruningSummaries, or a saved .keras model."
        )
    result = []
    for run, files in runs.items():
        last = _read_last_scalars(files)
        weights: dict[str, dict] = {}
        for tag, (step, value, _wall) in last.items():
            parts = tag.split("/")
            if tag.startswith("model/") or len(parts) < 3 or parts[-1] not in WEIGHT_TAGS:
                continue
            prefix = "/".join(parts[:-1])
            row = weights.setdefault(prefix, {"layer": parts[0], "weight": "/".join(parts[1:-1]), "step": step})
            row[parts[-1]] = value
            row["step"] = max(row["step"], step)
        rows = [weights[k] for k in sorted(weights)]
        model = {k.split("/", 1)[1]: last[k][1] for k in ("model/sparsity", "model/target_sparsity") if k in last}
        if not rows and not model:
            continue
        steps = [r["step"] for r in rows] + [last[k][0] for k in ("model/sparsity",) if k in last]
        result.append({"run": run, "step": max(steps), "rows": rows, "model": model})
    if not result:
        raise SummaryUsageError(
            f"the event files in {log_dir!r} hold no pruning summaries (<layer>/<weight>/sparsity, "
            "model/sparsity). Fix: log them with tfprune.PruningSummaries."
        )
    return {"path": log_dir, "kind": "logdir", "runs": result}


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if percent else f"{value:.4g}"


def format_summary(summary: dict) -> str:
    """The summary as text tables."""
    from tfprune.sparsity import format_sparsity_table

    if summary["kind"] != "logdir":
        what = "pruning wrappers (from masks)" if summary["kind"] == "wrapped_model" else "zeros of the prunable weights"
        lines = [f"{summary['path']}: {what}"]
        if not summary["rows"]:
            lines.append("no prunable weights")
        else:
            lines.append(format_sparsity_table(summary["rows"]))
        return "\n".join(lines)
    lines = []
    for run in summary["runs"]:
        name = summary["path"] if run["run"] == "." else os.path.join(summary["path"], run["run"])
        lines.append(f"{name}: last logged values (step {run['step']})")
        header = f"{'layer/weight':<40} {'step':>8} {'sparsity':>9} {'target':>9} {'threshold':>11}"
        lines += [header, "-" * len(header)]
        for row in run["rows"]:
            label = f"{row['layer']}/{row['weight']}"
            lines.append(f"{label:<40} {row['step']:>8} {_fmt(row.get('sparsity'), True):>9} "
                         f"{_fmt(row.get('target_sparsity'), True):>9} {_fmt(row.get('threshold')):>11}")
        if run["model"]:
            lines.append("-" * len(header))
            lines.append(f"{'model':<40} {'':>8} {_fmt(run['model'].get('sparsity'), True):>9} "
                         f"{_fmt(run['model'].get('target_sparsity'), True):>9} {'':>11}")
        lines.append("")
    return "\n".join(lines).rstrip()
