"""Removing whole residual branches (`structured.blocks`, `prune_filters(remove_blocks=True)`): which
branches qualify, the rebuilt model against the original with the branch's output zeroed, budgets
that only removal reaches, the cost model against the rebuilt model's counted MACs, a runtime with a
fixed cost per operator, the report, saving, and bad input."""

import json
import warnings

import keras
import numpy as np
import pytest
from keras import layers

from tfprune import analysis
from tfprune.cli import prune_filters as cli
from tfprune.structured import BudgetError, LatencyTable, prune_filters
from tfprune.structured.blocks import residual_branches
from tfprune.structured.cost import macs_cost
from tfprune.structured.fold import fold_batchnorm
from tfprune.structured.graph import DependencyGraph
from tfprune.structured.models import resnet_cifar
from tfprune.structured.pruner import rebuild
from tests.helpers import install_fake_runtime


@pytest.fixture(scope="module")
def resnet20():
    keras.utils.set_random_seed(0)
    return resnet_cifar(20)


def _randomize_batchnorm(model, seed=0):
    """Non-trivial BatchNormalization statistics, so that a dropped branch would show in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                               rng.normal(0, 0.2, beta.shape).astype("float32"),
                               rng.normal(0, 0.2, mean.shape).astype("float32"),
                               rng.uniform(0.5, 1.5, var.shape).astype("float32")])


def _zeroed_branches(model, branches):
    """A copy of `model` whose branches output exactly 0: their last BatchNormalization's scale and
    shift are 0."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for branch in branches:
        bn = copy.get_layer(branch.layers[-1])
        gamma, beta, mean, var = bn.get_weights()
        bn.set_weights([np.zeros_like(gamma), np.zeros_like(beta), mean, var])
    return copy


def test_basic_and_inverted_residual_blocks_qualify_bottlenecks_do_not(resnet20):
    branches = residual_branches(DependencyGraph(resnet20))
    assert [b.add for b in branches] == [f"s{s}b{b}_add" for s in (1, 2, 3) for b in (1, 2, 3)]
    first = branches[0]
    assert first.layers == ("s1b1_1_conv", "s1b1_1_bn", "s1b1_1_relu", "s1b1_2_conv", "s1b1_2_bn")
    # a branch with an ignored layer stays
    ignored = residual_branches(DependencyGraph(resnet20, ignored_layers=["s1b2_2_conv"]))
    assert [b.add for b in ignored] == [b.add for b in branches if b.add != "s1b2_add"]
    # a projection shortcut stays: the branch is the other input
    assert "s2b1_proj_conv" not in branches[3].layers and branches[3].layers[0] == "s2b1_1_conv"
    mobilenet = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35)
    names = [b.add for b in residual_branches(DependencyGraph(mobilenet))]
    assert names == [layer.name for layer in mobilenet.layers if isinstance(layer, layers.Add)]
    assert len(names) == 10
    # a bottleneck has two channel groups of its own: not removable by one group's count
    resnet50 = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3))
    assert residual_branches(DependencyGraph(resnet50)) == []


def test_branches_used_elsewhere_or_without_a_shortcut_do_not_qualify():
    x = keras.Input((8, 8, 4))
    a = layers.Conv2D(8, 3, padding="same", name="a")(x)
    inner = layers.Conv2D(8, 3, padding="same", name="inner")(a)
    b = layers.Conv2D(8, 3, padding="same", name="b")(inner)
    y = layers.Add(name="add_used")([a, b])
    side = layers.GlobalAveragePooling2D(name="side")(inner)  # the branch's tensor is used outside it
    other = layers.Conv2D(8, 1, name="other")(keras.Input((8, 8, 4), name="second"))
    z = layers.Add(name="add_two_sources")([y, other])
    model = keras.Model([x, other._keras_history.operation.input], [layers.GlobalAveragePooling2D()(z), side])
    assert residual_branches(DependencyGraph(model)) == []


@pytest.mark.parametrize("build", ["resnet", "mobilenet"])
def test_a_removed_branch_computes_what_a_zeroed_branch_does(resnet20, build):
    if build == "resnet":
        model = resnet20
    else:
        model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35,
                                               classifier_activation=None)
    _randomize_batchnorm(model)
    graph = DependencyGraph(model)
    branches = residual_branches(graph)[::2]
    smaller = rebuild(model, graph, np.zeros(len(graph.root_of), dtype=bool), branches)
    gone = {name for b in branches for name in b.layers} | {b.add for b in branches}
    assert {layer.name for layer in smaller.layers} == {layer.name for layer in model.layers} - gone
    x = np.random.default_rng(1).normal(size=(4,) + model.input_shape[1:]).astype("float32")
    expected = _zeroed_branches(model, branches).predict(x, verbose=0)
    got = smaller.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.abs(model.predict(x, verbose=0) - got).max() > 1e-3  # the branches did matter


def test_the_mac_cost_model_counts_a_removed_branch_as_the_rebuilt_model_does(resnet20):
    graph = DependencyGraph(resnet20)
    branches = residual_branches(graph)
    cost = macs_cost(graph).allow_removal(branches)
    removed = np.zeros(len(graph.root_of), dtype=bool)
    for chosen in ([branches[0]], [branches[1], branches[4], branches[8]]):
        kept = {b.group: 0 for b in chosen}
        real = analysis.count_macs(rebuild(resnet20, graph, removed, chosen))
        assert cost.cost(kept) == pytest.approx(real, rel=1e-9)
        assert cost.cost(kept) < cost.full
    deltas = cost.deltas({}, branches[0].group, np.array([0, 16]))
    assert deltas[1] == 0 and deltas[0] == pytest.approx(real_delta := (
        analysis.count_macs(rebuild(resnet20, graph, removed, [branches[0]])) - cost.full))
    assert real_delta < 0


def test_a_mac_budget_below_the_channel_floor_is_reached_by_removing_blocks(resnet20, tmp_path):
    with pytest.raises(BudgetError, match="remove_blocks=True") as caught:
        prune_filters(resnet20, target_macs=0.08, round_to=8)
    floor = caught.value.smallest / caught.value.original
    assert floor > 0.08
    pruned, report = prune_filters(resnet20, target_macs=0.08, round_to=8, remove_blocks=True)
    assert analysis.count_macs(pruned) <= 0.08 * analysis.count_macs(resnet20)
    assert report.removed_blocks and set(report.removed_blocks) <= {f"s{s}b{b}_add" for s in (1, 2, 3)
                                                                     for b in (1, 2, 3)}
    assert len(pruned.layers) < len(resnet20.layers)
    for name in report.removed_blocks:
        assert name not in [layer.name for layer in pruned.layers]
    removed_groups = [g for g in report.groups if g.status == "removed"]
    assert len(removed_groups) == len(report.removed_blocks) and all(g.channels_after == 0 for g in removed_groups)
    assert "Removed residual branches" in str(report) and report.to_dict()["removed_blocks"] == report.removed_blocks
    # the check against the original with the removed channels zeroed covers removed branches too
    from tfprune.structured import verify

    varied = verify.randomize_statistics(verify.copy_model(resnet20))  # non-zero shifts and biases
    varied_pruned, varied_report = prune_filters(varied, target_macs=0.08, round_to=8, remove_blocks=True)
    assert varied_report.removed_blocks
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    assert verify.max_abs_difference(varied, varied_pruned, varied_report, x) < 1e-4
    # a budget channels alone reach removes nothing
    _, plain = prune_filters(resnet20, target_macs=0.5, round_to=8, remove_blocks=True)
    assert plain.removed_blocks == []
    # the pruned model is a plain Keras model: it saves and loads
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(keras.saving.load_model(path).predict(x, verbose=0), pruned.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


PER_OP_MS, NS_PER_MAC = 0.02, 5e-12  # ResNet-20: about 0.9 ms of operators, 0.2 ms of MACs


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def per_op_ms(model):
    """A runtime that pays a fixed cost per operator (every layer of the deployed model) and a little per MAC."""
    ops = sum(1 for layer in model.layers if not isinstance(layer, keras.layers.InputLayer))
    return PER_OP_MS * ops + 1000 * NS_PER_MAC * analysis.count_macs(model)


def test_a_latency_budget_under_a_per_operator_cost_is_met_by_removing_blocks(resnet20, monkeypatch):
    clock = Clock()

    def make_runner(runtime, model, x, threads=None, io=True):
        ms = per_op_ms(model)

        def run():
            clock.now += ms / 1000

        return run

    install_fake_runtime(monkeypatch, make_runner)
    table = LatencyTable("tf", round_to=8, clock=clock, repeats=1, warmup=0, instances=1)
    original = per_op_ms(fold_batchnorm(resnet20))
    with pytest.raises(BudgetError, match="remove_blocks=True"):
        prune_filters(resnet20, target_latency=0.5, latency_table=table, round_to=8)
    pruned, report = prune_filters(resnet20, target_latency=0.5, latency_table=table, round_to=8,
                                   remove_blocks=True)
    real = per_op_ms(fold_batchnorm(pruned)) / original
    assert report.budget["measured_fraction"] == pytest.approx(real, rel=1e-6)
    assert abs(real / 0.5 - 1) <= 0.05 and report.removed_blocks
    # the prediction comes from the per-operator fit, not from blocks timed alone (which miss operators)
    assert abs(report.budget["predicted"] / report.budget["original"] / real - 1) <= 0.1


def test_remove_blocks_needs_a_budget_and_a_residual_model(resnet20):
    with pytest.raises(ValueError, match="remove_blocks=True needs a budget"):
        prune_filters(resnet20, pruning_ratio=0.5, remove_blocks=True)
    with pytest.raises(ValueError, match="remove_blocks must be True or False"):
        prune_filters(resnet20, target_macs=0.5, remove_blocks="yes")
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(16, 3, name="c0")(x)
    plain = keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(y)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, report = prune_filters(plain, target_macs=0.5, round_to=8, remove_blocks=True)
    assert any("no removable residual branch" in str(w.message) for w in caught)
    assert report.removed_blocks == []


def _cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["tfprune-prune-filters", *map(str, args)])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_cli_remove_blocks(resnet20, tmp_path, capsys):
    source = tmp_path / "resnet20.keras"
    resnet20.save(source)
    out = tmp_path / "out.keras"
    code, _, stderr = _cli(capsys, "--model", source, "--output", out, "--remove_blocks")
    assert code == 2 and "--remove_blocks needs a budget" in stderr and not out.exists()
    code, stdout, stderr = _cli(capsys, "--model", source, "--output", out, "--target_macs", "0.08", "--round_to",
                                "8", "--remove_blocks", "--json")
    assert code == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["removed_blocks"] and report["macs_after"] <= 0.08 * report["macs_before"]
    assert out.exists()
    code, _, stderr = _cli(capsys, "--model", source, "--output", tmp_path / "no.keras", "--target_macs", "0.08",
                           "--round_to", "8")
    assert code == 1 and "remove_blocks" in stderr and not (tmp_path / "no.keras").exists()


def test_between_plans_walks_from_one_plan_to_the_other():
    from tfprune.structured.budget import between_plans

    options = {0: np.array([8, 16, 24, 32]), 1: np.array([0, 8, 16])}
    low, high = {0: 8, 1: 0}, {0: 32, 1: 16}
    assert between_plans(low, high, 0.0, options) == low and between_plans(low, high, 1.0, options) == high
    path = [between_plans(low, high, t, options) for t in np.linspace(0, 1, 6)]
    assert all(a[g] <= b[g] for a, b in zip(path, path[1:]) for g in a)  # every group moves one way
    assert between_plans({0: 32, 1: 16}, {0: 8, 1: 16}, 0.5, options) == {0: 16, 1: 16}  # downwards too


def test_fit_per_operator_recovers_what_each_removed_operator_saves():
    from tfprune.structured.blocks import ResidualBranch
    from tfprune.structured.budget import fit_per_operator

    branches = [ResidualBranch("add1", 0, ("a",), 1, 4), ResidualBranch("add2", 0, ("b",), 2, 6)]

    class Estimate:  # the cost model's estimate: 10 ms minus 1 ms per kept-channel step, blind to operators
        def cost(self, kept):
            return 10.0 - 0.01 * sum(64 - k for k in kept.values())

    class Plan:
        def __init__(self, kept, per_operator):
            self.kept = kept
            removed = sum(b.operators for b in branches if kept[b.group] == 0)
            self.measured = (Estimate().cost(kept) + 0.3 - per_operator * removed) / 10.0

    plans = [Plan({0: 64, 1: 64, 2: 64}, 0.05), Plan({0: 32, 1: 0, 2: 64}, 0.05), Plan({0: 16, 1: 0, 2: 0}, 0.05)]
    assert fit_per_operator(plans, Estimate(), 10.0, branches) == pytest.approx((0.3, 0.05))
    assert fit_per_operator(plans[:1], Estimate(), 10.0, branches) == pytest.approx((0.3, 0.0))  # no slope yet
    assert fit_per_operator([], Estimate(), 10.0, branches) == (0.0, 0.0)
    slower = [Plan(p.kept, -0.05) for p in plans]  # removing operators never costs time: no negative slope
    offset, per_operator = fit_per_operator(slower, Estimate(), 10.0, branches)
    assert per_operator == 0.0 and offset == pytest.approx(np.mean([p.measured * 10 - Estimate().cost(p.kept)
                                                                     for p in slower]))
