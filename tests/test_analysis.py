"""Parameter and MAC counts against hand-computed formulas."""

import keras
import pytest
from keras import layers

from tfprune import analysis


def single(layer, shape):
    x = keras.Input(shape)
    return keras.Model(x, layer(x))


@pytest.mark.parametrize("layer, shape, macs", [
    (layers.Conv2D(4, 3), (8, 8, 3), 6 * 6 * 4 * 3 * 3 * 3),
    (layers.Conv2D(8, 3, padding="same", groups=2), (8, 8, 4), 8 * 8 * 8 * 3 * 3 * 2),
    (layers.Conv2D(4, 3, strides=2, padding="same"), (8, 8, 3), 4 * 4 * 4 * 27),
    (layers.Conv1D(5, 3), (10, 2), 8 * 5 * 3 * 2),
    (layers.Conv3D(2, 3), (5, 5, 5, 1), 3 * 3 * 3 * 2 * 27),
    (layers.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 3), 6 * 6 * 6 * 9),
    (layers.SeparableConv2D(5, 3, depth_multiplier=2), (8, 8, 3), 6 * 6 * 6 * 9 + 6 * 6 * 6 * 5),
    (layers.Conv2DTranspose(4, 3, strides=2), (5, 5, 3), 5 * 5 * 3 * 9 * 4),
    (layers.Dense(7), (5,), 5 * 7),
    (layers.Dense(7), (4, 5), 4 * 5 * 7),
    (layers.BatchNormalization(), (4, 4, 3), 48),
    (layers.ReLU(), (4, 4, 3), 0),
])
def test_layer_formulas(layer, shape, macs):
    assert analysis.count_flops(single(layer, shape)) == macs


def test_count_params_includes_bn_statistics_and_nested_models():
    inner = keras.Sequential([keras.Input((4,)), layers.Dense(3)])
    x = keras.Input((4,))
    y = layers.BatchNormalization()(inner(x))
    model = keras.Model(x, layers.Dense(2)(y))
    assert analysis.count_params(model) == (4 * 3 + 3) + 4 * 3 + (3 * 2 + 2)
    assert analysis.count_flops(model) == 12 + 3 + 6


def test_resnet50_macs_match_published_figure():
    model = keras.applications.ResNet50(weights=None)
    assert analysis.count_params(model) == 25_636_712
    # Keras ResNet50 is v1 (stride 2 in the first 1x1 conv): ~3.87 GMACs at 224x224
    # (torchvision's v1.5, stride in the 3x3, is the often-quoted 4.1 GMACs)
    assert 3.80e9 < analysis.count_flops(model) < 3.95e9


def test_dynamic_shapes_are_rejected_with_a_fix():
    with pytest.raises(ValueError, match="fixed input size"):
        analysis.count_flops(single(layers.Conv2D(4, 3), (None, None, 3)))


def test_comparison_table():
    a = single(layers.Conv2D(8, 3), (8, 8, 3))
    b = single(layers.Conv2D(4, 3), (8, 8, 3))
    table = analysis.comparison_table(a, b)
    assert "params" in table and "macs" in table
    assert "0.500" in table.splitlines()[2]
