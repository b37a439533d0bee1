"""Measured latency tables: what each layer (or fused conv+BN+activation block) of a model costs at
each channel width in a target runtime, and a model's latency predicted from them.

A model is split into *blocks*: a producer (Conv, Dense, DepthwiseConv, Add, ...) with the
BatchNormalization and element-wise activations that only it feeds (TFLite and TensorFlow fuse
them), or any other layer on its own; each layer's role comes from its handler in the layer registry
(`LayerHandler.latency_role`). Each block is timed as a tiny model built from the layers'
configs at an input width and an output width (multiples of `round_to`, every width a pruned model
can have), minus the time of an empty model timed in alternation with it, in the runtime
(`'tflite'`: the TFLite interpreter with XNNPACK; `'tf'`: a traced tf.function). Blocks with the same configuration and spatial shape
share their measurements (a ResNet's repeated blocks are timed once). A model's prediction is the sum
of its blocks at their widths (bilinear interpolation between measured widths) plus a fixed part,
measured once per architecture: the full model's latency minus its blocks (per-call overhead, and
layers that are not timed alone: reshapes, dropout, keras.ops operations).

Blocks timed alone do not add up exactly to a whole model (an interpreter's per-operator cost and
the caches a model shares; TensorFlow's executor overlapping operators), so `calibrate(model)` times
a few pruned versions of the architecture end to end (each against the original, as the median over
several interpreter instances) and fits `latency = intercept + scale * sum of blocks` to them, or,
where it predicts the measured plans better (TensorFlow at batch 1: a block costs about one operator
call at any width when timed alone, but whole models still speed up with fewer MACs), `intercept +
scale * sum of blocks + ms_per_mac * MACs`; predictions and the planner's cost model use the fit. `prune_filters(target_latency=...)` measures
each plan it makes the same way and adds it to the fit.

Measurements are cached in a JSON file keyed by the CPU model, the runtime and its version, the
thread count, the batch size and how blocks were timed; a table for another key is measured afresh in
the same file.

Example:
    >>> table = LatencyTable(runtime="tflite", threads=1, batch_size=1, cache="latency.json")
    >>> table.measure(model)                  # times every block at every candidate width (cached)
    >>> table.calibrate(model, samples=8)     # fits the sum of blocks to whole pruned models
    >>> table.predict(pruned)                 # ms, without converting `pruned`
    >>> table.compare(model, [pruned])        # measured latency of `pruned` / the original's
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import tempfile
import time
from typing import Any, Callable, NamedTuple, Sequence

import keras
import numpy as np

from tfprune import analysis
from tfprune.keras_graph import copy_layer, flatten_model, layer_config
from tfprune.layers import get_handler
from tfprune.structured import timing
from tfprune.structured.architecture import structure_key
from tfprune.structured.cost import CostModel, Term, macs_cost

FORMAT = "tfprune.latency_table/2"
DEFAULT_CLOCK = time.perf_counter
RUNTIMES = ("tflite", "tf")
WIDTH_KEYS = ("filters", "units")
class LatencyTableError(ValueError):
    """A latency cache file that cannot be used, or a model the table cannot time.

    Example:
        >>> try:
        ...     table = LatencyTable("tflite", cache="latency.json")
        ... except LatencyTableError as error:
        ...     print(error)          # what is wrong with the file, and the fix
    """


def _cpuinfo_fields(text: str) -> dict[str, str]:
    """The first processor's 'key: value' fields of /proc/cpuinfo text (keys lower-case)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU the latency cache is keyed by: /proc/cpuinfo's model name with its family, model and
    stepping, and the widest vector extension (AVX-512, AVX2), since virtual machines often report a
    generic name ('AMD EPYC') for processors of different generations that time layers differently.
    Without /proc/cpuinfo, platform.processor().

    Example:
        >>> cpu_model()    # 'AMD EPYC (family 25, model 17, stepping 1, avx512f)'
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields = _cpuinfo_fields(cpuinfo)
    name = fields.get("model name")
    if not name:
        return platform.processor() or platform.machine() or "unknown"
    details = [f"{label} {fields[field]}" for label, field in
               (("family", "cpu family"), ("model", "model"), ("stepping", "stepping")) if fields.get(field)]
    flags = set(fields.get("flags", "").split())
    vector = next((f for f in ("avx512f", "avx2", "avx", "asimd", "neon") if f in flags), None)
    if vector:
        details.append(vector)
    return f"{name} ({', '.join(details)})" if details else name


def runtime_version(runtime: str) -> str:
    """The version string of a runtime: TensorFlow's, or the TFLite interpreter's package and version."""
    import tensorflow as tf

    if runtime == "tflite":
        from tfprune.interpreter import runtime_name

        name = runtime_name()
        if name == "ai_edge_litert":
            import ai_edge_litert

            return f"ai_edge_litert {getattr(ai_edge_litert, '__version__', '?')}"
        return f"tf.lite {tf.__version__}"
    return f"tensorflow {tf.__version__}"


def _role(layer: Any) -> str:
    return get_handler(layer).latency_role(layer)


class Block:
    """Consecutive layer calls timed together, from the tensor `in_key` to the tensor `out_key`."""

    def __init__(self, calls: list) -> None:
        self.calls = calls
        first, last = calls[0], calls[-1]
        self.in_key, self.out_key = first.inputs[0], last.outputs[0]
        self.in_shapes = [tuple(s) for s in first.input_shapes]
        self.out_shape = tuple(last.output_shapes[0])
        self.layers = [c.layer for c in calls]
        config = layer_config(first.layer)
        self.width_key = next((k for k in WIDTH_KEYS if k in config), None)
        self.producer = self.width_key is not None and not (
            type(first.layer).__name__.startswith("Conv") and config.get("groups", 1) > 1)
        self.name = "+".join(layer.name for layer in self.layers)

    @property
    def wi0(self) -> int:
        return int(self.in_shapes[0][-1])

    @property
    def wo0(self) -> int:
        return int(self.out_shape[-1])

    def signature(self) -> str:
        """What the block's latency depends on besides its widths (configs, spatial shapes)."""
        configs = []
        for layer in self.layers:
            config = {k: v for k, v in layer_config(layer).items() if k not in ("name", "trainable") + WIDTH_KEYS}
            configs.append([type(layer).__name__, config])
        spatial = [list(s[1:-1]) for s in self.in_shapes] + [list(self.out_shape[1:-1])]
        ties = None if self.producer else [round(s[-1] / self.wo0, 6) for s in self.in_shapes]
        text = json.dumps([configs, spatial, ties, self.producer], sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def in_widths(self, wi: int, wo: int) -> list[int]:
        if self.producer:
            return [int(wi)] + [int(s[-1]) for s in self.in_shapes[1:]]
        return [max(1, int(round(s[-1] * wo / self.wo0))) for s in self.in_shapes]

    def tiny_model(self, wi: int, wo: int) -> keras.Model:
        """The block alone at input width `wi` and output width `wo` (random weights)."""
        widths = self.in_widths(wi, wo)
        shapes = [s[1:-1] + (w,) for s, w in zip(self.in_shapes, widths)]
        if len(set(shapes)) > 1:
            raise LatencyTableError(f"{self.name}: inputs of different shapes are not timed alone")
        x = keras.Input(shapes[0])
        y = x if len(shapes) == 1 else [x] * len(shapes)
        for i, layer in enumerate(self.layers):
            config = layer_config(layer)
            if i == 0 and self.width_key and self.producer:
                config[self.width_key] = int(wo)
            elif i == 0 and self.width_key and config.get("groups", 1) > 1:  # grouped conv: scale with width
                config[self.width_key] = int(wo)
                if config["groups"] == self.wi0:
                    config["groups"] = widths[0]
            y = copy_layer(layer, config)(y)
        return keras.Model(x, y)


def split_blocks(calls: list, output_keys: list) -> tuple[list[Block], list[str]]:
    """The blocks of a flattened model, and the names of layers left to the fixed overhead."""
    consumers: dict[Any, list[int]] = {}
    for i, call in enumerate(calls):
        for key in call.inputs:
            consumers.setdefault(key, []).append(i)
    outputs = set(output_keys)
    blocks, untimed, fused = [], [], set()
    for i, call in enumerate(calls):
        if i in fused:
            continue
        layer = call.layer
        kind = type(layer).__name__
        if (not isinstance(layer, keras.layers.Layer) or _role(layer) == "untimed" or not call.inputs
                or not call.outputs or len(call.outputs) != 1 or not call.output_shapes[0]
                or any(d is None for d in call.output_shapes[0][1:])):
            untimed.append(getattr(layer, "name", kind))
            continue
        group = [call]
        while _role(layer) == "anchor":  # absorb the BatchNormalization / activation that alone reads the block's output
            current = group[-1].outputs[0]
            readers = consumers.get(current, [])
            if len(readers) != 1 or current in outputs:
                break
            nxt = calls[readers[0]]
            if nxt.inputs != [current] or len(nxt.outputs) != 1 or readers[0] in fused:
                break
            if _role(nxt.layer) != "fused":
                break
            group.append(nxt)
            fused.add(readers[0])
        blocks.append(Block(group))
    return blocks, untimed


def _candidate_widths(width: int, round_to: int | None, max_widths: int | None) -> list[int]:
    step = round_to or 1
    widths = sorted(set(range(step, width, step)) | {width})
    if max_widths and len(widths) > max_widths:
        picks = np.unique(np.round(np.linspace(0, len(widths) - 1, max_widths)).astype(int))
        widths = [widths[i] for i in picks]
    return widths


def _extrapolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Linear extrapolation from the two nearest points (a single point: its value)."""
    if len(xs) == 1:
        return float(ys[0])
    if x < xs[0]:
        (x0, y0), (x1, y1) = (xs[0], ys[0]), (xs[1], ys[1])
    else:
        (x0, y0), (x1, y1) = (xs[-2], ys[-2]), (xs[-1], ys[-1])
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


class LatencyFit(NamedTuple):
    """An architecture's fit to whole-model measurements: latency (ms) = `intercept` + `scale` x the
    sum of its blocks (ms) + `ms_per_mac` x its MACs (per sample) + `ms_per_sqrt_mac` x the sum over
    its layers of the square root of each layer's MACs (see `sqrt_macs`). The MACs terms are 0 unless
    they predict the measurements clearly better than the blocks alone.

    Example:
        >>> intercept, scale, ms_per_mac, ms_per_sqrt_mac = table.fit(model)
    """

    intercept: float
    scale: float
    ms_per_mac: float = 0.0
    ms_per_sqrt_mac: float = 0.0


MIN_POINTS_WITH_MACS = 5  # the original and 4 pruned versions before a fit may use MACs
MACS_GAIN = 0.7  # a fit with a MACs term must cut the leave-one-out error by at least 30%


def sqrt_macs(model: keras.Model) -> float:
    """The sum over `model`'s layer calls of the square root of each call's MACs (per sample).

    A layer's latency grows more slowly than its MACs where the runtime is far from its peak
    throughput (TensorFlow at batch 1: small convolutions run at a fraction of the speed of wide
    ones), so a latency fit may use this concave measure of work beside (or instead of) the MACs.

    Example:
        >>> sqrt_macs(model)      # e.g. 1.2e5 for ResNet-56
    """
    calls, _, _ = flatten_model(model)
    total = 0.0
    for call in calls:
        if call.input_shapes and call.output_shapes:
            total += math.sqrt(max(analysis.layer_macs(call.layer, call.input_shapes[0], call.output_shapes[0]), 0))
    return total


def _solve(rows: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Least squares of relative errors through the first point: coefficients c with
    `rows[0] @ c == measured[0]` minimising sum((rows[1:] @ c / measured[1:] - 1)^2). The first
    column is the intercept's (ones). The first point is the original: every calibration point is a
    fraction of its latency, so a fit through it predicts those fractions themselves."""
    steps = rows[1:, 1:] - rows[0, 1:]
    rest, *_ = np.linalg.lstsq(steps / measured[1:, None], 1.0 - measured[0] / measured[1:], rcond=None)
    return np.concatenate([[measured[0] - float(rows[0, 1:] @ rest)], rest])


def _valid(coef: np.ndarray, columns: tuple[str, ...]) -> bool:
    values = dict(zip(columns, coef))
    if not np.all(np.isfinite(coef)):
        return False
    work = [c for c in columns if c in ("macs", "sqrt_macs")]
    if not work:
        return 0.05 <= values["blocks"] <= 20.0
    return all(values[c] >= 0.0 for c in work) and 0.0 <= values.get("blocks", 0.0) <= 20.0


def _loo_error(rows: np.ndarray, measured: np.ndarray) -> float:
    """Root-mean-square relative error of each pruned point (not the original, the first) predicted
    by the fit to the other points."""
    errors = []
    for i in range(1, len(measured)):
        keep = np.arange(len(measured)) != i
        coef = _solve(rows[keep], measured[keep])
        errors.append(float(rows[i] @ coef) / measured[i] - 1.0)
    return float(np.sqrt(np.mean(np.square(errors))))


def choose_fit(points: Sequence[dict], fallback_intercept: float) -> LatencyFit:
    """The fit of whole-model measurements `points` ({'blocks_ms', 'ms', optional 'macs' and
    'sqrt_macs'}, the original first): `intercept + scale * blocks`, or with one work term, the MACs
    or the per-layer square roots of the MACs (`sqrt_macs`), beside the blocks or alone, when every
    point has it, there are at least `MIN_POINTS_WITH_MACS`, and its leave-one-out relative error is
    at least 30% below the blocks-only fit's (the form with the smallest such error wins). Every
    form passes through the original's measurement exactly and minimises the relative errors of the
    pruned points: they were measured as fractions of the original, and predictions are used as
    fractions of its prediction.
    Coefficients out of range (a scale outside [0.05, 20] without a work term, a negative one with
    it) rule a form out; with none left, `(fallback_intercept, 1, 0, 0)`: the blocks as timed.

    Example:
        >>> choose_fit([{"blocks_ms": 4.0, "ms": 5.0, "macs": 1e8, "sqrt_macs": 9e4}, ...], 1.0)
    """
    fallback = LatencyFit(float(fallback_intercept), 1.0, 0.0, 0.0)
    if len(points) < 3:
        return fallback
    blocks = np.array([p["blocks_ms"] for p in points], dtype=float)
    measured = np.array([p["ms"] for p in points], dtype=float)
    if np.any(measured <= 0) or np.ptp(blocks) <= 1e-3 * max(abs(blocks[0]), 1e-12):
        blocks_spread = False
    else:
        blocks_spread = True
    forms: list[tuple[tuple[str, ...], np.ndarray]] = []
    if blocks_spread:
        forms.append((("one", "blocks"), np.stack([np.ones_like(blocks), blocks], axis=1)))
    enough = len(points) >= MIN_POINTS_WITH_MACS and bool(np.all(measured > 0))
    scales = {}  # work term -> the original's value (columns are fractions of it)
    for name in ("macs", "sqrt_macs"):
        if not enough or not all(p.get(name) for p in points):
            continue
        work = np.array([p[name] for p in points], dtype=float) / float(points[0][name])
        if np.ptp(work) <= 1e-6:
            continue
        scales[name] = float(points[0][name])
        forms.append((("one", name), np.stack([np.ones_like(work), work], axis=1)))
        if blocks_spread:
            forms.append((("one", "blocks", name), np.stack([np.ones_like(work), blocks, work], axis=1)))
    with_work = bool(scales)
    best, best_error = None, math.inf
    for columns, rows in forms:
        coef = _solve(rows, measured)
        if not _valid(coef, columns):
            continue
        error = _loo_error(rows, measured) if with_work else 0.0
        if columns[-1] in scales and best is not None and best[0][-1] not in scales:
            if error >= MACS_GAIN * best_error:
                continue
        elif best is not None and error >= best_error:
            continue
        best, best_error = (columns, coef), error
    if best is None:
        return fallback
    values = dict(zip(*best))
    per = {name: values[name] / scales[name] if name in values else 0.0 for name in ("macs", "sqrt_macs")}
    return LatencyFit(float(values["one"]), float(values.get("blocks", 0.0)), float(per["macs"]),
                      float(per["sqrt_macs"]))


class LatencyTable:
    """Per-block latency (ms) of models at candidate channel widths in one runtime, cached in JSON.

    Args:
        runtime: 'tflite' (TFLite interpreter, XNNPACK) or 'tf' (traced tf.function).
        threads: TFLite interpreter threads; for 'tf', TensorFlow's process-wide intra-op threads
            (set if TensorFlow has not started yet; the key records the real value).
        batch_size: the batch every measurement uses.
        round_to: candidate widths are multiples of this (plus the full width).
        cache: JSON file to read and update (atomically); None keeps measurements in memory.
        clock: returns seconds; default `DEFAULT_CLOCK` (`time.perf_counter`; tests pass a fake one).
        repeats: timed calls per measurement.
        warmup: untimed calls before them.
        stat: the statistic of the timed calls, 'median' or 'min'.
        max_widths: at most this many candidate widths per axis (evenly spaced, interpolated in between).
        fold_bn: fold BatchNormalization before timing (as deployment does), in blocks and models alike.
        instances: separate interpreters (or traced functions) per model in whole-model comparisons
            (`compare`, `calibrate`, measured budgets); their median is the measurement.
        min_seconds: whole-model timings (comparisons and the original's end-to-end time) go on past
            `repeats` rounds until the timed calls add up to this many seconds (at most 50 x `repeats`
            rounds). On a busy host TensorFlow at batch 1 drifts by several percent within a minute; about
            10 s per comparison keeps a ResNet-56 fraction within ~3%. 0 times exactly `repeats` rounds.
        verbose: show a progress bar while measuring.

    Example:
        >>> table = LatencyTable("tflite", threads=1, cache="latency.json")
        >>> pruned, report = prune_filters(model, target_latency=0.5, latency_table=table, round_to=8)
        >>> report.budget                          # predicted and budgeted latency in ms
    """

    def __init__(self, runtime: str = "tflite", threads: int = 1, batch_size: int = 1, round_to: int | None = 8,
                 cache: str | os.PathLike | None = None, clock: Callable[[], float] | None = None,
                 repeats: int = 20, warmup: int = 3, stat: str = "median", max_widths: int | None = None,
                 fold_bn: bool = True, instances: int = 5, min_seconds: float = 0.0, verbose: int = 0) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, received {runtime!r}. Fix: runtime='tflite'.")
        for name, value in (("threads", threads), ("batch_size", batch_size), ("repeats", repeats),
                            ("instances", instances)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, received {value!r}.")
        if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
            raise ValueError(f"round_to must be a positive int or None, received {round_to!r}. Fix: e.g. 8.")
        if stat not in timing.STATISTICS:
            raise ValueError(f"stat must be one of {sorted(timing.STATISTICS)}, received {stat!r}.")
        self.runtime, self.batch_size, self.round_to = runtime, batch_size, round_to
        self.threads = self._tf_threads(threads) if runtime == "tf" else threads
        self.cache = os.fspath(cache) if cache is not None else None
        self.clock, self.repeats, self.warmup, self.stat = clock or DEFAULT_CLOCK, repeats, warmup, stat
        self.max_widths, self.fold_bn, self.instances, self.verbose = max_widths, fold_bn, instances, verbose
        self.min_seconds = timing.check_min_seconds(min_seconds)
        # "empty_subtracted": tables timed before each block was paired with the empty model are not reused
        self.key = {"cpu": cpu_model(), "runtime": runtime, "version": runtime_version(runtime),
                    "threads": self.threads, "batch_size": batch_size, "fold_bn": fold_bn,
                    "empty_subtracted": "paired"}
        self.points: dict[str, dict[str, float]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.empty_ms: float | None = None  # an empty model's call, as last timed beside a block
        self._empty_run: Callable[[], Any] | None = None
        self.measured = 0  # tiny models timed by this object (not read from the cache)
        self._grids: dict[str, tuple] = {}
        self._fits: dict[str, tuple] = {}
        self._originals: dict[int, tuple] = {}
        self._load()

    # ----- cache -----
    @staticmethod
    def _tf_threads(threads: int) -> int:
        import tensorflow as tf

        current = tf.config.threading.get_intra_op_parallelism_threads()
        if current != threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                current = threads
            except RuntimeError:  # TensorFlow already started: its thread count is fixed
                pass
        return current or os.cpu_count() or 1

    @property
    def key_string(self) -> str:
        return json.dumps(self.key, sort_keys=True)

    def _read(self) -> dict:
        if not self.cache or not os.path.exists(self.cache):
            return {"format": FORMAT, "tables": {}}
        try:
            with open(self.cache) as f:
                content = json.load(f)
            if content.get("format") != FORMAT or not isinstance(content.get("tables"), dict):
                raise ValueError(f"format {content.get('format')!r}, expected {FORMAT!r}")
            for table in content["tables"].values():
                if not isinstance(table.get("points"), dict) or not isinstance(table.get("models"), dict):
                    raise ValueError("a table without 'points' and 'models'")
            return content
        except (ValueError, AttributeError, TypeError) as err:
            raise LatencyTableError(
                f"latency cache {self.cache!r} is not a valid latency table ({err}). "
                "Fix: delete the file (it is re-measured) or pass another cache path."
            ) from None

    def _load(self) -> None:
        table = self._read()["tables"].get(self.key_string)
        if table:
            self.points = {sig: dict(points) for sig, points in table["points"].items()}
            self.models = dict(table["models"])
            self.empty_ms = table.get("empty_ms")

    def save(self) -> None:
        """Write the measurements to the cache file (atomically; other keys in the file are kept)."""
        if not self.cache:
            return
        content = self._read()
        content["tables"][self.key_string] = {"key": self.key, "points": self.points, "models": self.models,
                                              "empty_ms": self.empty_ms}
        directory = os.path.dirname(os.path.abspath(self.cache))
        handle, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(content, out, indent=1, sort_keys=True)
            os.replace(tmp, self.cache)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    # ----- timing -----
    def _deploy(self, model: keras.Model) -> keras.Model:
        if self.fold_bn and any(type(layer).__name__ == "BatchNormalization" for layer in model.layers):
            from tfprune.structured.fold import fold_batchnorm

            return fold_batchnorm(model)
        return model

    def _model_runner(self, model: keras.Model, io: bool = True) -> Callable[[], Any]:
        if len(model.inputs) != 1:
            raise LatencyTableError(f"model {model.name!r} has {len(model.inputs)} inputs; latency tables time "
                                    "single-input models. Fix: time it with tfprune.structured.timing.")
        x = timing.example_batch(model, self.batch_size)
        return timing.make_runner(self.runtime, self._deploy(model), x, self.threads, io=io)

    def time_model(self, model: keras.Model, io: bool = True) -> float:
        """Latency (ms, `stat` of `repeats` calls, or more for `min_seconds`) of a single-input model in
        this table's runtime; with `io=False` without copying the input in and the output out (how blocks
        are timed: inside a model, a layer's input is already in place).

        Example:
            >>> table.time_model(model)      # e.g. 6.8
        """
        return timing.paired_median_ms([self._model_runner(model, io)], self.repeats, self.warmup, self.stat,
                                       self.clock, min_seconds=self.min_seconds)[0]

    def _empty_runner(self) -> Callable[[], Any]:
        """One call of an empty model (a ReLU on 8 values), kept for the table's lifetime: what a call
        costs in the runtime whatever the model does."""
        if self._empty_run is None:
            x = keras.Input((8,))
            empty = keras.Model(x, keras.layers.ReLU()(x), name="empty")
            self._empty_run = timing.make_runner(self.runtime, empty, timing.example_batch(empty, self.batch_size),
                                                 self.threads, io=False)
        return self._empty_run

    @staticmethod
    def _point(block: Block, wi: float, wo: float) -> str:
        return f"{int(wi)},{int(wo)}" if block.producer else f"-,{int(wo)}"

    def _measure_point(self, block: Block, wi: int, wo: int) -> float:
        """A block's time at (wi, wo) minus an empty model's, timed in alternation with it: the call cost
        subtracted is the one of the same moment (a cost measured once, e.g. while the runtime was
        still warming up, would shift every point of the table)."""
        run = self._model_runner(block.tiny_model(wi, wo), io=False)
        empty_ms, block_ms = timing.paired_median_ms([self._empty_runner(), run], self.repeats, self.warmup,
                                                     self.stat, self.clock)
        self.empty_ms = empty_ms
        self.measured += 1
        return max(block_ms - empty_ms, 0.0)

    # ----- blocks of a model -----
    def blocks(self, model: keras.Model) -> tuple[list[Block], list[str]]:
        """The timed blocks of `model` and the layers left to its fixed overhead."""
        calls, _, outputs = flatten_model(model)
        return split_blocks(calls, outputs)

    def _grid(self, block: Block, prunable: Callable[[Any], bool]) -> list[tuple[int, int]]:
        outs = _candidate_widths(block.wo0, self.round_to, self.max_widths) if prunable(block.out_key) else [block.wo0]
        if not block.producer:
            return [(0, w) for w in outs]
        ins = _candidate_widths(block.wi0, self.round_to, self.max_widths) if prunable(block.in_key) else [block.wi0]
        return [(a, b) for a in ins for b in outs]

    def measure(self, model: keras.Model, graph: Any = None) -> "LatencyTable":
        """Time every block of `model` at every candidate width its dependency graph allows, and the
        model's fixed overhead; measurements already in the table are reused. Returns self.

        Example:
            >>> LatencyTable("tf", cache="tf.json").measure(model)
        """
        from tfprune.structured.graph import DependencyGraph

        graph = graph or DependencyGraph(model)
        blocks, _ = self.blocks(graph.model)

        def prunable(key):
            labels = graph.values.get(key)
            return labels is not None and bool((~graph.frozen_root[graph.root_of[labels]]).any())

        todo = []
        for block in blocks:
            sig = block.signature()
            known = self.points.get(sig, {})
            todo += [(block, sig, wi, wo) for wi, wo in self._grid(block, prunable)
                     if self._point(block, wi, wo) not in known]
        self._run(todo)
        self._overhead(model)
        return self

    def _run(self, todo: list) -> None:
        unique: dict[tuple[str, str], tuple] = {}
        for block, sig, wi, wo in todo:  # blocks of the same signature share their measurements
            unique.setdefault((sig, self._point(block, wi, wo)), (block, sig, wi, wo))
        todo = list(unique.values())
        if not todo:
            return
        bar = keras.utils.Progbar(len(todo), verbose=1) if self.verbose else None
        try:
            for n, (block, sig, wi, wo) in enumerate(todo):
                try:
                    ms = self._measure_point(block, wi, wo)
                except LatencyTableError:
                    ms = None  # not timed alone: counted in the model's fixed overhead
                self.points.setdefault(sig, {})[self._point(block, wi, wo)] = ms
                if bar:
                    bar.update(n + 1)
        finally:
            self.save()

    def _overhead(self, model: keras.Model) -> dict:
        key = structure_key(model)
        if key not in self.models:
            measured = self.time_model(model)
            blocks, _ = self.blocks(model)
            self._ensure_exact(blocks)
            parts = sum(self._lookup(b, b.wi0, b.wo0, extrapolate=False) or 0.0 for b in blocks)
            self.models[key] = {"measured_ms": measured, "blocks_ms": parts, "overhead_ms": measured - parts,
                                "macs": float(analysis.count_macs(model)), "sqrt_macs": sqrt_macs(model)}
            self.save()
        entry = self.models[key]
        if "sqrt_macs" not in entry:  # cached by an earlier version
            entry["sqrt_macs"] = sqrt_macs(model)
        return entry

    def _ensure_exact(self, blocks: list[Block]) -> None:
        todo = []
        for block in blocks:
            sig = block.signature()
            if self._lookup(block, block.wi0, block.wo0, sig=sig, extrapolate=False) is None:
                todo.append((block, sig, block.wi0, block.wo0))
        self._run(todo)

    # ----- lookup and prediction -----
    def _lookup(self, block: Block, wi: float, wo: float, exact_only: bool = False, sig: str | None = None,
                extrapolate: bool = True) -> float | None:
        """ms of `block` at (wi, wo): the measurement, else interpolated (linear along the output width in
        each measured input width, then across input widths); None if nothing is measured. A block that
        cannot be timed alone counts 0 (its time is in the model's fixed part). With `extrapolate=False`,
        None outside the measured widths."""
        sig = sig or block.signature()
        points = self.points.get(sig)
        if not points:
            return None
        exact = points.get(self._point(block, wi, wo), "missing")
        if exact != "missing":
            return exact or 0.0
        if exact_only:
            return None
        rows = self._parsed(sig, points)
        if not rows:
            return None
        wi = wi if block.producer else 0
        values = []
        for a, (outs, ms) in rows.items():
            inside = outs[0] <= wo <= outs[-1]
            if (len(outs) >= 2 or outs[0] == wo) and (inside or extrapolate):
                values.append((a, float(np.interp(wo, outs, ms)) if outs[0] <= wo <= outs[-1]
                               else _extrapolate(outs, ms, wo)))
        if not values:
            return None
        ins = [a for a, _ in values]
        vals = [v for _, v in values]
        if not extrapolate and not ins[0] <= wi <= ins[-1]:
            return None
        value = float(np.interp(wi, ins, vals)) if ins[0] <= wi <= ins[-1] else _extrapolate(ins, vals, wi)
        return max(value, 0.0)

    def _parsed(self, sig: str, points: dict) -> dict | None:
        cached = self._grids.get(sig)
        if cached is not None and cached[0] == len(points):
            return cached[1]
        by_row: dict[int, list[tuple[int, float]]] = {}
        for text, ms in points.items():
            if ms is None:
                continue
            a, b = text.split(",")
            by_row.setdefault(0 if a == "-" else int(a), []).append((int(b), ms))
        rows = {}
        for a in sorted(by_row):
            pairs = sorted(by_row[a])
            rows[a] = ([p[0] for p in pairs], [p[1] for p in pairs])
        self._grids[sig] = (len(points), rows)
        return rows

    def blocks_ms(self, model: keras.Model) -> float:
        """The sum of `model`'s blocks at their widths (ms, uncalibrated); missing blocks are measured."""
        blocks, _ = self.blocks(model)
        self._ensure_exact(blocks)
        return sum(self._lookup(b, b.wi0, b.wo0, extrapolate=False) or 0.0 for b in blocks)

    def fit(self, model: keras.Model) -> LatencyFit:
        """`LatencyFit(intercept ms, scale, ms_per_mac, ms_per_sqrt_mac)` of `model`'s architecture:
        latency = intercept + scale * blocks_ms + ms_per_mac * MACs + ms_per_sqrt_mac * sqrt_macs.

        Without whole-model measurements of pruned versions (`calibrate`) the scale is 1, the MACs
        terms 0 and the intercept the fixed part measured on the original. The fit passes through the
        original's measured latency and minimises relative errors over every measured pruned version
        (see `choose_fit`): the blocks alone, or with the MACs or their per-layer square roots where
        that predicts the measured plans clearly better (leave-one-out); a fit that would make
        latency fall faster than the blocks' sum, or not at all, is refused (scale kept in
        [0.05, 20]), falling back to scale 1.

        Example:
            >>> intercept, scale, ms_per_mac, ms_per_sqrt_mac = table.fit(model)
        """
        entry = self._overhead(model)
        return self._fit_entry(structure_key(model), entry)

    def _fit_entry(self, key: str, entry: dict) -> LatencyFit:
        points = [{"blocks_ms": entry["blocks_ms"], "ms": entry["measured_ms"], "macs": entry.get("macs"),
                   "sqrt_macs": entry.get("sqrt_macs")}] + [
            {"blocks_ms": p["blocks_ms"], "ms": p["fraction"] * entry["measured_ms"], "macs": p.get("macs"),
             "sqrt_macs": p.get("sqrt_macs")}
            for p in entry.get("calibration", [])]
        cached = self._fits.get(key)
        if cached is not None and cached[0] == len(points):
            return cached[1]
        fitted = choose_fit(points, entry["overhead_ms"])
        self._fits[key] = (len(points), fitted)
        return fitted

    def predict(self, model: keras.Model) -> float:
        """Predicted latency (ms) of `model`: its blocks at their widths (and its MACs), through its
        architecture's fit (`intercept + scale * blocks + ms_per_mac * MACs + ms_per_sqrt_mac *
        sqrt_macs`; see `fit`). Blocks or architectures not in the table yet are measured first.

        Example:
            >>> table.predict(pruned)
        """
        intercept, scale, per_mac, per_sqrt = self.fit(model)
        macs = float(analysis.count_macs(model)) if per_mac else 0.0
        roots = sqrt_macs(model) if per_sqrt else 0.0
        return intercept + scale * self.blocks_ms(model) + per_mac * macs + per_sqrt * roots

    def cost_model(self, graph: Any) -> CostModel:
        """A CostModel (ms) over the graph's tensors, for the budgeted planner; measures what is missing.

        Example:
            >>> cost = table.cost_model(DependencyGraph(model))
        """
        self.measure(graph.model, graph)
        _, scale, per_mac, per_sqrt = self.fit(graph.model)
        terms = []
        for block in self.blocks(graph.model)[0]:
            sig = block.signature()

            def fn(wi, wo, block=block, sig=sig):
                return scale * (self._lookup(block, wi, wo, sig=sig) or 0.0)

            terms.append(Term(block.in_key, block.out_key, fn, block.name,
                              tuple(call.layer.name for call in block.calls)))
        if per_mac or per_sqrt:
            for term in macs_cost(graph).terms:  # the fit's MACs terms, per layer call
                def work_ms(wi, wo, macs_of=term.fn):
                    macs = macs_of(wi, wo)
                    return per_mac * macs + per_sqrt * math.sqrt(max(macs, 0.0))

                terms.append(dataclasses.replace(term, fn=work_ms))
        return CostModel("latency", graph, terms, self.predict(graph.model), "ms")

    # ----- whole models, measured -----
    def _runners(self, model: keras.Model, x: np.ndarray) -> list:
        return timing.make_runners(self.runtime, self._deploy(model), x, self.threads, count=self.instances)

    def compare(self, original: keras.Model, models: Sequence[keras.Model], record: bool = True) -> list[float]:
        """Measured latency of each model as a fraction of `original`'s: `instances` interpreters (or
        traced functions) of each, calls alternating between the original's and the model's, the
        median over instances of each instance's `stat`. Every comparison takes fresh instances of the
        original too (its conversion is reused), so that repeated comparisons are independent. With
        `record=True` each model of the same architecture becomes a calibration point of the fit
        (see `fit`).

        Example:
            >>> table.compare(model, [pruned])     # e.g. [0.48]
        """
        x = timing.example_batch(original, self.batch_size)
        cached = self._originals.get(id(original))
        if cached is None or cached[0] is not original:
            cached = (original, timing.prepare(self.runtime, self._deploy(original)))
            self._originals = {id(original): cached}
        key = structure_key(original)
        fractions = []
        for model in models:
            base_runs = timing.make_runners(self.runtime, cached[1], x, self.threads, count=self.instances)
            runs = self._runners(model, x)
            ms = timing.paired_median_ms(base_runs + runs, self.repeats, self.warmup, self.stat, self.clock,
                                         min_seconds=self.min_seconds)
            base = float(np.median(ms[: len(base_runs)]))
            fraction = float(np.median(ms[len(base_runs):])) / base if base > 0 else float("nan")
            fractions.append(fraction)
            if record and structure_key(model) == key and math.isfinite(fraction):
                entry = self._overhead(original)
                entry.setdefault("calibration", []).append(
                    {"blocks_ms": self.blocks_ms(model), "fraction": fraction,
                     "macs": float(analysis.count_macs(model)), "sqrt_macs": sqrt_macs(model)})
        if record:
            self.save()
        return fractions

    def calibrate(self, model: keras.Model, samples: int = 8, seed: int = 0, max_pruning_ratio: float = 0.9,
                  ignored_layers: Any = None) -> dict:
        """Time pruned versions of `model` (uniform and random per-group widths, multiples of
        `round_to`) against it with `compare` until the architecture has `samples` calibration points
        (points in the cache and plans measured by `prune_filters` count; none are timed if it has
        them already) and refit the architecture's `fit`; returns {'intercept', 'scale',
        'ms_per_mac', 'ms_per_sqrt_mac', 'points', 'errors'}: 'errors' are the previous fit's relative
        errors on the new points. Deterministic plans for a seed.

        Example:
            >>> table.calibrate(model, samples=8)["scale"]
        """
        from tfprune.structured.latency_calibration import calibrate

        return calibrate(self, model, samples=samples, seed=seed, max_pruning_ratio=max_pruning_ratio,
                         ignored_layers=ignored_layers)

    def __repr__(self) -> str:
        return (f"LatencyTable(runtime={self.runtime!r}, threads={self.threads}, batch_size={self.batch_size}, "
                f"{sum(len(p) for p in self.points.values())} measurements, cache={self.cache!r})")
