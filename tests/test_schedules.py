"""Schedules agree with tfmot 0.8.1 step for step, validate arguments, and serialize."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule as tfmot_schedule

import tfprune

STEPS = list(range(0, 130)) + [500, 1000, 10_000]


def _values(schedule, steps):
    fn = tf.function(lambda s: schedule(s))
    eager = [tuple(np.asarray(v) for v in schedule(tf.constant(s, tf.int64))) for s in steps]
    graph = [tuple(np.asarray(v) for v in fn(tf.constant(s, tf.int64))) for s in steps]
    return eager, graph


@pytest.mark.parametrize(
    "initial,final,begin,end,power,frequency",
    [
        (0.0, 0.5, 0, 100, 3, 1),
        (0.0, 0.8, 0, 100, 3, 10),
        (0.2, 0.9, 7, 60, 2, 3),
        (0.5, 0.5, 10, 20, 1, 5),
        (0.1, 0.95, 33, 34, 3, 1),
        (0.0, 0.75, 50, 120, 4.5, 7),
    ],
)
def test_polynomial_decay_matches_tfmot(initial, final, begin, end, power, frequency):
    ours = tfprune.PolynomialDecay(initial, final, begin, end, power=power, frequency=frequency)
    theirs = tfmot_schedule.PolynomialDecay(initial, final, begin, end, power=power, frequency=frequency)
    eager, graph = _values(ours, STEPS)
    ref_eager, ref_graph = _values(theirs, STEPS)
    for step, mine, ref in zip(STEPS + STEPS, eager + graph, ref_eager + ref_graph):
        assert bool(mine[0]) == bool(ref[0]), step
        assert mine[1].dtype == np.float32
        # Same formula, same float32 operations: bit-identical in eager and in tf.function.
        np.testing.assert_array_equal(mine[1], ref[1], err_msg=f"step {step}")


@pytest.mark.parametrize(
    "target,begin,end,frequency",
    list(itertools.product([0.0, 0.5, 0.9], [0, 3, 40], [-1, 40, 90], [1, 4, 100])),
)
def test_constant_sparsity_matches_tfmot(target, begin, end, frequency):
    if end != -1 and end < begin:
        pytest.skip("invalid window")
    ours = tfprune.ConstantSparsity(target, begin, end_step=end, frequency=frequency)
    theirs = tfmot_schedule.ConstantSparsity(target, begin, end_step=end, frequency=frequency)
    eager, _ = _values(ours, STEPS)
    for step, (prune, sparsity) in zip(STEPS, eager):
        ref_prune, ref_sparsity = (np.asarray(v) for v in theirs(tf.constant(step, tf.int64)))
        assert bool(prune) == bool(ref_prune), step
        assert float(sparsity) == pytest.approx(float(ref_sparsity))


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        (dict(initial_sparsity=-0.1, final_sparsity=0.5, begin_step=0, end_step=10), "initial_sparsity"),
        (dict(initial_sparsity=0.0, final_sparsity=1.0, begin_step=0, end_step=10), "final_sparsity"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=-1, end_step=10), "begin_step"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=20, end_step=10), "end_step"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=-1), "end_step"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=10, frequency=0), "frequency"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0, end_step=10, power="x"), "power"),
        (dict(initial_sparsity="a", final_sparsity=0.5, begin_step=0, end_step=10), "initial_sparsity"),
        (dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=1.5, end_step=10), "begin_step"),
    ],
)
def test_polynomial_decay_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        tfprune.PolynomialDecay(**kwargs)


def test_constant_sparsity_rejects_bad_arguments():
    with pytest.raises(ValueError, match="target_sparsity"):
        tfprune.ConstantSparsity(1.2, 0)
    with pytest.raises(ValueError, match="end_step"):
        tfprune.ConstantSparsity(0.5, 10, end_step=5)
    with pytest.raises(ValueError, match="frequency"):
        tfprune.ConstantSparsity(0.5, 0, frequency=-3)


def test_schedules_round_trip_through_config():
    from tfprune.schedules import deserialize, serialize

    for schedule in (
        tfprune.PolynomialDecay(0.1, 0.7, 3, 50, power=2, frequency=4),
        tfprune.ConstantSparsity(0.6, 5, end_step=80, frequency=2),
    ):
        clone = type(schedule).from_config(schedule.get_config())
        assert clone == schedule
        again = deserialize(serialize(schedule))
        assert again == schedule
        for step in (0, 10, 49, 80):
            assert [float(v) for v in again(step)] == [float(v) for v in schedule(step)]
    with pytest.raises(ValueError, match="Unknown pruning schedule"):
        deserialize({"class_name": "NoSuchSchedule", "config": {}})
