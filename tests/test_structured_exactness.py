"""Exactness of structured pruning on one small model per graph rule.

For every topology the pruned model must compute what the original computes when the removed
channels are silenced at their source (see tfprune.structured.verify).
"""

import keras
import numpy as np
import pytest
from keras import layers

from tfprune.structured import prune_filters, verify


def conv_bn(x, filters, kernel=3, **kw):
    x = layers.Conv2D(filters, kernel, padding="same", **kw)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def m_chain():
    x = keras.Input((12, 12, 3))
    y = conv_bn(x, 8)
    y = conv_bn(y, 12)
    y = layers.Flatten()(y)
    y = layers.Dense(16, activation="relu")(y)
    return keras.Model(x, layers.Dense(4)(y))


def m_residual():
    x = keras.Input((12, 12, 3))
    y = conv_bn(x, 8)
    z = conv_bn(y, 8)
    z = layers.Conv2D(8, 3, padding="same")(z)
    y = layers.ReLU()(layers.Add()([y, z]))
    y = conv_bn(y, 10)
    return keras.Model(x, layers.Dense(3)(layers.GlobalAveragePooling2D()(y)))


def m_merges():
    x = keras.Input((10, 10, 3))
    a, b = conv_bn(x, 8), conv_bn(x, 8)
    outs = [layer()([a, b]) for layer in (layers.Subtract, layers.Multiply, layers.Average,
                                           layers.Maximum, layers.Minimum)]
    y = layers.Concatenate()([conv_bn(o, 6) for o in outs])
    return keras.Model(x, layers.Dense(2)(layers.GlobalMaxPooling2D()(y)))


def m_concat():
    x = keras.Input((12, 12, 3))
    a, b = conv_bn(x, 6), conv_bn(x, 10)
    c = layers.Concatenate()([a, x, b])  # input channels in the middle are never pruned
    y = conv_bn(c, 8)
    d = layers.Concatenate(axis=1)([y, conv_bn(x, 8)])  # concat on a spatial axis couples channels
    return keras.Model(x, layers.Dense(3)(layers.GlobalAveragePooling2D()(d)))


def m_depthwise():
    x = keras.Input((12, 12, 3))
    y = conv_bn(x, 8)
    y = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")(y)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU(6.0)(y)
    y = conv_bn(y, 12, kernel=1)
    y = layers.SeparableConv2D(10, 3, depth_multiplier=2, padding="same")(y)
    y = layers.BatchNormalization()(y)
    return keras.Model(x, layers.Dense(3)(layers.GlobalAveragePooling2D()(layers.ReLU()(y))))


def m_grouped():
    x = keras.Input((10, 10, 4))
    y = conv_bn(x, 12)
    y = conv_bn(y, 16, kernel=1, groups=4)  # grouped: positions coupled across groups
    y = conv_bn(y, 32, kernel=3, groups=16)  # depthwise-like: channels pass through, multiplier 2
    y = conv_bn(y, 8, kernel=1, groups=2)
    return keras.Model(x, layers.Dense(3)(layers.Flatten()(y)))


def m_transpose_and_spatial():
    x = keras.Input((8, 8, 3))
    y = layers.Rescaling(1 / 2.0)(x)
    y = conv_bn(y, 8)
    y = layers.ZeroPadding2D(1)(y)
    y = layers.Cropping2D(1)(y)
    y = layers.MaxPooling2D()(y)
    y = layers.Dropout(0.3)(y)
    y = layers.SpatialDropout2D(0.2)(y)
    y = layers.Conv2DTranspose(10, 3, strides=2, padding="same")(y)
    y = layers.LeakyReLU(0.1)(y)
    y = layers.UpSampling2D()(y)
    y = layers.AveragePooling2D(2)(y)
    y = layers.Activation("swish")(y)
    y = layers.PReLU(shared_axes=[1, 2])(y)
    y = conv_bn(y, 6)
    return keras.Model(x, layers.Conv2D(2, 1)(y))


def m_squeeze_excite():
    x = keras.Input((8, 8, 3))
    y = conv_bn(x, 16)
    s = layers.GlobalAveragePooling2D()(y)
    s = layers.Reshape((1, 1, 16))(s)
    s = layers.Conv2D(4, 1, activation="relu")(s)
    s = layers.Conv2D(16, 1, activation="sigmoid")(s)
    y = layers.Multiply()([y, s])
    y = conv_bn(y, 8)
    return keras.Model(x, layers.Dense(3)(layers.GlobalAveragePooling2D()(y)))


def m_reshape_dense():
    x = keras.Input((4, 4, 3))
    a = conv_bn(x, 6)
    flat = layers.Reshape((4 * 4 * 6,))(a)
    rows = layers.Reshape((4, 4 * 6))(conv_bn(x, 6))
    rows = layers.Dense(5, activation="relu")(rows)  # Dense on a 3-D tensor
    y = layers.Concatenate()([layers.Dense(7, activation="relu")(flat), layers.Flatten()(rows)])
    return keras.Model(x, layers.Dense(2)(y))


def m_conv1d_conv3d():
    x1 = keras.Input((16, 3))
    y1 = layers.Conv1D(8, 3, padding="same", activation="relu")(x1)
    y1 = layers.Conv1D(6, 3, padding="same", activation="relu")(y1)
    x3 = keras.Input((4, 6, 6, 2))
    y3 = layers.Conv3D(8, 3, padding="same", activation="relu")(x3)
    y3 = layers.GlobalAveragePooling3D()(layers.Conv3D(5, 1, activation="relu")(y3))
    y = layers.Concatenate()([layers.GlobalAveragePooling1D()(y1), y3])
    return keras.Model([x1, x3], layers.Dense(3)(y))


def m_nested():
    inner = keras.Sequential([keras.Input((10, 10, 8)), layers.Conv2D(12, 3, padding="same"),
                              layers.BatchNormalization(), layers.ReLU()], name="inner_seq")
    xi = keras.Input((10, 10, 12))
    yi = conv_bn(xi, 12)
    block = keras.Model(xi, layers.Add()([xi, yi]), name="inner_res")
    x = keras.Input((10, 10, 3))
    y = conv_bn(x, 8)
    y = block(inner(y))
    return keras.Model(x, layers.Dense(3)(layers.GlobalAveragePooling2D()(y)))


def m_nested_twice():
    xi = keras.Input((8, 8, 6))
    yi = layers.Conv2D(6, 3, padding="same")(layers.ReLU()(xi))  # pass-through first: no weights
    block = keras.Model(xi, layers.Add()([xi, yi]), name="twice")
    x = keras.Input((8, 8, 3))
    a = block(conv_bn(x, 6))
    b = block(conv_bn(x, 6))
    y = layers.Concatenate()([a, b])
    return keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(conv_bn(y, 4))))


def m_shared():
    x = keras.Input((10, 10, 3))
    shared = layers.Conv2D(8, 3, padding="same", activation="relu")
    a = shared(conv_bn(x, 6))
    b = shared(conv_bn(x, 6))
    y = conv_bn(layers.Add()([a, b]), 5)
    return keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(y)))


def m_sequential():
    return keras.Sequential([
        keras.Input((12, 12, 3)), layers.Conv2D(8, 3, activation="relu"), layers.BatchNormalization(),
        layers.MaxPooling2D(), layers.Conv2D(16, 3, activation="relu"), layers.Flatten(),
        layers.Dense(20, activation="relu"), layers.Dropout(0.5), layers.Dense(4),
    ])


def m_mlp():
    x = keras.Input((20,))
    y = layers.Dense(32, activation="gelu")(x)
    y = layers.BatchNormalization()(y)
    y = layers.Dense(16, activation="tanh")(y)
    return keras.Model(x, layers.Dense(3, activation="softmax")(y))


def m_raw_ops():
    x = keras.Input((8, 8, 3))
    a = conv_bn(x, 8)
    b = layers.Conv2D(8, 3, padding="same")(a)
    y = keras.ops.relu(a + b) * 0.5  # keras.ops on symbolic tensors
    y = keras.ops.maximum(conv_bn(y, 6), conv_bn(y, 6))
    return keras.Model(x, layers.Dense(2)(layers.GlobalAveragePooling2D()(y)))


MODELS = {f.__name__[2:]: f for f in [
    m_raw_ops,
    m_chain, m_residual, m_merges, m_concat, m_depthwise, m_grouped, m_transpose_and_spatial,
    m_squeeze_excite, m_reshape_dense, m_conv1d_conv3d, m_nested, m_nested_twice, m_shared,
    m_sequential, m_mlp,
]}


def example_inputs(model, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(batch,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    return xs if len(xs) > 1 else xs[0]


def outputs_of(model, x):
    return [np.asarray(o) for o in keras.tree.flatten(model(x, training=False))]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("importance", ["l1", "fpgm"])
def test_pruned_model_equals_zeroed_reference(name, importance):
    model = verify.randomize_statistics(MODELS[name](), seed=3)
    x = example_inputs(model)
    pruned, report = prune_filters(model, pruning_ratio=0.5, importance=importance)
    assert report.params_after < report.params_before, str(report)
    assert [o.shape for o in outputs_of(pruned, x)] == [o.shape for o in outputs_of(model, x)]
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    # Control: the pruned model really differs from the unmodified original.
    diff = max(np.max(np.abs(a - b)) for a, b in zip(outputs_of(pruned, x), outputs_of(model, x)))
    assert diff > 1e-4


@pytest.mark.parametrize("name", ["residual", "concat", "depthwise", "grouped", "nested"])
def test_exact_with_round_to_and_global(name):
    model = verify.randomize_statistics(MODELS[name](), seed=5)
    x = example_inputs(model)
    pruned, report = prune_filters(model, pruning_ratio=0.4, global_pruning=True, round_to=2)
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    for entry in report.layers:
        if entry.channels_after != entry.channels_before and entry.type in ("Conv2D", "Dense"):
            assert entry.channels_after % 2 == 0, entry


def test_layer_normalization_approximate_mode_is_reported_inexact():
    x = keras.Input((6, 8))
    y = layers.Dense(16)(x)
    y = layers.LayerNormalization(name="layer_normalization")(y)
    y = layers.Dense(4)(y)
    model = keras.Model(x, y)
    pruned, report = prune_filters(model, pruning_ratio=0.5, layer_norm="approximate")
    ln = report.layer("layer_normalization")
    assert (ln.channels_before, ln.channels_after) == (16, 8)
    assert "not exact" in ln.note
    assert type(pruned.get_layer("layer_normalization")) is layers.LayerNormalization
    assert pruned.get_layer("layer_normalization").gamma.shape == (8,)
    assert pruned(example_inputs(model)).shape == (2, 6, 4)
