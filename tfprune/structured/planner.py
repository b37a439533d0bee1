"""Planner: from group scores and ratios to the set of channel units to remove.

Local pruning removes `ratio` of each group's channels; global pruning ranks the (mean-normalised)
scores of all groups together and removes the lowest `ratio` of all prunable channels. Both respect
`max_pruning_ratio`, keep at least one channel, never touch frozen units, and with `round_to=N`
round each group's kept count up to a multiple of N. A group whose units are split over several
layers (concatenated branches in a coupled sum) is pruned part by part at the group's ratio, so
these rules hold for every layer.

Example:
    >>> removed, decisions = plan(graph, get_importance("l1"), pruning_ratio=0.5)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


@dataclasses.dataclass
class GroupDecision:
    group: object
    requested_ratio: float
    removed: int = 0
    status: str = "skipped"
    reason: str = ""
    removed_units: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def total(self) -> int:
        return len(self.group.units)

    @property
    def achieved_ratio(self) -> float:
        return self.removed / self.total if self.total else 0.0


def _kept_after_rounding(total: int, kept: int, round_to: int | None) -> int:
    if not round_to or kept >= total:
        return kept
    rounded = max(round_to, math.ceil(kept / round_to) * round_to)
    return min(rounded, total)


def _limit(total: int, prunable: int, ratio: float, max_ratio: float) -> int:
    return max(0, min(int(math.floor(ratio * total + 1e-9)), prunable,
                      int(math.floor(max_ratio * total + 1e-9)), total - 1))


def plan(
    graph: Any,
    importance: Any,
    pruning_ratio: float,
    global_pruning: bool = False,
    pruning_ratio_dict: dict | None = None,
    max_pruning_ratio: float = 0.9,
    round_to: int | None = None,
) -> tuple[np.ndarray, list[GroupDecision]]:
    """Return (boolean mask over unit roots: removed, one GroupDecision per group).

    Example:
        >>> graph = DependencyGraph(model)
        >>> removed, decisions = plan(graph, get_importance("l1"), pruning_ratio=0.5)
        >>> int(removed.sum())                            # e.g. 8: half of a 16-channel group
    """
    ratio_dict = {getattr(k, "name", k): float(v) for k, v in (pruning_ratio_dict or {}).items()}
    producers = {name for group in graph.groups for name in group.producers}
    unknown = sorted(set(ratio_dict) - producers)
    if unknown:
        raise ValueError(
            f"pruning_ratio_dict keys {unknown} are not layers that produce channels (Conv, Dense, ...). "
            "Fix: key the dict by the name of a convolution or Dense layer."
        )
    decisions, scores, local, cache = [], {}, {}, {}
    for group in graph.groups:
        named = [ratio_dict[n] for n in group.producers if n in ratio_dict]
        requested = max(named) if named else pruning_ratio
        decision = GroupDecision(group=group, requested_ratio=requested)
        decisions.append(decision)
        if not group.prunable:
            decision.reason = "; ".join(group.reasons) or "no prunable channel"
            continue
        if requested <= 0:
            decision.reason = "ratio 0"
            continue
        s = importance.group_scores(graph, group, cache)
        if np.all(np.isnan(s[~group.frozen])):
            decision.reason = f"importance {importance.name!r} gives no score to this group"
            continue
        s = np.where(np.isnan(s) | group.frozen, np.inf, s)
        scores[group.index] = s
        local[group.index] = bool(named) or not global_pruning

    counts: dict[int, int] = {}
    for index in scores:
        if local[index]:
            g = graph.groups[index]
            counts[index] = _limit(len(g.units), int((~g.frozen).sum()), decisions[index].requested_ratio,
                                   max_pruning_ratio)
    global_ids = [i for i in scores if not local[i]]
    if global_ids:
        entries = []
        for i in global_ids:
            s = scores[i]
            finite = s[np.isfinite(s)]
            norm = finite.mean() if len(finite) and finite.mean() > 0 else 1.0
            entries += [(v / norm, i) for v in s[np.isfinite(s)]]
        budget = int(math.floor(pruning_ratio * sum(len(graph.groups[i].units) for i in global_ids)))
        caps = {i: _limit(len(graph.groups[i].units), int((~graph.groups[i].frozen).sum()), 1.0,
                          max_pruning_ratio) for i in global_ids}
        counts.update({i: 0 for i in global_ids})
        for _, i in sorted(entries, key=lambda e: e[0]):
            if budget == 0:
                break
            if counts[i] < caps[i]:
                counts[i] += 1
                budget -= 1

    return apply_counts(graph, scores, counts, decisions, max_pruning_ratio, round_to)



def score_groups(graph: Any, importance: Any, requested: dict[int, float] | None = None,
                 ) -> tuple[dict[int, np.ndarray], list[GroupDecision]]:
    """Scores of every prunable group that the criterion scores ({group index: scores, frozen or
    unscored units at +inf}) and one GroupDecision per group (skipped ones say why).

    Example:
        >>> scores, decisions = score_groups(graph, get_importance("l1"))
    """
    decisions, scores, cache = [], {}, {}
    for group in graph.groups:
        decision = GroupDecision(group=group, requested_ratio=(requested or {}).get(group.index, 0.0))
        decisions.append(decision)
        if not group.prunable:
            decision.reason = "; ".join(group.reasons) or "no prunable channel"
            continue
        s = importance.group_scores(graph, group, cache)
        if np.all(np.isnan(s[~group.frozen])):
            decision.reason = f"importance {importance.name!r} gives no score to this group"
            continue
        scores[group.index] = np.where(np.isnan(s) | group.frozen, np.inf, s)
    return scores, decisions


def kept_options(group: Any, max_pruning_ratio: float, round_to: int | None) -> np.ndarray:
    """The channel counts a group may keep (ascending): at least one channel, its frozen units and
    `1 - max_pruning_ratio` of its channels, a multiple of `round_to` (or all of them).

    Example:
        >>> kept_options(graph.groups[0], 0.9, 8)     # array([8, 16, 24, 32])
    """
    total = len(group.units)
    fewest = total - _limit(total, int((~group.frozen).sum()), 1.0, max_pruning_ratio)
    if not round_to:
        return np.arange(fewest, total + 1, dtype=np.int64)
    start = max(round_to, math.ceil(fewest / round_to) * round_to)
    return np.array(sorted(set(range(start, total, round_to)) | {total}), dtype=np.int64)


def apply_counts(graph: Any, scores: dict[int, np.ndarray], counts: dict[int, int], decisions: list[GroupDecision],
                 max_pruning_ratio: float = 1.0, round_to: int | None = None) -> tuple[np.ndarray, list[GroupDecision]]:
    """Remove the `counts[group index]` lowest-scored channels of each group (part by part for
    groups split over layers); returns (boolean mask over unit roots: removed, decisions).

    Example:
        >>> scores, decisions = score_groups(graph, get_importance("l1"))
        >>> removed, decisions = apply_counts(graph, scores, {0: 8}, decisions)
    """
    removed = np.zeros(len(graph.root_of), dtype=bool)
    for index, count in counts.items():
        group, decision = graph.groups[index], decisions[index]
        total = len(group.units)
        chosen = []
        for part in graph.layer_parts.get(index) or [group.units]:  # group.units is sorted
            part_scores = scores[index][np.searchsorted(group.units, part)]
            n = len(part)
            want = _limit(n, int(np.isfinite(part_scores).sum()), count / total, max_pruning_ratio)
            k = n - _kept_after_rounding(n, n - want, round_to)
            if k > 0:
                chosen.append(part[np.argsort(part_scores, kind="stable")[:k]])
        if not chosen:
            decision.reason = ("round_to keeps every channel" if round_to and count
                               else "ratio too small for this group")
            continue
        decision.removed_units = np.concatenate(chosen)
        decision.removed = len(decision.removed_units)
        decision.status = "pruned"
        removed[decision.removed_units] = True
    return removed, decisions
