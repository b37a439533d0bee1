"""Per-group channel-count search under a budget (MetaPruning / ABCPruner style, without training).

A candidate is a kept channel count per group (one of the counts `round_to` and
`max_pruning_ratio` allow). Every candidate is repaired until it fits the budget (MACs, parameters
or latency from a `LatencyTable`), checked on the real pruned model, then scored by `eval_fn` after
BatchNormalization re-estimation on a few batches (EagleEye) and no fine-tuning.

* `method="evolution"`: the best quarter of each generation breeds the next by uniform crossover
  and mutation of a few groups by one or two steps;
* `method="abc"`: artificial bee colony (ABCPruner): each food source is moved on one group
  relative to a random other source, onlookers revisit the better sources, and a source that does
  not improve for `abandon` trials is replaced by a random one.

The first generation holds the uniform plan at the budget (the same kept fraction everywhere), so
the result is never below uniform pruning by the search's own score. Deterministic for a seed.

Example:
    >>> plan, history = search_ratios(model, accuracy, budget=0.5, budget_kind="macs",
    ...                               recalibrate_bn=x_train[:1024], population=12, generations=6)
    >>> pruned, report = prune_filters(model, plan=plan)
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import keras
import numpy as np

from tfprune.structured.confirmation import confirm_measurements
from tfprune.structured.cost import KINDS, cost_model, exact_cost
from tfprune.structured.graph import DependencyGraph
from tfprune.structured.importance import get_importance
from tfprune.structured.planner import GroupDecision, apply_counts, kept_options, score_groups
from tfprune.structured.plans import Plan, group_key
from tfprune.structured.pruner import rebuild
from tfprune.structured.recalibrate import recalibrate_batchnorm

METHODS = ("evolution", "abc")


class _Space:
    """Candidates as option indices per group; cost estimates, repair and exact checks."""

    def __init__(self, model, graph, scores, cost, kind, table, target, max_ratio, round_to, rng):
        self.model, self.graph, self.scores, self.cost = model, graph, scores, cost
        self.kind, self.table, self.target, self.round_to, self.max_ratio = kind, table, target, round_to, max_ratio
        self.ids = sorted(scores)
        self.options = [kept_options(graph.groups[g], max_ratio, round_to) for g in self.ids]
        self.rng = rng

    def kept(self, genes) -> dict[int, int]:
        return {g: int(opts[j]) for g, opts, j in zip(self.ids, self.options, genes)}

    def estimate(self, genes) -> float:
        return self.cost.cost(self.kept(genes))

    def repair(self, genes, slack: float = 0.0) -> tuple:
        """Lower random groups one step at a time until the estimate fits the target (minus slack)."""
        genes = list(genes)
        while self.estimate(genes) > self.target - slack:
            movable = [i for i, j in enumerate(genes) if j > 0]
            if not movable:
                break
            i = movable[int(self.rng.integers(len(movable)))]
            genes[i] -= 1
        return tuple(genes)

    def build(self, genes):
        decisions = [GroupDecision(group=g, requested_ratio=0.0) for g in self.graph.groups]
        counts = {g: len(self.graph.groups[g].units) - k for g, k in self.kept(genes).items()}
        counts = {g: c for g, c in counts.items() if c}
        removed, _ = apply_counts(self.graph, self.scores, counts, decisions, self.max_ratio, self.round_to)
        return rebuild(self.model, self.graph, removed)

    def uniform(self) -> tuple:
        """The largest common kept fraction whose plan fits the budget."""
        def genes_at(f):
            return tuple(int(max(0, np.searchsorted(o, f * o[-1], side="right") - 1)) for o in self.options)

        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            if self.estimate(genes_at(mid)) <= self.target:
                lo = mid
            else:
                hi = mid
        return genes_at(lo)

    def random(self) -> tuple:
        return self.repair(tuple(int(self.rng.integers(len(o))) for o in self.options))

    def clip(self, genes) -> tuple:
        return tuple(int(np.clip(j, 0, len(o) - 1)) for j, o in zip(genes, self.options))


def search_ratios(model: keras.Model, eval_fn: Callable[[keras.Model], float], budget: float,
                  method: str = "evolution", population: int = 12, generations: int = 6,
                  recalibrate_bn: Any = None, seed: int = 0, budget_kind: str = "macs",
                  latency_table: Any = None, importance: Any = "l1", round_to: int | None = None,
                  max_pruning_ratio: float = 0.9, ignored_layers: Iterable[Any] | None = None,
                  calibration_steps: int = 10, batch_size: int = 64, abandon: int = 3,
                  time_limit: float | None = None, layer_norm: str = "exact",
                  latency_tolerance: float | None = None, measured_candidates: int = 5,
                  verbose: int = 1) -> tuple[Plan, list[dict]]:
    """Search the kept channel count of every group under `budget` (a fraction of the original cost)
    for the highest `eval_fn` score; returns (best Plan, history: one dict per scored candidate).

    Args:
        model: a built Sequential or functional model (trained: the search ranks its pruned versions).
        eval_fn: model -> float, higher is better (return -loss for a loss).
        budget: fraction of the original MACs / parameters / latency, in (0, 1].
        method: 'evolution' or 'abc'.
        population: candidates per generation (evolution scores about population x generations
            candidates, abc about twice as many).
        generations: the number of generations.
        recalibrate_bn: data for BatchNormalization re-estimation before scoring (recommended).
        seed: the random seed (same seed and inputs, same result).
        budget_kind: 'macs', 'params' or 'latency' (needs `latency_table`).
        importance: as in `prune_filters` (apply the plan with the same importance and round_to).
        round_to: as in `prune_filters`.
        max_pruning_ratio: as in `prune_filters`.
        ignored_layers: as in `prune_filters`.
        layer_norm: as in `prune_filters`.
        abandon: abc only: trials without improvement before a source is replaced.
        time_limit: stop after this many seconds (the best so far is returned).
        latency_tolerance: with `budget_kind="latency"`, the search budgets by the table's
            prediction; with a tolerance, the best-scored candidates (at most `measured_candidates`)
            are then measured against the original (`LatencyTable.compare`) and the best one whose
            measured latency is at most `budget * (1 + latency_tolerance)`, on its first comparison
            and on the confirmations after it, is returned: the comparisons in `Plan.measurements`,
            their mean in `Plan.measured`; none within raises `BudgetError` with the measurements.
            None (the default) trusts the prediction.
        measured_candidates: how many candidates `latency_tolerance` may measure.
        verbose: 1 prints one line per generation.

    Example:
        >>> plan, history = search_ratios(model, accuracy, 0.5, recalibrate_bn=x_train[:512], seed=0)
        >>> pruned, _ = prune_filters(model, plan=plan, round_to=8)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, received {method!r}.")
    if budget_kind not in KINDS:
        raise ValueError(f"budget_kind must be one of {KINDS}, received {budget_kind!r}.")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ValueError(f"budget must be a fraction of the original cost in (0, 1], received {budget!r}.")
    for name, value in (("population", population), ("generations", generations)):
        if not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an int >= 2, received {value!r}.")
    if latency_tolerance is not None:
        if budget_kind != "latency":
            raise ValueError(f"latency_tolerance checks a latency budget; budget_kind is {budget_kind!r}. "
                             "Fix: budget_kind='latency' with a latency_table, or latency_tolerance=None.")
        if isinstance(latency_tolerance, bool) or not isinstance(latency_tolerance, (int, float)) \
                or not 0 < latency_tolerance < 1:
            raise ValueError(f"latency_tolerance must be a fraction in (0, 1) or None, received "
                             f"{latency_tolerance!r}. Fix: e.g. 0.05.")
        if isinstance(measured_candidates, bool) or not isinstance(measured_candidates, int) \
                or measured_candidates < 1:
            raise ValueError(f"measured_candidates must be a positive int, received {measured_candidates!r}.")
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    graph = DependencyGraph(model, ignored_layers=ignored_layers, layer_norm=layer_norm)
    criterion = get_importance(importance)
    criterion.prepare(model, None)
    scores, _ = score_groups(graph, criterion)
    if not scores:
        raise ValueError(f"model {model.name!r} has no prunable group to search.")
    cost = cost_model(budget_kind, graph, latency_table)
    original = exact_cost(budget_kind, model, latency_table)
    target = budget * original
    space = _Space(model, graph, scores, cost, budget_kind, latency_table, target, max_pruning_ratio, round_to, rng)
    smallest = space.estimate(tuple(0 for _ in space.ids))
    if smallest > target:
        raise ValueError(
            f"the {budget_kind} budget {budget} is not reachable: the smallest reachable is "
            f"{smallest / original:.3f} of the original with max_pruning_ratio={max_pruning_ratio}, "
            f"round_to={round_to}. Fix: ask for at least {smallest / original:.3f}.")
    history: list[dict] = []
    seen: dict[tuple, dict] = {}

    def evaluate(genes, generation: int) -> dict:
        genes = space.repair(space.clip(genes))
        if genes in seen:
            return seen[genes]
        slack = 0.0
        for _ in range(8):  # the estimate may differ from the real model: repair until it fits
            pruned = space.build(genes)
            actual = exact_cost(budget_kind, pruned, latency_table)
            if actual <= target * (1 + 1e-9):
                break
            slack += actual - target + 1e-6 * original
            genes = space.repair(genes, slack)
        else:
            raise RuntimeError(  # pragma: no cover - the cost model and the real model disagree by far
                f"a candidate still costs {actual:,.6g} {budget_kind} after 8 repairs (budget {target:,.6g}): the "
                "cost estimate and the pruned model disagree. Fix: raise the budget or set round_to.")
        if recalibrate_bn is not None:
            recalibrate_batchnorm(pruned, recalibrate_bn, calibration_steps, batch_size)
        entry = {"generation": generation, "genes": genes, "score": float(eval_fn(pruned)),
                 "cost": actual, "cost_fraction": actual / original,
                 "kept": {group_key(graph.groups[g]): k for g, k in space.kept(genes).items()}}
        seen[genes] = entry
        history.append(entry)
        return entry

    def out_of_time() -> bool:
        return time_limit is not None and time.perf_counter() - start > time_limit

    def report(generation, pool):
        if verbose:
            best = max(pool, key=lambda e: e["score"])
            print(f"search_ratios[{method}] generation {generation + 1}/{generations}: best score {best['score']:.4f} "
                  f"at {best['cost_fraction']:.3f} of the {budget_kind}; {len(history)} candidates scored, "
                  f"{time.perf_counter() - start:.1f}s", flush=True)

    pool = [evaluate(space.uniform(), 0)]
    while len(pool) < population and not out_of_time():
        pool.append(evaluate(space.random(), 0))
    report(0, pool)
    trials = [0] * len(pool)
    for generation in range(1, generations):
        if out_of_time():
            break
        if method == "evolution":
            parents = sorted(pool, key=lambda e: -e["score"])[:max(2, population // 4)]
            children = list(parents)
            while len(children) < population and not out_of_time():
                for _ in range(10):  # a few tries for a child not scored before
                    a, b = (parents[int(i)] for i in rng.choice(len(parents), 2, replace=False))
                    mix = rng.random(len(space.ids)) < 0.5
                    genes = np.where(mix, a["genes"], b["genes"])
                    mutate = rng.random(len(space.ids)) < max(1.0 / len(space.ids), 0.15)
                    genes = space.repair(space.clip(genes + mutate * rng.integers(-2, 3, len(space.ids))))
                    if genes not in seen:
                        break
                children.append(evaluate(genes, generation))
            pool = children
        else:
            def move(i):
                j = int(rng.integers(len(space.ids)))
                k = int(rng.choice([x for x in range(len(pool)) if x != i]))
                genes = list(pool[i]["genes"])
                step = genes[j] + rng.uniform(-1, 1) * (genes[j] - pool[k]["genes"][j])
                genes[j] = int(round(step)) if step != genes[j] else genes[j] + int(rng.choice([-1, 1]))
                candidate = evaluate(genes, generation)
                if candidate["score"] > pool[i]["score"]:
                    pool[i], trials[i] = candidate, 0
                else:
                    trials[i] += 1

            for i in range(len(pool)):  # employed bees
                if out_of_time():
                    break
                move(i)
            fitness = np.array([e["score"] for e in pool])
            weights = fitness - fitness.min() + 1e-9
            for _ in range(len(pool)):  # onlooker bees
                if out_of_time():
                    break
                move(int(rng.choice(len(pool), p=weights / weights.sum())))
            for i in range(len(pool)):  # scouts
                if trials[i] > abandon and not out_of_time():
                    pool[i], trials[i] = evaluate(space.random(), generation), 0
        report(generation, pool)
    ranked = sorted(history, key=lambda e: (-e["score"], e["cost"]))
    measured = measurements = None
    if latency_tolerance is None:
        best = ranked[0]
    else:
        best = _measured_best(model, space, ranked[:measured_candidates], latency_table, budget, latency_tolerance,
                              verbose)
        measured, measurements = best["measured"], best["measurements"]
    plan = Plan(kept=dict(best["kept"]), cost=best["cost"], score=best["score"], kind=budget_kind, measured=measured,
                measurements=measurements)
    return plan, history


def _measured_best(model, space, ranked: list[dict], table: Any, budget: float, tolerance: float,
                   verbose: int) -> dict:
    """The best-scored of `ranked` whose measured latency is at most `budget * (1 + tolerance)`: a
    candidate whose first comparison is within that is confirmed by more comparisons on fresh
    instances (`confirm_measurements`: their mean, clear of their spread, must be within it too).
    Each measured entry gets 'measurements' and 'measured' (their mean; fractions of the original's
    latency)."""
    from tfprune.structured.budget import BudgetError

    limit = budget * (1 + tolerance)
    for entry in ranked:
        pruned = space.build(entry["genes"])

        def measure(pruned=pruned) -> float:
            return table.compare(model, [pruned], record=False)[0]

        measurements = entry["measurements"] = [measure()]
        within = measurements[0] <= limit and confirm_measurements(measurements, measure, band=(0.0, limit),
                                                                   wide=(0.0, limit))
        entry["measured"] = float(np.mean(measurements))
        if verbose:
            print(f"search_ratios: candidate with score {entry['score']:.4f} measures {entry['measured']:.3f} of the "
                  f"original latency (mean of {len(measurements)}; budget {budget})", flush=True)
        if within:
            return entry
    raise BudgetError(
        f"none of the {len(ranked)} best candidates measures within {tolerance:.0%} of the latency budget {budget}: "
        f"measured {', '.join(format(e['measured'], '.3f') for e in ranked)} of the original (the table under-predicts "
        "them). Fix: calibrate the table (LatencyTable.calibrate), lower the budget, or raise measured_candidates.",
        smallest=None, original=None)
