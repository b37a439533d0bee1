"""contrib hyper-parameters: defaults, parsing, validation, and the contrib schedule rule."""

import numpy as np
import pytest

import tfprune
from tfprune.hparams import ContribSchedule

CLASSIC = (
    "begin_pruning_step=0,end_pruning_step=-1,threshold_decay=0.9,pruning_frequency=10,initial_sparsity=0.0,"
    "target_sparsity=0.5,sparsity_function_begin_step=0,sparsity_function_end_step=1000,sparsity_function_exponent=3"
)


def test_defaults_are_contrib_r115():
    values = tfprune.get_pruning_hparams().values()
    assert values == {
        "name": "model_pruning",
        "begin_pruning_step": 0,
        "end_pruning_step": -1,
        "weight_sparsity_map": [""],
        "block_dims_map": [""],
        "threshold_decay": 0.0,
        "pruning_frequency": 10,
        "nbins": 256,
        "block_height": 1,
        "block_width": 1,
        "block_pooling_function": "AVG",
        "initial_sparsity": 0.0,
        "target_sparsity": 0.5,
        "sparsity_function_begin_step": 0,
        "sparsity_function_end_step": 100,
        "sparsity_function_exponent": 3.0,
        "use_tpu": False,
    }


def test_parse_classic_string():
    hp = tfprune.get_pruning_hparams().parse(CLASSIC)
    assert hp.threshold_decay == 0.9
    assert hp.sparsity_function_end_step == 1000
    assert isinstance(hp.sparsity_function_exponent, float) and hp.sparsity_function_exponent == 3.0
    assert hp.pruning_frequency == 10 and isinstance(hp.pruning_frequency, int)
    assert hp.target_sparsity == 0.5


def test_parse_lists_and_per_weight_resolution():
    hp = tfprune.get_pruning_hparams().parse(
        "target_sparsity=0.5,weight_sparsity_map=[conv1:0.9,dense/kernel:0.8],block_dims_map=[dense2:4x-1],use_tpu=true"
    )
    assert hp.weight_sparsity_map == ["conv1:0.9", "dense/kernel:0.8"]
    assert hp.use_tpu is True
    assert hp.target_sparsity_for("conv1/kernel") == 0.9
    assert hp.target_sparsity_for("dense/kernel") == 0.8
    assert hp.target_sparsity_for("conv2/kernel") == 0.5
    assert hp.block_dims_for("dense2/kernel") == (4, -1)
    assert hp.block_dims_for("dense/kernel") == (1, 1)
    assert hp.schedule_for("conv1/kernel").target_sparsity == 0.9


def test_two_matching_entries_is_an_error():
    hp = tfprune.get_pruning_hparams().parse("weight_sparsity_map=[conv:0.9,conv1:0.8]")
    with pytest.raises(ValueError, match="matches 2 weight_sparsity_map"):
        hp.target_sparsity_for("conv1/kernel")


@pytest.mark.parametrize(
    "text,key",
    [
        ("no_such_key=1", "no_such_key"),
        ("pruning_frequency=abc", "pruning_frequency"),
        ("pruning_frequency=2.5", "pruning_frequency"),
        ("pruning_frequency=0", "pruning_frequency"),
        ("target_sparsity=1.0", "target_sparsity"),
        ("initial_sparsity=-0.2", "initial_sparsity"),
        ("threshold_decay=1", "threshold_decay"),
        ("begin_pruning_step=-5", "begin_pruning_step"),
        ("begin_pruning_step=10,end_pruning_step=5", "end_pruning_step"),
        ("sparsity_function_begin_step=10,sparsity_function_end_step=10", "sparsity_function_end_step"),
        ("block_pooling_function=MEDIAN", "block_pooling_function"),
        ("block_height=0", "block_height"),
        ("weight_sparsity_map=[conv1:1.5]", "conv1"),
        ("weight_sparsity_map=[conv1]", "weight_sparsity_map"),
        ("block_dims_map=[dense:4by4]", "block_dims_map"),
        ("use_tpu=maybe", "use_tpu"),
        ("target_sparsity", "key=value"),
        ("weight_sparsity_map=[a:0.5", "Unbalanced"),
    ],
)
def test_bad_input_names_the_key(text, key):
    with pytest.raises(ValueError, match=key):
        tfprune.get_pruning_hparams().parse(text)


def test_error_message_states_allowed_range():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        tfprune.get_pruning_hparams().parse("target_sparsity=2")


def _reference_sparsity(t, initial, target, begin, end, exponent):
    p = min(1.0, max(0.0, (t - begin) / (end - begin)))
    return target + (initial - target) * (1 - p) ** exponent


def test_contrib_schedule_formula_and_update_rule():
    schedule = ContribSchedule(
        begin_pruning_step=5,
        end_pruning_step=60,
        pruning_frequency=7,
        initial_sparsity=0.1,
        target_sparsity=0.85,
        sparsity_function_begin_step=10,
        sparsity_function_end_step=50,
        sparsity_function_exponent=2.5,
    )
    last = 0
    updates = []
    for t in range(0, 80):
        expected = _reference_sparsity(t, 0.1, 0.85, 10, 50, 2.5)
        np.testing.assert_allclose(float(schedule.sparsity(t)), expected, atol=1e-6)
        due = bool(schedule.should_update(t, last))
        reference_due = 5 <= t <= 60 and last + 7 <= t
        assert due == reference_due, t
        if due:
            updates.append(t)
            last = t
    assert updates == [7, 14, 21, 28, 35, 42, 49, 56]


def test_hparams_object_round_trips_and_accepts_dict():
    hp = tfprune.get_pruning_hparams().parse(CLASSIC)
    assert tfprune.PruningHParams(**hp.values()) == hp
    from tfprune.hparams import as_hparams

    assert as_hparams(CLASSIC) == hp
    assert as_hparams(hp.values()) == hp
    with pytest.raises(ValueError, match="pruning_hparams"):
        as_hparams(42)
