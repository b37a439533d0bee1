"""Sensitivity analysis: prune one group at a time at each ratio and measure the model.

The curve of a group shows how much the metric drops when only that group loses channels: flat
curves are safe to prune hard, steep ones are fragile (Li et al. 2017, "Pruning Filters for
Efficient ConvNets"). With `recalibrate_bn=data`, BatchNormalization statistics are re-estimated
on a few batches after each pruning (EagleEye), which removes most of the drop that only comes from
stale statistics.

Example:
    >>> def accuracy(m):
    ...     return float(np.mean(np.argmax(m.predict(x_val, verbose=0), -1) == y_val))
    >>> result = sensitivity(model, accuracy, ratios=(0.25, 0.5, 0.75), recalibrate_bn=x_train[:512])
    >>> print(result)                 # metric per group and ratio
    >>> result.plot()                 # matplotlib, one curve per group
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Sequence

import keras
import numpy as np

from tfprune.structured.graph import DependencyGraph
from tfprune.structured.importance import get_importance
from tfprune.structured.planner import GroupDecision, apply_counts, score_groups
from tfprune.structured.plans import group_key
from tfprune.structured.pruner import rebuild
from tfprune.structured.recalibrate import recalibrate_batchnorm

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass
class SensitivityResult:
    """Metric per group and ratio. `str()` prints the table, `to_dict()` is JSON-ready, `plot()` draws it.

    Example:
        >>> result = sensitivity(model, accuracy, ratios=(0.25, 0.5))
        >>> print(result)                                 # one row per group, one column per ratio
        >>> result.most_sensitive()[:2]            # the two groups that lose most
    """

    ratios: list[float]
    baseline: float
    groups: list[str]
    channels: dict[str, int]
    metrics: dict[str, list[float]]
    achieved: dict[str, list[float]]

    def drop(self, group: str) -> list[float]:
        """baseline - metric at each ratio for one group (positive: the metric fell)."""
        return [self.baseline - v for v in self.metrics[group]]

    def most_sensitive(self) -> list[str]:
        """Groups from the largest to the smallest mean drop."""
        return sorted(self.groups, key=lambda g: -float(np.mean(self.drop(g))))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        header = ["group (channels)"] + [f"{r:.2f}" for r in self.ratios]
        rows = [header, [f"baseline {self.baseline:.4f}"] + [""] * len(self.ratios)]
        for g in self.groups:
            rows.append([f"{g} ({self.channels[g]})"] + [f"{v:.4f}" for v in self.metrics[g]])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["Sensitivity: metric after pruning one group at each ratio"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """One curve per group (metric against ratio), the baseline dashed; returns the axes."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("SensitivityResult.plot needs matplotlib. Fix: pip install matplotlib "
                              "(or print the result / use to_dict()).") from None
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        for g in self.groups:
            ax.plot(self.ratios, self.metrics[g], marker="o", label=g)
        ax.axhline(self.baseline, linestyle="--", color="gray", label="unpruned")
        ax.set_xlabel("pruning ratio of one group")
        ax.set_ylabel("metric")
        ax.legend(fontsize="small")
        return ax


def _select(graph: DependencyGraph, scores: dict, groups: Iterable[Any] | None) -> list[int]:
    if groups is None:
        return sorted(scores)
    by_name = {name: g.index for g in graph.groups for name in g.producers}
    out = []
    for item in groups:
        key = getattr(item, "name", item)
        index = key if isinstance(key, int) else by_name.get(key)
        if index is None or index not in scores:
            raise ValueError(f"sensitivity groups: {item!r} is not a prunable group or one of its producer layers; "
                             f"prunable: {[group_key(graph.groups[i]) for i in sorted(scores)]}.")
        out.append(index)
    return list(dict.fromkeys(out))


def sensitivity(model: keras.Model, eval_fn: Callable[[keras.Model], float],
                ratios: Sequence[float] = DEFAULT_RATIOS, groups: Iterable[Any] | None = None,
                recalibrate_bn: Any = None, importance: Any = "l1", round_to: int | None = None,
                max_pruning_ratio: float = 1.0, ignored_layers: Iterable[Any] | None = None,
                calibration_steps: int = 10, batch_size: int = 64, layer_norm: str = "exact",
                verbose: int = 1) -> SensitivityResult:
    """Prune each group alone at each ratio (the others untouched) and evaluate `eval_fn(pruned)`.

    Args:
        model: a built Sequential or functional model.
        eval_fn: model -> float (any metric; the model it receives is not compiled).
        ratios: fractions of the group's channels to remove.
        groups: producer layer names (or group indices) to analyse; default every prunable group.
        recalibrate_bn: data to re-estimate BatchNormalization statistics on after each pruning
            (`calibration_steps` batches of `batch_size`), or None.
        importance: which channels go first ('l1', 'fpgm', ... or an Importance).
        round_to: as in `prune_filters`.
        max_pruning_ratio: as in `prune_filters`.
        ignored_layers: as in `prune_filters`.
        layer_norm: as in `prune_filters`.
        verbose: 1 shows a progress bar.

    Example:
        >>> result = sensitivity(model, accuracy, groups=["conv1", "conv2"])
        >>> result.metrics["conv1"]                       # one value per ratio
    """
    ratios = [float(r) for r in ratios]
    if not ratios or any(not 0 <= r < 1 for r in ratios):
        raise ValueError(f"ratios must be fractions in [0, 1), received {ratios}.")
    graph = DependencyGraph(model, ignored_layers=ignored_layers, layer_norm=layer_norm)
    criterion = get_importance(importance)
    criterion.prepare(model, None)
    scores, _ = score_groups(graph, criterion)
    chosen = _select(graph, scores, groups)
    if not chosen:
        raise ValueError(f"model {model.name!r} has no prunable group to analyse.")
    baseline = float(eval_fn(model))
    names = [group_key(graph.groups[i]) for i in chosen]
    metrics: dict[str, list[float]] = {n: [] for n in names}
    achieved: dict[str, list[float]] = {n: [] for n in names}
    bar = keras.utils.Progbar(len(chosen) * len(ratios), verbose=1, unit_name="model") if verbose else None
    step = 0
    for index, name in zip(chosen, names):
        total = len(graph.groups[index].units)
        for ratio in ratios:
            decisions = [GroupDecision(group=g, requested_ratio=0.0) for g in graph.groups]
            count = int(math.floor(ratio * total + 1e-9))
            removed, decisions = apply_counts(graph, scores, {index: count} if count else {}, decisions,
                                              max_pruning_ratio, round_to)
            pruned = rebuild(model, graph, removed)
            if recalibrate_bn is not None:
                recalibrate_batchnorm(pruned, recalibrate_bn, calibration_steps, batch_size)
            metrics[name].append(float(eval_fn(pruned)))
            achieved[name].append(decisions[index].removed / total)
            step += 1
            if bar:
                bar.update(step)
    return SensitivityResult(ratios=ratios, baseline=baseline, groups=names,
                             channels={n: len(graph.groups[i].units) for i, n in zip(chosen, names)},
                             metrics=metrics, achieved=achieved)
