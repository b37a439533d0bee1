"""fold_batchnorm: BatchNormalization merged into conv/dense kernels gives the same inference outputs."""

import keras
import numpy as np
import pytest
from keras import layers

from tfprune.structured import prune_filters
from tfprune.structured.fold import find_foldable, fold_batchnorm
from tfprune.structured.models import resnet_cifar
from tfprune.structured.verify import randomize_statistics
from tfprune.keras_graph import iter_layers


def bn_count(model):
    return sum(isinstance(layer, layers.BatchNormalization) for layer in iter_layers(model))


def batch(shape, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n,) + tuple(shape)).astype("float32")


def assert_same_outputs(model, folded, x):
    expected = keras.tree.flatten(model(x, training=False))
    actual = keras.tree.flatten(folded(x, training=False))
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        e, a = np.asarray(e), np.asarray(a)
        assert e.shape == a.shape
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-4 * max(1.0, float(np.max(np.abs(e)))))


def fold_and_check(model, shape, expected_bn=0, seed=1):
    randomize_statistics(model, seed=seed)
    folded = fold_batchnorm(model)
    assert bn_count(folded) == expected_bn
    assert_same_outputs(model, folded, batch(shape))
    return folded


def conv_bn_relu_model(use_bias=False):
    inputs = keras.Input((12, 12, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=use_bias, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(6, 3, strides=2, groups=2, name="conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU()(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("use_bias", [False, True])
def test_functional_conv_bn_relu(use_bias, tmp_path):
    model = conv_bn_relu_model(use_bias)
    folded = fold_and_check(model, (12, 12, 3))
    conv = folded.get_layer("conv1")
    assert conv.use_bias and conv.bias is not None
    assert {p.name for p, _ in find_foldable(model).values()} == {"conv1", "conv2"}
    assert bn_count(model) == 2 and model.get_layer("conv1").use_bias == use_bias  # original untouched
    path = tmp_path / "folded.keras"
    folded.save(path)
    loaded = keras.models.load_model(path)
    assert bn_count(loaded) == 0
    assert_same_outputs(model, loaded, batch((12, 12, 3)))


def test_sequential():
    model = keras.Sequential([
        keras.Input((10, 10, 3)), layers.Conv2D(4, 3), layers.BatchNormalization(), layers.ReLU(),
        layers.Conv2D(5, 1), layers.BatchNormalization(), layers.Flatten(),
        layers.Dense(6), layers.BatchNormalization(),
    ])
    model.compile(optimizer="sgd", loss="mse")
    folded = fold_and_check(model, (10, 10, 3))
    assert isinstance(folded, keras.Sequential) and folded.compiled
    assert len(folded.layers) == len(model.layers) - 3


@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise(multiplier):
    inputs = keras.Input((9, 9, 4))
    x = layers.DepthwiseConv2D(3, depth_multiplier=multiplier, padding="same", use_bias=False)(inputs)
    outputs = layers.BatchNormalization()(x)
    fold_and_check(keras.Model(inputs, outputs), (9, 9, 4))


def test_separable_conv1d_conv3d_dense():
    a = keras.Input((16, 3))
    x = layers.SeparableConv1D(6, 3, depth_multiplier=2)(a)
    x = layers.BatchNormalization()(x)
    x = layers.Conv1D(5, 1, use_bias=False)(x)
    x = layers.BatchNormalization(axis=2)(x)
    x = layers.Dense(4)(x)  # rank-3 Dense, BN on the last axis
    x = layers.BatchNormalization()(x)
    b = keras.Input((4, 4, 4, 2))
    y = layers.Conv3D(3, 2)(b)
    y = layers.BatchNormalization()(y)
    y = layers.Flatten()(y)
    y = layers.Dense(5, use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    model = keras.Model([a, b], [x, y])
    randomize_statistics(model, seed=3)
    folded = fold_batchnorm(model)
    assert bn_count(folded) == 0
    x_in = [batch((16, 3)), batch((4, 4, 4, 2), seed=1)]
    assert_same_outputs(model, folded, x_in)


@pytest.mark.parametrize("scale,center", [(False, True), (True, False), (False, False)])
def test_scale_center_off(scale, center):
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(5, 3)(inputs)
    outputs = layers.BatchNormalization(scale=scale, center=center)(x)
    fold_and_check(keras.Model(inputs, outputs), (8, 8, 3))


def test_not_folded_when_not_equivalent():
    inputs = keras.Input((8, 8, 3))
    branch = layers.Conv2D(4, 3, padding="same", name="two_consumers")(inputs)
    a = layers.BatchNormalization(name="bn_a")(branch)
    b = layers.ReLU()(branch)  # second reader of the conv output: folding would change it
    c = layers.Conv2D(4, 3, padding="same", activation="relu", name="with_relu")(inputs)
    c = layers.BatchNormalization(name="bn_c")(c)
    shared = layers.Conv2D(4, 1, name="shared")
    d = layers.BatchNormalization(name="bn_d")(shared(a))
    e = shared(b)
    f = layers.Conv2D(4, 1, name="to_output")(inputs)
    g = layers.BatchNormalization(name="bn_g")(f)  # the conv output is also a model output
    h = layers.BatchNormalization(name="bn_h")(layers.Conv2D(4, 1)(inputs), training=True)
    i = layers.BatchNormalization(axis=1, name="bn_i")(layers.Conv2D(4, 1)(inputs))  # not the channel axis
    model = keras.Model(inputs, [a, b, c, d, e, f, g, h, i])
    randomize_statistics(model, seed=5)
    assert find_foldable(model) == {}
    folded = fold_batchnorm(model)
    assert bn_count(folded) == bn_count(model) == 6
    x = batch((8, 8, 3))
    expected = model(x, training=False)
    actual = folded(x, training=False)
    for index in range(len(expected)):
        np.testing.assert_allclose(actual[index], expected[index], atol=1e-5)


def test_nested_models_are_followed():
    block = keras.Sequential([keras.Input((8, 8, 4)), layers.Conv2D(4, 3, padding="same"),
                              layers.BatchNormalization(), layers.ReLU()], name="block")
    inner_in = keras.Input((8, 8, 3))
    inner = layers.BatchNormalization()(layers.Conv2D(4, 1, use_bias=False)(inner_in))
    inner_model = keras.Model(inner_in, inner, name="inner")
    inputs = keras.Input((8, 8, 3))
    x = inner_model(inputs)
    x = block(block(x))  # a nested model called twice: folding inside it is still exact
    x = layers.Conv2D(4, 1)(x)
    outputs = layers.BatchNormalization()(x)
    folded = fold_and_check(keras.Model(inputs, outputs), (8, 8, 3))
    assert isinstance(folded.get_layer("block"), keras.Sequential)


def test_split_across_model_boundary_is_left():
    inner_in = keras.Input((8, 8, 3))
    inner_model = keras.Model(inner_in, layers.Conv2D(4, 1)(inner_in), name="ends_in_conv")
    inputs = keras.Input((8, 8, 3))
    outputs = layers.BatchNormalization()(inner_model(inputs))
    fold_and_check(keras.Model(inputs, outputs), (8, 8, 3), expected_bn=1)


def test_subclassed_model_rejected():
    class Tiny(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        fold_batchnorm(Tiny())


def mobilenet_v2():
    return keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10,
                                          classifier_activation=None)


@pytest.mark.parametrize("build,shape", [(lambda: resnet_cifar(56), (32, 32, 3)), (mobilenet_v2, (96, 96, 3))],
                         ids=["resnet56", "mobilenet_v2"])
def test_zoo_before_and_after_pruning(build, shape, tmp_path):
    model = randomize_statistics(build(), seed=2)
    assert bn_count(model) > 0
    folded = fold_and_check(model, shape, seed=2)
    assert folded.count_params() < model.count_params()
    pruned, _ = prune_filters(model, pruning_ratio=0.5, round_to=8)
    folded_pruned = fold_batchnorm(pruned)
    assert bn_count(folded_pruned) == 0
    assert_same_outputs(pruned, folded_pruned, batch(shape))
    path = tmp_path / "pruned_folded.keras"
    folded_pruned.save(path)
    assert_same_outputs(pruned, keras.models.load_model(path), batch(shape, seed=4))
