"""A per-group pruning plan: how many channels each group keeps, keyed by its first producer's name.

`search_ratios` returns one; `prune_filters(model, plan=plan)` applies it. A plain dict works too:
{producer layer name: kept channel count (int) or fraction of channels to remove (float)}.

Example:
    >>> plan = Plan(kept={"conv1": 16, "conv2": 24})
    >>> pruned, report = prune_filters(model, plan=plan)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


@dataclasses.dataclass
class Plan:
    """Kept channels per group ({first producer name: count}), with the cost and score it was chosen at.

    Example:
        >>> plan, history = search_ratios(model, accuracy, budget=0.5)
        >>> plan.kept                                     # e.g. {'conv1': 8, 'conv3': 24}
        >>> pruned, report = prune_filters(model, plan=plan)
        >>> pruned, report = prune_filters(model, plan=Plan({"conv1": 8}))
    """

    kept: dict[str, int]
    cost: float | None = None
    score: float | None = None
    kind: str | None = None
    measured: float | None = None  # measured latency / the original's, when the search checked it
    measurements: list[float] | None = None  # the comparisons `measured` is the mean of

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        items = ", ".join(f"{k}: {v}" for k, v in self.kept.items())
        extra = "" if self.score is None else f" (score {self.score:.4g}, {self.kind} {self.cost:,.6g}"
        extra += "" if self.score is None else (")" if self.measured is None else f", measured {self.measured:.3f})")
        return f"Plan({items}){extra}"


def group_key(group: Any) -> str:
    return group.producers[0]


def plan_counts(graph: Any, plan: Any, scores: dict[int, np.ndarray]) -> dict[int, int]:
    """{group index: channels to remove} from a Plan or a {producer name: kept int | ratio float} dict.

    Example:
        >>> plan_counts(graph, {"conv1": 8}, scores)     # {0: 24} for a 32-channel conv1
    """
    entries = plan.kept if isinstance(plan, Plan) else plan
    if not isinstance(entries, dict):
        raise TypeError(f"plan must be a structured.Plan or a dict, received {type(plan).__name__}.")
    by_name = {name: g for g in graph.groups for name in g.producers}
    unknown = sorted(set(entries) - set(by_name))
    if unknown:
        raise ValueError(f"plan names {unknown} are not producer layers of this model's groups. "
                         "Fix: key the plan by Conv/Dense layer names (Plan.kept from search_ratios).")
    counts: dict[int, int] = {}
    for name, value in entries.items():
        group = by_name[name]
        total = len(group.units)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"plan[{name!r}] must be a kept count (int) or a ratio (float), received {value!r}.")
        if isinstance(value, (int, np.integer)):
            if not 1 <= value <= total:
                raise ValueError(f"plan[{name!r}] keeps {value} channels; the group has {total}. "
                                 f"Fix: a count in [1, {total}].")
            removed = total - int(value)
        else:
            if not 0 <= value < 1:
                raise ValueError(f"plan[{name!r}] ratio must be in [0, 1), received {value}.")
            removed = int(math.floor(value * total + 1e-9))
        if group.index in scores and removed:
            counts[group.index] = max(counts.get(group.index, 0), removed)
    return counts
