"""Calibrating a `LatencyTable` against whole models: pruned versions of an architecture (uniform and
random per-group widths) timed end to end against the original, so that the table's fit of
`latency = intercept + scale * sum of blocks` matches what the runtime does with whole models.

Example:
    >>> table = LatencyTable("tflite", threads=1, round_to=8, cache="latency.json")
    >>> summary = calibrate(table, model, samples=8)
    >>> summary["scale"], summary["errors"]      # the fit, and the uncalibrated table's errors
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfprune.structured.architecture import structure_key
from tfprune.structured.graph import DependencyGraph
from tfprune.structured.importance import get_importance
from tfprune.structured.planner import GroupDecision, apply_counts, kept_options, score_groups


MAX_DRAWS = 10  # rounds of sampling before calibrate settles for fewer distinct plans than asked


def sample_plans(options: list[np.ndarray], samples: int, rng: np.random.Generator) -> list[list[int]]:
    """`samples` choices of an option index per group: even samples alternate between one kept fraction
    for every group (fractions spread over the whole range) and a per-group fraction scattered around
    a random centre, so the fit sees both the widths uniform pruning makes and uneven ones. A fraction
    between two options picks one of them at random, the nearer one more often (the expected width is
    the fraction's).

    Example:
        >>> sample_plans([np.array([8, 16]), np.array([8, 16, 24])], 2, np.random.default_rng(0))
    """
    if samples < 1:
        return []
    fractions = (np.arange(samples) + 0.5) / samples
    rng.shuffle(fractions)
    plans = []
    for i, fraction in enumerate(fractions):
        if i % 2 == 0:
            kept = np.full(len(options), fraction)
        else:
            kept = np.clip(fraction + rng.normal(0.0, 0.25, len(options)), 0.0, 1.0)
        plans.append([_round_to_option(o, f * o[-1], rng) for o, f in zip(options, kept)])
    return plans


def _round_to_option(options: np.ndarray, width: float, rng: np.random.Generator) -> int:
    """Index of the option next below or above `width`, drawn so that the expected width is `width`
    (always rounding down would keep a 16-channel layer at 8 for every fraction under 1 with
    `round_to=8`, and the plans would miss lightly pruned widths)."""
    below = int(np.clip(np.searchsorted(options, width, side="right") - 1, 0, len(options) - 1))
    if below + 1 < len(options) and width > options[below]:
        up = (width - options[below]) / (options[below + 1] - options[below])
        if rng.random() < up:
            return below + 1
    return below


def calibrate(table: Any, model: keras.Model, samples: int = 8, seed: int = 0, max_pruning_ratio: float = 0.9,
              ignored_layers: Any = None) -> dict:
    """Measure pruned versions of `model` against it in `table`'s runtime until its architecture has
    `samples` calibration points (cached points count), and refit the table (see
    `LatencyTable.calibrate`). Returns {'intercept', 'scale', 'ms_per_mac', 'ms_per_sqrt_mac', 'points',
    'errors'}.

    Example:
        >>> calibrate(table, model, samples=8)["points"]     # calibration points of the architecture
    """
    from tfprune.structured.pruner import rebuild

    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, received {samples!r}. Fix: e.g. samples=8.")
    if not 0.0 < max_pruning_ratio < 1.0:
        raise ValueError(f"max_pruning_ratio must be in (0, 1), received {max_pruning_ratio!r}.")
    graph = DependencyGraph(model, ignored_layers=ignored_layers)
    table.measure(model, graph)
    criterion = get_importance("l1")
    criterion.prepare(model, None)
    scores, _ = score_groups(graph, criterion)
    if not scores:
        raise ValueError(f"model {model.name!r} has no prunable group: nothing to calibrate with.")
    ids = sorted(scores)
    options = [kept_options(graph.groups[g], max_pruning_ratio, table.round_to) for g in ids]
    have = len(table.models[structure_key(model)].get("calibration", []))
    plans, seen = [], set()
    need, rng = max(samples - have, 0), np.random.default_rng(seed + have)
    for _ in range(MAX_DRAWS):  # draw again for the original or a plan already drawn (few groups)
        if len(plans) >= need:
            break
        for genes in sample_plans(options, need - len(plans), rng):
            kept = tuple(int(o[j]) for o, j in zip(options, genes))
            if kept in seen or all(k == o[-1] for k, o in zip(kept, options)):
                continue  # the original or a plan already drawn: nothing new to learn
            seen.add(kept)
            counts = {g: len(graph.groups[g].units) - k for g, k in zip(ids, kept)}
            counts = {g: c for g, c in counts.items() if c}
            decisions = [GroupDecision(group=g, requested_ratio=0.0) for g in graph.groups]
            removed, _ = apply_counts(graph, scores, counts, decisions, max_pruning_ratio, table.round_to)
            plans.append(rebuild(model, graph, removed))
    before = [table.predict(p) / table.predict(model) for p in plans]
    bar = keras.utils.Progbar(len(plans), verbose=1) if table.verbose else None
    fractions = []
    for n, pruned in enumerate(plans):
        fractions += table.compare(model, [pruned])
        if bar:
            bar.update(n + 1)
    intercept, scale, per_mac, per_sqrt = table.fit(model)
    points = len(table.models[structure_key(model)].get("calibration", []))
    return {"intercept": intercept, "scale": scale, "ms_per_mac": per_mac, "ms_per_sqrt_mac": per_sqrt,
            "points": points,
            "errors": [b / f - 1 for b, f in zip(before, fractions)]}
