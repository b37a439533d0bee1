"""quantize_post_training: ranges from streamed data equal numpy's over the same data; every data
source; bad data rejected before any work; progress."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune.quantization as tfq
from tfprune.quantization.layers import QuantizeLayer

L = keras.layers


def _model():
    inputs = keras.Input((6,))
    x = L.Dense(5, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, L.Dense(3, name="out")(x))


def _data(n=96):
    return np.random.default_rng(0).normal(size=(n, 6)).astype("float32") * 2.0


def _ranges(model):
    found = {}
    for layer in model.layers:
        if isinstance(layer, QuantizeLayer):
            found["input"] = layer.quantizer_vars
        elif getattr(layer, "output_vars", None):
            found[layer.name] = layer.output_vars[0]
    return {k: (float(v["min"].numpy()), float(v["max"].numpy())) for k, v in found.items()}


def test_minmax_ranges_equal_numpy_over_the_stream():
    model, x = _model(), _data()
    ptq = tfq.quantize_post_training(model, x, method="minmax", batch_size=10, verbose=0)
    ranges = _ranges(ptq)
    assert ranges["input"] == pytest.approx((x.min(), x.max()), rel=1e-6)
    hidden = np.maximum(x @ model.get_layer("hidden").kernel.numpy() + model.get_layer("hidden").bias.numpy(), 0)
    # The hidden layer's input is the fake-quantized input and its kernel is quantized: compare loosely.
    assert ranges["quant_hidden"][0] == 0.0
    assert ranges["quant_hidden"][1] == pytest.approx(hidden.max(), rel=0.03)


def test_percentile_on_known_distribution():
    inputs = keras.Input((1,))
    model = keras.Model(inputs, L.Dense(1)(inputs))
    x = np.random.default_rng(1).normal(size=(20000, 1)).astype("float32")
    ptq = tfq.quantize_post_training(model, x, method="percentile", percentile=99.0, batch_size=2000, verbose=0)
    low, high = _ranges(ptq)["input"]
    width = float(np.abs(x).max()) * 2 / 4096 * 4  # a few histogram bins (the range doubles while streaming)
    assert high == pytest.approx(np.percentile(x, 99.0), abs=width)
    assert low == pytest.approx(np.percentile(x, 1.0), abs=width)


@pytest.mark.parametrize("source", ["dataset", "generator_function", "generator", "list_of_xy"])
def test_every_data_source_gives_the_same_ranges(source):
    x = _data()
    batches = [x[i:i + 16] for i in range(0, len(x), 16)]
    data = {
        "dataset": tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x)))).batch(16),
        "generator_function": lambda: iter(batches),
        "generator": (b for b in batches),
        "list_of_xy": [(b, np.zeros(len(b))) for b in batches],
    }[source]
    model = _model()
    reference = _ranges(tfq.quantize_post_training(model, x, batch_size=16, verbose=0))
    got = _ranges(tfq.quantize_post_training(model, data, verbose=0))
    assert sorted(got) == sorted(reference)
    for name in reference:
        assert got[name] == pytest.approx(reference[name], rel=1e-6), name


def test_bad_data_is_rejected_before_any_work(monkeypatch):
    import tfprune.quantization.post_training as post_training

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was quantized before the data was checked")

    monkeypatch.setattr(post_training, "quantize_model", forbidden)
    model = _model()
    with pytest.raises(tfq.CalibrationDataError, match=r"shape \(4, 7\).*\(6,\)"):
        tfq.quantize_post_training(model, np.zeros((4, 7), "float32"))
    with pytest.raises(tfq.CalibrationDataError, match="dtype"):
        tfq.quantize_post_training(model, np.array([["a"] * 6]))
    with pytest.raises(tfq.CalibrationDataError, match="empty"):
        tfq.quantize_post_training(model, np.zeros((0, 6), "float32"))
    with pytest.raises(tfq.CalibrationDataError, match="yields nothing"):
        tfq.quantize_post_training(model, iter([]))
    pulled = []

    def generator():
        for k in range(5):
            pulled.append(k)
            yield np.zeros((2, 3), "float32")

    with pytest.raises(tfq.CalibrationDataError, match="first batch"):
        tfq.quantize_post_training(model, generator())
    assert pulled == [0]  # only the first batch was read
    with pytest.raises(ValueError, match="minmax, percentile, entropy, mse"):
        tfq.quantize_post_training(model, _data(), method="kl")
    with pytest.raises(tfq.CalibrationDataError, match="received int"):
        tfq.quantize_post_training(model, 3)


def test_progress_is_shown(capsys):
    tfq.quantize_post_training(_model(), _data(), batch_size=32, verbose=1)
    assert "3/3" in capsys.readouterr().out


def test_entropy_clips_an_outlier_and_mse_clips_heavy_tails():
    inputs = keras.Input((1,))
    model = keras.Model(inputs, L.Dense(1)(inputs))
    x = np.random.default_rng(2).laplace(size=(20000, 1)).astype("float32")
    low, high = _ranges(tfq.quantize_post_training(model, x, method="mse", batch_size=5000, verbose=0))["input"]
    assert 1.0 < high < x.max() and x.min() < low < -1.0
    x[0] = 200.0  # one outlier: KL ignores it (MSE, rightly, would keep it: clipping it costs more)
    low, high = _ranges(tfq.quantize_post_training(model, x, method="entropy", batch_size=5000, verbose=0))["input"]
    assert 1.0 < high < 50.0 and -50.0 < low < -1.0
