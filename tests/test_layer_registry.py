"""The layer registry: one registration gives a custom layer every capability its handler declares."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfprune
from tfprune import analysis, layers as layer_lib
from tfprune.layers.registry import _REGISTRY
from tfprune.structured import DependencyGraph, prune_filters, verify


@keras.saving.register_keras_serializable(package="test_registry")
class ChannelMix(keras.layers.Layer):
    """A 1x1 channel mixer with a kernel (in, units): a Dense-like producer written from scratch."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units))

    def call(self, x):
        return keras.ops.matmul(x, self.kernel)

    def get_config(self):
        return dict(super().get_config(), units=self.units)


class ChannelMixHandler(layer_lib.LayerHandler):
    prunable_weights = ("kernel",)

    def macs(self, layer, input_shape, output_shape):
        return int(np.prod(input_shape[1:-1])) * layer.kernel.shape[0] * layer.kernel.shape[1]

    def trace(self, graph, call):
        graph.slot(call.layer, "in", graph.values[call.inputs[0]])
        return [graph.producer(call.layer, call.layer.units)]

    def is_producer(self, rec):
        return True

    def new_config(self, rec, config, keep):
        return dict(config, units=len(keep("out")))

    def new_weights(self, rec, weights, keep):
        return [weights[0][keep("in")][:, keep("out")]]

    def filter_weight(self, layer):
        return layer.kernel, -1

    def zero_channels(self, layer, removed):
        kernel = layer.get_weights()[0]
        kernel[:, removed] = 0
        layer.set_weights([kernel])


@pytest.fixture
def registered():
    tfprune.register_layer(ChannelMix, ChannelMixHandler())
    yield
    _REGISTRY.pop(ChannelMix)


def _model():
    x = keras.Input((6, 6, 4))
    h = ChannelMix(8, name="mix1")(x)
    h = keras.layers.ReLU()(h)
    h = ChannelMix(16, name="mix2")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(3, name="head")(h))


def test_unregistered_custom_layer_is_refused_by_magnitude_pruning():
    with pytest.raises(tfprune.UnsupportedLayerError, match="register_layer"):
        tfprune.prune_low_magnitude(_model())


def test_a_layer_registered_once_is_counted_traced_rebuilt_and_magnitude_pruned(registered):
    model = _model()
    # MACs: 36 positions * 4*8 + 36 * 8*16 + 16*3
    assert analysis.count_macs(model) == 36 * 32 + 36 * 128 + 48
    assert analysis.count_flops(model) == analysis.count_macs(model)

    graph = DependencyGraph(model)
    prunable = [g for g in graph.groups if g.prunable]
    assert sorted(p for g in prunable for p in g.producers) == ["mix1", "mix2"]
    pruned, report = prune_filters(model, pruning_ratio=0.5)
    assert pruned.get_layer("mix1").units == 4 and pruned.get_layer("mix2").units == 8
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    assert analysis.count_macs(pruned) == 36 * 16 + 36 * 32 + 24

    wrapped = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.75, 0))
    wrappers = {w.layer.name: w for w in tfprune.collect_wrappers(wrapped)}
    assert set(wrappers) == {"mix1", "mix2", "head"}
    wrappers["mix2"].update_masks(1, [0.75])
    mask = wrappers["mix2"].masks[0].numpy()
    assert int((mask == 0).sum()) == 96  # 75% of 8*16


def test_subclass_of_a_registered_layer_is_handled_like_its_parent():
    class MyDense(keras.layers.Dense):
        pass

    layer = MyDense(4)
    assert layer_lib.get_handler(layer) is layer_lib.get_handler(keras.layers.Dense(4))
    model = keras.Sequential([keras.Input((5,)), MyDense(4, name="mine")])
    assert analysis.count_macs(model) == 20
    wrapped = tfprune.prune_low_magnitude(model)
    assert [w.layer.name for w in tfprune.collect_wrappers(wrapped)] == ["mine"]


def test_exact_registration_wins_over_the_parent_class(registered):
    class NotReallyDense(keras.layers.Dense):
        pass

    handler = layer_lib.KeepsWeights()
    tfprune.register_layer(NotReallyDense, handler)
    try:
        assert layer_lib.get_handler(NotReallyDense(3)) is handler
        assert not layer_lib.is_prunable(NotReallyDense(3))
        assert layer_lib.get_handler(keras.layers.Dense(3)) is not handler
    finally:
        _REGISTRY.pop(NotReallyDense)


def test_register_layer_rejects_bad_arguments():
    with pytest.raises(TypeError, match="layer class"):
        tfprune.register_layer(keras.layers.Dense(3), layer_lib.PassThrough())
    with pytest.raises(TypeError, match="LayerHandler"):
        tfprune.register_layer(ChannelMix, object())


def test_structured_register_handler_is_the_same_registry():
    from tfprune.structured import register_handler

    class Scale3(keras.layers.Layer):
        def call(self, x):
            return x * 3.0

    register_handler(Scale3, layer_lib.PassThrough())
    try:
        assert isinstance(layer_lib.get_handler(Scale3()), layer_lib.PassThrough)
    finally:
        _REGISTRY.pop(Scale3)


@pytest.mark.parametrize("layer, names", [
    (keras.layers.LSTM(3), ("kernel", "recurrent_kernel")),
    (keras.layers.RNN(keras.layers.GRUCell(3)), ("kernel", "recurrent_kernel")),
    (keras.layers.SeparableConv2D(4, 3), ("depthwise_kernel", "pointwise_kernel")),
    (keras.layers.BatchNormalization(), ()),
])
def test_builtin_prunable_weights(layer, names):
    assert layer_lib.get_handler(layer).prunable_weight_names(layer) == names


def test_stacked_rnn_cells_are_prunable():
    cells = [keras.layers.LSTMCell(4, name="c1"), keras.layers.LSTMCell(3, name="c2")]
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.RNN(cells, name="rnn")])
    labels = [label for label, _ in layer_lib.prunable_weights(model.get_layer("rnn"))]
    assert labels == ["c1/kernel", "c1/recurrent_kernel", "c2/kernel", "c2/recurrent_kernel"]


def test_per_channel_layers_pass_through_magnitude_pruning():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3)(x)
    h = keras.layers.PReLU(shared_axes=[1, 2])(h)
    model = keras.Model(x, keras.layers.GroupNormalization(groups=2)(h))
    wrapped = tfprune.prune_low_magnitude(model)
    assert len(tfprune.collect_wrappers(wrapped)) == 1


def test_latency_roles_come_from_the_handlers():
    from tfprune.layers import get_handler

    def role(layer):
        return get_handler(layer).latency_role(layer)

    L = keras.layers
    assert [role(x) for x in (L.Conv2D(4, 3), L.Dense(3), L.DepthwiseConv2D(3), L.SeparableConv2D(4, 3),
                              L.Add())] == ["anchor"] * 5
    assert [role(x) for x in (L.BatchNormalization(), L.ReLU(), L.Activation("relu"))] == ["fused"] * 3
    assert [role(x) for x in (L.Dropout(0.1), L.Flatten(), L.Reshape((4,)))] == ["untimed"] * 3
    assert [role(x) for x in (L.Activation("softmax"), L.GlobalAveragePooling2D(), L.Concatenate(),
                              L.Maximum())] == ["alone"] * 4


def test_softmax_has_a_home_it_passes_through_a_pruned_list_and_is_not_traced():
    dense, softmax = tfprune.prune_low_magnitude([keras.layers.Dense(3), keras.layers.Softmax()])
    assert isinstance(dense, tfprune.PruneLowMagnitude) and type(softmax) is keras.layers.Softmax
    assert layer_lib.get_handler(softmax).quantization.kind == "activation"  # TFLite's fixed output range
    x = keras.Input((4,))
    h = keras.layers.Dense(6, name="d")(x)
    graph = DependencyGraph(keras.Model(x, keras.layers.Dense(2)(keras.layers.Softmax()(h))))
    assert not next(g for g in graph.groups if "d" in g.producers).prunable  # softmax mixes d's channels
