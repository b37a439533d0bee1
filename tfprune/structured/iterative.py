"""Iterative pruning: reach a target ratio in several prune / fine-tune rounds.

Each round removes a share of the channels with `prune_filters` and hands the smaller model to
your `fine_tune_fn`, which compiles it (with a fresh optimizer) and trains it. Removing channels in
small steps with training between them loses less accuracy than one large cut.

Example:
    >>> def fine_tune(model, step):
    ...     model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    ...     model.fit(x, y, epochs=2, verbose=0)
    ...     return model
    >>> pruned, reports = iterative_prune(model, target_ratio=0.5, steps=3, fine_tune_fn=fine_tune)
"""

from __future__ import annotations

import math
from typing import Any, Callable

import keras

from tfprune.structured.graph import DependencyGraph
from tfprune.structured.pruner import prune_filters
from tfprune.structured.report import PruningReport

FineTuneFn = Callable[[keras.Model, int], "keras.Model | None"]


def _kept_target(original: int, target_ratio: float, step: int, steps: int) -> int:
    """Channels a group keeps after `step` of `steps` rounds: linear in the removed share."""
    return max(1, original - int(math.floor(target_ratio * original * step / steps + 1e-9)))


def iterative_prune(
    model: keras.Model,
    target_ratio: float,
    steps: int,
    fine_tune_fn: FineTuneFn | None,
    importance: str = "l1",
    **prune_kwargs: Any,
) -> tuple[keras.Model, list[PruningReport]]:
    """Prune `model` to `target_ratio` of its channels in `steps` rounds with fine-tuning between.

    Args:
        model: a built Sequential or functional model.
        target_ratio: the share of each group's channels removed in the end (of all prunable
            channels with `global_pruning=True`), as `pruning_ratio` in `prune_filters`.
        steps: number of prune / fine-tune rounds (1 is one-shot pruning followed by fine-tuning).
        fine_tune_fn: `fn(model, step) -> model or None`, called after every round with the new,
            uncompiled model; it must compile the model (a fresh optimizer: the old optimizer's
            slots no longer match the smaller weights) and train it. None skips fine-tuning.
        importance: as in `prune_filters`; re-evaluated on the fine-tuned weights every round.
        **prune_kwargs: further `prune_filters` arguments (round_to, global_pruning,
            max_pruning_ratio, ignored_layers, example_inputs, ...).

    Returns:
        (the final model, one PruningReport per round).

    Per group, round k keeps `original - floor(target_ratio * original * k / steps)` channels, so
    per-group pruning lands exactly on the one-shot channel counts; `round_to` applies every round.

    Example:
        >>> def fine_tune(smaller, step):
        ...     compile_like(smaller, model).fit(x, y, epochs=1)
        ...     return smaller
        >>> pruned, reports = iterative_prune(model, target_ratio=0.5, steps=3, fine_tune_fn=fine_tune)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, received {steps!r}. Fix: e.g. steps=3.")
    if not isinstance(target_ratio, (int, float)) or not 0 <= target_ratio < 1:
        raise ValueError(f"target_ratio must be a number in [0, 1), received {target_ratio!r}. Fix: e.g. 0.5.")
    if fine_tune_fn is not None and not callable(fine_tune_fn):
        raise TypeError(f"fine_tune_fn must be callable (model, step) -> model or None, received {fine_tune_fn!r}.")
    if "pruning_ratio" in prune_kwargs or "pruning_ratio_dict" in prune_kwargs:
        raise ValueError("iterative_prune sets the per-round ratios itself: pass target_ratio, not pruning_ratio(_dict).")
    global_pruning = bool(prune_kwargs.get("global_pruning", False))
    graph_kwargs = {"ignored_layers": prune_kwargs.get("ignored_layers"),
                    "layer_norm": prune_kwargs.get("layer_norm", "exact")}
    original = {tuple(g.producers): len(g.units) for g in DependencyGraph(model, **graph_kwargs).groups}
    reports: list[PruningReport] = []
    current = model
    for step in range(1, steps + 1):
        if global_pruning:
            kept_before = 1 - target_ratio * (step - 1) / steps
            kept_after = 1 - target_ratio * step / steps
            current, report = prune_filters(current, pruning_ratio=1 - kept_after / kept_before,
                                            importance=importance, **prune_kwargs)
        else:
            ratios = {}
            for group in DependencyGraph(current, **graph_kwargs).groups:
                first = original.get(tuple(group.producers), len(group.units))
                kept = _kept_target(first, target_ratio, step, steps)
                ratios[group.producers[0]] = max(0.0, (len(group.units) - kept) / len(group.units))
            current, report = prune_filters(current, pruning_ratio=0.0, importance=importance,
                                            pruning_ratio_dict=ratios, **prune_kwargs)
        reports.append(report)
        if fine_tune_fn is not None:
            tuned = fine_tune_fn(current, step)
            if tuned is not None:
                current = tuned
    return current, reports
