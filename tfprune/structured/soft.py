"""Soft filter pruning (He et al. 2018): zero the weakest filters during training, let them recover.

At the end of every epoch (or every `frequency` steps) the `SoftFilterPruning` callback ranks the
filters of each coupled group with an importance criterion and sets the lowest-ranked ones to zero
(kernel and bias of every producer in the group). The zeroed filters stay trainable: the next steps
may bring them back, and a different set may be zeroed next time. When training ends, `finalize()`
removes the last zeroed set physically and returns the smaller model.

Example:
    >>> sfp = SoftFilterPruning(pruning_ratio=0.3, importance="l2")
    >>> model.fit(x, y, epochs=10, callbacks=[sfp])
    >>> pruned, report = sfp.finalize()
    >>> pruned.compile(...)   # a fresh optimizer; then fine-tune
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import keras
import numpy as np

from tfprune.structured.graph import DependencyGraph
from tfprune.layers import check_layer_norm_mode
from tfprune.structured.importance import Importance, get_importance
from tfprune.structured.planner import plan
from tfprune.structured.pruner import _validate, make_report, rebuild
from tfprune.structured.report import PruningReport


def zero_units(graph: DependencyGraph, removed: np.ndarray) -> int:
    """Set the filters (kernel slice and bias entry) of every producer channel in `removed` to zero.

    Returns how many filters were zeroed. Only producers (Conv, Dense, ...) are touched: normalisation
    and depthwise layers keep their parameters, so zeroed filters can still receive gradients.

    Example:
        >>> graph = DependencyGraph(model)
        >>> removed, _ = plan(graph, get_importance("l1"), 0.5)
        >>> zero_units(graph, removed)                    # filters zeroed in place, shapes unchanged
    """
    zeroed = 0
    for rec in graph.records.values():
        if not rec.handler.is_producer(rec) or "out" not in rec.slots:
            continue
        found = rec.handler.filter_weight(rec.layer)
        if found is None:
            continue
        positions = np.nonzero(removed[graph.root_of[rec.slots["out"]]])[0]
        if not len(positions):
            continue
        kernel, axis = found
        value = np.array(kernel)
        index = [slice(None)] * value.ndim
        index[axis] = positions
        value[tuple(index)] = 0
        kernel.assign(value)
        bias = getattr(rec.layer, "bias", None)
        if bias is not None:
            b = np.array(bias)
            b[positions] = 0
            bias.assign(b)
        zeroed += len(positions)
    return zeroed


class SoftFilterPruning(keras.callbacks.Callback):
    """Zeroes the lowest-ranked `pruning_ratio` of each group's filters during training.

    Args:
        pruning_ratio: fraction of each coupled group's channels zeroed at every pruning event.
        importance: 'l2' (the paper's choice), 'l1', 'fpgm' (soft FPGM), or an `Importance`.
        frequency: 'epoch' (at the end of every epoch) or a positive int (every that many steps,
            and at the end of training).
        ignored_layers: layers (or names) whose output channels are never zeroed.
        max_pruning_ratio: as in `prune_filters`.
        round_to: as in `prune_filters`.
        global_pruning: as in `prune_filters`.
        pruning_ratio_dict: as in `prune_filters`.
        layer_norm: as in `prune_filters`.

    After `fit`, `removed` holds the units zeroed last and `finalize()` returns
    `(pruned_model, report)`: the model without those channels (uncompiled; compile it with a fresh
    optimizer). Zeroed filters are exactly zero after each pruning event; between events they train.

    Example:
        >>> sfp = SoftFilterPruning(pruning_ratio=0.3, importance="l2")
        >>> model.fit(x, y, epochs=10, callbacks=[sfp])
        >>> pruned, report = sfp.finalize()
    """

    def __init__(
        self,
        pruning_ratio: float,
        importance: str | Importance = "l2",
        frequency: str | int = "epoch",
        ignored_layers: Iterable[Any] | None = None,
        max_pruning_ratio: float = 0.9,
        round_to: int | None = None,
        global_pruning: bool = False,
        pruning_ratio_dict: dict[Any, float] | None = None,
        layer_norm: str = "exact",
    ) -> None:
        super().__init__()
        _validate(pruning_ratio, max_pruning_ratio, round_to, pruning_ratio_dict)
        if frequency != "epoch" and (isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1):
            raise ValueError(
                f"frequency must be 'epoch' or a positive number of steps, received {frequency!r}. Fix: e.g. 'epoch' or 100."
            )
        self.pruning_ratio = pruning_ratio
        self.importance = get_importance(importance)
        if getattr(self.importance, "name", "") == "taylor":
            raise ValueError("SoftFilterPruning needs a weight-based importance ('l1', 'l2', 'fpgm', ...), not 'taylor'.")
        self.frequency = frequency
        self.ignored_layers = ignored_layers
        self.max_pruning_ratio = max_pruning_ratio
        self.round_to = round_to
        self.global_pruning = global_pruning
        self.pruning_ratio_dict = pruning_ratio_dict
        self.layer_norm = check_layer_norm_mode(layer_norm)
        self.graph: DependencyGraph | None = None
        self.removed: np.ndarray | None = None
        self.decisions: list = []
        self.events = 0
        self._steps = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.graph is None or self.graph.model is not self.model:
            self.graph = DependencyGraph(self.model, ignored_layers=self.ignored_layers, layer_norm=self.layer_norm)
        self._steps = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1
        if self.frequency != "epoch" and self._steps % self.frequency == 0:
            self.apply()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.frequency == "epoch":
            self.apply()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.frequency != "epoch" and self._steps % self.frequency:
            self.apply()

    def apply(self) -> int:
        """Rank and zero filters now; returns the number of filters zeroed."""
        if self.graph is None:
            self.graph = DependencyGraph(self.model, ignored_layers=self.ignored_layers, layer_norm=self.layer_norm)
        self.removed, self.decisions = plan(
            self.graph, self.importance, self.pruning_ratio, global_pruning=self.global_pruning,
            pruning_ratio_dict=self.pruning_ratio_dict, max_pruning_ratio=self.max_pruning_ratio,
            round_to=self.round_to,
        )
        self.events += 1
        return zero_units(self.graph, self.removed)

    def finalize(self) -> tuple[keras.Model, PruningReport]:
        """Remove the channels zeroed last; returns (smaller uncompiled model, report).

        Call it right after `fit` (the zeroed set is the one of the last pruning event).
        """
        if self.removed is None or self.graph is None:
            raise RuntimeError(
                "SoftFilterPruning.finalize() needs at least one pruning event. "
                "Fix: pass the callback to model.fit(...) first, or call apply()."
            )
        start = time.perf_counter()
        pruned = rebuild(self.graph.model, self.graph, self.removed)
        report = make_report(self.graph.model, pruned, self.graph, self.removed, self.decisions,
                             self.importance, self.global_pruning, time.perf_counter() - start)
        return pruned, report
