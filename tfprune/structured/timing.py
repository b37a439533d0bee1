"""Timing a model on CPU: a call of a Keras model in TensorFlow (traced tf.function) or in the
TFLite interpreter (XNNPACK), and the median wall time of repeated, alternating calls.

TFLite models with int8/uint8 inputs get their input quantized with the input tensor's scale and zero
point, and int8/uint8 outputs are dequantized, so a full-integer model runs on float data.

Shared by `structured.LatencyTable` and the benchmarks in `tools/`.

Example:
    >>> x = example_batch(model, 1)
    >>> ms = paired_median_ms([make_runner("tflite", model, x, threads=1)], repeats=20)
    >>> b1, b32 = (tflite_latency_ms(int8_flatbuffer, x_eval, batch, repeats=50) for batch in (1, 32))
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


def _quantized(x: np.ndarray, detail: dict) -> np.ndarray:
    """`x` as the interpreter's input tensor takes it: quantized with its scale and zero point when it is
    int8/uint8, else in the tensor's dtype (the same array when it has it already)."""
    dtype = np.dtype(detail["dtype"])
    if dtype not in (np.int8, np.uint8):
        return np.asarray(x, dtype=dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantized(y: np.ndarray, detail: dict) -> np.ndarray:
    """An int8/uint8 output tensor's values as floats (others unchanged)."""
    if np.dtype(detail["dtype"]) not in (np.int8, np.uint8):
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def tflite_runner(model: Any, x: np.ndarray, threads: int | None = None, io: bool = True) -> Callable[[], Any]:
    """A call of `model` (a Keras model or a TFLite flatbuffer) through the TFLite interpreter (default
    XNNPACK delegate, `threads` threads, default all cores) on the batch `x`; an int8/uint8 input gets
    `x` quantized (once), an int8/uint8 output is returned dequantized. `io=False` times `invoke()`
    alone (the input is set once, the output not read).

    Example:
        >>> run = tflite_runner(model, x, threads=1); y = run()
        >>> logits = tflite_runner(to_tflite(qat, inference_input_type=tf.int8), x_eval, threads=1)()
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
    output = interpreter.get_output_details()[0]
    value = _quantized(x, detail)
    if not io:
        interpreter.set_tensor(input_index, value)
        return interpreter.invoke

    def run() -> np.ndarray:
        interpreter.set_tensor(input_index, value)
        interpreter.invoke()
        return _dequantized(interpreter.get_tensor(output["index"]), output)

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


def prepare(runtime: str, model: Any) -> Any:
    """`model` as `make_runners` takes it without converting it again: a TFLite flatbuffer for
    "tflite", the Keras model itself for "tf".

    Example:
        >>> flatbuffer = prepare("tflite", model)
        >>> runs = make_runners("tflite", flatbuffer, x, threads=1, count=3)
    """
    if runtime == "tflite" and not isinstance(model, bytes):
        return tflite_model(model)
    return model


def make_runners(runtime: str, model: Any, x: np.ndarray, threads: int | None = None, count: int = 1,
                 io: bool = True) -> list[Callable[[], Any]]:
    """`count` independent calls of `model` on `x` in `runtime`: separate interpreters (one conversion)
    or separate traced functions. Instances of one model can differ by several percent (memory
    placement), so a robust measurement takes the median over a few of them.

    Example:
        >>> runs = make_runners("tflite", model, x, threads=1, count=3)
    """
    model = prepare(runtime, model)
    if runtime == "tflite":
        return [tflite_runner(model, x, threads, io=io) for _ in range(count)]
    return [make_runner(runtime, model, x, threads, io=io) for _ in range(count)]


def paired_median_ms(runners: Sequence[Callable[[], Any]], repeats: int, warmup: int = 3,
                     stat: str = "median", clock: Callable[[], float] = time.perf_counter,
                     min_seconds: float = 0.0, max_repeats: int | None = None) -> list[float]:
    """Median (or `stat`) wall time of each runner in ms; calls alternate between the runners so that
    drift and other processes hit all of them alike. `clock` returns seconds.

    At least `repeats` rounds (one call of each runner) are timed; with `min_seconds` the rounds go on
    until the timed calls add up to that many seconds, up to `max_repeats` rounds (default
    50 x `repeats`). On a busy host a median over a fixed time is steadier than over a fixed count:
    a fast model gets more calls.

    Example:
        >>> paired_median_ms([run_a, run_b], repeats=20)    # [ms_a, ms_b]
        >>> paired_median_ms([run_a, run_b], repeats=20, min_seconds=10.0)
    """
    check_min_seconds(min_seconds)
    cap = max(repeats, 50 * repeats if max_repeats is None else max_repeats)
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    rounds, elapsed = 0, 0.0
    while rounds < repeats or (rounds < cap and elapsed < min_seconds):
        for run, bucket in zip(runners, times):
            start = clock()
            run()
            bucket.append(clock() - start)
            elapsed += bucket[-1]
        rounds += 1
    return [1000 * STATISTICS[stat](bucket) for bucket in times]


def check_min_seconds(min_seconds: Any) -> float:
    """`min_seconds` if it is a finite number >= 0, else a ValueError naming it.

    Example:
        >>> check_min_seconds(10.0)
        10.0
    """
    if (isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float, np.integer, np.floating))
            or not np.isfinite(min_seconds) or min_seconds < 0):
        raise ValueError(f"min_seconds must be a finite number of seconds >= 0, received {min_seconds!r}. "
                         "Fix: e.g. min_seconds=10.0 (0 times exactly `repeats` rounds).")
    return float(min_seconds)


def tflite_latency_ms(model: Any, sample: np.ndarray, batch: int = 1, repeats: int = 100, threads: int = 1,
                      warmup: int = 3, stat: str = "median",
                      clock: Callable[[], float] = time.perf_counter) -> float:
    """Median (or `stat`) wall time in ms of one TFLite `invoke()` of `model` (a Keras model or a
    flatbuffer, float or full integer) on `batch` copies of `sample[0]`, with `threads` threads, over
    `repeats` calls after `warmup` untimed ones; the input is set once and the output not read.

    Example:
        >>> b1 = tflite_latency_ms(data, x_eval, batch=1, repeats=100)
        >>> b32 = tflite_latency_ms(data, x_eval, batch=32, repeats=25)
    """
    for name, value, least in (("batch", batch, 1), ("repeats", repeats, 1), ("threads", threads, 1),
                               ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"`{name}` must be an int >= {least}; received {value!r}.")
    if stat not in STATISTICS:
        raise ValueError(f"`stat` must be one of {sorted(STATISTICS)}; received {stat!r}.")
    if len(sample) == 0:
        raise ValueError("`sample` is empty. Fix: pass at least one input, e.g. x_eval[:1].")
    x = np.repeat(np.asarray(sample)[:1], batch, axis=0)
    run = tflite_runner(model, x, threads=threads, io=False)
    return paired_median_ms([run], repeats, warmup=warmup, stat=stat, clock=clock)[0]


def example_batch(model: Any, batch: int, seed: int = 0) -> np.ndarray:
    """A float32 normal batch for a model (or an input shape without the batch axis).

    Example:
        >>> x = example_batch(model, 32)
    """
    shape = (batch,) + tuple(model if isinstance(model, tuple) else model.input_shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")
