"""LatencyTable: deterministic measurements with a fake clock (each timed call advances it by a cost
proportional to the model's MACs), predictions checked against that formula, the JSON cache (round
trip, other keys re-measured, corrupt files refused), latency budgets, and a real-runtime smoke test."""

import json
import os

import keras
import numpy as np
import pytest
from keras import layers

from tfprune import analysis
from tfprune.structured import LatencyTable, LatencyTableError, prune_filters, timing
from tfprune.structured.fold import fold_batchnorm
from tfprune.structured.graph import DependencyGraph
from tfprune.structured.latency import LatencyFit, choose_fit, cpu_model, split_blocks, sqrt_macs
from tfprune.keras_graph import flatten_model
from tfprune.structured.models import resnet_cifar
from tests.helpers import install_fake_runtime

NS_PER_MAC, CALL_MS = 1e-9, 0.01  # fake cost: 1 ns per MAC and sample, 10 us per call


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def fake(monkeypatch):
    clock = FakeClock()
    built = []

    def make_runner(runtime, model, x, threads=None, io=True):
        macs = analysis.count_macs(model)
        built.append(model)

        def run():
            clock.now += NS_PER_MAC * macs * x.shape[0] + CALL_MS / 1000

        return run

    install_fake_runtime(monkeypatch, make_runner)
    clock.built = built
    return clock


def fake_ms(model, batch=1):
    """What the fake runtime takes for `model` as deployed (BatchNormalization folded)."""
    return 1000 * NS_PER_MAC * analysis.count_macs(fold_batchnorm(model)) * batch + CALL_MS


def tiny_model():
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(16, 3, padding="same", use_bias=False, name="c0")(x)
    y = layers.BatchNormalization(name="bn0")(y)
    y = layers.ReLU(name="r0")(y)
    z = layers.Conv2D(16, 3, padding="same", name="c1")(y)
    y = layers.ReLU(name="r1")(layers.Add(name="add")([y, z]))
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = layers.Conv2D(24, 1, name="c2", activation="relu")(y)
    y = layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, layers.Dense(4, name="logits")(y), name="tiny")


def test_blocks_fuse_batchnorm_and_activations():
    calls, _, outputs = flatten_model(tiny_model())
    blocks, untimed = split_blocks(calls, outputs)
    assert [b.name for b in blocks] == ["c0+bn0+r0", "c1", "add+r1", "dw", "c2", "gap", "logits"]
    assert [b.producer for b in blocks] == [True, True, False, False, True, False, True]
    assert untimed == []
    # a BatchNormalization that is not the next call (a ResNet projection shortcut) still fuses
    names = [b.name for b in split_blocks(*[flatten_model(resnet_cifar(8))[i] for i in (0, 2)])[0]]
    assert "s2b1_proj_conv+s2b1_proj_bn" in names and not any(n.endswith("_bn") and "+" not in n for n in names)


def test_predictions_follow_the_fake_runtime(fake, tmp_path):
    model = tiny_model()
    table = LatencyTable("tflite", threads=1, round_to=8, cache=tmp_path / "lat.json", clock=fake, repeats=3,
                         warmup=1)
    table.measure(model)
    # widths 8 and 16 for both residual tensors, 8/16/24 for c2's output
    assert table.measured == 2 + 4 + 2 + 2 + 2 * 3 + 3 + 3
    assert table.predict(model) == pytest.approx(fake_ms(model))
    for ratio in (0.25, 0.5):
        pruned, _ = prune_filters(model, pruning_ratio=ratio, round_to=8)
        assert table.predict(pruned) == pytest.approx(fake_ms(pruned), rel=1e-9)
    assert table.measured == 22  # predictions of pruned models need no new measurement
    batch = LatencyTable("tflite", batch_size=4, round_to=8, cache=tmp_path / "lat.json", clock=fake, repeats=2)
    assert batch.predict(model) == pytest.approx(fake_ms(model, 4))


def test_blocks_subtract_the_call_cost_of_the_same_moment(monkeypatch):
    """A runtime whose calls cost three times as much for its first 100 calls (warming up): the empty
    model is timed beside every block, so the blocks are what they cost above a call, not 0."""
    clock = FakeClock()
    calls = [0]

    def make_runner(runtime, model, x, threads=None, io=True):
        macs = analysis.count_macs(model)

        def run():
            calls[0] += 1
            clock.now += NS_PER_MAC * macs * x.shape[0] + (3 if calls[0] <= 100 else 1) * CALL_MS / 1000

        return run

    install_fake_runtime(monkeypatch, make_runner)
    model = tiny_model()
    table = LatencyTable("tf", round_to=8, clock=clock, repeats=5, warmup=1)
    table.measure(model)
    assert calls[0] > 100 and table.empty_ms == pytest.approx(CALL_MS)
    pruned, _ = prune_filters(model, pruning_ratio=0.5, round_to=8)
    for m in (model, pruned):
        assert table.blocks_ms(m) == pytest.approx(fake_ms(m) - CALL_MS, rel=1e-6)
    assert table.predict(pruned) == pytest.approx(fake_ms(pruned), rel=1e-6)


def test_interpolation_between_measured_widths(fake):
    model = tiny_model()
    table = LatencyTable("tf", round_to=4, max_widths=3, clock=fake, repeats=2, warmup=0)
    table.measure(model)
    pruned, _ = prune_filters(model, pruning_ratio=0.25, round_to=4)  # 12 channels: between 4, 8|..., 16
    measured_before = table.measured
    # MACs are bilinear in the widths, so bilinear interpolation of the fake runtime is exact
    assert table.predict(pruned) == pytest.approx(fake_ms(pruned))
    assert table.measured == measured_before


def test_cache_round_trip_and_key_mismatch(fake, tmp_path):
    path = tmp_path / "lat.json"
    model = tiny_model()
    first = LatencyTable("tflite", round_to=8, cache=path, clock=fake, repeats=2)
    expected = first.predict(prune_filters(model, pruning_ratio=0.5, round_to=8)[0])
    first.measure(model)
    content = json.loads(path.read_text())
    (key, table), = content["tables"].items()
    assert json.loads(key)["cpu"] and table["key"]["runtime"] == "tflite" and table["key"]["threads"] == 1
    assert "version" in table["key"] and table["key"]["batch_size"] == 1
    assert sorted(os.listdir(tmp_path)) == ["lat.json"]  # written atomically: no temporary file left
    again = LatencyTable("tflite", round_to=8, cache=path, clock=fake, repeats=2)
    fake.built.clear()
    assert again.predict(prune_filters(model, pruning_ratio=0.5, round_to=8)[0]) == pytest.approx(expected)
    again.measure(model)
    assert again.measured == 0 and fake.built == []  # everything came from the cache
    other = LatencyTable("tflite", threads=2, round_to=8, cache=path, clock=fake, repeats=2)
    other.measure(model)
    assert other.measured > 0  # another key: measured afresh, both kept in the file
    assert len(json.loads(path.read_text())["tables"]) == 2


def test_corrupt_cache_is_a_clear_error(tmp_path):
    path = tmp_path / "lat.json"
    path.write_text("{not json")
    with pytest.raises(LatencyTableError, match="not a valid latency table.*Fix: delete the file"):
        LatencyTable("tflite", cache=path)
    path.write_text(json.dumps({"format": "something else", "tables": {}}))
    with pytest.raises(LatencyTableError, match="format"):
        LatencyTable("tflite", cache=path)
    with pytest.raises(ValueError, match="runtime must be one of"):
        LatencyTable("onnx")


def test_latency_budget(fake):
    model = tiny_model()
    table = LatencyTable("tflite", round_to=8, clock=fake, repeats=2, warmup=0)
    pruned, report = prune_filters(model, target_latency=0.6, latency_table=table, round_to=8)
    assert report.budget["kind"] == "latency" and report.budget["unit"] == "ms"
    assert report.budget["predicted"] <= 0.6 * report.budget["original"]
    assert report.budget["predicted"] == pytest.approx(fake_ms(pruned))
    assert report.budget["original"] == pytest.approx(fake_ms(model))


def test_real_runtimes_smoke():
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(16, 3, padding="same", activation="relu", name="c0")(x)
    model = keras.Model(x, layers.Dense(2, name="d")(layers.GlobalAveragePooling2D()(y)))
    for runtime in ("tf", "tflite"):
        table = LatencyTable(runtime, round_to=8, repeats=3, warmup=1)
        table.measure(model)
        pruned, _ = prune_filters(model, pruning_ratio=0.5, round_to=8)
        assert table.predict(model) > 0 and table.predict(pruned) > 0
        assert table.measured == 2 + 2 + 2  # c0 at 8/16, gap at 8/16, d at 8/16


def test_blocks_sharing_a_configuration_at_different_widths(fake):
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(16, 3, padding="same", activation="relu", name="c0")(x)
    a = layers.GlobalAveragePooling2D()(layers.Conv2D(24, 1, activation="relu", name="a")(y))
    b = layers.GlobalAveragePooling2D()(layers.Conv2D(40, 1, activation="relu", name="b")(y))
    model = keras.Model(x, layers.Dense(3, name="d")(layers.Concatenate(name="cat")([a, b])))
    table = LatencyTable("tflite", round_to=8, max_widths=3, clock=fake, repeats=1, warmup=0)
    blocks, _ = table.blocks(model)
    by_name = {blk.name: blk for blk in blocks}
    assert by_name["a"].signature() == by_name["b"].signature()  # measured as one table of widths
    for ratio in (0.3, 0.5, 0.7):
        pruned, _ = prune_filters(model, pruning_ratio=ratio, round_to=8)
        assert table.predict(pruned) == pytest.approx(fake_ms(pruned))


WHOLE_SCALE = 0.6  # the fake runtime runs whole models 40% faster than their blocks timed alone


@pytest.fixture
def fused_fake(monkeypatch):
    """A fake runtime whose whole models (more than 6 layers) take 0.6 of their MACs' cost plus the call:
    blocks timed alone over-estimate them, as a real interpreter's fused whole model does."""
    clock = FakeClock()
    built = []

    def make_runner(runtime, model, x, threads=None, io=True):
        built.append(model)
        seconds = whole_ms(model, x.shape[0]) / 1000

        def run():
            clock.now += seconds

        return run

    install_fake_runtime(monkeypatch, make_runner)
    clock.built = built
    return clock


def whole_ms(model, batch=1):
    scale = WHOLE_SCALE if len(model.layers) > 6 else 1.0
    return 1000 * NS_PER_MAC * analysis.count_macs(fold_batchnorm(model)) * batch * scale + CALL_MS


def test_calibration_fits_whole_models(fused_fake, tmp_path):
    model = resnet_cifar(8)
    table = LatencyTable("tflite", round_to=8, cache=tmp_path / "lat.json", clock=fused_fake, repeats=2, warmup=0)
    table.measure(model)
    pruned = [prune_filters(model, pruning_ratio=r, round_to=8)[0] for r in (0.25, 0.5, 0.75)]
    assert table.fit(model)[1] == 1.0  # nothing measured end to end yet: blocks as timed
    before = [table.predict(p) / whole_ms(p) - 1 for p in pruned]
    assert min(abs(e) for e in before) > 0.1  # blocks timed alone do not add up to the pruned whole models
    summary = table.calibrate(model, samples=4, seed=0)
    assert summary["points"] == 4 and len(summary["errors"]) == 4
    assert min(abs(e) for e in summary["errors"]) > 0.1
    intercept, scale, per_mac, per_sqrt = table.fit(model)
    assert scale == pytest.approx(WHOLE_SCALE, rel=1e-6) and summary["scale"] == scale
    assert per_mac == 0.0 and summary["ms_per_mac"] == 0.0  # 4 pruned points: too few for a MACs term
    assert intercept == pytest.approx(CALL_MS, abs=1e-6)  # the call; every MAC is in some block
    for p in pruned:  # not among the calibration plans, predicted exactly now
        assert table.predict(p) == pytest.approx(whole_ms(p), rel=1e-6)
    assert table.predict(model) == pytest.approx(whole_ms(model), rel=1e-6)
    # the fit is cached: a new table on the same file predicts the same without timing anything
    again = LatencyTable("tflite", round_to=8, cache=tmp_path / "lat.json", clock=fused_fake, repeats=2, warmup=0)
    fused_fake.built.clear()
    assert again.predict(pruned[1]) == pytest.approx(whole_ms(pruned[1]), rel=1e-6) and fused_fake.built == []
    again.calibrate(model, samples=4)
    assert fused_fake.built == []  # the cached points count: nothing more to time
    again.calibrate(model, samples=5)
    assert len(again.models[next(iter(again.models))]["calibration"]) == 5
    # the same seed draws the same plans: calibrating again adds the same four points
    other = LatencyTable("tflite", round_to=8, clock=fused_fake, repeats=2, warmup=0)
    assert other.calibrate(model, samples=4, seed=0)["errors"] == pytest.approx(summary["errors"])


def test_compare_uses_fresh_instances_and_converts_the_original_once(fused_fake, monkeypatch):
    model = resnet_cifar(8)
    pruned, _ = prune_filters(model, pruning_ratio=0.5, round_to=8)
    table = LatencyTable("tflite", round_to=8, clock=fused_fake, repeats=2, warmup=0, instances=3)
    prepared = []
    monkeypatch.setattr(timing, "prepare", lambda runtime, m: prepared.append(m) or m)
    fused_fake.built.clear()
    (fraction,) = table.compare(model, [pruned], record=False)
    assert len(fused_fake.built) == 6 and fraction == pytest.approx(whole_ms(pruned) / whole_ms(model))
    originals = fused_fake.built[:3]
    assert len({id(m) for m in originals}) == 1 and len(prepared) == 1  # 3 instances of one conversion
    table.compare(model, [pruned, pruned], record=False)
    assert len(fused_fake.built) == 18  # fresh instances of the original for every comparison
    assert len(prepared) == 1 and fused_fake.built[6] is originals[0]  # converted once
    assert table.models == {} or all("calibration" not in m for m in table.models.values())
    with pytest.raises(ValueError, match="instances must be a positive int"):
        LatencyTable("tflite", instances=0)


def test_measured_latency_budget_meets_the_runtime(fused_fake):
    model = resnet_cifar(8)
    budget = 0.5
    predicted_only = LatencyTable("tflite", round_to=8, clock=fused_fake, repeats=2, warmup=0)
    trusting, report = prune_filters(model, target_latency=budget, latency_table=predicted_only, round_to=8,
                                     latency_tolerance=None)
    assert "measured_fraction" not in report.budget
    trusted_real = whole_ms(trusting) / whole_ms(model)
    assert trusted_real > budget * 1.1  # the uncalibrated table under-estimates pruned models: over budget
    table = LatencyTable("tflite", round_to=8, clock=fused_fake, repeats=2, warmup=0)
    pruned, report = prune_filters(model, target_latency=budget, latency_table=table, round_to=8)
    real = whole_ms(pruned) / whole_ms(model)
    assert report.budget["measured_fraction"] == pytest.approx(real, rel=1e-6)
    assert abs(real / budget - 1) <= 0.05 and report.budget["attempts"] >= 2
    assert "measured" in str(report) and report.macs_after < analysis.count_macs(trusting)
    with pytest.raises(ValueError, match="latency_tolerance must be a fraction"):
        prune_filters(model, target_latency=budget, latency_table=table, latency_tolerance=1.5)


def test_sample_plans_cover_the_range_deterministically():
    from tfprune.structured.latency_calibration import sample_plans

    options = [np.array([8, 16, 24, 32]), np.array([8, 16])]
    first = sample_plans(options, 6, np.random.default_rng(3))
    assert first == sample_plans(options, 6, np.random.default_rng(3)) and len(first) == 6
    uniform = [p for i, p in enumerate(first) if i % 2 == 0]
    assert len({tuple(p) for p in uniform}) >= 2  # uniform plans at different fractions
    assert all(0 <= j < len(o) for p in first for j, o in zip(p, options))


def test_sample_plans_reach_lightly_pruned_widths_without_bias():
    from tfprune.structured.latency_calibration import _round_to_option

    rng = np.random.default_rng(0)
    options = np.array([8, 16])  # a 16-channel layer with round_to=8
    picks = [options[_round_to_option(options, 15.0, rng)] for _ in range(4000)]
    assert np.mean(picks) == pytest.approx(15.0, abs=0.2)  # the expected width is the asked one
    assert _round_to_option(options, 16.0, rng) == 1 and _round_to_option(options, 8.0, rng) == 0
    assert _round_to_option(options, 3.0, rng) == 0  # below the smallest option: the smallest
    wide = np.array([8, 16, 24, 32])
    assert {int(wide[_round_to_option(wide, 20.0, rng)]) for _ in range(200)} == {16, 24}


def test_a_budget_just_below_the_predicted_smallest_plan_is_measured(fused_fake):
    from tfprune.structured import BudgetError

    model = resnet_cifar(8)
    table = LatencyTable("tflite", round_to=8, clock=fused_fake, repeats=2, warmup=0)
    table.calibrate(model, samples=4, seed=0)
    with pytest.raises(BudgetError) as caught:
        prune_filters(model, target_latency=0.01, latency_table=table, round_to=8, latency_tolerance=None)
    smallest = caught.value.smallest / caught.value.original  # the calibrated table is exact here
    budget = smallest / 1.03
    # the prediction-only path refuses it, as the table says the smallest plan is 3% over
    with pytest.raises(BudgetError):
        prune_filters(model, target_latency=budget, latency_table=table, round_to=8, latency_tolerance=None)
    # measured with a 5% tolerance, the smallest plan is timed and kept: 3% over is within
    pruned, report = prune_filters(model, target_latency=budget, latency_table=table, round_to=8)
    real = whole_ms(pruned) / whole_ms(model)
    assert real == pytest.approx(smallest, rel=1e-6) and report.budget["measured_fraction"] == pytest.approx(real)
    assert 1.0 < report.budget["measured_fraction"] / budget <= 1.05
    # 8% over is outside the tolerance: the smallest plan is measured, and the error names its latency
    with pytest.raises(BudgetError, match=f"smallest reachable latency, measured .* is {smallest:.3f} of the original"):
        prune_filters(model, target_latency=smallest / 1.08, latency_table=table, round_to=8)


@pytest.mark.parametrize("budget", [0.3, 0.5, 0.7])
def test_a_table_that_over_predicts_the_smallest_plan_still_meets_the_budget(monkeypatch, budget):
    """Blocks timed alone that cost the same at every width (per-op costs dominate, as in TensorFlow at
    batch 1) make the table predict every plan near the original; whole models do get faster. The
    budget is not refused on that prediction: the smallest plan is measured, and since the table
    cannot tell the plans between it and the original apart, plans under MAC budgets are measured
    until one lands within the tolerance (not the smallest plan, far below the budget)."""
    from tfprune.structured import BudgetError

    clock = FakeClock()

    def make_runner(runtime, model, x, threads=None, io=True):
        macs = analysis.count_macs(model)
        whole = len(model.layers) > 6

        def run():  # a block costs one call whatever its width; a whole model follows its MACs
            clock.now += (1000 * NS_PER_MAC * macs + CALL_MS if whole else 2 * CALL_MS) / 1000

        return run

    install_fake_runtime(monkeypatch, make_runner)
    model = resnet_cifar(8)
    table = LatencyTable("tflite", round_to=8, clock=clock, repeats=2, warmup=0)
    original_ms = 1000 * NS_PER_MAC * analysis.count_macs(fold_batchnorm(model)) + CALL_MS
    with pytest.raises(BudgetError):  # on the prediction alone the budget looks unreachable
        prune_filters(model, target_latency=budget, latency_table=table, round_to=8, latency_tolerance=None)
    pruned, report = prune_filters(model, target_latency=budget, latency_table=table, round_to=8)
    real = (1000 * NS_PER_MAC * analysis.count_macs(fold_batchnorm(pruned)) + CALL_MS) / original_ms
    assert report.budget["measured_fraction"] == pytest.approx(real, rel=1e-6)
    assert abs(real / budget - 1) <= 0.05, (real, report.budget["attempts"])
    assert report.budget["attempts"] <= 6 + 4


def flat_fraction(r, slope):
    """Measured latency fraction of a whole model whose MACs are `r` of the original's: nearly flat
    (`slope`) from 0.3 to 0.7, a stretch where pruning more saves little, as per-op overheads make it."""
    if r <= 0.3:
        return 1.5 * r
    top = 0.45 + 0.4 * slope
    if r <= 0.7:
        return 0.45 + slope * (r - 0.3)
    return top + (r - 0.7) * (1 - top) / 0.3


@pytest.fixture
def flat_fake(monkeypatch):
    """Blocks cost their MACs; a whole model (more than 6 layers) costs `flat_fraction` of the reference's."""
    clock = FakeClock()
    clock.reference, clock.slope = None, None

    def make_runner(runtime, model, x, threads=None, io=True):
        macs = analysis.count_macs(model)
        if len(model.layers) > 6:
            full = analysis.count_macs(clock.reference)
            seconds = NS_PER_MAC * full * x.shape[0] * flat_fraction(macs / full, clock.slope)
        else:
            seconds = NS_PER_MAC * macs * x.shape[0] + CALL_MS / 1000

        def run():
            clock.now += seconds

        return run

    install_fake_runtime(monkeypatch, make_runner)
    return clock


@pytest.mark.parametrize("slope, budget, band, measurements", [(0.125, 0.49, 0.025, 3), (0.02, 0.5, 0.05, 3)])
def test_measured_budget_crosses_a_flat_stretch(flat_fake, slope, budget, band, measurements):
    """Plans across the stretch all measure about the same: the goal has to step on faster than the
    measured miss says, then interpolate between the plans below and above the budget. A plan within
    half the tolerance is confirmed by two more comparisons on fresh instances; a plan returned
    without that (the search ran out of plans) is confirmed before it is returned."""
    model = resnet_cifar(8)
    flat_fake.reference, flat_fake.slope = fold_batchnorm(model), slope
    table = LatencyTable("tflite", round_to=8, clock=flat_fake, repeats=1, warmup=0, instances=1)
    pruned, report = prune_filters(model, target_latency=budget, latency_table=table, round_to=8)
    macs = analysis.count_macs(fold_batchnorm(pruned)) / analysis.count_macs(flat_fake.reference)
    real = flat_fraction(macs, slope)
    assert report.budget["measured_fraction"] == pytest.approx(real, rel=1e-6)
    assert abs(real / budget - 1) <= band
    assert report.budget["measurements"] == measurements


class ScriptedTable:
    """A latency table whose comparisons return the given fractions in turn."""

    def __init__(self, fractions):
        self.fractions = list(fractions)

    def compare(self, original, models, record=True):
        return [self.fractions.pop(0) for _ in models]


@pytest.mark.parametrize("first, confirmations, settled", [
    (0.505, [0.53, 0.53], False),  # a lucky first comparison: +4.3% on the mean of all, +6% confirmed
    (0.505, [0.51, 0.495], True),
    (0.6, [0.51, 0.5], True),      # an unlucky one: +7.3% on the mean of all, +1% confirmed
])
def test_confirm_judges_a_plan_by_its_confirmations_alone(first, confirmations, settled):
    from tfprune.structured.budget import _MeasuredPlan, _Measurements
    from tfprune.structured.confirmation import CONFIRMATIONS

    runs = _Measurements(None, None, 0.5, ScriptedTable(confirmations), 0.9, 8, None, 0.1, ())
    plan = _MeasuredPlan(None, None, None, [first], {0: 8})
    assert runs.confirm(plan) is settled
    assert plan.measurements == [first] + confirmations and len(confirmations) == CONFIRMATIONS
    assert plan.measured == pytest.approx(np.mean([first] + confirmations))
    assert runs.confirm(plan) is settled  # a confirmed plan is not timed again (the script is empty)


@pytest.mark.parametrize("script, taken, settled", [
    # tolerance 5% at 0.5: band 0.4875-0.5125 for the mean, 0.475-0.525 for two standard errors around it
    ([0.50, 0.505], 2, True),                     # close together: two are enough
    ([0.48, 0.52, 0.50], 3, True),                # mean 0.5 but +-0.04 after two: a third narrows it to +-0.023
    ([0.47, 0.53, 0.49, 0.51, 0.50], 5, True),    # still wide after four: the fifth is the last, the mean decides
    ([0.47, 0.53, 0.56], 3, False),               # the third moves the mean out of the band
    ([0.53, 0.54], 2, False),                     # clearly over: no more comparisons
])
def test_confirmations_go_on_while_they_spread_too_much_to_tell(script, taken, settled):
    """Two comparisons that straddle the budget by more than the tolerance can tell are not enough:
    the planner takes more, up to MAX_CONFIRMATIONS, and stops as soon as the mean is clearly in or
    out (checked against numpy's mean and standard error)."""
    from tfprune.structured.budget import _MeasuredPlan, _Measurements
    from tfprune.structured.confirmation import MAX_CONFIRMATIONS, spread_bound

    table = ScriptedTable(script)
    runs = _Measurements(None, None, 0.5, table, 0.9, 8, None, 0.05, ())
    plan = _MeasuredPlan(None, None, None, [0.5], {0: 8})
    assert runs.confirm(plan) is settled
    assert plan.measurements[1:] == script[:taken] and not table.fractions and taken <= MAX_CONFIRMATIONS
    confirmed = np.array(script[:taken])
    two_se = 2 * confirmed.std(ddof=1) / np.sqrt(taken)
    assert spread_bound(list(confirmed)) == pytest.approx(two_se)
    if settled and taken < MAX_CONFIRMATIONS:
        assert 0.475 <= confirmed.mean() - two_se and confirmed.mean() + two_se <= 0.525


def test_confirm_measurements_checks_its_inputs():
    from tfprune.structured.confirmation import confirm_measurements

    with pytest.raises(ValueError, match="must hold the comparison that picked the plan"):
        confirm_measurements([], lambda: 0.5, band=(0.4, 0.6), wide=(0.3, 0.7))
    with pytest.raises(ValueError, match="must lie inside wide"):
        confirm_measurements([0.5], lambda: 0.5, band=(0.4, 0.6), wide=(0.45, 0.7))


def test_a_lucky_first_comparison_does_not_settle_a_measured_budget(flat_fake, monkeypatch):
    """Every plan's first comparison reads exactly the budget (as a lucky draw on a noisy host can),
    later ones its real latency: the planner must go on until a plan's confirmations meet the budget,
    and return a plan whose real latency is within the tolerance."""
    model = resnet_cifar(8)
    budget, slope = 0.49, 0.125
    flat_fake.reference, flat_fake.slope = fold_batchnorm(model), slope
    table = LatencyTable("tflite", round_to=8, clock=flat_fake, repeats=1, warmup=0, instances=1)
    real_compare, seen = table.compare, set()

    def lucky_compare(original, models, record=True):
        fractions = real_compare(original, models, record=record)
        out = []
        for pruned, fraction in zip(models, fractions):
            key = analysis.count_macs(pruned)
            out.append(budget if key not in seen else fraction)
            seen.add(key)
        return out

    monkeypatch.setattr(table, "compare", lucky_compare)
    pruned, report = prune_filters(model, target_latency=budget, latency_table=table, round_to=8)
    macs = analysis.count_macs(fold_batchnorm(pruned)) / analysis.count_macs(flat_fake.reference)
    real = flat_fraction(macs, slope)
    assert report.budget["measurements"] == 3
    assert report.budget["measured_fraction"] == pytest.approx((budget + 2 * real) / 3, rel=1e-6)
    assert abs(real / budget - 1) <= 0.05 / 2 + 1e-9


def test_a_measured_budget_scores_the_channels_once(fused_fake):
    """Every plan of a measured budget ranks the same model's channels: the importance criterion is
    asked once per group, however many plans are built."""
    from tfprune.structured import get_importance

    criterion = get_importance("l1")
    calls = []
    original = criterion.group_scores
    criterion.group_scores = lambda graph, group, cache: calls.append(group.index) or original(graph, group, cache)
    model = resnet_cifar(8)
    table = LatencyTable("tflite", round_to=8, clock=fused_fake, repeats=2, warmup=0)
    _, report = prune_filters(model, target_latency=0.5, latency_table=table, round_to=8, importance=criterion)
    assert report.budget["attempts"] >= 2 and len(calls) == len(set(calls))


def test_min_seconds_lengthens_whole_model_comparisons(fused_fake, monkeypatch):
    model = resnet_cifar(8)
    pruned, _ = prune_filters(model, pruning_ratio=0.5, round_to=8)
    calls = []
    real = timing.paired_median_ms

    def counting(runners, repeats, *args, **kwargs):
        counted = [lambda run=run: calls.append(1) or run() for run in runners]
        return real(counted, repeats, *args, **kwargs)

    round_ms = whole_ms(model) + whole_ms(pruned)  # one instance each: a round is one call of both
    monkeypatch.setattr(timing, "paired_median_ms", counting)
    table = LatencyTable("tflite", round_to=8, clock=fused_fake, repeats=3, warmup=0, instances=1,
                         min_seconds=0.5)
    (fraction,) = table.compare(model, [pruned], record=False)
    assert fraction == pytest.approx(whole_ms(pruned) / whole_ms(model))
    rounds = len(calls) // 2
    assert rounds == min(150, int(np.ceil(500 / round_ms)))  # 0.5 s of timed calls, at most 50 x repeats
    assert rounds > 3
    calls.clear()
    short = LatencyTable("tflite", round_to=8, clock=fused_fake, repeats=3, warmup=0, instances=1)
    short.compare(model, [pruned], record=False)
    assert len(calls) == 6  # min_seconds=0: exactly `repeats` rounds
    with pytest.raises(ValueError, match="min_seconds must be a finite number"):
        LatencyTable("tflite", min_seconds=-1)


def points_of(blocks, macs, ms):
    return [{"blocks_ms": b, "macs": m, "ms": y} for b, m, y in zip(blocks, macs, ms)]


def test_choose_fit_keeps_blocks_alone_when_they_explain_the_measurements():
    blocks = [10.0, 6.0, 4.0, 8.0, 5.0, 7.0]
    macs = [1e8, 5e7, 2e7, 8e7, 3e7, 4e7]  # not proportional to the blocks
    ms = [1.0 + 0.8 * b for b in blocks]
    fit = choose_fit(points_of(blocks, macs, ms), fallback_intercept=0.0)
    assert fit.ms_per_mac == 0.0
    assert fit.intercept == pytest.approx(1.0) and fit.scale == pytest.approx(0.8)


def test_choose_fit_adds_macs_when_blocks_miss_the_measurements():
    rng = np.random.default_rng(0)
    macs = np.array([1e8, *rng.uniform(1e7, 9e7, 7)])
    blocks = 5.0 + rng.uniform(-0.3, 0.3, 8)  # blocks timed alone: about one call each, any width
    ms = 2.0 + 0.2 * blocks + 3e-8 * macs
    fit = choose_fit(points_of(blocks, macs, ms), fallback_intercept=0.0)
    assert fit.ms_per_mac == pytest.approx(3e-8, rel=1e-6)
    assert fit.scale == pytest.approx(0.2, rel=1e-5) and fit.intercept == pytest.approx(2.0, rel=1e-5)
    # MACs alone when the blocks carry nothing (the same sum for every plan)
    flat = choose_fit(points_of(np.full(8, 5.0), macs, 1.0 + 4e-8 * macs), fallback_intercept=0.0)
    assert flat == pytest.approx(LatencyFit(1.0, 0.0, 4e-8))
    # without MACs in every point (points cached by an earlier version), or with too few, no MACs term
    legacy = points_of(blocks, macs, ms)
    legacy[3]["macs"] = None
    assert choose_fit(legacy, fallback_intercept=0.0).ms_per_mac == 0.0
    assert choose_fit(points_of(blocks[:4], macs[:4], ms[:4]), fallback_intercept=0.0).ms_per_mac == 0.0


def test_choose_fit_takes_the_square_root_of_macs_where_latency_is_concave_in_them():
    rng = np.random.default_rng(1)
    roots = np.array([1e5, *rng.uniform(3e4, 9e4, 8)])
    macs = roots ** 2 / 60.0 * rng.uniform(0.8, 1.2, 9)  # one layer's square root is not the total's
    macs[0] = roots[0] ** 2 / 60.0
    blocks = 5.0 + rng.uniform(-0.3, 0.3, 9)
    ms = 1.5 + 3e-5 * roots
    points = [{"blocks_ms": b, "macs": m, "sqrt_macs": r, "ms": y} for b, m, r, y in zip(blocks, macs, roots, ms)]
    fit = choose_fit(points, fallback_intercept=0.0)
    assert fit.ms_per_sqrt_mac == pytest.approx(3e-5, rel=1e-6) and fit.ms_per_mac == 0.0
    assert fit.intercept == pytest.approx(1.5, rel=1e-5) and fit.scale == 0.0
    # linear in the MACs: the MACs term, not the square roots
    linear = [dict(p, ms=1.0 + 4e-8 * p["macs"]) for p in points]
    assert choose_fit(linear, 0.0) == pytest.approx(LatencyFit(1.0, 0.0, 4e-8, 0.0))
    # a work term that explains the points only a little better than the blocks is not taken
    noisy = [dict(p, ms=(1.0 + 0.8 * p["blocks_ms"]) * (1 + 0.01 * rng.standard_normal())) for p in points]
    assert choose_fit(noisy, 0.0)[2:] == (0.0, 0.0)


def test_sqrt_macs_sums_each_layer_calls_square_root():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Conv2D(2, 1)])
    first, second = 6 * 6 * 4 * 27, 6 * 6 * 2 * 4
    assert analysis.count_macs(model) == first + second
    assert sqrt_macs(model) == pytest.approx(np.sqrt(first) + np.sqrt(second))


def test_choose_fit_passes_through_the_original_and_minimises_the_pruned_points_errors():
    """Noisy pruned points: the fit predicts the original's measurement exactly, and its coefficients
    are those of the constrained least squares solved independently (the KKT system)."""
    rng = np.random.default_rng(3)
    blocks = np.array([10.0, *rng.uniform(3.0, 9.0, 9)])
    ms = (1.5 + 0.9 * blocks) * np.concatenate([[1.08], rng.uniform(0.95, 1.05, 9)])  # the original off the line
    fit = choose_fit(points_of(blocks, [None] * len(blocks), ms), fallback_intercept=0.0)
    assert fit.ms_per_mac == fit.ms_per_sqrt_mac == 0.0
    assert fit.intercept + fit.scale * blocks[0] == pytest.approx(ms[0], rel=1e-9)
    rows = np.stack([np.ones_like(blocks), blocks], axis=1)
    a = rows[1:] / ms[1:, None]  # minimise |a c - 1|^2 subject to rows[0] c = ms[0]
    kkt = np.block([[2 * a.T @ a, rows[:1].T], [rows[:1], np.zeros((1, 1))]])
    expected = np.linalg.solve(kkt, np.concatenate([2 * a.T @ np.ones(len(a)), ms[:1]]))[:2]
    np.testing.assert_allclose([fit.intercept, fit.scale], expected, rtol=1e-7)
    free = np.linalg.lstsq(rows / ms[:, None], np.ones(len(ms)), rcond=None)[0]  # the unconstrained fit
    assert abs(free[0] + free[1] * blocks[0] - ms[0]) > 0.02 * ms[0]  # would miss the original


def test_choose_fit_falls_back_to_the_blocks_as_timed():
    assert choose_fit(points_of([4.0, 2.0], [1e8, 5e7], [5.0, 3.0]), 1.0) == LatencyFit(1.0, 1.0, 0.0)
    # latency that rises as the blocks fall: no valid form, the fallback
    falling = points_of([4.0, 3.0, 2.0], [None] * 3, [2.0, 3.0, 4.0])
    assert choose_fit(falling, 0.5) == LatencyFit(0.5, 1.0, 0.0)


OP_MS, WHOLE_NS_PER_MAC = 0.02, 2e-9  # the per-operator runtime: every layer 20 us, whole models 2 ns per MAC


def per_operator_runtime(monkeypatch, whole_seconds):
    """A fake runtime in which every layer costs `OP_MS` at any width and models of more than 6 layers
    (whole models, not the tiny block models) also cost `whole_seconds(model)` per sample."""
    clock = FakeClock()

    def make_runner(runtime, model, x, threads=None, io=True):
        seconds = (OP_MS * len(model.layers) + CALL_MS) / 1000
        if len(model.layers) > 6:
            seconds += whole_seconds(model) * x.shape[0]

        def run():
            clock.now += seconds

        return run

    install_fake_runtime(monkeypatch, make_runner)
    return clock


@pytest.fixture
def operator_fake(monkeypatch):
    """A runtime like TensorFlow at batch 1: a layer costs a fixed 20 us at any width, so tiny block models
    show no width dependence at all, while whole models (more than 6 layers) also pay 2 ns per MAC."""
    return per_operator_runtime(monkeypatch, lambda model: WHOLE_NS_PER_MAC * analysis.count_macs(model))


def operator_ms(model):
    deployed = fold_batchnorm(model)
    return OP_MS * len(deployed.layers) + CALL_MS + 1000 * WHOLE_NS_PER_MAC * analysis.count_macs(deployed)


def test_calibration_fits_macs_where_blocks_do_not_change(operator_fake):
    model = resnet_cifar(8)
    table = LatencyTable("tf", round_to=8, clock=operator_fake, repeats=1, warmup=0, instances=1)
    summary = table.calibrate(model, samples=6, seed=0)
    assert summary["ms_per_mac"] > 0 and summary["scale"] < 0.05  # the blocks carry no information here
    ratio = 1000 * WHOLE_NS_PER_MAC * analysis.count_macs(fold_batchnorm(model)) / analysis.count_macs(model)
    # per MAC of the model as given (BatchNormalization's few MACs counted, folded away when timed)
    assert summary["ms_per_mac"] == pytest.approx(ratio, rel=1e-2)
    for r in (0.3, 0.6, 0.8):  # plans the calibration never saw
        pruned, _ = prune_filters(model, pruning_ratio=r, round_to=8)
        assert table.predict(pruned) == pytest.approx(operator_ms(pruned), rel=1e-2)
    # the planner's cost model carries the MACs term: its estimate of a plan is the prediction of the
    # built model
    graph = DependencyGraph(model)
    cost = table.cost_model(graph)
    kept = {g.index: max(8, len(g.units) // 2) for g in graph.groups}
    plan = {g.producers[0]: kept[g.index] for g in graph.groups}
    built, _ = prune_filters(model, plan=plan, round_to=8)
    assert cost.cost(kept) == pytest.approx(table.predict(built), rel=1e-3)
    assert cost.full == pytest.approx(table.predict(model))
    # a budget planned on the prediction alone lands on the budget in the fake runtime
    pruned, report = prune_filters(model, target_latency=0.6, latency_table=table, round_to=8,
                                   latency_tolerance=None)
    assert operator_ms(pruned) / operator_ms(model) == pytest.approx(0.6, abs=0.03)


MS_PER_SQRT_MAC = 1e-4  # whole models of the concave runtime: 0.1 us x the sum of each layer's sqrt(MACs)


@pytest.fixture
def concave_fake(monkeypatch):
    """A runtime like TensorFlow at batch 1 with small layers far from peak speed: tiny block models show
    no width dependence, and a whole model's latency grows with the square root of each layer's MACs."""
    return per_operator_runtime(monkeypatch, lambda model: MS_PER_SQRT_MAC * sqrt_macs(model) / 1000)


def test_calibration_fits_per_layer_square_roots_of_macs_and_the_planner_uses_them(concave_fake):
    model = resnet_cifar(8)
    table = LatencyTable("tf", round_to=8, clock=concave_fake, repeats=1, warmup=0, instances=1)
    summary = table.calibrate(model, samples=8, seed=0)
    assert summary["ms_per_sqrt_mac"] > 0 and summary["ms_per_mac"] == 0.0 and summary["scale"] < 0.05

    def concave_ms(m):
        deployed = fold_batchnorm(m)
        return OP_MS * len(deployed.layers) + CALL_MS + MS_PER_SQRT_MAC * sqrt_macs(deployed)

    for r in (0.3, 0.6, 0.8):  # plans the calibration never saw
        pruned, _ = prune_filters(model, pruning_ratio=r, round_to=8)
        assert table.predict(pruned) == pytest.approx(concave_ms(pruned), rel=2e-2)
    graph = DependencyGraph(model)
    cost = table.cost_model(graph)
    kept = {g.index: max(8, len(g.units) // 2) for g in graph.groups}
    built, _ = prune_filters(model, plan={g.producers[0]: kept[g.index] for g in graph.groups}, round_to=8)
    assert cost.cost(kept) == pytest.approx(table.predict(built), rel=1e-3)
    # a budget met by measurement on this runtime
    pruned, report = prune_filters(model, target_latency=0.7, latency_table=table, round_to=8)
    assert abs(concave_ms(pruned) / concave_ms(model) / 0.7 - 1) <= 0.05


def test_cpu_model_tells_generations_with_one_generic_name_apart():
    def cpuinfo(model, flags):
        one = (f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: {model}\n"
               f"model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu sse2 {flags}\n")
        return one + "\n" + one.replace("processor\t: 0", "processor\t: 1")

    milan, genoa = cpu_model(cpuinfo(1, "avx avx2")), cpu_model(cpuinfo(17, "avx avx2 avx512f avx512bw"))
    assert milan == "AMD EPYC (family 25, model 1, stepping 1, avx2)"
    assert genoa == "AMD EPYC (family 25, model 17, stepping 1, avx512f)"
    assert cpu_model("model name\t: Some CPU\n") == "Some CPU"  # nothing more to tell
    assert cpu_model("") and cpu_model() and cpu_model() in LatencyTable("tflite").key_string
