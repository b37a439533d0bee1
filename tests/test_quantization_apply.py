"""quantize_model / annotate / apply: the rebuilt graph, BatchNormalization folding, learned ranges,
Sequential / functional / nested / subclassed models, saving and resuming, bad input."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.quantization_reference import fake_quant, symmetric_per_channel
import tfprune.quantization as tfq
from tfprune.quantization.layers import QuantizeFoldedBatchNorm, QuantizeLayer, QuantizeWrapper

L = keras.layers


def _residual(name="residual"):
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.BatchNormalization(name="dw_bn")(y)
    y = L.ReLU(6.0, name="dw_relu6")(y)
    y = L.Conv2D(8, 1, name="project")(y)
    y = L.BatchNormalization(name="project_bn")(y)
    x = L.Add(name="add")([x, y])
    x = L.ReLU(name="add_relu")(x)
    a = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="branch")(x)
    b = L.MaxPooling2D(name="pool")(x)
    x = L.Concatenate(name="concat")([a, b])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(4, name="logits")(x), name=name)


def _by_name(model):
    return {layer.name: layer for layer in model.layers}


def _input_quantizer(model):
    (layer,) = [l for l in model.layers if isinstance(l, QuantizeLayer)]
    return layer


def _output_quantized(layer):
    return bool(layer.output_quantizers)


def test_graph_follows_tflite_fusion_rules():
    q = tfq.quantize_model(_residual())
    layers = _by_name(q)
    assert not any(isinstance(l, L.BatchNormalization) for l in q.layers)  # all three folded
    for name in ("stem", "dw", "project"):
        assert isinstance(layers[f"quant_{name}"], QuantizeFoldedBatchNorm)
    assert _input_quantizer(q).name.startswith("quantize_input_layer")
    # ReLU after a conv / add is fused by TFLite: the producer keeps no output range, the ReLU does.
    assert not _output_quantized(layers["quant_stem"]) and _output_quantized(layers["quant_stem_relu"])
    assert not _output_quantized(layers["quant_add"]) and _output_quantized(layers["quant_add_relu"])
    # project_bn feeds Add directly: quantized there.
    assert _output_quantized(layers["quant_project"])
    # Concatenate's inputs take its range; max pooling runs on its input's scale.
    assert not _output_quantized(layers["quant_branch"]) and _output_quantized(layers["quant_concat"])
    assert not _output_quantized(layers["quant_pool"])
    assert _output_quantized(layers["quant_gap"]) and _output_quantized(layers["quant_logits"])
    dw = layers["quant_dw"]
    assert dw.kernel_quantizer.channel_dims == 2 and dw.kernel_quantizer.per_axis
    assert layers["quant_logits"].quantize_config.weight_quantizer.per_axis is False  # TFLite FC: per tensor


def test_folded_layer_inference_matches_numpy_fold():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(3, 3, name="conv")(inputs)
    model = keras.Model(inputs, L.BatchNormalization(name="bn", epsilon=1e-3)(x))
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn")
    gamma, beta = rng.uniform(0.5, 2, 3), rng.normal(size=3)
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2, 3)
    bn.set_weights([gamma, beta, mean, var])
    q = tfq.quantize_model(model)
    folded = _by_name(q)["quant_conv"]
    kernel, bias = model.get_layer("conv").get_weights()
    inv = gamma / np.sqrt(var + 1e-3)
    folded_kernel, folded_bias = kernel * inv, beta + (bias - mean) * inv
    got_kernel, got_bias = folded.folded_kernel_and_bias(bn.moving_mean, bn.moving_variance)
    np.testing.assert_allclose(got_kernel.numpy(), folded_kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_bias.numpy(), folded_bias, rtol=1e-5, atol=1e-6)
    # Whole model in inference: input fake-quant, conv with the quantized folded kernel, output fake-quant.
    x = rng.uniform(-1, 1, size=(4, 6, 6, 2)).astype("float32")
    ptq = tfq.quantize_post_training(q, x, method="minmax", verbose=0)
    layers = _by_name(ptq)
    in_vars, out_vars = _input_quantizer(ptq).quantizer_vars, layers["quant_conv"].output_vars[0]
    xq = fake_quant(x, float(in_vars["min"].numpy()), float(in_vars["max"].numpy()))
    conv = tf.nn.conv2d(xq, symmetric_per_channel(folded_kernel), 1, "VALID").numpy() + folded_bias
    expected = fake_quant(conv, float(out_vars["min"].numpy()), float(out_vars["max"].numpy()))
    step = (float(out_vars["max"].numpy()) - float(out_vars["min"].numpy())) / 255
    assert np.abs(ptq(x, training=False).numpy() - expected).max() <= step * 1.01


def test_training_folds_with_batch_statistics_and_freeze_bn_delay_stops_updates():
    inputs = keras.Input((5, 5, 1))
    x = L.Conv2D(2, 3, name="conv")(inputs)
    model = keras.Model(inputs, L.BatchNormalization(name="bn")(x))
    q = tfq.quantize_model(model, freeze_bn_delay=2)
    folded = _by_name(q)["quant_conv"]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 5, 5, 1)).astype("float32")
    means = []
    for _ in range(4):
        out = q(x, training=True).numpy()
        means.append(folded.batchnorm.moving_mean.numpy().copy())
    assert not np.allclose(means[0], means[1])       # steps 1-2 update the moving statistics
    np.testing.assert_array_equal(means[1], means[2])  # frozen afterwards
    np.testing.assert_array_equal(means[2], means[3])
    assert int(folded.bn_step.numpy()) == 4
    assert np.isfinite(out).all()
    calls = []
    linear = folded._linear
    folded._linear = lambda *args: calls.append(1) or linear(*args)
    q(x, training=True)
    assert len(calls) == 1  # frozen: only the folded convolution runs, not the one for batch statistics


def test_input_range_is_learned_as_moving_average_of_batches():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="d")(inputs))
    q = tfq.quantize_model(model)
    q.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(64, 4)) * np.repeat([1, 2, 3, 4], 16)[:, None]).astype("float32")
    q.fit(x, np.zeros((64, 2), "float32"), batch_size=16, shuffle=False, epochs=1, verbose=0)
    low = high = None
    for k in range(4):
        batch = x[16 * k:16 * (k + 1)]
        b_low, b_high = min(batch.min(), 0.0), max(batch.max(), 0.0)
        low = b_low if low is None else 0.999 * low + 0.001 * b_low
        high = b_high if high is None else 0.999 * high + 0.001 * b_high
    variables = _input_quantizer(q).quantizer_vars
    assert float(variables["min"].numpy()) == pytest.approx(low, rel=1e-4)
    assert float(variables["max"].numpy()) == pytest.approx(high, rel=1e-4)


def test_sequential_and_nested_models():
    inner = keras.Sequential([keras.Input((8,)), L.Dense(6, activation="relu", name="inner_dense")], name="inner")
    seq = keras.Sequential([keras.Input((5,)), L.Dense(8, name="first"), L.ReLU(name="relu"), inner,
                            L.Dense(3, name="out")], name="seq")
    q = tfq.quantize_model(seq)
    layers = _by_name(q)
    nested = layers["inner"]
    assert isinstance(nested, keras.Model)
    assert isinstance(_by_name(nested)["quant_inner_dense"], QuantizeWrapper)
    assert not any(isinstance(l, QuantizeLayer) for l in nested.layers)  # its input is quantized outside
    x = np.random.default_rng(3).normal(size=(10, 5)).astype("float32")
    ptq = tfq.quantize_post_training(seq, x, verbose=0)
    reference = seq(x).numpy()
    assert np.abs(ptq(x).numpy() - reference).max() < 0.05 * np.abs(reference).max() + 1e-3
    np.testing.assert_array_equal(seq.get_layer("first").get_weights()[0],
                                  _by_name(q)["quant_first"].layer.get_weights()[0])


def test_annotate_part_of_a_model_and_layers_of_subclassed_models():
    inputs = keras.Input((6,))
    x = tfq.quantize_annotate_layer(L.Dense(4, name="quantized"))(inputs)
    out = L.Dense(2, name="float_head")(x)
    q = tfq.quantize_apply(keras.Model(inputs, out))
    layers = _by_name(q)
    assert isinstance(layers["quant_quantized"], QuantizeWrapper)
    assert type(layers["float_head"]) is L.Dense

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = tfq.quantize_apply(tfq.quantize_annotate_layer(L.Dense(3)))

        def call(self, x):
            return self.dense(x)

    net = Net()
    y = net(np.ones((2, 6), "float32"), training=True)
    assert isinstance(net.dense, QuantizeWrapper) and y.shape == (2, 3)
    assert any("output0_max" in v.path for v in net.weights)


class _Scale(L.Layer):
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return x * self.w


class _ScaleConfig(tfq.QuantizeConfig):
    def get_weights_and_quantizers(self, layer):
        return [(layer.w, tfq.LastValueQuantizer(per_axis=False))]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.w = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [tfq.MovingAverageQuantizer()]

    def get_config(self):
        return {}


def _model_with_custom_layer():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="dense")(inputs)
    return keras.Model(inputs, _Scale(name="scale")(x))


def test_unsupported_layer_with_weights_names_it_and_both_fixes():
    model = _model_with_custom_layer()
    with pytest.raises(tfq.UnsupportedLayerQuantizationError) as info:
        tfq.quantize_model(model)
    message = str(info.value)
    assert "'scale'" in message and "_Scale" in message
    assert "quantize_annotate_layer(layer, quantize_config=" in message  # fix 1: a config
    assert "leave it float" in message and "quantize_apply" in message  # fix 2: annotate the others
    # Fix 1 works:
    annotated = keras.Model(model.inputs, tfq.quantize_annotate_layer(_Scale(name="scale"), _ScaleConfig())(
        tfq.quantize_annotate_layer(L.Dense(4, name="dense"))(model.inputs[0])))
    assert isinstance(_by_name(tfq.quantize_apply(annotated))["quant_scale"], QuantizeWrapper)
    # Fix 2 works: the layer stays float.
    q = tfq.quantize_apply(tfq.quantize_annotate_model(model, skip=["scale"]))
    assert type(_by_name(q)["scale"]) is _Scale


def test_bad_arguments():
    model = _residual()
    with pytest.raises(ValueError, match="no annotated layer"):
        tfq.quantize_apply(model)
    with pytest.raises(ValueError, match="already quantize-aware"):
        tfq.quantize_model(tfq.quantize_model(model))
    with pytest.raises(TypeError, match="keras layer"):
        tfq.quantize_annotate_layer(model)
    with pytest.raises(ValueError, match="freeze_bn_delay"):
        tfq.quantize_model(model, freeze_bn_delay=-1)
    with pytest.raises(ValueError, match="skip"):
        tfq.quantize_annotate_model(model, skip=["nope"])
    with pytest.raises(tfq.FullIntegerExportError, match="quantize_model"):
        tfq.to_tflite(model)


def test_save_load_resume_keeps_ranges(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 12, 12, 3)).astype("float32")
    y = rng.integers(0, 4, size=64)
    q = tfq.quantize_model(_residual(), freeze_bn_delay=100)
    q.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    q.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    path = str(tmp_path / "qat.keras")
    q.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), q.predict(x, verbose=0), atol=1e-6)
    ranges = {v.path: v.numpy() for v in q.weights if v.path.endswith(("_min", "_max", "bn_step"))}
    assert len(ranges) > 10
    for v in loaded.weights:
        if v.path in ranges:
            np.testing.assert_array_equal(v.numpy(), ranges.pop(v.path))
    assert not ranges
    # Resume: one more epoch from the saved state gives the same model as continuing in memory.
    q.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(q.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)
    # A fresh process loads it with nothing but the import.
    code = ("import keras, numpy as np, tfprune.quantization\n"
            f"m = keras.saving.load_model({path!r})\nprint(m.count_params())")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) == q.count_params()


def test_training_flag_reaches_wrapped_layers():
    inputs = keras.Input((32,))
    x = L.Dropout(0.5, name="drop")(inputs)
    x = L.BatchNormalization(name="standalone_bn")(x)
    q = tfq.quantize_model(keras.Model(inputs, L.Dense(4, name="d")(x)))
    x = np.random.default_rng(5).normal(size=(16, 32)).astype("float32") + 3.0
    bn = _by_name(q)["quant_standalone_bn"].layer
    before = bn.moving_mean.numpy().copy()
    train_out = q(x, training=True).numpy()
    assert not np.allclose(bn.moving_mean.numpy(), before)  # BN in training mode updated its statistics
    assert np.isfinite(train_out).all()
    dropout = QuantizeWrapper(L.Dropout(0.5), tfq.NoOpQuantizeConfig())
    ones = np.ones((4, 64), "float32")
    assert (dropout(ones, training=True).numpy() == 0).mean() > 0.2
    np.testing.assert_array_equal(dropout(ones, training=False).numpy(), ones)
