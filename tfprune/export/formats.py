"""Output formats and atomic writers: `.keras`, SavedModel (`model.export`), TFLite float, TFLite
with post-training dynamic-range quantization (`tflite_dynamic_int8`, also called `tflite_int8`:
int8 weights, float activations) and full-integer TFLite of a quantize-aware model (`tflite_full_int8`).

Every writer writes to a temporary path inside the output directory, then renames it over the
target, so the output is either complete or absent.

Example:
    >>> fmt = resolve_format("model.tflite", None)   # 'tflite'
    >>> write_model(model, "out/model.tflite", fmt)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from tfprune.export.errors import ExportUsageError

FORMATS = ("keras", "saved_model", "tflite", "tflite_int8", "tflite_dynamic_int8", "tflite_full_int8")
DYNAMIC_RANGE_FORMATS = ("tflite_int8", "tflite_dynamic_int8")  # the same format; tflite_int8 is the old name
DEFAULT_FILENAMES = {
    "keras": "stripped.keras",
    "saved_model": "stripped_saved_model",
    "tflite": "stripped.tflite",
    "tflite_int8": "stripped_int8.tflite",
    "tflite_dynamic_int8": "stripped_dynamic_int8.tflite",
    "tflite_full_int8": "stripped_full_int8.tflite",
}


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
        f"without extension (SavedModel), or pass --output_format one of {', '.join(FORMATS)}."
    )


def resolve_format(filename: str | None, output_format: str | None) -> tuple[str, str]:
    """Returns `(format, filename)` from whichever of the two is given (both may be)."""
    if output_format is not None:
        output_format = output_format.strip().lower()
        if output_format not in FORMATS:
            raise ExportUsageError(
                f"unknown output format {output_format!r}. Fix: use one of {', '.join(FORMATS)}."
            )
    if not filename:
        fmt = output_format or "keras"
        return fmt, DEFAULT_FILENAMES[fmt]
    if os.path.basename(filename) != filename:
        raise ExportUsageError(
            f"--filename must be a bare name, received {filename!r}. Fix: put the directory in --output_dir."
        )
    inferred = format_from_filename(filename) if output_format is None else None
    if output_format is None:
        return inferred, filename
    expected = {"keras": ".keras", "tflite": ".tflite", "tflite_int8": ".tflite", "tflite_dynamic_int8": ".tflite",
                "tflite_full_int8": ".tflite", "saved_model": ""}[output_format]
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
    """Converts a Keras 3 model to a TFLite flatbuffer (via a temporary SavedModel)."""
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


def write_model(model: Any, path: str, output_format: str) -> None:
    """Writes `model` to `path` in `output_format`, atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    if output_format == "saved_model":
        tmp = tempfile.mkdtemp(prefix=".tfprune-tmp-", dir=directory)
        target = os.path.join(tmp, "saved_model")
        try:
            model.export(target, format="tf_saved_model", verbose=False)
            os.rename(target, tmp + ".ready")
            _replace(tmp + ".ready", path)
        finally:
            _remove(tmp)
            _remove(tmp + ".ready")
        return
    suffix = ".keras" if output_format == "keras" else ".tflite"
    fd, tmp = tempfile.mkstemp(prefix=".tfprune-tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        if output_format == "keras":
            model.save(tmp)
        elif output_format == "tflite_full_int8":
            from tfprune.quantization.tflite import to_tflite

            with open(tmp, "wb") as handle:
                handle.write(to_tflite(model))
        else:
            data = tflite_bytes(model, quantize=output_format in DYNAMIC_RANGE_FORMATS)
            with open(tmp, "wb") as handle:
                handle.write(data)
        _replace(tmp, path)
    finally:
        _remove(tmp)
