"""Importance criteria: a score per channel unit of a group (higher = keep).

Each criterion scores the channels of individual layers (`layer_scores`); the base class combines
the scores of coupled layers per unit with `group_reduction` ('mean', 'sum' or 'max').
Units no layer scores get NaN (e.g. BN-scale on a group without BatchNormalization); the pruner
leaves such groups alone and says so.

Example:
    >>> imp = get_importance("fpgm", group_reduction="max")
    >>> scores = imp.group_scores(graph, graph.groups[0])
    >>> class Ones(Importance):                        # a custom criterion
    ...     def layer_scores(self, rec: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    ...         return [(rec.slots["out"], np.ones(len(rec.slots["out"])))] if self.is_producer(rec) else []
"""

from __future__ import annotations

import importlib

import math
from typing import Any, Callable

import keras
import numpy as np

REDUCTIONS = ("mean", "sum", "max")


class Importance:
    """Base class: subclasses implement `layer_scores(record)`."""

    name = "custom"

    def __init__(self, group_reduction: str = "mean") -> None:
        if group_reduction not in REDUCTIONS:
            raise ValueError(f"group_reduction must be one of {REDUCTIONS}, received {group_reduction!r}.")
        self.group_reduction = group_reduction

    def prepare(self, model: keras.Model, example_inputs: Any = None) -> None:
        """Hook run once before scoring (e.g. to compute gradients)."""

    @staticmethod
    def is_producer(rec: Any) -> bool:
        return rec.handler.is_producer(rec) and rec.handler.filter_weight(rec.layer) is not None

    def layer_scores(self, rec: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(channel labels, scores)] for one layer record; [] if this layer gives no opinion."""
        raise NotImplementedError

    def group_scores(self, graph: Any, group: Any, cache: dict | None = None) -> np.ndarray:
        """One score per unit of `group` (NaN where no layer gives one). `cache` (a dict shared
        across groups) avoids scoring a layer again for each group it touches."""
        units = group.units
        total = np.zeros(len(units))
        count = np.zeros(len(units))
        best = np.full(len(units), -np.inf)
        for rec in group.members:
            if cache is None:
                layer_scores = self.layer_scores(rec)
            else:
                if id(rec) not in cache:
                    cache[id(rec)] = self.layer_scores(rec)
                layer_scores = cache[id(rec)]
            for labels, scores in layer_scores:
                roots = graph.root_of[labels]
                pos = np.searchsorted(units, roots)
                inside = (pos < len(units)) & (units[np.minimum(pos, len(units) - 1)] == roots)
                pos, scores = pos[inside], np.asarray(scores, dtype=np.float64)[inside]
                np.add.at(total, pos, scores)
                np.add.at(count, pos, 1)
                np.maximum.at(best, pos, scores)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.group_reduction == "mean":
                out = total / count
            elif self.group_reduction == "sum":
                out = np.where(count > 0, total, np.nan)
            else:
                out = np.where(count > 0, best, np.nan)
        return out


class _FilterCriterion(Importance):
    """Scores producers from their (output channels, fan-in) filter matrix."""

    def layer_scores(self, rec: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        if not self.is_producer(rec):
            return []
        return [(labels, self.score_filters(np.asarray(filters, dtype=np.float64)))
                for labels, filters in rec.handler.filter_sets(rec)]

    def score_filters(self, filters: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MagnitudeImportance(_FilterCriterion):
    """Lp norm of each filter (Li et al. 2017, "Pruning Filters for Efficient ConvNets").

    Example:
        >>> MagnitudeImportance(p=2).score_filters(np.array([[3.0, 4.0]]))   # array([5.])
    """

    def __init__(self, p: int = 1, group_reduction: str = "mean") -> None:
        super().__init__(group_reduction)
        self.p = p
        self.name = f"l{p}"

    def score_filters(self, filters: np.ndarray) -> np.ndarray:
        return np.linalg.norm(filters, ord=self.p, axis=1)


class FPGMImportance(_FilterCriterion):
    """Filter Pruning via Geometric Median (He et al. 2019): a filter's summed Euclidean distance to
    the layer's other raw filters. Filters near the geometric median are the most replaceable, so
    they score lowest.

    Example:
        >>> FPGMImportance().score_filters(np.array([[0.0], [1.0], [5.0]]))   # array([6., 5., 9.])
    """

    name = "fpgm"

    def score_filters(self, filters: np.ndarray) -> np.ndarray:
        sq = (filters**2).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * filters @ filters.T, 0.0)
        np.fill_diagonal(d2, 0.0)
        return np.sqrt(d2).sum(1)


def frequent_directions(matrix: np.ndarray, sketch_rows: int) -> np.ndarray:
    """Frequent Directions sketch B (sketch_rows x d) of `matrix` (n x d), with
    ||A^T A - B^T B||_2 <= ||A||_F^2 / sketch_rows (Liberty 2013).

    Example:
        >>> b = frequent_directions(np.random.randn(64, 9), 8)
    """
    n, d = matrix.shape
    ell = max(1, min(sketch_rows, d))
    buffer = np.zeros((2 * ell, d))
    filled = 0
    for row in matrix:
        if filled == 2 * ell:
            _, s, vt = np.linalg.svd(buffer, full_matrices=False)
            delta = s[ell - 1] ** 2 if len(s) >= ell else 0.0
            s = np.sqrt(np.maximum(s**2 - delta, 0.0))
            buffer = np.zeros((2 * ell, d))
            buffer[: len(s)] = s[:, None] * vt
            filled = int((s > 0).sum())
        buffer[filled] = row
        filled += 1
    _, s, vt = np.linalg.svd(buffer[:filled], full_matrices=False)
    return (s[:, None] * vt)[:ell]


class FilterSketchImportance(_FilterCriterion):
    """FilterSketch (Lin et al. 2020) as a selection rule: sketch the filter matrix with Frequent
    Directions (the sketch preserves the weight covariance W^T W), then score each filter by its
    energy under the sketched covariance, ||B w_i||^2. Keeping the highest-scoring filters keeps the
    directions that carry the layer's covariance.

    Example:
        >>> FilterSketchImportance(sketch_ratio=0.5).score_filters(np.eye(4) * [1, 2, 3, 4])
    """

    name = "filter_sketch"

    def __init__(self, sketch_ratio: float = 0.5, group_reduction: str = "mean") -> None:
        super().__init__(group_reduction)
        if not 0 < sketch_ratio <= 1:
            raise ValueError(f"sketch_ratio must be in (0, 1], received {sketch_ratio}.")
        self.sketch_ratio = sketch_ratio

    def score_filters(self, filters: np.ndarray) -> np.ndarray:
        rows = max(1, math.ceil(self.sketch_ratio * filters.shape[0]))
        sketch = frequent_directions(filters, rows)
        return ((filters @ sketch.T) ** 2).sum(1)


class BNScaleImportance(Importance):
    """|gamma| of the BatchNormalization layers in the group (Liu et al. 2017, network slimming)."""

    name = "bn_scale"

    def layer_scores(self, rec: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        layer = rec.layer
        if isinstance(layer, keras.layers.BatchNormalization) and getattr(layer, "gamma", None) is not None:
            return [(rec.slots["in"], np.abs(np.asarray(layer.gamma)))]
        return []


class TaylorImportance(Importance):
    """First-order Taylor (Molchanov et al. 2019): per filter, sum over its weights of
    (w * dL/dw)^2, on a data batch passed as `example_inputs` (x or (x, y)).

    The loss is `loss_fn(y, model(x))` when y is given (default: mean squared error), else the mean
    squared output, a label-free proxy.

    Example:
        >>> imp = TaylorImportance(); imp.prepare(model, (x, y))
    """

    name = "taylor"

    def __init__(self, loss_fn: Any = None, group_reduction: str = "mean") -> None:
        super().__init__(group_reduction)
        self.loss_fn = loss_fn
        self._grads: dict[int, np.ndarray] = {}

    def prepare(self, model: keras.Model, example_inputs: Any = None) -> None:
        import tensorflow as tf

        if example_inputs is None:
            raise ValueError(
                "Taylor importance needs a data batch. Fix: pass example_inputs=x or (x, y) to prune_filters."
            )
        x, y = (example_inputs if isinstance(example_inputs, tuple) and len(example_inputs) == 2
                else (example_inputs, None))
        variables = model.trainable_weights
        with tf.GradientTape() as tape:
            out = model(x, training=False)
            if y is None:
                loss = tf.reduce_mean(tf.square(out))
            elif self.loss_fn is not None:
                loss = tf.reduce_mean(self.loss_fn(y, out))
            else:
                loss = tf.reduce_mean(tf.square(tf.cast(y, out.dtype) - out))
        grads = tape.gradient(loss, variables)
        # an Embedding's gradient is sparse (IndexedSlices): densify it
        self._grads = {id(v): np.asarray(tf.convert_to_tensor(g)) for v, g in zip(variables, grads) if g is not None}

    def layer_scores(self, rec: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        if not self.is_producer(rec):
            return []
        if not self._grads:
            raise RuntimeError("TaylorImportance.prepare(model, example_inputs) must run first.")

        def contribution(variable: Any) -> np.ndarray | None:
            grad = self._grads.get(id(variable))
            return None if grad is None else (np.asarray(variable, dtype=np.float64) * grad) ** 2

        sets = rec.handler.filter_sets(rec, transform=contribution, include_bias=True)
        return [(labels, rows.sum(1)) for labels, rows in sets]


class ActivationImportance(Importance):
    """Mean absolute activation of each channel on calibration data passed as `example_inputs`
    (x or (x, y), as for Taylor); for attention heads, the mean L1 norm of each head's
    context vector (what the head adds before the output projection). What each layer measures is
    its handler's `activation_probes` / `activation_scores`.

    Example:
        >>> imp = ActivationImportance(); imp.prepare(model, x_calibration)
        >>> prune_filters(model, 0.5, importance="activation", example_inputs=x_calibration)
    """

    name = "activation"

    def __init__(self, group_reduction: str = "mean") -> None:
        super().__init__(group_reduction)
        self._stats: dict[int, dict[str, np.ndarray]] | None = None

    def prepare(self, model: keras.Model, example_inputs: Any = None) -> None:
        if example_inputs is None:
            raise ValueError(
                "Activation importance needs calibration data. Fix: pass example_inputs=x (or (x, y)) "
                "to prune_filters."
            )
        self._model = model
        self._inputs = example_inputs
        self._stats = None

    def _ensure_stats(self, graph: Any) -> None:
        from tfprune.structured.activations import record_activations

        if self._stats is not None:
            return
        if getattr(self, "_model", None) is None:
            raise RuntimeError("ActivationImportance.prepare(model, example_inputs) must run first.")
        probes = {}
        for rec in graph.records.values():
            if rec.handler.is_producer(rec):
                found = rec.handler.activation_probes(rec)
                if found:
                    probes[id(rec)] = found
        self._stats = record_activations(self._model, self._inputs, probes)

    def group_scores(self, graph: Any, group: Any, cache: dict | None = None) -> np.ndarray:
        self._ensure_stats(graph)
        return super().group_scores(graph, group, cache)

    def layer_scores(self, rec: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        stats = (self._stats or {}).get(id(rec))
        if not stats:
            return []
        return rec.handler.activation_scores(rec, stats)


class RandomImportance(Importance):
    """Uniform random scores (a baseline)."""

    name = "random"

    def __init__(self, seed: int | None = 0, group_reduction: str = "mean") -> None:
        super().__init__(group_reduction)
        self.rng = np.random.default_rng(seed)

    def layer_scores(self, rec: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        if not self.is_producer(rec):
            return []
        labels = rec.slots["out"]
        return [(labels, self.rng.random(len(labels)))]


IMPORTANCES: dict[str, Callable[..., Importance]] = {}
NEEDS_DATA: set[str] = set()


def register_importance(name: str, factory: Callable[..., Importance], needs_data: bool = False) -> None:
    """Makes `factory(**kwargs) -> Importance` available as `importance=name` (and on the command line,
    unless it `needs_data`: a criterion that must see a batch, like Taylor, is for the Python API).

    Example:
        >>> register_importance("l1_max", lambda **kw: MagnitudeImportance(p=1, group_reduction="max", **kw))
        >>> prune_filters(model, 0.5, importance="l1_max")
    """
    key = str(name).lower().replace("-", "_")
    if not key.isidentifier():
        raise ValueError(f"An importance name must be an identifier such as 'my_l1', received {name!r}.")
    if not callable(factory):
        raise TypeError(f"`factory` must be callable (an Importance class or a function), received {factory!r}.")
    IMPORTANCES[key] = factory
    NEEDS_DATA.discard(key)
    if needs_data:
        NEEDS_DATA.add(key)


register_importance("l1", lambda **kw: MagnitudeImportance(p=1, **kw))
register_importance("l2", lambda **kw: MagnitudeImportance(p=2, **kw))
register_importance("fpgm", FPGMImportance)
register_importance("filter_sketch", FilterSketchImportance)
register_importance("bn_scale", BNScaleImportance)
register_importance("taylor", TaylorImportance, needs_data=True)
register_importance("activation", ActivationImportance, needs_data=True)
register_importance("random", RandomImportance)


def load_importance(spec: str) -> Importance:
    """An Importance from `"module:Class"` (or `"module:function"`), called without arguments.

    Example:
        >>> load_importance("my_criteria:ChannelVariance")
    """
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ValueError(f"Expected 'module:Class', received {spec!r}. Fix: e.g. --importance my_criteria:MyImportance")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import module {module_name!r} ({err}). Fix: put it on PYTHONPATH.") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f"module {module_name!r} has no {attr!r}. Fix: check the name after the colon.")
    importance = factory() if callable(factory) and not isinstance(factory, Importance) else factory
    if not isinstance(importance, Importance):
        raise ValueError(
            f"{spec!r} gave a {type(importance).__name__}, not a tfprune.structured.Importance. "
            "Fix: subclass tfprune.structured.Importance."
        )
    return importance


def get_importance(importance: "str | Importance", **kwargs: Any) -> Importance:
    """An Importance from a registered name, `"module:Class"`, or an instance (returned as is).

    Example:
        >>> get_importance("l2", group_reduction="max")
        >>> get_importance("random", seed=3)
    """
    if isinstance(importance, Importance):
        return importance
    if ":" in str(importance):
        return load_importance(importance)
    key = str(importance).lower().replace("-", "_")
    if key not in IMPORTANCES:
        raise ValueError(
            f"Unknown importance {importance!r}. Expected one of {sorted(IMPORTANCES)}, 'module:Class', or an "
            "Importance instance (add your own with tfprune.structured.register_importance)."
        )
    return IMPORTANCES[key](**kwargs)
