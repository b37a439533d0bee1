"""Budgeted planning: how many channels each group keeps so that the model's cost (MACs, parameters
or measured latency) stays under a budget while the most importance is kept (HALP-style).

Each group offers its allowed kept counts (multiples of `round_to`, at least `1 - max_pruning_ratio`
of its channels); keeping k channels is worth the sum of its k best importance scores, normalised by
the group's mean score. The cost of a model is not a sum over groups (a convolution's cost depends
on its input and its output group), so the planner linearises it around the current widths, solves
the resulting multiple-choice knapsack exactly by dynamic programming, checks the real cost of the
answer, tightens the knapsack budget by bisection until that real cost fits, and repeats around the
new widths.

Example:
    >>> kept, info = budgeted_counts(graph, scores, macs_cost(graph), target=0.5 * macs,
    ...                              max_pruning_ratio=0.9, round_to=8)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from tfprune.structured.confirmation import confirm_measurements
from tfprune.structured.planner import kept_options


class BudgetError(ValueError):
    """The budget cannot be reached under the pruning constraints; `smallest` is the smallest reachable
    cost and `original` the unpruned model's (same unit), when known.

    Example:
        >>> try:
        ...     prune_filters(model, target_macs=0.001)
        ... except BudgetError as error:
        ...     print(error.smallest / error.original)    # the smallest reachable fraction of the MACs
    """

    def __init__(self, message: str, smallest: float | None = None, original: float | None = None) -> None:
        super().__init__(message)
        self.smallest, self.original = smallest, original


def knapsack(values: Sequence[Sequence[float]], costs: Sequence[Sequence[int]], budget: int) -> list[int] | None:
    """Exact multiple-choice knapsack: one option per group, integer costs >= 0, total cost <= budget,
    maximum total value. Returns the chosen option index per group, or None if nothing fits.

    Example:
        >>> knapsack([[0, 3], [0, 5]], [[0, 2], [0, 3]], budget=4)   # [0, 1]: value 5 at cost 3
    """
    budget = int(budget)
    if budget < 0:
        return None
    best = np.full(budget + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((len(values), budget + 1), dtype=np.int64)
    for g, (vals, cs) in enumerate(zip(values, costs)):
        new = np.full(budget + 1, -np.inf)
        for j, (v, c) in enumerate(zip(vals, cs)):
            c = int(c)
            if c < 0:
                raise ValueError(f"knapsack costs must be >= 0, received {c} (group {g}, option {j}).")
            if c > budget:
                continue
            shifted = np.full(budget + 1, -np.inf)
            shifted[c:] = best[: budget + 1 - c] + v
            better = shifted > new
            new[better] = shifted[better]
            choice[g, better] = j
        best = new
    if not np.isfinite(best).any():
        return None
    b = int(np.argmax(best))  # the best value over every spent amount <= budget
    picks = [0] * len(values)
    for g in range(len(values) - 1, -1, -1):
        j = int(choice[g, b])
        picks[g] = j
        b -= int(costs[g][j])
    return picks


def knapsack_real(values: Sequence[np.ndarray], costs: Sequence[np.ndarray], budget: float,
                  resolution: int = 2000) -> list[int] | None:
    """`knapsack` with real costs (any sign): shifted to >= 0 and rounded up to `resolution` steps of
    the budget, so the answer always fits the real budget.

    Example:
        >>> knapsack_real([np.array([0., 1.])], [np.array([0., -2.5])], budget=-1.0)   # [1]
    """
    lows = [float(np.min(c)) for c in costs]
    room = budget - sum(lows)
    if room < -1e-9 * max(1.0, abs(budget)):
        return None
    room = max(room, 0.0)
    spread = max([float(np.max(c)) - low for c, low in zip(costs, lows)] + [0.0])
    scale = resolution / room if room > 0 else (resolution / spread if spread > 0 else 1.0)
    int_costs = [np.ceil((np.asarray(c) - low) * scale - 1e-9).astype(np.int64).clip(min=0)
                 for c, low in zip(costs, lows)]
    return knapsack(values, int_costs, int(math.floor(room * scale + 1e-9)))


def option_values(scores: np.ndarray, options: np.ndarray) -> np.ndarray:
    """Value of keeping each option's number of channels: the sum of the best scores, normalised by
    the mean score; frozen units (score inf) are always kept and worth nothing.

    Example:
        >>> option_values(np.array([1., 3., np.inf]), np.array([1, 2, 3]))   # [0, 1.5, 2]
    """
    finite = np.sort(scores[np.isfinite(scores)])[::-1]
    mean = finite.mean() if len(finite) and finite.mean() > 0 else 1.0
    frozen = len(scores) - len(finite)
    cumulative = np.concatenate([[0.0], np.cumsum(finite / mean)])
    return np.array([cumulative[min(max(int(k) - frozen, 0), len(finite))] for k in options])


@dataclasses.dataclass
class BudgetInfo:
    """What the budgeted planner found: the target, the smallest reachable and the planned cost."""

    kind: str
    target: float
    full: float
    planned: float
    smallest: float
    iterations: int = 0


def group_options(graph: Any, scores: dict[int, np.ndarray], max_pruning_ratio: float, round_to: int | None,
                  branches: Sequence[Any] = ()) -> dict[int, np.ndarray]:
    """The kept counts each scored group may have (ascending): `kept_options`, and 0 for the group of
    a removable residual branch in `branches` (0 kept channels removes the branch).

    Example:
        >>> group_options(graph, scores, 0.9, 8)       # {group: array([8, 16])}
    """
    removable = {b.group for b in branches}
    options = {}
    for g in sorted(scores):
        allowed = kept_options(graph.groups[g], max_pruning_ratio, round_to)
        options[g] = np.concatenate([[0], allowed]).astype(np.int64) if g in removable else allowed
    return options


def smallest_counts(graph: Any, scores: dict[int, np.ndarray], max_pruning_ratio: float,
                    round_to: int | None, branches: Sequence[Any] = ()) -> dict[int, int]:
    """The fewest channels every scored group may keep (`max_pruning_ratio`, `round_to`; 0 for the
    groups of removable residual `branches`).

    Example:
        >>> smallest_counts(graph, scores, 0.9, 8)    # {group: kept channels}
    """
    return {g: int(o[0]) for g, o in group_options(graph, scores, max_pruning_ratio, round_to, branches).items()}


def budgeted_counts(graph: Any, scores: dict[int, np.ndarray], cost: Any, target: float,
                    max_pruning_ratio: float = 0.9, round_to: int | None = None, iterations: int = 4,
                    resolution: int = 2000, branches: Sequence[Any] = ()) -> tuple[dict[int, int], BudgetInfo]:
    """Kept channel count per scored group so that `cost.cost(kept) <= target` with the most value;
    with `branches` (removable residual branches, `structured.blocks`), a branch's group may keep 0
    channels, which removes the branch (worth none of its importance, costing none of its layers).

    Raises `BudgetError` (saying the smallest reachable cost) if even the smallest widths cost more.

    Example:
        >>> kept, info = budgeted_counts(graph, scores, macs_cost(graph), 0.5 * macs_cost(graph).full)
    """
    ids = sorted(scores)
    branches = [b for b in branches if b.group in scores]
    if branches:
        cost.allow_removal(branches)
    options = group_options(graph, scores, max_pruning_ratio, round_to, branches)
    values = {g: option_values(scores[g], options[g]) for g in ids}
    smallest_kept = {g: int(options[g][0]) for g in ids}
    smallest = cost.cost(smallest_kept)
    info = BudgetInfo(cost.kind, float(target), cost.full, cost.full, smallest)
    if smallest > target:
        raise BudgetError(
            f"the {cost.kind} budget {target:,.6g} ({target / cost.full:.3f} of {cost.full:,.6g}) is not reachable: "
            f"the smallest reachable {cost.kind} is {smallest:,.6g} ({smallest / cost.full:.3f} of the original) with "
            f"max_pruning_ratio={max_pruning_ratio}, round_to={round_to}"
            f"{', every removable residual branch removed' if branches else ''} and the frozen/ignored layers. "
            f"Fix: ask for at least {smallest / cost.full:.3f}, or raise max_pruning_ratio"
            f"{'' if branches else ' (or allow remove_blocks=True on a residual network)'}.",
            smallest=smallest, original=cost.full)
    full_kept = {g: int(options[g][-1]) for g in ids}
    if cost.cost(full_kept) <= target:
        info.planned = cost.cost(full_kept)
        return full_kept, info

    def total_value(kept):
        return sum(float(values[g][np.searchsorted(options[g], kept[g])]) for g in ids)

    best, best_value, current = smallest_kept, total_value(smallest_kept), full_kept
    for it in range(iterations):
        deltas = [cost.deltas(current, g, options[g]) for g in ids]
        base = cost.cost(current)

        def solve(room: float):
            picks = knapsack_real([values[g] for g in ids], deltas, room, resolution)
            return None if picks is None else {g: int(options[g][j]) for g, j in zip(ids, picks)}

        def fits(kept):
            return kept is not None and cost.cost(kept) <= target

        low, high = sum(float(d.min()) for d in deltas), target - base
        found = solve(high) if high >= low else None
        if not fits(found):
            found = solve(low)
            found = found if fits(found) else None
            lo, hi = low, max(high, low)
            for _ in range(20):
                if hi - lo <= 1e-6 * max(1.0, abs(cost.full)):
                    break
                mid = (lo + hi) / 2
                candidate = solve(mid)
                if fits(candidate):
                    found, lo = candidate, mid
                else:
                    hi = mid
        info.iterations = it + 1
        if found is None:
            break
        value = total_value(found)
        if value > best_value + 1e-12:
            best, best_value = found, value
        if found == current:
            break
        current = found
    info.planned = cost.cost(best)
    return best, info


def budgeted_plan(model: Any, graph: Any, criterion: Any, kind: str, fraction: float, latency_table: Any,
                  max_pruning_ratio: float, round_to: int | None, rebuild: Any, attempts: int = 6,
                  tolerance: float | None = None, branches: Sequence[Any] = ()):
    """Plan, rebuild and check a budget on the real pruned model: (pruned, removed, decisions, budget dict).

    The cost model is exact for MACs of plain groups; where it is not (parameters of unusual layers,
    groups split over layers, interpolated latencies), the budget is tightened by the overshoot and
    planned again, so the returned model always meets it. A latency budget with a `tolerance` is
    checked by measurement instead (`measured_plan`). `branches`: residual branches the plan may remove.
    """
    if kind == "latency" and tolerance is not None:
        return measured_plan(model, graph, criterion, fraction, latency_table, max_pruning_ratio, round_to,
                             rebuild, tolerance, attempts, branches)
    from tfprune.structured.cost import cost_model, exact_cost

    cost = cost_model(kind, graph, latency_table)
    original = exact_cost(kind, model, latency_table)
    target = fraction * original
    goal = target
    for attempt in range(attempts):
        scores, decisions = _scored(graph, criterion)
        kept, info = budgeted_counts(graph, scores, cost, goal, max_pruning_ratio, round_to, branches=branches)
        pruned, removed, decisions = _build(model, graph, scores, decisions, kept, max_pruning_ratio, round_to,
                                            rebuild, branches)
        actual = exact_cost(kind, pruned, latency_table)
        if actual <= target * (1 + 1e-9):
            break
        # the cost model underestimated the rebuilt model: tighten by the overshoot, more on each attempt
        goal -= (attempt + 1) * (actual - target) + 1e-6 * original
        if goal < info.smallest:
            goal = info.smallest
    else:
        raise BudgetError(
            f"could not meet the {kind} budget {fraction} of the original: the pruned model costs {actual:,.6g} "
            f"({actual / original:.4f} of the original) after {attempts} plans, the cost model's smallest reachable "
            f"is {info.smallest / cost.full:.3f}. Fix: raise the target a little (e.g. to {actual / original:.3f}).",
            smallest=info.smallest * original / cost.full, original=original,
        )
    budget = {"kind": kind, "target": fraction, "budgeted": target, "predicted": actual, "original": original,
              "smallest": info.smallest, "unit": cost.unit}
    return pruned, removed, decisions, budget


def _scored(graph: Any, criterion: Any):
    """The groups' importance scores and fresh decisions (each plan's build fills its own). Scores are
    computed once per graph and criterion: plans of one budget all rank the same model's channels."""
    from tfprune.structured.planner import score_groups

    cache = graph.__dict__.setdefault("_budget_scores", {})
    if id(criterion) not in cache:
        cache[id(criterion)] = (criterion, *score_groups(graph, criterion))
    _, scores, decisions = cache[id(criterion)]
    return scores, [dataclasses.replace(d) for d in decisions]


def _build(model, graph, scores, decisions, kept, max_pruning_ratio, round_to, rebuild, branches=()):
    from tfprune.structured.planner import apply_counts

    gone = [b for b in branches if kept.get(b.group) == 0]
    gone_groups = {b.group for b in gone}
    counts = {g: len(graph.groups[g].units) - k for g, k in kept.items() if g not in gone_groups}
    removed, decisions = apply_counts(graph, scores, counts, decisions, max_pruning_ratio, round_to)
    for d in decisions:
        d.requested_ratio = counts.get(d.group.index, 0) / d.total if d.total else 0.0
    for b in gone:
        d = decisions[b.group]
        d.requested_ratio, d.removed, d.status = 1.0, d.total, "removed"
        d.reason = f"residual branch removed ({b.add} passes its shortcut on)"
    pruned = rebuild(model, graph, removed, gone)
    return pruned, removed, decisions


BISECTION_ATTEMPTS = 4  # plans the search between measured plans may add to `attempts`
FINAL_CONFIRMATIONS = 3  # unconfirmed plans nearest the budget confirmed before one is returned


@dataclasses.dataclass
class _MeasuredPlan:
    pruned: Any
    removed: Any
    decisions: Any
    measurements: list
    kept: dict

    @property
    def measured(self) -> float:
        return float(np.mean(self.measurements))


class _Measurements:
    """The plans `measured_plan` has built and timed, keyed by their kept counts."""

    def __init__(self, model, graph, fraction, latency_table, max_pruning_ratio, round_to, rebuild, tolerance,
                 branches):
        self.model, self.graph, self.fraction, self.table = model, graph, fraction, latency_table
        self.max_pruning_ratio, self.round_to = max_pruning_ratio, round_to
        self.rebuild, self.tolerance, self.branches = rebuild, tolerance, branches
        self.plans: dict[tuple, _MeasuredPlan] = {}
        self.settled = False  # a plan whose confirmations measured within half the tolerance

    def measure(self, kept: dict[int, int], scores, decisions) -> _MeasuredPlan:
        """Build and time the plan `kept`; if it lands within half the tolerance, `confirm` it."""
        pruned, removed, decisions = _build(self.model, self.graph, scores, decisions, kept, self.max_pruning_ratio,
                                            self.round_to, self.rebuild, self.branches)
        plan = _MeasuredPlan(pruned, removed, decisions, self.table.compare(self.model, [pruned]), dict(kept))
        self.plans[tuple(sorted(kept.items()))] = plan
        if self._close(plan.measured):
            self.settled = self.confirm(plan)
        return plan

    def confirm(self, plan: _MeasuredPlan) -> bool:
        """Time `plan` on fresh instances until its comparisons besides the first confirm it or not
        (`confirm_measurements`): True if they average within half the tolerance and two standard
        errors around their mean stay within the tolerance (more comparisons, up to
        `MAX_CONFIRMATIONS`, while they spread too much to tell). The first measurement is what
        picked the plan, so it leans toward the budget (one comparison can be off by the spread
        between instances and the host's drift); the confirmations do not."""
        return confirm_measurements(plan.measurements, lambda: self.table.compare(self.model, [plan.pruned])[0],
                                    band=self._band(self.tolerance / 2), wide=self._band(self.tolerance))

    def _close(self, measured: float) -> bool:
        low, high = self._band(self.tolerance / 2)
        return low <= measured <= high

    def _band(self, tolerance: float) -> tuple[float, float]:
        return self.fraction * (1 - tolerance), self.fraction * (1 + tolerance)


def fit_per_operator(plans: Sequence[Any], cost: Any, original_ms: float,
                     branches: Sequence[Any]) -> tuple[float, float]:
    """(offset ms, per-operator ms >= 0): what each operator of a removed residual branch saves beyond
    the cost model's estimate, as the least-squares line of (measured - estimated) latency over the
    removed operators of the measured `plans` (objects with `kept` and `measured`, the fraction of
    `original_ms`), and where that line starts (the estimate's error on plans that remove nothing).
    The per-operator cost is 0 until plans with two different numbers of removed operators were
    measured (the offset is then their mean error).

    Example:
        >>> offset, per_operator = fit_per_operator(plans, table.cost_model(graph).allow_removal(branches),
        ...                                         original_ms, branches)
    """
    operators = {b.group: b.operators for b in branches}
    rows = [(sum(operators[g] for g, k in p.kept.items() if k == 0 and g in operators),
             p.measured * original_ms - cost.cost(p.kept)) for p in plans]
    if not rows:
        return 0.0, 0.0
    x = np.array([r[0] for r in rows], dtype=float)
    y = np.array([r[1] for r in rows], dtype=float)
    if len(set(x.tolist())) < 2:
        return float(y.mean()), 0.0
    (offset, slope), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), -x], axis=1), y, rcond=None)
    if slope < 0:
        return float(y.mean()), 0.0
    return float(offset), float(slope)


def between_plans(low: dict[int, int], high: dict[int, int], t: float,
                  options: dict[int, np.ndarray]) -> dict[int, int]:
    """The plan a fraction `t` of the way from plan `low` to plan `high`: the path between them moves
    one group by one allowed count (`options[group]`) at a time, each group's moves spread evenly
    along it, and the plan at `t` has made the first `round(t * moves)` of them.

    Example:
        >>> options = {0: np.array([8, 16, 24, 32]), 1: np.array([8, 16])}
        >>> between_plans({0: 8, 1: 8}, {0: 32, 1: 16}, 0.5, options)    # 2 of 4 moves: {0: 24, 1: 8}
    """
    moves = []  # (position along the path, group, index of the count moved to)
    for g in sorted(low):
        allowed = np.asarray(options[g])
        start, end = (int(np.argmin(np.abs(allowed - k))) for k in (low[g], high[g]))
        steps, direction = abs(end - start), (1 if end > start else -1)
        moves += [((i + 0.5) / steps, g, start + direction * (i + 1)) for i in range(steps)]
    moves.sort()
    kept = dict(low)
    for _, g, index in moves[: int(round(min(max(t, 0.0), 1.0) * len(moves)))]:
        kept[g] = int(options[g][index])
    return kept


def _search_between(runs: _Measurements, criterion: Any, attempts: int, surrogate: Any) -> None:
    """Where the goals stopped giving new plans before one landed near the budget (a table that
    hardly tells widths apart, as TensorFlow's at batch 1), search by measurement between the
    measured plans that bracket the budget most tightly (the unpruned model measures 1 by
    definition), at the point where their measured latencies interpolate linearly, or halfway when
    the last plan landed on the same side as the one before (latency is not linear, and
    interpolation alone creeps up from one side). The candidate is the plan that keeps the most
    importance under the cost of `surrogate()` (a CostModel) that far between theirs; when no new
    plan comes out, the plan that far along the path between the two (`between_plans`). Until a plan
    lands within half the tolerance or `attempts` plans were measured."""
    graph = runs.graph
    fraction, sides = runs.fraction, []
    while not runs.settled and len(runs.plans) < attempts:
        below = [p for p in runs.plans.values() if p.measured < fraction]
        above = [p for p in runs.plans.values() if p.measured >= fraction]
        if not below:
            return
        low = max(below, key=lambda p: p.measured)
        scores, decisions = _scored(graph, criterion)
        options = group_options(graph, scores, runs.max_pruning_ratio, runs.round_to, runs.branches)
        high_kept, high = {g: int(o[-1]) for g, o in options.items()}, 1.0
        if above:
            nearest = min(above, key=lambda p: p.measured)
            high_kept, high = nearest.kept, nearest.measured
        t = (fraction - low.measured) / (high - low.measured) if high > low.measured else 0.5
        if len(sides) >= 2 and sides[-1] == sides[-2]:
            t = 0.5
        cost = surrogate()
        low_cost, high_cost = cost.cost(low.kept), cost.cost(high_kept)

        def candidates(t=min(max(t, 0.05), 0.95)):
            for step in (t, 0.5):
                try:
                    yield budgeted_counts(graph, scores, cost, low_cost + step * (high_cost - low_cost),
                                          runs.max_pruning_ratio, runs.round_to, branches=runs.branches)[0]
                except BudgetError:
                    continue
            for step in (t, 0.5):
                yield between_plans(low.kept, high_kept, step, options)

        kept = next((k for k in candidates() if tuple(sorted(k.items())) not in runs.plans and k != high_kept), None)
        if kept is None:
            return  # no new plan between the two: nothing is left to try
        plan = runs.measure(kept, scores, decisions)
        sides.append(plan.measured < fraction)


def measured_plan(model: Any, graph: Any, criterion: Any, fraction: float, latency_table: Any,
                  max_pruning_ratio: float, round_to: int | None, rebuild: Any, tolerance: float,
                  attempts: int = 6, branches: Sequence[Any] = ()):
    """A latency budget met by measurement: plan with the table's (calibrated) cost model, measure the
    pruned model against the original (`LatencyTable.compare`, which adds it to the table's fit), and
    plan again at a goal that `GoalSearch` corrects from what was measured (bracketing the budget
    between plans measured below and above it), until a plan measures within half the `tolerance` of
    the budget and more comparisons on fresh instances confirm it (`confirmation.confirm_measurements`:
    two or more, until they clearly average within the tolerance), or `attempts` plans were measured
    (then the nearest plans, up to `FINAL_CONFIRMATIONS`, are confirmed before the nearest on average
    is chosen).
    A budget below the smallest plan the table predicts measures that plan before giving up. With
    removable residual `branches`, the cost model adds a per-operator cost fitted to the measured
    plans (`fit_per_operator`). When the goals stop giving new plans before one lands near the budget,
    the remaining attempts and `BISECTION_ATTEMPTS` more search between the measured plans that
    bracket the budget (`_search_between`). Returns the measured plan nearest the budget (the mean of
    its comparisons) among those at most `1 + tolerance` of it; raises `BudgetError` if every plan
    measured above that.
    """
    from tfprune.structured.cost import cost_model
    from tfprune.structured.goal_search import GoalSearch, MeasuredPoint

    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"latency_tolerance must be in (0, 1) or None, received {tolerance!r}. Fix: e.g. 0.05.")
    search, goal, floor_jumps, floor_key = GoalSearch(fraction), fraction, 0, None
    runs = _Measurements(model, graph, fraction, latency_table, max_pruning_ratio, round_to, rebuild, tolerance,
                         branches)
    plans = runs.plans
    smallest = scores = None

    fitted = [0.0]  # the offset of the per-operator fit (ms)

    def latency_cost():
        """The table's cost model; with removable branches, plus the per-operator cost fitted to the
        plans measured so far (blocks timed alone do not show what removing operators saves)."""
        if not branches:
            return cost_model("latency", graph, latency_table)
        base = cost_model("latency", graph, latency_table).allow_removal(branches)
        fitted[0], per_operator = fit_per_operator(list(plans.values()), base, latency_table.predict(model),
                                                   branches)
        return cost_model("latency", graph, latency_table).allow_removal(branches, per_operator)

    def predicted(plan, cost):
        """A measured plan's predicted latency (ms) under the current cost model (with removable
        branches: the per-operator fit, offset included)."""
        return cost.cost(plan.kept) + fitted[0] if branches else latency_table.predict(plan.pruned)

    for _ in range(4 * attempts):
        if len(plans) >= attempts:
            break
        cost = latency_cost()
        original = latency_table.predict(model)
        scores, decisions = _scored(graph, criterion)
        try:
            kept, info = budgeted_counts(graph, scores, cost, goal * original, max_pruning_ratio, round_to,
                                         branches=branches)
            smallest, floor = info.smallest, info.smallest / original
        except BudgetError as err:
            # below what the cost model can reach: measure the smallest widths, once (twice after a
            # refit): a table that cannot resolve the widths' costs (TensorFlow at batch 1, where per-op
            # costs dominate blocks timed alone) predicts a floor far above what the runtime does
            if err.smallest is None or floor_jumps >= 2 or (floor_jumps and not plans):
                if not plans:
                    raise
                break
            floor_jumps += 1
            kept = smallest_counts(graph, scores, max_pruning_ratio, round_to, branches)
            smallest, floor = err.smallest, err.smallest / original
            goal, floor_key = floor, tuple(sorted(kept.items()))
        key = tuple(sorted(kept.items()))
        plan = plans.get(key)
        if plan is not None:  # the same plan again: no new measurement, the goal moves on
            point = MeasuredPoint(predicted(plan, cost) / original, plan.measured)
            moved = search.repeated(point, floor, goal)
            if moved is None:
                break
            goal = moved
            continue
        runs.measure(kept, scores, decisions)
        if runs.settled:
            break
        original = latency_table.predict(model)  # the table was refitted with the new measurement
        cost = latency_cost()
        points = [MeasuredPoint(predicted(p, cost) / original, p.measured) for p in plans.values()]
        goal = search.measured(points, floor, goal)
    if not runs.settled and plans:
        from tfprune.structured.cost import macs_cost

        # with removable branches, the per-operator-corrected latency model; else MACs, which a table
        # that cannot tell widths apart does not follow but the runtime does, roughly
        surrogate = latency_cost if branches else (lambda: macs_cost(graph))
        _search_between(runs, criterion, attempts + BISECTION_ATTEMPTS, surrogate)
    within = [p for p in plans.values() if p.measured <= fraction * (1 + tolerance)]
    for _ in range(FINAL_CONFIRMATIONS if not runs.settled else 0):
        # no plan was confirmed near the budget: confirm the nearest before returning it, as its one
        # measurement may be what made it look nearest
        nearest = min(within, key=lambda p: abs(p.measured / fraction - 1), default=None)
        if nearest is None or len(nearest.measurements) > 1:
            break
        runs.confirm(nearest)
        within = [p for p in plans.values() if p.measured <= fraction * (1 + tolerance)]
    original = latency_table.predict(model)
    if not within:
        fastest_key = min(plans, key=lambda k: plans[k].measured)
        fastest = plans[fastest_key].measured
        if fastest_key == floor_key:
            raise BudgetError(
                f"the latency budget {fraction} of the original is not reachable: the smallest reachable latency, "
                f"measured on the smallest widths (max_pruning_ratio={max_pruning_ratio}, round_to={round_to}), is "
                f"{fastest:.3f} of the original. Fix: ask for at least {fastest * (1 + tolerance / 2):.3f}, raise "
                "max_pruning_ratio, or lower round_to"
                + ("." if branches else " (or allow remove_blocks=True on a residual network: operators cost "
                   "time whatever their width)."), smallest=fastest * original, original=original)
        raise BudgetError(
            f"could not meet the latency budget {fraction} of the original within {tolerance:.0%}: the fastest of "
            f"{len(plans)} measured plans runs at {fastest:.3f} of the original latency. "
            f"Fix: ask for at least {fastest * (1 + tolerance / 2):.3f}, raise max_pruning_ratio, or lower round_to.",
            smallest=fastest * original, original=original)
    best = min(within, key=lambda p: abs(p.measured / fraction - 1))
    budget = {"kind": "latency", "target": fraction, "budgeted": fraction * original,
              "predicted": predicted(best, latency_cost()), "measured": best.measured * original,
              "measured_fraction": best.measured, "measurements": len(best.measurements),
              "measured_fractions": [float(m) for m in best.measurements],
              "tolerance": tolerance, "attempts": len(plans), "original": original, "smallest": smallest,
              "unit": "ms"}
    return best.pruned, best.removed, best.decisions, budget
