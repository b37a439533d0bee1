"""tfprune.structured.timing on real TFLite models: the runner feeds float and full-integer models
(int8 input quantized, int8 output dequantized) and matches Keras; `tflite_latency_ms` times `invoke()`
at the asked batch with the asked statistic, and refuses bad arguments by name."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune.quantization as tfq
from tfprune.interpreter import make_interpreter
from tfprune.structured import timing

L = keras.layers
X = np.random.default_rng(0).normal(size=(16, 6, 6, 2)).astype("float32")


def small_model():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, activation="relu")(inputs)
    return keras.Model(inputs, L.Dense(3)(L.Flatten()(x)))


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    model = small_model()
    ptq = tfq.quantize_post_training(model, X, verbose=0)
    return model, ptq, timing.tflite_model(model), tfq.to_tflite(ptq, inference_input_type=tf.int8)


def test_runner_of_a_float_model_matches_keras(models):
    model, _, float_data, _ = models
    got = timing.tflite_runner(float_data, X, threads=1)()
    assert got.dtype == np.float32 and got.shape == (16, 3)
    np.testing.assert_allclose(got, model.predict(X, verbose=0), rtol=1e-4, atol=1e-5)


def test_runner_quantizes_int8_inputs_and_dequantizes_int8_outputs(models):
    _, ptq, _, int8_data = models
    interpreter = make_interpreter(model_content=int8_data)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    got = timing.tflite_runner(int8_data, X, threads=1)()
    step, _ = tfq.quantization_parameters(int8_data, "output")
    assert got.dtype == np.float32 and got.shape == (16, 3)
    # the fake-quant Keras model computes what the int8 kernels compute: within one output step
    assert np.mean(np.abs(got - ptq.predict(X, verbose=0)) <= step * 1.001) >= 0.95


def test_latency_runs_float_and_int8_models_at_batch_1_and_32(models, monkeypatch):
    _, _, float_data, int8_data = models
    shapes = []
    real_runner = timing.tflite_runner

    def recording_runner(model, x, threads=None, io=True):
        shapes.append((x.shape, threads, io))
        return real_runner(model, x, threads, io)

    monkeypatch.setattr(timing, "tflite_runner", recording_runner)
    for data in (float_data, int8_data):
        for batch in (1, 32):
            assert timing.tflite_latency_ms(data, X, batch, repeats=3, warmup=1) > 0
    assert shapes == [((b, 6, 6, 2), 1, False) for b in (1, 32)] * 2


def test_latency_is_the_statistic_of_the_timed_invokes(models):
    _, _, float_data, _ = models
    ticks = iter([0.0, 0.005, 1.0, 1.001, 2.0, 2.003])  # three timed calls: 5, 1 and 3 ms

    def clock():
        return next(ticks)

    assert timing.tflite_latency_ms(float_data, X, repeats=3, warmup=2, clock=clock) == pytest.approx(3.0)
    ticks = iter([0.0, 0.005, 1.0, 1.001, 2.0, 2.003])
    assert timing.tflite_latency_ms(float_data, X, repeats=3, stat="min", clock=clock) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch=0), "`batch` must be an int >= 1"),
    (dict(repeats=0), "`repeats` must be an int >= 1"),
    (dict(threads=1.5), "`threads` must be an int >= 1"),
    (dict(warmup=-1), "`warmup` must be an int >= 0"),
    (dict(stat="mean"), "`stat` must be one of"),
], ids=["batch", "repeats", "threads", "warmup", "stat"])
def test_latency_refuses_bad_arguments(models, kwargs, match):
    with pytest.raises(ValueError, match=match):
        timing.tflite_latency_ms(models[2], X, **kwargs)


def test_latency_refuses_an_empty_sample(models):
    with pytest.raises(ValueError, match="`sample` is empty"):
        timing.tflite_latency_ms(models[2], X[:0])


class SteppingClock:
    """A clock that each runner advances by its own cost; counts the calls of each runner."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def runner(self, seconds, calls):
        def run():
            calls.append(seconds)
            self.now += seconds
        return run


def test_min_seconds_times_rounds_until_the_calls_add_up():
    clock = SteppingClock()
    fast, slow = [], []
    runners = [clock.runner(0.001, fast), clock.runner(0.003, slow)]
    ms = timing.paired_median_ms(runners, repeats=5, warmup=1, clock=clock, min_seconds=1.0)
    assert ms == pytest.approx([1.0, 3.0])
    # 4 ms a round: 250 rounds reach 1 s (plus one warmup call each); both runners get the same count
    assert len(fast) == len(slow) == 251
    fast.clear()
    timing.paired_median_ms(runners[:1], repeats=5, warmup=0, clock=clock, min_seconds=0.0)
    assert len(fast) == 5  # 0: exactly `repeats` rounds
    fast.clear()
    timing.paired_median_ms(runners[:1], repeats=500, warmup=0, clock=clock, min_seconds=0.01)
    assert len(fast) == 500  # `repeats` is a floor: a slow time target never shortens it


def test_min_seconds_stops_at_max_repeats():
    clock = SteppingClock()
    calls = []
    run = clock.runner(0.001, calls)
    timing.paired_median_ms([run], repeats=4, warmup=0, clock=clock, min_seconds=60.0)
    assert len(calls) == 200  # default cap: 50 x repeats
    calls.clear()
    timing.paired_median_ms([run], repeats=4, warmup=0, clock=clock, min_seconds=60.0, max_repeats=30)
    assert len(calls) == 30
    calls.clear()
    frozen = lambda: 0.0  # noqa: E731  a clock that never moves cannot loop forever
    timing.paired_median_ms([run], repeats=2, warmup=0, clock=frozen, min_seconds=1.0)
    assert len(calls) == 100


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "10", True, None])
def test_min_seconds_refuses_bad_values(value):
    with pytest.raises(ValueError, match="min_seconds must be a finite number of seconds >= 0"):
        timing.paired_median_ms([lambda: None], repeats=1, min_seconds=value)
