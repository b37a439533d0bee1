"""Export of pruned checkpoints: discovery, stripping, saving as .keras / SavedModel / TFLite, size report.

Example:
    >>> report = strip_checkpoint("ckpts", output_dir="export", filename="model.tflite")
    >>> print(format_report(report))

Command line: `tfprune-strip --checkpoint_dir ckpts --output_dir export --filename model.tflite`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from tfprune.export.checkpoints import (
    ARCHITECTURE_FILE,
    CheckpointChoice,
    TFCheckpointWriter,
    find_latest_checkpoint,
    load_checkpoint,
)
from tfprune.export.errors import ExportError, ExportFailure, ExportUsageError, first_line
from tfprune.export.formats import FORMATS, resolve_format, tflite_bytes, write_model
from tfprune.export.report import format_report
from tfprune.export.size import gzip_bytes, measure, raw_bytes, zip_bytes
from tfprune.export.strip import pruning_variables, select_outputs, strip_model, totals, weight_rows

# Documented tolerances of the exported predictions against the pruned model in inference.
TOLERANCES = {"keras": 0.0, "saved_model": 1e-5, "tflite": 1e-5, "tflite_int8": None}
INT8_RELATIVE_TOLERANCE = 0.05  # max |diff| <= 5% of max |reference output|

__all__ = [
    "CheckpointChoice",
    "ExportError",
    "ExportFailure",
    "ExportUsageError",
    "FORMATS",
    "TFCheckpointWriter",
    "find_latest_checkpoint",
    "format_report",
    "load_checkpoint",
    "measure",
    "strip_checkpoint",
    "strip_model",
]


def _check_output(output_dir: str, filename: str, overwrite: bool) -> str:
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ExportUsageError(
            f"output directory {output_dir!r} is a file. Fix: pass a directory as --output_dir."
        )
    if not os.path.isdir(output_dir):
        try:
            os.makedirs(output_dir, exist_ok=True)
        except OSError as err:
            raise ExportUsageError(
                f"cannot create output directory {output_dir!r} ({err.strerror}). Fix: choose a writable --output_dir."
            ) from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise ExportUsageError(
            f"output directory {output_dir!r} is not writable. Fix: choose a writable --output_dir."
        )
    path = os.path.join(output_dir, filename)
    if os.path.exists(path) and not overwrite:
        raise ExportUsageError(f"output {path!r} already exists. Fix: add --overwrite or choose another --filename.")
    return path


def _reference_inputs(model: Any, batch: int = 4) -> Any:
    import numpy as np

    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return None
    shape = tuple(inputs[0].shape)[1:]
    if any(d is None for d in shape) or "float" not in str(inputs[0].dtype):
        return None
    return np.random.default_rng(0).normal(size=(batch,) + shape).astype(str(inputs[0].dtype))


def _as_list(outputs: Any) -> list:
    import numpy as np

    if isinstance(outputs, dict):
        return [np.asarray(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def predict_artifact(path: str, output_format: str, x: Any) -> list:
    """Runs an exported artifact on `x` without tfprune layers: plain Keras, SavedModel or TFLite interpreter."""
    import keras
    import tensorflow as tf

    if output_format == "keras":
        return _as_list(keras.saving.load_model(path, compile=False)(x, training=False))
    if output_format == "saved_model":
        loaded = tf.saved_model.load(path)  # keep a reference: its variables must outlive the call
        return _as_list(loaded.serve(tf.constant(x)))
    from tfprune.interpreter import make_interpreter

    interpreter = make_interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details().keys()
    return _as_list(runner(**{name: x}))


def _verify(x: Any, expected: Any, path: str, output_format: str) -> dict:
    import keras
    import numpy as np

    expected = [np.asarray(keras.ops.convert_to_numpy(e)) for e in _as_list_tensors(expected)]
    got = predict_artifact(path, output_format, x)
    diff = max(float(np.max(np.abs(e - g))) if e.size else 0.0 for e, g in zip(expected, got))
    scale = max(float(np.max(np.abs(e))) if e.size else 0.0 for e in expected)
    tolerance = TOLERANCES[output_format]
    if tolerance is None:
        tolerance = INT8_RELATIVE_TOLERANCE * max(scale, 1e-6)
    return {"inputs": f"random normal, batch {x.shape[0]}", "max_abs_diff": diff, "tolerance": tolerance,
            "ok": diff <= tolerance}


def strip_checkpoint(
    checkpoint_dir: str,
    output_dir: str | None = None,
    filename: str | None = None,
    output_format: str | None = None,
    output_node_names: Sequence[str] | str | None = None,
    baseline: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> dict:
    """Strips the newest checkpoint in `checkpoint_dir` and writes it as .keras, SavedModel or TFLite.

    Args:
        checkpoint_dir: directory of `.keras` checkpoints, TF checkpoints with `model.json`
            (see `TFCheckpointWriter`), or tfmot-pruned tf_keras `.h5` files.
        output_dir: where to write (created if missing); default `<checkpoint_dir>/stripped`.
        filename: output name; its extension gives the format when `output_format` is None
            (`.keras`, `.tflite`, no extension = SavedModel directory).
        output_format: 'keras', 'saved_model', 'tflite' or 'tflite_int8' (dynamic-range quantization).
        output_node_names: layer names (list or comma-separated) whose outputs the export keeps.
        baseline: an unpruned model file (or SavedModel directory) to compare zipped sizes with.
        overwrite: replace an existing output.
        verify: run the artifact on random inputs and compare with the pruned model in inference.

    Returns:
        A JSON-serializable report (see `format_report`).

    Raises:
        ExportUsageError: bad arguments or inputs (CLI exit code 2).
        ExportFailure: loading, converting or writing failed (CLI exit code 1).

    Example:
        >>> report = strip_checkpoint("ckpts", output_dir="out", filename="model_int8.tflite",
        ...                           output_format="tflite_int8", baseline="dense.keras")
    """
    if isinstance(output_node_names, str):
        output_node_names = [n.strip() for n in output_node_names.split(",") if n.strip()]
    output_node_names = list(output_node_names or [])
    requested = (filename, output_format)
    fmt, filename = resolve_format(filename, output_format)
    if baseline is not None and not os.path.exists(baseline):
        raise ExportUsageError(
            f"baseline {baseline!r} does not exist. Fix: pass the path of the unpruned model file, or drop --baseline."
        )
    choice = find_latest_checkpoint(checkpoint_dir)
    if choice.kind == "h5" and requested == (None, None):
        fmt, filename = resolve_format(None, "tflite")  # tf_keras checkpoints export to TFLite by default
    if output_dir is None:
        output_dir = os.path.join(checkpoint_dir, "stripped")
    path = _check_output(output_dir, filename, overwrite)

    if choice.kind == "h5":
        from tfprune.export import legacy

        rows, warnings, verification = legacy.export_h5(choice.path, path, fmt, output_node_names, verify=verify)
    else:
        model = load_checkpoint(choice)
        reference = select_outputs(model, output_node_names)
        x = _reference_inputs(reference) if verify else None
        expected = reference(x, training=False) if x is not None else None
        try:
            stripped, rows, warnings = strip_model(model, output_node_names)
        except ExportError:
            raise
        except Exception as err:  # noqa: BLE001
            raise ExportFailure(f"could not strip {choice.path!r}: {first_line(err)}") from None
        try:
            write_model(stripped, path, fmt)
        except Exception as err:  # noqa: BLE001
            raise ExportFailure(
                f"could not write {path!r} as {fmt} ({first_line(err)}). Fix: check the location, disk space "
                "and that the model converts to this format."
            ) from None
        verification = None
        if expected is not None:
            verification = _verify(x, expected, path, fmt)

    sizes = measure(path)
    report: dict[str, Any] = {
        "checkpoint": {
            "path": choice.path,
            "kind": choice.kind,
            "reason": choice.reason,
            "candidates": choice.candidates,
            "bytes": choice.bytes,
        },
        "output": dict({"path": path, "format": fmt}, **sizes),
        "compression_ratio": sizes["raw_bytes"] / max(sizes["zip_bytes"], 1),
        "checkpoint_to_zip_ratio": choice.bytes / max(sizes["zip_bytes"], 1),
        "output_node_names": output_node_names,
        "weights": rows,
        "totals": totals(rows),
        "warnings": warnings,
        "verification": verification,
    }
    if baseline is not None:
        base = measure(baseline)
        report["baseline"] = dict(
            {"path": baseline}, **base, times_smaller=base["zip_bytes"] / max(sizes["zip_bytes"], 1)
        )
    return report


def _as_list_tensors(outputs: Any) -> list:
    if isinstance(outputs, dict):
        return [outputs[k] for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]
