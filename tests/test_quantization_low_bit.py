"""Low-bit quantizers against numpy references (values and straight-through gradients), and their
full-integer export: int8 kernels with few distinct values per channel, outputs matching Keras."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune.quantization as tfq
from tests.quantization_reference import fake_quant
from tests.tflite_int8 import assert_parity, channels, int8_kernels, op_outputs

L = keras.layers


class _Holder(keras.layers.Layer):
    pass


def per_channel(w):
    return np.abs(w.reshape(-1, w.shape[-1]))


def ref_kbit(w, bits):
    levels = 2 ** (bits - 1) - 1
    scale = per_channel(w).max(0) / levels
    return np.clip(np.floor(w / scale + 0.5), -levels, levels) * scale


def ref_ternary(w):
    a = per_channel(w)
    delta = 0.7 * a.mean(0)
    kept = np.abs(w) > delta
    alpha = (a * (a > delta)).sum(0) / (a > delta).sum(0)
    return np.sign(w) * kept * alpha


def ref_binary(w):
    return np.where(w >= 0, 1.0, -1.0) * per_channel(w).mean(0)


def ref_dorefa(w, bits):
    n = 2 ** bits - 1
    t = np.tanh(w)
    t = t / (2 * np.abs(t).max()) + 0.5
    return 2 * np.floor(t * n + 0.5) / n - 1


WEIGHTS = [
    (tfq.KBitWeightQuantizer(4), lambda w: ref_kbit(w, 4), 15),
    (tfq.KBitWeightQuantizer(2), lambda w: ref_kbit(w, 2), 3),
    (tfq.KBitWeightQuantizer(8), lambda w: ref_kbit(w, 8), 255),
    (tfq.TernaryWeightQuantizer(), ref_ternary, 3),
    (tfq.BinaryWeightQuantizer(), ref_binary, 2),
    (tfq.DoReFaWeightQuantizer(3), lambda w: ref_dorefa(w, 3), 8),
]


@pytest.mark.parametrize("quantizer, reference, levels", WEIGHTS,
                         ids=["kbit4", "kbit2", "kbit8", "ternary", "binary", "dorefa3"])
def test_weight_quantizers_match_numpy_with_identity_gradients(quantizer, reference, levels):
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(3, 3, 4, 6)) * np.array([0.05, 0.5, 1, 2, 4, 0.01])).astype("float32")
    variable = tf.Variable(w)
    upstream = rng.normal(size=w.shape).astype("float32")
    with tf.GradientTape() as tape:
        got = quantizer(variable, True, {})
        loss = tf.reduce_sum(got * upstream)
    expected = reference(w.astype(np.float64))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(tape.gradient(loss, variable).numpy(), upstream, rtol=1e-6)
    for c in range(w.shape[-1]):
        assert len(np.unique(np.round(got.numpy()[..., c], 6))) <= levels


def test_activation_quantizers_match_numpy_with_clipped_gradients():
    rng = np.random.default_rng(1)
    x = tf.Variable(rng.uniform(-1.5, 3.0, size=(16, 8)).astype("float32"))
    holder = _Holder()
    cases = [
        (tfq.KBitActivationQuantizer(4), lambda v, lo, hi: fake_quant(v, lo, hi, num_bits=4)),
        (tfq.KBitActivationQuantizer(2), lambda v, lo, hi: fake_quant(v, lo, hi, num_bits=2)),
        (tfq.DoReFaActivationQuantizer(3), lambda v, lo, hi: np.floor(np.clip(v, 0, 1) * 7 + 0.5) / 7),
        (tfq.BinaryActivationQuantizer(), lambda v, lo, hi: np.sign(fake_quant(v, lo, hi))),
    ]
    for index, (quantizer, reference) in enumerate(cases):
        variables = quantizer.build(None, f"act{index}", holder)
        with tf.GradientTape() as tape:
            got = quantizer(x, True, variables)  # the first training batch sets a learned range
        low, high = min(float(x.numpy().min()), 0.0), max(float(x.numpy().max()), 0.0)
        expected = reference(x.numpy().astype(np.float64), low, high)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, err_msg=repr(quantizer))
        np.testing.assert_allclose(quantizer(x, False, variables).numpy(), expected, atol=1e-5)
        grad = tape.gradient(got, x).numpy()
        v = x.numpy()
        if isinstance(quantizer, tfq.BinaryActivationQuantizer):
            inside = np.abs(v) <= 1.0
        elif isinstance(quantizer, tfq.DoReFaActivationQuantizer):
            inside = (v >= 0) & (v <= 1)
        else:  # the nudged k-bit range, as TensorFlow's k-bit FakeQuant
            scale = (high - low) / (2 ** quantizer.num_bits - 1)
            zero = np.round(-low / scale)
            inside = (v >= -zero * scale - 1e-6) & (v <= (2 ** quantizer.num_bits - 1 - zero) * scale + 1e-6)
        np.testing.assert_array_equal(grad, inside.astype("float32"), err_msg=repr(quantizer))


def test_bad_bit_widths_and_names():
    with pytest.raises(ValueError, match=r"num_bits.*\[2, 8\]"):
        tfq.KBitWeightQuantizer(9)
    with pytest.raises(ValueError, match="KBitWeightQuantizer"):
        tfq.DoReFaWeightQuantizer(8)
    with pytest.raises(ValueError, match="unknown `weights` 'quaternary'"):
        tfq.LowBitScheme(weights="quaternary")
    with pytest.raises(ValueError, match=r"\[2, 8\]"):
        tfq.quantize_model(keras.Sequential([keras.Input((3,)), L.Dense(2)]), weight_bits=1)
    for q in [tfq.KBitWeightQuantizer(3, per_axis=False, channel_dims=2), tfq.TernaryWeightQuantizer(0.5),
              tfq.KBitActivationQuantizer(5), tfq.BinaryActivationQuantizer(), tfq.DoReFaActivationQuantizer(2),
              tfq.PrunePreserveQuantizer(tfq.BinaryWeightQuantizer())]:
        assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(q)) == q


def cnn():
    inputs = keras.Input((10, 10, 1))
    x = L.Conv2D(8, 3, use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, activation="relu")(x)
    x = L.Conv2D(8, 1)(x)
    x = L.Flatten()(L.MaxPooling2D()(x))
    return keras.Model(inputs, L.Dense(4)(x))


SCHEMES = [
    ("w4a8", dict(weight_bits=4, activation_bits=8), 15, None),
    ("w8a4", dict(weight_bits=8, activation_bits=4), 255, 16),
    ("ternary", dict(scheme=tfq.LowBitScheme(weights="ternary")), 3, None),
    ("binary", dict(scheme=tfq.LowBitScheme(weights="binary", activations="binary")), 2, 3),
    ("dorefa", dict(scheme=tfq.LowBitScheme(weights="dorefa", weight_bits=3, activations="dorefa",
                                            activation_bits=3)), 8, 8),
]
LOW_BIT_ACTIVATIONS = (tfq.KBitActivationQuantizer, tfq.BinaryActivationQuantizer, tfq.DoReFaActivationQuantizer)


@pytest.mark.parametrize("name, kwargs, levels, activation_levels", SCHEMES, ids=[s[0] for s in SCHEMES])
def test_low_bit_models_export_int8_kernels_with_few_values_and_match_keras(name, kwargs, levels,
                                                                             activation_levels):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 10, 10, 1)).astype("float32"), rng.integers(0, 4, 64)
    qat = tfq.quantize_model(cnn(), **kwargs)
    qat.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    data = tfq.to_tflite(qat, inference_input_type=tf.int8)
    assert tfq.float_operators(data) == []
    kernels = int8_kernels(data)
    assert len(kernels) == 4
    for op, kernel, _ in kernels:
        distinct = [len(np.unique(row)) for row in channels(op, kernel)]
        if op == "FULLY_CONNECTED":  # per-tensor, as in the default scheme
            distinct = [len(np.unique(kernel))]
        assert max(distinct) <= levels, (op, distinct)
    if levels < 255:
        assert max(len(np.unique(k)) for _, k, _ in kernels) <= levels
    x_eval = rng.normal(size=(256, 10, 10, 1)).astype("float32")
    if activation_levels is None:
        # Random data, untrained model: near-tied logits, so one step of difference may flip a class.
        assert_parity(data, qat, x_eval, same_class=0.98)
        return
    # Low-bit activations: TFLite computes the same k-bit tensors (MINIMUM / MAXIMUM close each grid) ...
    keras_layers = [layer for layer in qat.layers
                    if any(isinstance(q, LOW_BIT_ACTIVATIONS) for q in getattr(layer, "output_quantizers", []))]
    exported = op_outputs(data, x_eval, ("MINIMUM", "MAXIMUM"))
    assert len(exported) == len(keras_layers) == 3
    for layer, (int8, values, scale) in zip(keras_layers, exported):
        assert len(np.unique(int8)) <= activation_levels, layer.name
        expected = keras.Model(qat.inputs, layer.output).predict(x_eval, verbose=0)
        assert np.mean(np.abs(values - expected) > 0.5 * scale) <= 0.01, layer.name  # rounding ties, rarely
    # ... but one step on a coarse grid is a large change, so the logits are compared loosely.
    assert_parity(data, qat, x_eval, same_class=0.9, within=0.6)


def test_low_bit_qat_model_saves_and_loads(tmp_path):
    x = np.random.default_rng(0).normal(size=(16, 10, 10, 1)).astype("float32")
    qat = tfq.quantize_model(cnn(), scheme=tfq.LowBitScheme(weights="ternary", activations="uniform",
                                                            activation_bits=4, preserve_sparsity=True))
    qat(x, training=True)  # ranges from a batch
    path = str(tmp_path / "low_bit.keras")
    qat.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)
    quantizers = {type(q).__name__ for layer in loaded.layers
                  for q in [getattr(getattr(layer, "quantize_config", None), "weight_quantizer", None)] if q}
    assert quantizers == {"PrunePreserveQuantizer"}
