"""Structured pruning then int8: a `prune_filters` model (fine-tuned) through QAT and PTQ to a full-integer
TFLite model whose outputs match the Keras fake-quant model (the quantization issue's parity rule),
BatchNormalization folded, and structured pruning's LayerNormalization/RMSNormalization in int8."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
import tfprune.quantization as tfq
from tests.tflite_int8 import assert_parity, int8_kernels
from tfprune.datasets import load_mnist
from tfprune.structured import PrunedLayerNormalization, PrunedRMSNormalization

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_eval, _) = load_mnist(train_size=2000)
    return x_train[:2000], y_train[:2000], x_eval[:1000]


def residual_cnn():
    inputs = keras.Input((28, 28, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    y = L.Conv2D(16, 3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization()(y)
    x = L.ReLU()(L.Add()([x, y]))
    x = L.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Flatten()(L.MaxPooling2D()(x))
    return keras.Model(inputs, L.Dense(10)(x), name="residual_cnn")


def fit(model, x, y, lr=3e-3, epochs=1):
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def test_filter_pruned_cnn_through_qat_and_ptq_to_full_integer_with_parity(mnist):
    x, y, x_eval = mnist
    dense = fit(residual_cnn(), x, y)
    pruned, report = tfprune.prune_filters(dense, pruning_ratio=0.5)
    assert pruned.count_params() < 0.5 * dense.count_params()
    fit(pruned, x, y, lr=1e-3)  # brief fine-tune
    qat = fit(tfq.quantize_model(pruned), x, y, lr=5e-4)
    assert sum(isinstance(l, tfq.QuantizeFoldedBatchNorm) for l in qat.layers) == 3  # every BN folded
    ptq = tfq.quantize_post_training(pruned, x[:256], method="entropy", verbose=0)
    for model in (qat, ptq):
        data = tfq.to_tflite(model, inference_input_type=tf.int8)
        assert tfq.float_operators(data) == []
        convs = [k for op, k, _ in int8_kernels(data) if op == "CONV_2D"]
        assert [k.shape[0] for k in convs] == [8, 8, 16]  # the pruned widths, in int8
        assert_parity(data, model, x_eval)


def norm_model():
    inputs = keras.Input((24,))
    x = L.Dense(32, name="d1")(inputs)
    x = L.LayerNormalization(name="ln")(x)
    x = L.ReLU()(x)
    x = L.Dense(32, name="d2")(x)
    x = L.RMSNormalization(name="rms")(x)
    x = L.Dense(16, activation="relu", name="d3")(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x))


def test_pruned_layer_and_rms_normalization_run_in_int8_with_parity():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(24, 4))
    x = rng.normal(size=(512, 24)).astype("float32")
    y = np.argmax(x @ w, 1)
    model = fit(norm_model(), x, y, lr=1e-2, epochs=3)
    pruned, _ = tfprune.prune_filters(model, pruning_ratio=0.5)
    kinds = {type(l) for l in pruned.layers}
    assert {PrunedLayerNormalization, PrunedRMSNormalization} <= kinds
    fit(pruned, x, y, lr=3e-3)
    qat = fit(tfq.quantize_model(pruned), x, y, lr=1e-3)
    assert sum(isinstance(l, tfq.QuantizeNormalization) for l in qat.layers) == 2
    # The quantize-aware chain computes the pruned layers (up to the 8-bit ranges).
    reference = pruned.predict(x[:256], verbose=0)
    assert np.mean(np.argmax(qat.predict(x[:256], verbose=0), 1) == np.argmax(reference, 1)) > 0.9
    for model in (qat, tfq.quantize_post_training(pruned, x[:256], method="minmax", verbose=0)):
        data = tfq.to_tflite(model, inference_input_type=tf.int8)
        assert tfq.float_operators(data) == []
        assert_parity(data, model, x, same_class=0.98, steps=2)


def test_normalization_over_another_axis_is_refused_with_the_fix():
    inputs = keras.Input((4, 6))
    model = keras.Model(inputs, L.LayerNormalization(axis=1, name="ln_axis1")(inputs))
    with pytest.raises(tfq.UnsupportedLayerQuantizationError, match="ln_axis1.*quantize_annotate_layer"):
        tfq.quantize_model(model)


def test_batchnorm_after_an_activation_runs_as_int8_mul_and_add(mnist):
    x, y, x_eval = mnist
    inputs = keras.Input((28, 28, 1))
    h = L.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    h = L.BatchNormalization(name="bn_after_relu")(h)  # cannot fold into the conv
    h = L.Flatten()(L.MaxPooling2D()(h))
    model = fit(keras.Model(inputs, L.Dense(10)(h)), x, y)
    for quantized in (fit(tfq.quantize_model(model), x, y, lr=5e-4),
                      tfq.quantize_post_training(model, x[:256], method="mse", verbose=0)):
        assert any(isinstance(l, tfq.QuantizeBatchNormalization) for l in quantized.layers)
        data = tfq.to_tflite(quantized, inference_input_type=tf.int8)
        assert tfq.float_operators(data) == []
        assert_parity(data, quantized, x_eval)


def test_normalization_and_batchnorm_layers_save_and_load(tmp_path):
    inputs = keras.Input((12,))
    h = L.ReLU()(L.Dense(16)(inputs))
    h = L.BatchNormalization()(h)                      # after an activation: QuantizeBatchNormalization
    h = PrunedLayerNormalization(normalized_size=20)(h)  # 16 of 20 channels kept
    h = L.RMSNormalization()(L.Dense(8)(h))
    model = keras.Model(inputs, L.Dense(3)(h))
    x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
    ptq = tfq.quantize_post_training(model, x, verbose=0)
    kinds = [type(l).__name__ for l in ptq.layers]
    assert kinds.count("QuantizeNormalization") == 2 and "QuantizeBatchNormalization" in kinds
    path = str(tmp_path / "ptq.keras")
    ptq.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), ptq.predict(x, verbose=0), atol=1e-6)
    assert tfq.float_operators(tfq.to_tflite(loaded)) == []
