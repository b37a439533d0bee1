"""Cloning never shares a layer with the source model: a layer that cannot be rebuilt is an error."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfprune
from tfprune import keras_graph
from tfprune.structured import fold_batchnorm, prune_filters


class Factor:
    def __init__(self, value):
        self.value = value


class NoConfig(keras.layers.Layer):
    """A layer whose __init__ takes an argument Keras cannot put in a config (no get_config written)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor.value


def _model():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = NoConfig(Factor(2.0), name="odd")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(2, name="head")(h))


@pytest.mark.parametrize("operation", ["prune_low_magnitude", "strip_pruning", "prune_filters", "fold_batchnorm"])
def test_a_non_rebuildable_layer_fails_with_its_name_and_the_fix(operation):
    model = _model()
    with pytest.raises(keras_graph.LayerRebuildError, match=r"'odd' \(NoConfig\).*get_config"):
        if operation == "prune_low_magnitude":
            tfprune.prune_low_magnitude(model)
        elif operation == "strip_pruning":
            tfprune.strip_pruning(model)
        elif operation == "prune_filters":
            prune_filters(model, pruning_ratio=0.5)
        else:
            fold_batchnorm(model)


def test_clones_share_no_variable_with_the_source():
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Lambda(lambda t: t * 2.0, name="lam")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(x, keras.layers.Dense(2, name="head")(h))
    source = {id(v) for v in model.weights}
    wrapped = tfprune.prune_low_magnitude(model)
    clones = [wrapped, tfprune.strip_pruning(wrapped), prune_filters(model, pruning_ratio=0.5)[0],
              fold_batchnorm(model)]
    for clone in clones:
        assert not source & {id(v) for v in clone.weights}
        assert all(layer is not model.get_layer("lam") for layer in clone.layers)
    xs = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(fold_batchnorm(model)(xs), model(xs, training=False), atol=1e-5)


def test_find_layers_and_walkers_cover_nested_models():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="inner_dense")], name="inner")
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2, name="outer")(inner(x)))
    names = [layer.name for layer in keras_graph.iter_layers(model)]
    assert "inner_dense" in names and "outer" in names
    assert {l.name for l in keras_graph.find_layers(model, keras.layers.Dense)} == {"inner_dense", "outer"}
    calls, inputs, outputs = keras_graph.flatten_model(model)
    assert [c.layer.name for c in calls] == ["inner_dense", "outer"]
    assert len(keras_graph.functional_graphs(model)) == 2
