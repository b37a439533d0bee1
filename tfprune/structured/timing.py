"""Timing a model on CPU: a call of a Keras model in TensorFlow (traced tf.function) or in the
TFLite interpreter (XNNPACK), and the median wall time of repeated, alternating calls.

Shared by `structured.LatencyTable` and the benchmarks in `tools/`.

Example:
    >>> x = example_batch(model, 1)
    >>> ms = paired_median_ms([make_runner("tflite", model, x, threads=1)], repeats=20)
"""

from __future__ import annotations

import contextlib
import io
import os
import statistics
import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np

RUNTIMES = ("tf", "xla", "tflite")
STATISTICS = {"median": statistics.median, "min": min}


def tflite_model(model: Any) -> bytes:
    """`model` converted to a float32 TFLite flatbuffer (weights frozen into constants).

    Example:
        >>> content = tflite_model(model)
    """
    import tensorflow as tf

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the converter prints
        warnings.simplefilter("ignore")
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def tf_runner(model: Any, x: np.ndarray, xla: bool = False, io: bool = True) -> Callable[[], Any]:
    """A call of `model` on the fixed batch `x` through a traced tf.function (XLA-compiled if asked);
    `io=False` leaves out the copy of the output to numpy.

    Example:
        >>> run = tf_runner(model, x); y = run()
    """
    import tensorflow as tf

    fn = tf.function(lambda t: model(t, training=False), jit_compile=xla)
    tensor = tf.constant(x)
    if not io:
        return lambda: fn(tensor)
    return lambda: fn(tensor).numpy()


def tflite_runner(model: Any, x: np.ndarray, threads: int | None = None, io: bool = True) -> Callable[[], Any]:
    """A call of `model` (a Keras model or a TFLite flatbuffer) through the TFLite interpreter (default
    XNNPACK delegate, `threads` threads) on the batch `x`; `io=False` times `invoke()` alone (the input
    is set once, the output not read).

    Example:
        >>> run = tflite_runner(model, x, threads=1); y = run()
    """
    from tfprune.interpreter import make_interpreter

    content = model if isinstance(model, bytes) else tflite_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = make_interpreter(model_content=content, num_threads=threads or os.cpu_count())
    detail = interpreter.get_input_details()[0]
    if tuple(detail["shape"]) != x.shape:
        interpreter.resize_tensor_input(detail["index"], x.shape, strict=False)
    interpreter.allocate_tensors()
    input_index = detail["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    if not io:
        interpreter.set_tensor(input_index, x)
        return interpreter.invoke

    def run() -> np.ndarray:
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return run


def make_runner(runtime: str, model: Any, x: np.ndarray, threads: int | None = None,
                io: bool = True) -> Callable[[], Any]:
    """A zero-argument call of `model` on `x` in `runtime` ('tf', 'xla' or 'tflite'); `io=False` leaves
    out copying the input in and the output out (a layer timed alone, as inside a model).

    Example:
        >>> run = make_runner("tflite", model, x, threads=1)
    """
    if runtime == "tflite":
        return tflite_runner(model, x, threads, io=io)
    if runtime in ("tf", "xla"):
        return tf_runner(model, x, xla=runtime == "xla", io=io)
    raise ValueError(f"runtime must be one of {RUNTIMES}, received {runtime!r}.")


def paired_median_ms(runners: Sequence[Callable[[], Any]], repeats: int, warmup: int = 3,
                     stat: str = "median", clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Median (or `stat`) wall time of each runner in ms; calls alternate between the runners so that
    drift and other processes hit all of them alike. `clock` returns seconds.

    Example:
        >>> paired_median_ms([run_a, run_b], repeats=20)    # [ms_a, ms_b]
    """
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(repeats):
        for run, bucket in zip(runners, times):
            start = clock()
            run()
            bucket.append(clock() - start)
    return [1000 * STATISTICS[stat](bucket) for bucket in times]


def example_batch(model: Any, batch: int, seed: int = 0) -> np.ndarray:
    """A float32 normal batch for a model (or an input shape without the batch axis).

    Example:
        >>> x = example_batch(model, 32)
    """
    shape = (batch,) + tuple(model if isinstance(model, tuple) else model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")
