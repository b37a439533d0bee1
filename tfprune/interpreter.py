"""One way to run a TFLite model: LiteRT's interpreter where installed, else `tf.lite`.

TensorFlow 2.21 deprecates `tf.lite.Interpreter` in favour of `ai_edge_litert`; this module picks
LiteRT when the package is importable and falls back to TensorFlow's copy (with its deprecation
notice silenced) otherwise.

Example:
    >>> interpreter = make_interpreter(model_content=tflite_bytes, num_threads=1)
    >>> interpreter.allocate_tensors()
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["make_interpreter", "runtime_name"]


def _litert_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    return Interpreter


def runtime_name() -> str:
    """`"ai_edge_litert"` or `"tf.lite"`: which interpreter `make_interpreter` returns."""
    return "ai_edge_litert" if _litert_class() is not None else "tf.lite"


def make_interpreter(model_path: str | None = None, model_content: bytes | None = None,
                     num_threads: int | None = None) -> Any:
    """A TFLite interpreter for a file (`model_path`) or bytes (`model_content`).

    Example:
        >>> interpreter = make_interpreter(model_path="model.tflite", num_threads=1)
    """
    if (model_path is None) == (model_content is None):
        raise ValueError("Pass exactly one of `model_path` or `model_content` to make_interpreter.")
    cls = _litert_class()
    if cls is None:
        import tensorflow as tf

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            return tf.lite.Interpreter(model_path=model_path, model_content=model_content,
                                       num_threads=num_threads)
    return cls(model_path=model_path, model_content=model_content, num_threads=num_threads)
