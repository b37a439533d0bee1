"""Quantization is a capability of the layer registry: a layer type's `QuantizationSpec` lives on its
handler, and `tfprune.register_layer` alone makes a custom layer quantizable (QAT, full-integer TFLite)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
import tfprune.quantization as tfq
from tfprune.datasets import load_mnist
from tfprune.layers import LayerHandler, QuantizationSpec, get_handler
from tfprune.layers.registry import _REGISTRY
from tfprune.quantization.low_bit import KBitWeightQuantizer
from tests.tflite_int8 import assert_parity, int8_kernels

L = keras.layers
PACKAGE = "test_quant_registry"


@keras.saving.register_keras_serializable(package=PACKAGE)
class SmallConv(keras.layers.Layer):
    """A 3x3 'valid' convolution written from scratch (kernel and bias)."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, input_shape[-1], self.filters))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x):
        return keras.ops.conv(x, self.kernel) + self.bias

    def get_config(self):
        return dict(super().get_config(), filters=self.filters)


@keras.saving.register_keras_serializable(package=PACKAGE)
class Project(keras.layers.Layer):
    """`x @ kernel` on the last axis, written from scratch."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units))

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)

    def get_config(self):
        return dict(super().get_config(), units=self.units)


class SmallConvHandler(LayerHandler):
    prunable_weights = ("kernel",)
    quantization = QuantizationSpec("weights", ("kernel",), fuses_activation=True)  # as Conv2D


class ProjectHandler(LayerHandler):
    prunable_weights = ("kernel",)
    quantization = QuantizationSpec("weights", ("kernel",), per_channel=False)  # FULLY_CONNECTED: per tensor


@keras.saving.register_keras_serializable(package=PACKAGE)
class ProjectConfig(tfq.WeightsQuantizeConfig):
    """A QuantizeConfig class a spec names: 4-bit per-tensor kernel, learned output range."""

    def __init__(self, **kwargs):
        super().__init__(["kernel"], KBitWeightQuantizer(4, per_axis=False), tfq.MovingAverageQuantizer())

    def get_config(self):
        return {}


@pytest.fixture
def registered():
    tfprune.register_layer(SmallConv, SmallConvHandler())
    tfprune.register_layer(Project, ProjectHandler())
    yield
    _REGISTRY.pop(SmallConv)
    _REGISTRY.pop(Project)


def _model() -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = SmallConv(8, name="conv")(inputs)
    x = L.ReLU()(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    return keras.Model(inputs, Project(10, name="head")(x))


def _compile(model, learning_rate):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def test_a_registered_custom_layer_trains_quantize_aware_and_exports_full_integer(registered):
    (x_train, y_train), (x_eval, y_eval) = load_mnist(train_size=3000)
    x_eval, y_eval = x_eval[:1000], y_eval[:1000]
    keras.utils.set_random_seed(0)
    model = _compile(_model(), 3e-3)
    model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    qat = tfq.quantize_model(model)  # no quantization-only registration
    wrappers = {layer.layer.name: layer for layer in qat.layers if isinstance(layer, tfq.QuantizeWrapper)}
    assert set(wrappers) >= {"conv", "head"}
    conv_config = wrappers["conv"].quantize_config
    # the same config as the built-in Conv2D, whose handler declares the same spec
    assert conv_config.get_config() == tfq.quantize_config_for(L.Conv2D(8, 3)).get_config()
    assert conv_config.weight_quantizer.per_axis and not wrappers["head"].quantize_config.weight_quantizer.per_axis
    assert wrappers["conv"].quantize_output is False  # the ReLU that TFLite fuses sets the range
    _compile(qat, 5e-4).fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)

    data = tfq.to_tflite(qat, inference_input_type=tf.int8)
    assert tfq.float_operators(data) == []
    kernels = int8_kernels(data)
    assert [name for name, _, _ in kernels] == ["CONV_2D", "FULLY_CONNECTED"]
    conv_scales, head_scales = kernels[0][2], kernels[1][2]
    assert len(conv_scales) == 8 and len(set(conv_scales)) > 1  # per channel
    assert len(set(head_scales)) == 1  # per tensor
    assert_parity(data, qat, x_eval)
    accuracy = np.mean(qat.predict(x_eval, verbose=0).argmax(1) == y_eval)
    assert accuracy > 0.8, accuracy  # it learned: the parity is not between two constant models


def test_every_scheme_reads_the_handler_declaration(registered):
    model = _model()
    sparse = tfq.quantize_model(model, preserve_sparsity=True)
    low = tfq.quantize_model(model, weight_bits=4)
    for qat in (sparse, low):
        by_name = {layer.layer.name: layer for layer in qat.layers if isinstance(layer, tfq.QuantizeWrapper)}
        conv, head = by_name["conv"].quantize_config, by_name["head"].quantize_config
        assert conv.weight_attrs == ["kernel"] and head.weight_attrs == ["kernel"]
        assert conv.weight_quantizer.per_axis and not head.weight_quantizer.per_axis
    assert isinstance(sparse.get_layer("quant_conv").quantize_config.weight_quantizer, tfq.PrunePreserveQuantizer)
    weight = low.get_layer("quant_conv").quantize_config.weight_quantizer
    assert isinstance(weight, KBitWeightQuantizer) and weight.num_bits == 4


def test_a_handler_without_a_declaration_refuses_a_layer_with_weights():
    class PrunableOnly(LayerHandler):
        prunable_weights = ("kernel",)

    tfprune.register_layer(SmallConv, PrunableOnly())
    try:
        model = _model()
        assert tfq.layer_quantization(model.get_layer("conv")) is None
        with pytest.raises(tfq.UnsupportedLayerQuantizationError) as info:
            tfq.quantize_model(model)
        message = str(info.value)
        assert "'conv'" in message and "SmallConv" in message
        assert "quantize_annotate_layer(layer, quantize_config=" in message and "leave it float" in message
        assert "QuantizationSpec" in message and "register_layer(SmallConv, handler)" in message
    finally:
        _REGISTRY.pop(SmallConv)


def test_a_weightless_layer_without_a_declaration_gets_an_output_range():
    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    tfprune.register_layer(Twice, LayerHandler())
    try:
        config = tfq.quantize_config_for(Twice())
        assert type(config) is tfq.OutputQuantizeConfig
    finally:
        _REGISTRY.pop(Twice)


def test_a_spec_can_name_a_registered_quantize_config_class():
    class Handler(LayerHandler):
        quantization = QuantizationSpec("config", config=f"{PACKAGE}>ProjectConfig")

    tfprune.register_layer(Project, Handler())
    try:
        config = tfq.quantize_config_for(Project(3))
        assert type(config) is ProjectConfig and config.weight_quantizer.num_bits == 4
        Handler.quantization = QuantizationSpec("config", config=f"{PACKAGE}>NoSuchConfig")
        with pytest.raises(ValueError, match="register_keras_serializable"):
            tfq.quantize_config_for(Project(3, name="p"))
    finally:
        _REGISTRY.pop(Project)


def test_layer_quantization_is_a_read_only_view_of_the_registry(registered):
    view = tfq.LAYER_QUANTIZATION
    assert SmallConv in view and view[SmallConv].fold is None and view[SmallConv].fuses_activation
    assert view[L.Conv2D].fold.channel_dims == 1 and view[L.DepthwiseConv2D].fold.channel_dims == 2
    assert view[L.Dense].fold is not None and view[L.Concatenate].same_scale_inputs
    assert L.Embedding not in view and L.InputLayer in view
    with pytest.raises(TypeError, match="register_layer"):
        view[SmallConv] = view[L.Conv2D]
    with pytest.raises(TypeError, match="read-only"):
        del view[L.Conv2D]
    _REGISTRY.pop(SmallConv)
    try:
        assert SmallConv not in view
    finally:
        tfprune.register_layer(SmallConv, SmallConvHandler())


def test_classes_sharing_a_handler_keep_their_own_quantization():
    one, two = get_handler(L.MaxPooling1D()), get_handler(L.MaxPooling2D())
    assert type(one) is type(two) and one.latency == two.latency
    assert one.quantization.kind == two.quantization.kind == "none"
    assert two.quantization.fuses_activation and not one.quantization.fuses_activation
    assert get_handler(L.AveragePooling2D(2)).quantization.kind == "output"
    handler = tfprune.layers.PassThrough()
    copy = handler.with_quantization(QuantizationSpec("output"))
    assert handler.quantization is None and copy.quantization.kind == "output" and copy.check is handler.check
    with pytest.raises(TypeError, match="QuantizationSpec"):
        handler.with_quantization("output")


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "int8"}, "one of weights"),
    ({"kind": "weights"}, "name the weights"),
    ({"kind": "output", "weights": ("kernel",)}, "name the weights"),
    ({"kind": "config"}, "registered name"),
    ({"kind": "output", "folds_batchnorm": True}, "needs kind='weights'"),
    ({"kind": "weights", "weights": ("kernel",), "separable": True}, "two weights"),
    ({"kind": "weights", "weights": ("kernel",), "channel_dims": 0}, "channel_dims"),
])
def test_spec_rejects_inconsistent_declarations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantizationSpec(**kwargs)


def test_a_handler_quantization_that_is_no_spec_is_a_clear_error():
    class Handler(LayerHandler):
        quantization = "weights"

    tfprune.register_layer(Project, Handler())
    try:
        with pytest.raises(TypeError, match="QuantizationSpec"):
            tfq.layer_quantization(Project(3))
    finally:
        _REGISTRY.pop(Project)
