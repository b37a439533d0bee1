"""Export of pruned checkpoints: discovery, stripping, saving as .keras / SavedModel / TFLite, size report.

Example:
    >>> report = strip_checkpoint("ckpts", output_dir="export", filename="model.tflite")
    >>> print(format_report(report))

Command line: `tfprune-strip --checkpoint_dir ckpts --output_dir export --filename model.tflite`.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from tfprune.export.calibration_data import load_representative_data
from tfprune.export.checkpoints import (
    ARCHITECTURE_FILE,
    CheckpointChoice,
    TFCheckpointWriter,
    find_latest_checkpoint,
    load_checkpoint,
)
from tfprune.export.errors import ExportError, ExportFailure, ExportUsageError, first_line
from tfprune.export.formats import (
    FORMATS,
    ExportFormat,
    as_arrays,
    format_names,
    get_format,
    register_format,
    resolve_format,
    tflite_bytes,
    write_model,
)
from tfprune.export.report import format_report
from tfprune.export.size import gzip_bytes, measure, raw_bytes, zip_bytes
from tfprune.export.strip import pruning_variables, select_outputs, strip_model, totals, weight_rows


__all__ = [
    "CheckpointChoice",
    "ExportFormat",
    "ExportError",
    "ExportFailure",
    "ExportUsageError",
    "FORMATS",
    "TFCheckpointWriter",
    "find_latest_checkpoint",
    "format_names",
    "format_report",
    "get_format",
    "load_checkpoint",
    "load_representative_data",
    "measure",
    "register_format",
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


def predict_artifact(path: str, output_format: str, x: Any) -> list:
    """Runs an exported artifact on `x` without tfprune layers (the format's predictor)."""
    return get_format(output_format).predictor(path, x)


def _verify(x: Any, expected: Any, path: str, output_format: str) -> dict:
    import keras
    import numpy as np

    expected = [np.asarray(keras.ops.convert_to_numpy(e)) for e in _as_list_tensors(expected)]
    got = predict_artifact(path, output_format, x)
    diff = max(float(np.max(np.abs(e - g))) if e.size else 0.0 for e, g in zip(expected, got))
    scale = max(float(np.max(np.abs(e))) if e.size else 0.0 for e in expected)
    fmt = get_format(output_format)
    tolerance = fmt.tolerance * max(scale, 1e-6) if fmt.relative_tolerance else fmt.tolerance
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
    representative_data: str | None = None,
    calibration: str | None = None,
) -> dict:
    """Strips the newest checkpoint in `checkpoint_dir` and writes it as .keras, SavedModel or TFLite.

    Args:
        checkpoint_dir: directory of `.keras` checkpoints, TF checkpoints with `model.json`
            (see `TFCheckpointWriter`), or tfmot-pruned tf_keras `.h5` files.
        output_dir: where to write (created if missing); default `<checkpoint_dir>/stripped`.
        filename: output name; its extension gives the format when `output_format` is None
            (`.keras`, `.tflite`, no extension = SavedModel directory).
        output_format: a name in `FORMATS` ('keras', 'saved_model', 'tflite', 'tflite_dynamic_int8' alias
            'tflite_int8', 'tflite_full_int8' from a quantize-aware model), or one added with `register_format`.
        output_node_names: layer names (list or comma-separated) whose outputs the export keeps.
        baseline: an unpruned model file (or SavedModel directory) to compare zipped sizes with.
        overwrite: replace an existing output.
        verify: run the artifact on random inputs and compare with the pruned model in inference.
        representative_data: a `.npy` file or a directory of them: the stripped float model is
            calibrated on it (`tfprune.quantization.quantize_post_training`) and written as
            `tflite_full_int8` (a quantize-aware checkpoint is re-calibrated).
        calibration: the calibration method with `representative_data`: 'minmax' (default),
            'percentile', 'entropy' or 'mse'.

    Returns:
        A JSON-serializable report (see `format_report`).

    Raises:
        ExportUsageError: bad arguments or inputs (CLI exit code 2).
        ExportFailure: loading, converting or writing failed (CLI exit code 1).

    Example:
        >>> report = strip_checkpoint("ckpts", output_dir="out", filename="model_int8.tflite",
        ...                           output_format="tflite_dynamic_int8", baseline="dense.keras")
    """
    if isinstance(output_node_names, str):
        output_node_names = [n.strip() for n in output_node_names.split(",") if n.strip()]
    output_node_names = list(output_node_names or [])
    requested = (filename, output_format)
    fmt, filename = resolve_format(filename, output_format)
    data = _calibration_inputs(representative_data, calibration, fmt)
    calibration = calibration or "minmax"
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

    if choice.kind == "h5" and data is not None:
        raise ExportUsageError(
            f"--representative_data needs a Keras 3 checkpoint; {choice.path!r} is a tf_keras .h5 file. Fix: drop "
            "--representative_data (tf_keras models export as float or dynamic-range TFLite).")
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
        if fmt == "tflite_full_int8":  # a quantize-aware checkpoint need not be pruned
            warnings = [w for w in warnings if "no pruning wrappers" not in w]
        if data is not None:
            stripped = _calibrate(stripped, data, calibration, representative_data)
            expected = stripped(x, training=False) if x is not None else None
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


def _calibration_inputs(path: str | None, method: str | None, fmt: str) -> Any:
    """Checks the calibration arguments and loads the data, before any checkpoint is read."""
    from tfprune.quantization.calibration import METHODS

    if method is not None and method not in METHODS:
        raise ExportUsageError(f"unknown --calibration {method!r}. Fix: use one of {', '.join(METHODS)}.")
    if path is None:
        if method is not None:
            raise ExportUsageError("--calibration needs --representative_data. Fix: add --representative_data "
                                   "calib.npy (model inputs), or drop --calibration.")
        return None
    if fmt != "tflite_full_int8":
        raise ExportUsageError(
            f"--representative_data calibrates a full-integer model, but the output format is {fmt}. Fix: add "
            "--output_format tflite_full_int8."
        )
    return load_representative_data(path)


def _calibrate(model: Any, data: Any, method: str, path: str) -> Any:
    from tfprune.quantization import CalibrationDataError, quantize_post_training
    from tfprune.quantization.configs import UnsupportedLayerQuantizationError

    try:
        return quantize_post_training(model, data, method=method, verbose=0)
    except CalibrationDataError as err:
        raise ExportUsageError(f"--representative_data {path!r} does not fit the model: {err}") from None
    except UnsupportedLayerQuantizationError as err:
        raise ExportFailure(f"the checkpoint cannot be quantized: {err}") from None


def _as_list_tensors(outputs: Any) -> list:
    if isinstance(outputs, dict):
        return [outputs[k] for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    return [outputs]
