"""Output formats: a table of `ExportFormat` entries, and atomic writing.

Each format is one entry `{name: suffix, writer, predictor, tolerance}`; `tfprune-strip` and
`strip_checkpoint` read the table, so adding a format is one `register_format` call. Built in:
`keras`, `saved_model` (`model.export`), `tflite` (float), `tflite_dynamic_int8` (post-training
dynamic-range quantization: int8 weights, float activations; `tflite_int8` is its earlier name) and
`tflite_full_int8` (full-integer TFLite of a quantize-aware model, `tfprune.quantization`).

Every writer writes to a temporary path inside the output directory, then it is renamed over the
target, so the output is either complete or absent.

Example:
    >>> fmt = resolve_format("model.tflite", None)   # ('tflite', 'model.tflite')
    >>> write_model(model, "out/model.tflite", "tflite")
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Any, Callable

from tfprune.export.errors import ExportUsageError


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """One output format.

    Attributes:
        name: what `--output_format` accepts.
        suffix: the file extension (".keras", ".tflite"), or "" for a directory (SavedModel).
        writer: `writer(model, path)` writes a plain Keras model to `path` (a temporary path).
        predictor: `predictor(path, x) -> list of arrays` runs the artifact without tfprune.
        tolerance: largest accepted |artifact - model| of the verification; with
            `relative_tolerance`, a fraction of the model's largest |output|.
        description: one line for `--help`.
        default_filename: the output name when none is given.
    """

    name: str
    suffix: str
    writer: Callable[[Any, str], None]
    predictor: Callable[[str, Any], list]
    tolerance: float
    description: str
    default_filename: str
    relative_tolerance: bool = False


FORMATS: dict[str, ExportFormat] = {}
ALIASES: dict[str, str] = {}


def register_format(export_format: ExportFormat, aliases: tuple[str, ...] = ()) -> None:
    """Adds (or replaces) an output format; `aliases` are other names for it.

    Example:
        >>> register_format(ExportFormat("onnx", ".onnx", write_onnx, run_onnx, 1e-5, "ONNX", "model.onnx"))
    """
    FORMATS[export_format.name] = export_format
    for alias in aliases:
        ALIASES[alias] = export_format.name


def format_names() -> list[str]:
    """Every accepted `--output_format` value, aliases included."""
    return list(FORMATS) + list(ALIASES)


def get_format(name: str) -> ExportFormat:
    """The format called `name` (or an alias of it), else an `ExportUsageError` listing the choices.

    Example:
        >>> get_format("tflite_int8").name   # 'tflite_dynamic_int8'
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise ExportUsageError(f"unknown output format {name!r}. Fix: use one of {', '.join(format_names())}.")
    return FORMATS[key]


def format_from_filename(filename: str) -> str:
    """`.keras` -> keras, `.tflite` -> tflite, no extension -> saved_model (a directory)."""
    lower = filename.lower()
    if lower.endswith(".keras"):
        return "keras"
    if lower.endswith(".tflite"):
        return "tflite"
    if not os.path.splitext(filename)[1]:
        return "saved_model"
    raise ExportUsageError(
        f"cannot infer the output format from {filename!r}. Fix: name it *.keras, *.tflite or a directory name "
        f"without extension (SavedModel), or pass --output_format one of {', '.join(format_names())}."
    )


def resolve_format(filename: str | None, output_format: str | None) -> tuple[str, str]:
    """Returns `(format name, filename)` from whichever of the two is given (both may be)."""
    if output_format is not None:
        output_format = get_format(output_format).name
    if not filename:
        fmt = output_format or "keras"
        return fmt, FORMATS[fmt].default_filename
    if os.path.basename(filename) != filename:
        raise ExportUsageError(
            f"--filename must be a bare name, received {filename!r}. Fix: put the directory in --output_dir."
        )
    if output_format is None:
        return format_from_filename(filename), filename
    expected = FORMATS[output_format].suffix
    if os.path.splitext(filename)[1].lower() != expected:
        want = f"end with {expected}" if expected else "have no extension (it is a directory)"
        raise ExportUsageError(
            f"--filename {filename!r} does not match --output_format {output_format}: it must {want}. "
            "Fix: change one of the two."
        )
    return output_format, filename


def _replace(tmp: str, path: str) -> None:
    """Renames `tmp` over `path` (a file or a directory)."""
    if os.path.isdir(path) and not os.path.islink(path):
        trash = tempfile.mkdtemp(prefix=".tfprune-old-", dir=os.path.dirname(path))
        os.rename(path, os.path.join(trash, "old"))
        os.rename(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        if os.path.isdir(tmp) and os.path.exists(path):
            os.remove(path)
        os.replace(tmp, path)


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def tflite_bytes(model: Any, quantize: bool = False) -> bytes:
    """Converts a Keras 3 model to a TFLite flatbuffer (via a temporary SavedModel); `quantize` applies
    dynamic-range quantization."""
    import tensorflow as tf

    work = tempfile.mkdtemp(prefix="tfprune-export-")
    try:
        saved = os.path.join(work, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return converter.convert()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def as_arrays(outputs: Any) -> list:
    """Model outputs (a tensor, a list or a dict, keys sorted) as a list of numpy arrays."""
    import numpy as np

    if isinstance(outputs, dict):
        return [np.asarray(outputs[k]) for k in sorted(outputs)]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(o) for o in outputs]
    return [np.asarray(outputs)]


def _write_keras(model: Any, path: str) -> None:
    model.save(path)


def _predict_keras(path: str, x: Any) -> list:
    import keras

    return as_arrays(keras.saving.load_model(path, compile=False)(x, training=False))


def _write_saved_model(model: Any, path: str) -> None:
    model.export(path, format="tf_saved_model", verbose=False)


def _predict_saved_model(path: str, x: Any) -> list:
    import tensorflow as tf

    loaded = tf.saved_model.load(path)  # keep a reference: its variables must outlive the call
    return as_arrays(loaded.serve(tf.constant(x)))


def _tflite_writer(quantize: bool) -> Callable[[Any, str], None]:
    def write(model: Any, path: str) -> None:
        data = tflite_bytes(model, quantize=quantize)
        with open(path, "wb") as handle:
            handle.write(data)

    return write


def predict_tflite(path: str, x: Any) -> list:
    """Runs a one-input TFLite file on `x` through its signature runner."""
    from tfprune.interpreter import make_interpreter

    runner = make_interpreter(model_path=path).get_signature_runner()
    (name,) = runner.get_input_details().keys()
    return as_arrays(runner(**{name: x}))


register_format(ExportFormat("keras", ".keras", _write_keras, _predict_keras, 0.0,
                             "Keras 3 .keras archive", "stripped.keras"))
register_format(ExportFormat("saved_model", "", _write_saved_model, _predict_saved_model, 1e-5,
                             "TensorFlow SavedModel directory (model.export)", "stripped_saved_model"))
register_format(ExportFormat("tflite", ".tflite", _tflite_writer(False), predict_tflite, 1e-5,
                             "TFLite, float", "stripped.tflite"))
register_format(
    ExportFormat("tflite_dynamic_int8", ".tflite", _tflite_writer(True), predict_tflite, 0.05,
                 "TFLite with dynamic-range quantization: int8 weights, float activations (smaller; on x86 "
                 "often slower than float)", "stripped_int8.tflite", relative_tolerance=True),
    aliases=("tflite_int8",),
)


def _write_full_int8(model: Any, path: str) -> None:
    from tfprune.quantization.tflite import to_tflite

    with open(path, "wb") as handle:
        handle.write(to_tflite(model))


register_format(
    ExportFormat("tflite_full_int8", ".tflite", _write_full_int8, predict_tflite, 0.05,
                 "full-integer int8 TFLite of a quantize-aware model (tfprune.quantization.quantize_model or "
                 "quantize_post_training): int8 weights and activations, the fast one on CPUs",
                 "stripped_full_int8.tflite", relative_tolerance=True),
)


def write_model(model: Any, path: str, output_format: str) -> None:
    """Writes `model` to `path` in `output_format`, atomically (temporary path, then rename).

    Example:
        >>> write_model(stripped, "out/model.keras", "keras")
    """
    fmt = get_format(output_format)
    directory = os.path.dirname(os.path.abspath(path))
    if not fmt.suffix:  # a directory
        tmp = tempfile.mkdtemp(prefix=".tfprune-tmp-", dir=directory)
        target = os.path.join(tmp, "artifact")
        try:
            fmt.writer(model, target)
            os.rename(target, tmp + ".ready")
            _replace(tmp + ".ready", path)
        finally:
            _remove(tmp)
            _remove(tmp + ".ready")
        return
    fd, tmp = tempfile.mkstemp(prefix=".tfprune-tmp-", suffix=fmt.suffix, dir=directory)
    os.close(fd)
    try:
        fmt.writer(model, tmp)
        _replace(tmp, path)
    finally:
        _remove(tmp)
