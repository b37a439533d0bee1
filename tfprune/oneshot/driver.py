"""Layer-by-layer one-shot pruning of a Sequential/functional Keras model from calibration data.

The model is cloned; the clone's supported layers are pruned in call order. Before a layer (or a group of
layers whose inputs do not depend on each other, such as an attention layer's query/key/value projections)
is pruned, the calibration batches run through the clone, whose earlier layers are already pruned, and
the layer's inputs are reduced to the statistics its method needs (column norms for Wanda, `X^T X` for
SparseGPT); the forward pass stops at the last layer of the group. Activations are never stored.

    >>> pruned, report = prune_with_report(model, x_calib, method="wanda", sparsity=0.5, verbose=False)
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any, Iterator, Sequence

import keras
import numpy as np

from tfprune.oneshot.calibration import CalibrationSource, check_batch, recording_inputs
from tfprune.oneshot.layers import LinearView, UnsupportedOneShotLayer, attention_projections, linear_view
from tfprune.oneshot.magnitude import magnitude_prune
from tfprune.oneshot.selection import check_m_by_n, check_sparsity
from tfprune.oneshot.sparsegpt import HessianAccumulator, check_sparsegpt_options, reconstruction_error, sparsegpt_prune
from tfprune.oneshot.wanda import InputNormAccumulator, wanda_prune

METHODS = ("magnitude", "wanda", "sparsegpt")
"""The one-shot pruning methods `prune(model, data, method=...)` accepts.

Example:
    >>> pruned = {m: tfprune.oneshot.prune(model, x_calib, method=m, verbose=False) for m in METHODS}
"""
_LINEAR_TYPES = (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv1D, keras.layers.Conv2D)


@dataclasses.dataclass
class LayerReport:
    """What one-shot pruning did to one layer.

    `path` names the layer inside the model (`block/mha/query`); `capture_seconds` is this layer's share of
    the calibration passes, `prune_seconds` the method's own time; `relative_error` (SparseGPT only) is
    `||X (W - W')||^2 / ||X W||^2` on the calibration inputs.

    Example:
        >>> pruned, reports = prune_with_report(model, x_calib, method="sparsegpt", sparsity=0.5)
        >>> [(r.path, r.zeros, r.relative_error) for r in reports]
    """

    path: str
    kind: str
    inputs: int
    outputs: int
    zeros: int
    capture_seconds: float
    prune_seconds: float
    relative_error: float | None = None


@dataclasses.dataclass
class _Target:
    path: str
    view: LinearView
    stage: int


def _is_graph_model(model: Any) -> bool:
    return isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False) or (
        type(model).__name__ == "Functional"
    )


def _walk(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """(path, layer) of every layer, entering nested Sequential/functional models."""
    for layer in model.layers:
        path = prefix + layer.name
        if isinstance(layer, keras.Model):
            if not _is_graph_model(layer):
                raise TypeError(f"Nested model '{path}' is subclassed; one-shot pruning clones models layer by layer "
                                "and supports Sequential and functional models only. Fix: rebuild it functionally.")
            yield from _walk(layer, path + "/")
        else:
            yield path, layer


def _candidates(model: keras.Model) -> list[tuple[str, keras.layers.Layer, bool]]:
    """(path, layer, is_attention_part) of every layer one-shot pruning knows, in call order."""
    found = []
    for path, layer in _walk(model):
        if isinstance(layer, keras.layers.MultiHeadAttention):
            found += [(f"{path}/{name}", part, True) for name, part in attention_projections(layer)]
        elif isinstance(layer, _LINEAR_TYPES):
            found.append((path, layer, False))
    return found


def _selected(path: str, leaf: str, names: Sequence[str]) -> bool:
    return any(path == n or path.startswith(n + "/") or leaf == n for n in names)


def _plan(model: keras.Model, layers: Sequence[str] | None, m_by_n: tuple[int, int] | None,
          sequential: bool) -> tuple[list[tuple[str, int]], list[str]]:
    """Validated `(path, stage)` targets and the paths skipped (with the reason) when `layers` is None."""
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise TypeError(f"`layers` must be a list of layer names; received {layers!r}.")
        every = [p for p, _ in _walk(model)]
        known = set(every) | {p.rsplit("/", 1)[-1] for p in every} | {
            p.rsplit("/", i)[0] for p in every for i in range(1, p.count("/") + 1)}
        unknown = [n for n in layers if n not in known and not any(c[0] == n for c in _candidates(model))]
        if unknown:
            raise ValueError(f"`layers` names {unknown}, which model '{model.name}' does not have. "
                             f"Its layers: {every}. Fix: use these names (nested: 'outer/inner').")
        candidates = _candidates(model)
        for path, layer in _walk(model):
            named = path in layers or path.rsplit("/", 1)[-1] in layers
            if named and not any(c[1] is layer or c[0].startswith(path + "/") for c in candidates):
                linear_view(layer)  # raises UnsupportedOneShotLayer naming the layer and the supported types
    targets, skipped, stage, previous_attention = [], [], -1, None
    for path, layer, in_attention in _candidates(model):
        leaf = path.rsplit("/", 1)[-1] if not in_attention else path.rsplit("/", 2)[-2]
        if layers is not None and not _selected(path, leaf, layers):
            continue
        try:
            view = linear_view(layer)
            if m_by_n is not None and view.inputs % m_by_n[1]:
                raise UnsupportedOneShotLayer(
                    f"Layer '{path}' has {view.inputs} inputs per output, not a multiple of N={m_by_n[1]}, so "
                    f"the {m_by_n[0]}:{m_by_n[1]} pattern cannot be applied. Fix: leave it out of `layers`.")
        except UnsupportedOneShotLayer as err:
            if layers is not None:
                raise
            skipped.append(f"{path}: {err}")
            continue
        attention = path.rsplit("/", 1)[0] if in_attention and not path.endswith("/output") else None
        if sequential and not (attention is not None and attention == previous_attention):
            stage += 1
        targets.append((path, max(stage, 0)))
        previous_attention = attention
    if layers is not None and not targets:
        raise ValueError(f"`layers` {list(layers)} selects no prunable layer. Fix: name Dense, EinsumDense, "
                         "MultiHeadAttention or Conv1D/Conv2D layers.")
    return targets, skipped


def _clone(model: keras.Model) -> keras.Model:
    try:
        clone = keras.models.clone_model(model)
    except Exception as err:  # custom layers without a working get_config/from_config
        raise TypeError(
            f"Model '{model.name}' could not be cloned ({type(err).__name__}: {err}). Fix: give its custom layers "
            "`get_config` and register them with keras.saving.register_keras_serializable."
        ) from err
    clone.set_weights(model.get_weights())
    return clone


def _progress(verbose: bool, text: str) -> None:
    if verbose:
        print(f"[oneshot] {text}", file=sys.stdout, flush=True)


def check_options(method: str, sparsity: Any, sparsity_m_by_n: Any, dampening: Any, block_size: Any,
                  dtype: Any) -> tuple[float | None, tuple[int, int] | None, np.dtype]:
    """Validates the options of `prune`; returns (sparsity, m_by_n, dtype).

    Example:
        >>> check_options("wanda", 0.5, None, 0.01, 128, "float32")[0]
        0.5
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}; received {method!r}.")
    if (sparsity is None) == (sparsity_m_by_n is None):
        raise ValueError("Pass exactly one of `sparsity` (e.g. 0.5) and `sparsity_m_by_n` (e.g. (2, 4)).")
    sparsity = None if sparsity is None else check_sparsity(sparsity)
    m_by_n = None if sparsity_m_by_n is None else check_m_by_n(sparsity_m_by_n)
    resolved = check_sparsegpt_options(dampening, block_size, dtype)
    if m_by_n is not None and method == "sparsegpt" and block_size % m_by_n[1]:
        raise ValueError(f"`block_size` ({block_size}) must be a multiple of N={m_by_n[1]} for M-by-N SparseGPT.")
    return sparsity, m_by_n, resolved


def prune_with_report(
    model: keras.Model,
    calibration_data: Any = None,
    method: str = "sparsegpt",
    sparsity: float | None = None,
    sparsity_m_by_n: tuple[int, int] | None = None,
    layers: Sequence[str] | None = None,
    batch_size: int = 32,
    sequential: bool = True,
    dampening: float = 0.01,
    block_size: int = 128,
    dtype: str = "float32",
    verbose: bool = True,
) -> tuple[keras.Model, list[LayerReport]]:
    """`prune`, also returning a `LayerReport` per pruned layer (see `tfprune.oneshot.prune` for the arguments).

    Example:
        >>> pruned, report = prune_with_report(model, x[:128], method="sparsegpt", sparsity=0.5, verbose=False)
        >>> report[0].zeros / (report[0].inputs * report[0].outputs)
        0.5
    """
    sparsity, m_by_n, dtype = check_options(method, sparsity, sparsity_m_by_n, dampening, block_size, dtype)
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a keras.Model; received {type(model).__name__}.")
    if not _is_graph_model(model):
        raise TypeError(f"Model '{model.name}' is a subclassed model; one-shot pruning clones the model (the input "
                        "is never modified) and supports Sequential and functional models only. Fix: build the "
                        "model functionally, or prune the kernels of your own copy with the functions of "
                        "tfprune.oneshot (wanda_prune, sparsegpt_prune).")
    if not model.built or not model.inputs:
        raise ValueError(f"Model '{model.name}' is not built. Fix: give it a `keras.Input` before pruning.")
    plan, skipped = _plan(model, layers, m_by_n, sequential)
    source = None
    if method != "magnitude" or calibration_data is not None:
        source = CalibrationSource(calibration_data, batch_size, num_inputs=len(model.inputs))
        check_batch(model, source.first())
    for line in skipped:
        _progress(verbose, f"skipped {line}")

    clone = _clone(model)
    by_path = {path: layer for path, layer, _ in _candidates(clone)}
    targets = [_Target(path, linear_view(by_path[path]), stage) for path, stage in plan]
    reports: list[LayerReport] = []
    stages = sorted({t.stage for t in targets})
    done = 0
    for stage in stages:
        group = [t for t in targets if t.stage == stage]
        stats, capture_seconds = _capture(clone, group, method, source, verbose)
        for target in group:
            done += 1
            start = time.perf_counter()
            weights = target.view.matrix()
            relative_error = None
            if method == "magnitude":
                pruned = magnitude_prune(weights, sparsity, m_by_n)
            elif method == "wanda":
                pruned = wanda_prune(weights, stats[target.path].norms(), sparsity, m_by_n)
            else:
                hessian = stats[target.path].hessian()
                pruned = sparsegpt_prune(weights, hessian, sparsity, m_by_n, dampening, block_size, dtype)
                relative_error = reconstruction_error(hessian, weights, pruned)
            target.view.assign(pruned)
            seconds = time.perf_counter() - start
            report = LayerReport(target.path, type(target.view.layer).__name__, target.view.inputs,
                                 target.view.outputs, int(np.sum(pruned == 0)), capture_seconds / len(group),
                                 seconds, relative_error)
            reports.append(report)
            error_text = "" if relative_error is None else f", relative error {relative_error:.4f}"
            _progress(verbose, f"{done}/{len(targets)} {target.path} ({report.kind} {report.inputs}x{report.outputs}) "
                               f"{method}: {report.zeros / (report.inputs * report.outputs):.1%} zeros, "
                               f"{report.capture_seconds + seconds:.2f}s{error_text}")
    return clone, reports


class _StopForward(BaseException):
    """Raised by a recorder once every layer of the pass has its input: the rest of the model is not needed."""


def _capture(model: keras.Model, group: list[_Target], method: str, source: CalibrationSource | None,
             verbose: bool) -> tuple[dict, float]:
    """One pass of the calibration data through `model`, reducing each target's inputs to its statistics.

    The first batch runs through the whole model and counts the calls of each target; when each is called
    once per forward pass, later batches stop as soon as the last target has recorded its input.
    """
    if method == "magnitude":
        return {}, 0.0
    start = time.perf_counter()
    accumulator = HessianAccumulator if method == "sparsegpt" else InputNormAccumulator
    stats = {t.path: accumulator(t.view.inputs) for t in group}
    calls = {t.path: 0 for t in group}
    state = {"stop_early": False}

    def recorder(target: _Target):
        def record(x: Any) -> None:
            rows = target.view.rows(x)
            for begin in range(0, rows.shape[0], 16384):
                stats[target.path].update(rows[begin:begin + 16384])
            calls[target.path] += 1
            if state["stop_early"] and all(calls.values()):
                raise _StopForward()
        return record

    batches = 0
    with recording_inputs([(t.view.layer, recorder(t)) for t in group]):
        for batch in source.batches():
            calls.update(dict.fromkeys(calls, 0))
            try:
                model(batch, training=False)
            except _StopForward:
                pass
            if batches == 0:
                state["stop_early"] = all(count == 1 for count in calls.values())
            batches += 1
    seconds = time.perf_counter() - start
    _progress(verbose, f"calibration pass for {', '.join(t.path for t in group)}: {batches} batches, {seconds:.2f}s")
    for t in group:
        if stats[t.path].samples == 0:
            raise ValueError(f"Layer '{t.path}' received no input during the calibration pass. Fix: make sure the "
                             "calibration data runs through it (or leave it out of `layers`).")
    return stats, seconds
