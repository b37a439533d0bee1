"""Sensitivity analysis, BatchNormalization re-estimation and the per-group ratio search, on a model
with one deliberately fragile layer: 'fragile' has 16 equally strong filters that all matter, while
only 4 of the 16 filters of 'robust' matter (the others are near zero, so L1 removes them first)."""

import keras
import numpy as np
import pytest
from keras import layers

from tfprune import analysis
from tfprune.structured import (Plan, prune_filters, recalibrate_batchnorm, search_ratios, sensitivity)
from tests.helpers import install_fake_runtime

X = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype("float32")


def fragile_model():
    rng = np.random.default_rng(1)
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(16, 3, padding="same", name="fragile")(x)
    y = layers.BatchNormalization(name="bn")(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(16, 1, name="robust", activation="relu")(y)
    y = layers.Flatten()(y)
    model = keras.Model(x, layers.Dense(4, name="head")(y), name="fragile_net")
    kernel = rng.normal(size=(3, 3, 3, 16))
    kernel /= np.abs(kernel).sum(axis=(0, 1, 2))  # equal L1 norms
    model.get_layer("fragile").set_weights([kernel.astype("float32"), np.zeros(16, "float32")])
    robust = rng.normal(size=(1, 1, 16, 16))
    robust[..., 4:] *= 1e-3
    model.get_layer("robust").set_weights([robust.astype("float32"), np.zeros(16, "float32")])
    model.get_layer("head").set_weights([rng.normal(size=(8 * 8 * 16, 4)).astype("float32"), np.zeros(4, "float32")])
    recalibrate_batchnorm(model, X, steps=2, batch_size=32)
    return model


@pytest.fixture(scope="module")
def model():
    return fragile_model()


@pytest.fixture(scope="module")
def score(model):
    reference = np.asarray(model(X, training=False))

    def agreement(m):  # higher is better: minus the squared deviation from the unpruned outputs, relative
        return -float(np.mean((np.asarray(m(X, training=False)) - reference) ** 2) / np.var(reference))

    return agreement


def test_recalibrate_batchnorm_matches_numpy():
    model = fragile_model()
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(16, 5.0, "float32"))
    recalibrate_batchnorm(model, (X, np.zeros(64)), steps=2, batch_size=32)
    conv = keras.Model(model.input, model.get_layer("fragile").output)
    parts = [np.asarray(conv(X[i:i + 32])) for i in (0, 32)]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([p.mean((0, 1, 2)) for p in parts], 0), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([p.var((0, 1, 2)) for p in parts], 0),
                               rtol=1e-4, atol=1e-6)
    assert "call" not in vars(bn)
    with pytest.raises(ValueError, match="no data"):
        recalibrate_batchnorm(model, X[:0])


def test_recalibrate_batchnorm_over_every_batch():
    model = fragile_model()
    bn = model.get_layer("bn")
    x = X[:56]  # batches of 24, 24 and 8: the last one counts as much as the others
    recalibrate_batchnorm(model, x, steps=None, batch_size=24)
    conv = keras.Model(model.input, model.get_layer("fragile").output)
    parts = [np.asarray(conv(x[i:i + 24])) for i in (0, 24, 48)]
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([p.mean((0, 1, 2)) for p in parts], 0), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([p.var((0, 1, 2)) for p in parts], 0),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="positive int or None"):
        recalibrate_batchnorm(model, x, steps=0)


def test_sensitivity_finds_the_fragile_layer(model, score, capsys):
    result = sensitivity(model, score, ratios=(0.25, 0.5, 0.75), recalibrate_bn=X, calibration_steps=2,
                         batch_size=32, verbose=0)
    assert result.groups == ["fragile", "robust"] and result.channels == {"fragile": 16, "robust": 16}
    assert result.most_sensitive()[0] == "fragile"
    assert max(result.drop("robust")) < 0.05 * min(result.drop("fragile"))
    assert all(a >= b for a, b in zip(result.metrics["fragile"], result.metrics["fragile"][1:]))
    assert result.achieved["robust"] == [0.25, 0.5, 0.75]
    # each value is the metric of the model pruned in that group only
    pruned, _ = prune_filters(model, pruning_ratio=0.0, pruning_ratio_dict={"robust": 0.5})
    assert result.metrics["robust"][1] == pytest.approx(score(pruned), rel=1e-5)
    text = str(result)
    assert "fragile (16)" in text and "0.75" in text
    assert result.to_dict()["baseline"] == pytest.approx(0.0)
    again = sensitivity(model, score, ratios=(0.25, 0.5, 0.75), groups=["robust"], recalibrate_bn=X,
                        calibration_steps=2, batch_size=32, verbose=0)
    assert again.metrics["robust"] == result.metrics["robust"]  # deterministic
    with pytest.raises(ValueError, match="not a prunable group"):
        sensitivity(model, score, groups=["head"], verbose=0)


def test_sensitivity_plot(model, score):
    plt = pytest.importorskip("matplotlib.pyplot")
    result = sensitivity(model, score, ratios=(0.5,), verbose=0)
    ax = result.plot()
    assert len(ax.lines) == 3
    plt.close("all")


@pytest.mark.parametrize("method", ["evolution", "abc"])
def test_search_beats_uniform_within_budget_and_is_deterministic(model, score, method, capsys):
    kwargs = dict(budget=0.6, method=method, population=8, generations=5, recalibrate_bn=X, seed=0,
                  calibration_steps=1, batch_size=64, verbose=1)
    plan, history = search_ratios(model, score, **kwargs)
    assert "generation 5/5" in capsys.readouterr().out
    macs = analysis.count_macs(model)
    assert all(entry["cost"] <= 0.6 * macs for entry in history)  # every candidate within budget
    assert all(entry["cost"] == analysis.count_macs(prune_filters(model, plan=entry["kept"])[0])
               for entry in history[:3])
    uniform = history[0]  # the first candidate is the uniform plan at the budget
    assert uniform["kept"] == {"fragile": 10, "robust": 10}
    assert plan.score > uniform["score"] + 0.1 and plan.score == max(e["score"] for e in history)
    assert plan.kept["fragile"] == 13 and plan.kept["robust"] <= 5  # the fragile layer keeps more
    pruned, report = prune_filters(model, plan=plan)
    assert report.macs_after == plan.cost <= 0.6 * macs
    recalibrate_batchnorm(pruned, X, steps=1, batch_size=64)
    assert score(pruned) == pytest.approx(plan.score, rel=1e-5)
    again, history2 = search_ratios(model, score, **dict(kwargs, verbose=0))
    assert again == plan and [e["score"] for e in history2] == [e["score"] for e in history]
    assert isinstance(plan, Plan) and "fragile" in str(plan)


def test_search_errors(model, score):
    with pytest.raises(ValueError, match="method must be one of"):
        search_ratios(model, score, 0.5, method="grid")
    with pytest.raises(ValueError, match="not reachable"):
        search_ratios(model, score, 0.001, verbose=0)
    with pytest.raises(ValueError, match="budget must be"):
        search_ratios(model, score, 1.5)


def test_search_under_a_latency_budget(model, score, monkeypatch):
    from tfprune.structured import LatencyTable, timing

    now = [0.0]

    def make_runner(runtime, m, x, threads=None, io=True):  # a fake runtime: 1 ns per MAC, read by a fake clock
        macs = analysis.count_macs(m)
        return lambda: now.__setitem__(0, now[0] + 1e-9 * macs)

    install_fake_runtime(monkeypatch, make_runner)
    table = LatencyTable("tflite", round_to=None, clock=lambda: now[0], repeats=1, warmup=0, max_widths=4)
    plan, history = search_ratios(model, score, 0.6, budget_kind="latency", latency_table=table, population=4,
                                  generations=2, recalibrate_bn=X, calibration_steps=1, verbose=0)
    full = table.predict(model)
    assert all(e["cost"] <= 0.6 * full + 1e-9 for e in history) and plan.kind == "latency"


def widths(m):
    return tuple(m.get_layer(name).filters for name in ("fragile", "robust"))


def slow_runtime(monkeypatch):
    """A fake runtime at 1 ns per MAC, slower by `slow[widths]` on whole models with those widths;
    returns (slow, a LatencyTable on it)."""
    from tfprune.structured import LatencyTable

    now, slow = [0.0], {}

    def make_runner(runtime, m, x, threads=None, io=True):
        seconds = 1e-9 * analysis.count_macs(m)
        if len(m.layers) > 4 and widths(m) in slow:  # a whole model with the penalised widths
            seconds *= slow[widths(m)]
        return lambda: now.__setitem__(0, now[0] + seconds)

    install_fake_runtime(monkeypatch, make_runner)
    return slow, LatencyTable("tflite", round_to=None, clock=lambda: now[0], repeats=1, warmup=0, max_widths=4,
                              instances=1)


def test_a_measured_latency_check_skips_candidates_that_run_over_the_budget(model, score, monkeypatch):
    """The search budgets by the table's prediction; with `latency_tolerance` its best candidates are
    measured, and one that runs over the budget (here: the runtime is slower on the top-scored plan's
    widths than the table says) gives way to the next best that does not."""
    from tfprune.structured import BudgetError

    slow, table = slow_runtime(monkeypatch)
    settings = dict(budget_kind="latency", latency_table=table, population=4, generations=2, recalibrate_bn=X,
                    calibration_steps=1, verbose=0)
    trusted, history = search_ratios(model, score, 0.6, **settings)
    checked, _ = search_ratios(model, score, 0.6, latency_tolerance=0.05, **settings)
    assert checked.kept == trusted.kept and trusted.measured is None  # the runtime follows the table here
    assert checked.measured == pytest.approx(checked.cost / table.predict(model), rel=1e-6)
    assert checked.measured <= 0.6 * 1.05 and "measured" in str(checked)
    top = prune_filters(model, plan=trusted)[0]
    slow[widths(top)] = 2.0
    moved, _ = search_ratios(model, score, 0.6, latency_tolerance=0.05, **settings)
    assert moved.kept != trusted.kept and moved.measured <= 0.6 * 1.05
    ranked = sorted(history, key=lambda e: (-e["score"], e["cost"]))
    assert moved.score == ranked[1]["score"]  # the next best by score
    for entry in ranked[:3]:  # every measured candidate runs over: an error with the measurements
        slow[widths(prune_filters(model, plan=Plan(entry["kept"]))[0])] = 2.0
    with pytest.raises(BudgetError, match="none of the 3 best candidates measures within 5%"):
        search_ratios(model, score, 0.6, latency_tolerance=0.05, measured_candidates=3, **settings)
    with pytest.raises(ValueError, match="latency_tolerance checks a latency budget"):
        search_ratios(model, score, 0.6, latency_tolerance=0.05, population=4, generations=2, verbose=0)
    with pytest.raises(ValueError, match="latency_tolerance must be a fraction"):
        search_ratios(model, score, 0.6, latency_tolerance=2.0, **settings)


def test_a_measured_latency_check_confirms_a_lucky_first_comparison(model, score, monkeypatch):
    """The top-scored candidate runs at twice the table's latency, but its first comparison reads
    under the budget (a lucky draw on a noisy host): the confirmations after it show that it runs
    over, and the next best candidate, confirmed within the budget, is returned with every
    comparison it took."""
    from tfprune.structured.confirmation import CONFIRMATIONS

    slow, table = slow_runtime(monkeypatch)
    settings = dict(budget_kind="latency", latency_table=table, population=4, generations=2, recalibrate_bn=X,
                    calibration_steps=1, verbose=0)
    trusted, history = search_ratios(model, score, 0.6, **settings)
    top = prune_filters(model, plan=trusted)[0]
    slow[widths(top)] = 2.0
    real_compare, seen, calls = table.compare, set(), []

    def lucky_compare(original, models, record=True):
        fractions = real_compare(original, models, record=record)
        out = []
        for pruned, fraction in zip(models, fractions):
            calls.append(widths(pruned))
            out.append(0.5 if widths(pruned) not in seen else fraction)  # the first read is always lucky
            seen.add(widths(pruned))
        return out

    monkeypatch.setattr(table, "compare", lucky_compare)
    checked, _ = search_ratios(model, score, 0.6, latency_tolerance=0.05, **settings)
    assert checked.kept != trusted.kept
    assert calls.count(widths(top)) == 1 + CONFIRMATIONS  # the top candidate: its first read, then two over
    ranked = sorted(history, key=lambda e: (-e["score"], e["cost"]))
    assert checked.score == ranked[1]["score"]
    real = checked.cost / table.predict(model)
    assert checked.measurements == pytest.approx([0.5] + [real] * CONFIRMATIONS, rel=1e-6)
    assert checked.measured == pytest.approx(np.mean(checked.measurements)) and real <= 0.6 * 1.05
