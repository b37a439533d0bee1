"""Budgeted structured pruning: the multiple-choice knapsack against brute force, MAC and parameter
budgets met on ResNet-20 and a MobileNetV2, exactness kept, and unreachable budgets refused."""

import itertools

import keras
import numpy as np
import pytest

from tfprune import analysis
from tfprune.structured import BudgetError, DependencyGraph, knapsack, prune_filters, verify
from tfprune.structured.budget import knapsack_real, option_values
from tfprune.structured.cost import macs_cost, params_cost
from tfprune.structured.models import resnet_cifar
from tfprune.structured.planner import kept_options


def brute_force(values, costs, budget):
    best = None
    for picks in itertools.product(*[range(len(v)) for v in values]):
        cost = sum(c[j] for c, j in zip(costs, picks))
        if cost <= budget:
            value = sum(v[j] for v, j in zip(values, picks))
            best = value if best is None else max(best, value)
    return best


@pytest.mark.parametrize("seed", range(30))
def test_knapsack_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    groups = int(rng.integers(1, 5))
    values = [list(rng.uniform(0, 10, int(rng.integers(1, 5)))) for _ in range(groups)]
    costs = [list(rng.integers(0, 12, len(v))) for v in values]
    budget = int(rng.integers(0, 30))
    picks = knapsack(values, costs, budget)
    expected = brute_force(values, costs, budget)
    if expected is None:
        assert picks is None
        return
    assert sum(c[j] for c, j in zip(costs, picks)) <= budget
    assert sum(v[j] for v, j in zip(values, picks)) == pytest.approx(expected)


def test_knapsack_hand_made_cases():
    # keeping the cheap, valuable option of group 1 beats spending the budget on group 0
    assert knapsack([[0, 3], [0, 5]], [[0, 2], [0, 3]], budget=4) == [0, 1]
    assert knapsack([[0, 3], [0, 5]], [[0, 2], [0, 3]], budget=5) == [1, 1]
    assert knapsack([[1, 2]], [[3, 4]], budget=2) is None
    # real, negative costs (savings) are shifted and rounded up: the answer always fits
    picks = knapsack_real([np.array([0.0, 1.0, 2.0])], [np.array([-3.0, -1.2, 0.0])], budget=-1.0)
    assert picks == [1]
    with pytest.raises(ValueError, match=">= 0"):
        knapsack([[1.0]], [[-1]], budget=3)


def test_option_values_and_kept_options():
    np.testing.assert_allclose(option_values(np.array([1.0, 3.0, np.inf]), np.array([1, 2, 3])), [0, 1.5, 2])
    graph = DependencyGraph(resnet_cifar(8))
    group = next(g for g in graph.groups if g.prunable and len(g.units) == 64)
    assert kept_options(group, 0.9, 8).tolist() == [8, 16, 24, 32, 40, 48, 56, 64]
    assert kept_options(group, 0.5, 8).tolist() == [32, 40, 48, 56, 64]
    assert kept_options(group, 0.9, None)[0] == 7


def test_cost_models_are_exact_at_full_width_and_for_macs_of_plans():
    model = resnet_cifar(8)
    graph = DependencyGraph(model)
    macs, params = macs_cost(graph), params_cost(graph)
    assert macs.cost({}) == pytest.approx(analysis.count_macs(model))
    assert params.cost({}) == pytest.approx(analysis.count_params(model))
    kept = {g.index: len(g.units) // 2 for g in graph.groups if g.prunable}
    pruned, report = prune_filters(model, plan={g.producers[0]: k for g, k in
                                                ((graph.groups[i], k) for i, k in kept.items())})
    assert macs.cost(kept) == pytest.approx(report.macs_after)
    assert params.cost(kept) == pytest.approx(report.params_after)


@pytest.fixture(scope="module")
def resnet20():
    return verify.randomize_statistics(resnet_cifar(20))


@pytest.mark.parametrize("kind,fraction", [("macs", 0.5), ("macs", 0.3), ("params", 0.4)])
def test_budgets_are_met_on_resnet20_and_exact(resnet20, kind, fraction):
    pruned, report = prune_filters(resnet20, round_to=8, **{f"target_{kind}": fraction})
    before, after = ((report.macs_before, report.macs_after) if kind == "macs"
                     else (report.params_before, report.params_after))
    assert after <= fraction * before
    assert after >= 0.85 * fraction * before  # uses the budget, does not over-prune
    assert report.budget["kind"] == kind and report.budget["predicted"] == after
    assert "Budget:" in str(report) and report.to_dict()["budget"]["target"] == fraction
    for layer in report.layers:
        if layer.channels_after < layer.channels_before:
            assert layer.channels_after % 8 == 0 and layer.channels_after >= 0.1 * layer.channels_before
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    assert verify.max_abs_difference(resnet20, pruned, report, x) < 1e-4


def test_budget_keeps_more_importance_than_uniform_at_the_same_macs(resnet20):
    _, uniform = prune_filters(resnet20, pruning_ratio=0.5, round_to=8)
    fraction = uniform.macs_after / uniform.macs_before
    _, budgeted = prune_filters(resnet20, target_macs=fraction, round_to=8)
    assert budgeted.macs_after <= uniform.macs_after

    def kept_l1(report):
        total = 0.0
        for entry in report.layers:
            if entry.type == "Conv2D":
                kernel = np.abs(resnet20.get_layer(entry.name).get_weights()[0]).reshape(-1, entry.channels_before)
                norms = kernel.sum(0)
                total += norms[entry.kept_indices].sum() / norms.mean()
        return total

    assert kept_l1(budgeted) >= kept_l1(uniform)


def test_ignored_layers_and_max_ratio_are_honoured(resnet20):
    pruned, report = prune_filters(resnet20, target_macs=0.5, round_to=8, max_pruning_ratio=0.6,
                                   ignored_layers=["s2b1_1_conv"])
    assert pruned.get_layer("s2b1_1_conv").filters == 32
    for entry in report.layers:
        assert entry.channels_after >= 0.4 * entry.channels_before
    assert report.macs_after <= 0.5 * report.macs_before


def test_unreachable_budget_says_the_smallest_cost(resnet20):
    with pytest.raises(BudgetError, match=r"smallest reachable macs is .* \(0\.\d+ of the original\)") as err:
        prune_filters(resnet20, target_macs=0.01, round_to=8)
    assert err.value.original == analysis.count_macs(resnet20) and 0.01 < err.value.smallest / err.value.original < 0.5
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        prune_filters(resnet20, target_macs=1.5)
    with pytest.raises(ValueError, match="one budget"):
        prune_filters(resnet20, target_macs=0.5, target_params=0.5)
    with pytest.raises(ValueError, match="latency_table"):
        prune_filters(resnet20, target_latency=0.5)
    with pytest.raises(ValueError, match="global_pruning"):
        prune_filters(resnet20, target_macs=0.5, global_pruning=True)


def test_a_cost_model_that_keeps_underestimating_ends_in_a_budget_error_with_costs(resnet20, monkeypatch):
    """When every rebuilt model stays above the budget (the cost model underestimates it), the planner
    tightens its goal on each attempt and finally raises a BudgetError that carries the costs."""
    from tfprune.structured import cost as cost_lib

    exact = cost_lib.exact_cost
    original = exact("macs", resnet20, None)
    goals = []
    real_counts = __import__("tfprune.structured.budget", fromlist=["budgeted_counts"]).budgeted_counts

    def recording_counts(graph, scores, cost, goal, *args, **kwargs):
        goals.append(goal)
        return real_counts(graph, scores, cost, goal, *args, **kwargs)

    monkeypatch.setattr("tfprune.structured.budget.budgeted_counts", recording_counts)
    def overshooting(kind, model, table):
        value = exact(kind, model, table)
        return value if value >= original else max(1.5 * value, 0.51 * original)  # never under the budget

    monkeypatch.setattr(cost_lib, "exact_cost", overshooting)
    with pytest.raises(BudgetError, match=r"after 6 plans.*Fix: raise the target") as err:
        prune_filters(resnet20, target_macs=0.5, round_to=8)
    assert err.value.original == original and 0 < err.value.smallest < 0.5 * original
    assert len(goals) == 6 and all(later < earlier for earlier, later in zip(goals, goals[1:]))


def test_mobilenet_v2_budgets():
    model = verify.randomize_statistics(keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3),
                                                                       alpha=0.35, classes=10))
    for kind in ("macs", "params"):
        pruned, report = prune_filters(model, round_to=8, **{f"target_{kind}": 0.6})
        after = report.macs_after if kind == "macs" else report.params_after
        before = report.macs_before if kind == "macs" else report.params_before
        assert 0.45 * before <= after <= 0.6 * before
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-3


def test_plan_applies_counts_and_ratios(resnet20):
    pruned, report = prune_filters(resnet20, plan={"s1b1_1_conv": 8, "s3b1_1_conv": 0.5})
    assert pruned.get_layer("s1b1_1_conv").filters == 8
    assert pruned.get_layer("s3b1_1_conv").filters == 32
    assert pruned.get_layer("s2b1_1_conv").filters == 32
    with pytest.raises(ValueError, match="not producer layers"):
        prune_filters(resnet20, plan={"nope": 3})
    with pytest.raises(ValueError, match="keeps 99 channels"):
        prune_filters(resnet20, plan={"s1b1_1_conv": 99})
