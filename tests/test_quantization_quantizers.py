"""Quantizers and calibration methods against numpy references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.quantization_reference import fake_quant, symmetric_per_channel
from tfprune.quantization import calibration
from tfprune.quantization.quantizers import FixedRangeQuantizer, LastValueQuantizer, MovingAverageQuantizer


class _Holder(keras.layers.Layer):
    pass


def test_weights_per_channel_symmetric_narrow_range_matches_numpy():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 5)).astype("float32") * np.array([0.1, 1, 3, 0.01, 7], "float32")
    got = LastValueQuantizer(per_axis=True)(tf.constant(w), False, {}).numpy()
    np.testing.assert_allclose(got, symmetric_per_channel(w), rtol=0, atol=1e-6 * np.abs(w).max())
    levels = np.round(got / (np.abs(w).reshape(-1, 5).max(0) / 127))
    assert levels.min() >= -127 and levels.max() <= 127


def test_depthwise_kernel_channel_is_input_times_multiplier():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 3, 4, 2)).astype("float32")
    got = LastValueQuantizer(per_axis=True, channel_dims=2)(tf.constant(w), False, {}).numpy()
    expected = symmetric_per_channel(w.reshape(3, 3, 8)).reshape(w.shape)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_per_tensor_weights():
    w = np.random.default_rng(2).normal(size=(6, 3)).astype("float32")
    got = LastValueQuantizer(per_axis=False)(tf.constant(w), False, {}).numpy()
    m = np.abs(w).max()
    np.testing.assert_allclose(got, fake_quant(w, -m, m, narrow_range=True), atol=1e-6)


def test_moving_average_ranges_first_batch_then_ema_and_inference_uses_them():
    holder = _Holder()
    quantizer = MovingAverageQuantizer(ema_decay=0.9)
    variables = quantizer.build(None, "act", holder)
    rng = np.random.default_rng(3)
    batches = [rng.uniform(-1, 2, size=(8, 5)).astype("float32") * (k + 1) for k in range(4)]
    low, high = None, None
    for batch in batches:
        out = quantizer(tf.constant(batch), True, variables).numpy()
        b_low, b_high = min(batch.min(), 0), max(batch.max(), 0)
        low = b_low if low is None else 0.9 * low + 0.1 * b_low
        high = b_high if high is None else 0.9 * high + 0.1 * b_high
        np.testing.assert_allclose(out, fake_quant(batch, low, high), atol=1e-5)
    assert float(variables["min"].numpy()) == pytest.approx(low, rel=1e-5)
    assert float(variables["max"].numpy()) == pytest.approx(high, rel=1e-5)
    probe = rng.uniform(-20, 20, size=(100,)).astype("float32")
    np.testing.assert_allclose(quantizer(tf.constant(probe), False, variables).numpy(),
                               fake_quant(probe, low, high), atol=1e-5)
    assert float(variables["max"].numpy()) == pytest.approx(high, rel=1e-5)  # inference does not update


def test_straight_through_gradient_inside_the_range_only():
    x = tf.constant(np.linspace(-2.975, 2.975, 120).astype("float32"))  # no point on a boundary
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = FixedRangeQuantizer(-1.0, 127 / 128)(x, False, {})  # a range already on the grid (no nudging)
    grad = tape.gradient(y, x).numpy()
    inside = (x.numpy() >= -1.0) & (x.numpy() <= 127 / 128)
    assert np.all(grad[inside] == 1.0) and np.all(grad[~inside] == 0.0)


def test_fixed_softmax_range_is_tflite_grid():
    x = np.linspace(0, 1, 1001).astype("float32")
    got = FixedRangeQuantizer(0.0, 255 / 256)(tf.constant(x), False, {}).numpy()
    np.testing.assert_allclose(got, np.clip(np.round(x * 256), 0, 255) / 256, atol=1e-6)


def test_quantizer_config_round_trip():
    for quantizer in (LastValueQuantizer(num_bits=4, per_axis=False, channel_dims=1), MovingAverageQuantizer(7, 0.99),
                      FixedRangeQuantizer(-1.0, 127 / 128)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(quantizer))
        assert restored == quantizer


@pytest.mark.parametrize("bad", [dict(num_bits=1), dict(num_bits=8.0), dict(channel_dims=3)])
def test_bad_quantizer_arguments(bad):
    with pytest.raises(ValueError):
        LastValueQuantizer(**bad)


# ---------------------------------------------------------------- calibration against numpy on known data

@pytest.fixture(scope="module")
def normal_samples():
    rng = np.random.default_rng(4)
    return rng.normal(0.5, 1.0, size=400_000)


def _collect(samples, chunks=8):
    collector = calibration.RangeCollector(2048)
    for part in np.array_split(samples, chunks):  # streamed: the histogram range grows as data arrives
        collector.update(part)
    return collector


def test_minmax(normal_samples):
    low, high = calibration.compute_range(_collect(normal_samples), "minmax")
    assert (low, high) == (normal_samples.min(), normal_samples.max())


def test_percentile(normal_samples):
    collector = _collect(normal_samples)
    low, high = calibration.compute_range(collector, "percentile", percentile=99.9)
    width = collector.bin_width
    assert abs(high - np.percentile(normal_samples, 99.9)) <= 1.5 * width
    assert abs(low - np.percentile(normal_samples, 0.1)) <= 1.5 * width


def _reference_kl_threshold(magnitudes, bins=2048, target=128):
    """Straightforward TensorRT-style search, written independently of tfprune's vectorised one."""
    hist, edges = np.histogram(magnitudes, bins=bins, range=(0, magnitudes.max()))
    hist[0] = hist[1]  # exact zeros (ReLU, padding) count as the neighbouring bin
    best, best_kl = None, np.inf
    for i in range(target, bins + 1):
        p = hist[:i].astype(np.float64)
        p[-1] += hist[i:].sum()
        q = np.zeros(i)
        per = i // target
        for j in range(target):
            lo, hi = j * per, (i if j == target - 1 else (j + 1) * per)
            chunk = hist[lo:hi]
            nz = chunk > 0
            if nz.any():
                q[lo:hi][nz] = chunk.sum() / nz.sum()
        p /= p.sum()
        q /= q.sum()
        m = p > 0
        kl = np.sum(p[m] * np.log(p[m] / np.where(q[m] > 0, q[m], 1e-12)))
        if kl < best_kl:
            best, best_kl = (i + 0.5) * (edges[1] - edges[0]), kl
    return best


def test_entropy_threshold_matches_reference_search():
    rng = np.random.default_rng(5)
    samples = rng.laplace(0, 1, size=200_000)  # heavy tails: the threshold is well inside the max
    collector = calibration.RangeCollector(2048)
    collector.update(samples)  # one batch: bins are np.histogram's over [0, max|x|]
    low, high = calibration.compute_range(collector, "entropy")
    expected = _reference_kl_threshold(np.abs(samples))
    assert high == pytest.approx(expected, rel=1e-6)
    assert low == pytest.approx(-expected, rel=1e-6)
    assert high < 0.8 * np.abs(samples).max()


def test_entropy_of_a_relu_output_uses_256_levels_and_ignores_the_zero_spike():
    rng = np.random.default_rng(6)
    samples = np.maximum(rng.laplace(0, 1, size=200_000), 0.0)  # half exact zeros, as after a ReLU
    collector = calibration.RangeCollector(2048)
    collector.update(samples)
    low, high = calibration.compute_range(collector, "entropy")
    assert low == 0.0
    assert high == pytest.approx(_reference_kl_threshold(samples, target=256), rel=1e-6)
    # with the zero spike and 128 levels the search would clip far more of the distribution
    assert high > _reference_kl_threshold_without_zero_rule(samples)


def _reference_kl_threshold_without_zero_rule(magnitudes, bins=2048, target=128):
    hist, edges = np.histogram(magnitudes, bins=bins, range=(0, magnitudes.max()))
    width = edges[1] - edges[0]
    return calibration.kl_divergence_threshold(hist, width, target)


def test_mse_range_minimises_the_quantization_error(normal_samples):
    low, high = calibration.compute_range(_collect(normal_samples), "mse")

    def error(lo, hi):
        return np.mean((fake_quant(normal_samples, lo, hi) - normal_samples) ** 2)

    lo0, hi0 = normal_samples.min(), normal_samples.max()
    candidates = [error(lo0 * a, hi0 * a) for a in np.linspace(0.01, 1, 100)]
    assert error(low, high) <= min(candidates) * 1.02
    assert error(low, high) < error(lo0, hi0)


def test_calibration_bad_method_and_empty():
    collector = calibration.RangeCollector()
    with pytest.raises(ValueError, match="no values"):
        calibration.compute_range(collector, "minmax")
    collector.update(np.ones(3))
    with pytest.raises(ValueError, match="minmax, percentile, entropy, mse"):
        calibration.compute_range(collector, "kl")
