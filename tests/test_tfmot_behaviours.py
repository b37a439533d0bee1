"""tfmot ways of writing things that behave as in tfmot."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfprune
from tfprune.datasets import load_mnist


def test_wrapped_first_layer_keeps_its_input_shape_and_fits_rank3_mnist():
    (x, y), _ = load_mnist(train_size=256)
    x = x[..., 0]  # rank-3 images, as tfmot's guide feeds them after a Reshape
    model = keras.Sequential([
        keras.layers.Reshape((28, 28, 1), input_shape=(28, 28)),
        tfprune.prune_low_magnitude(keras.layers.Conv2D(4, 3, activation="relu")),
        keras.layers.Flatten(),
        tfprune.prune_low_magnitude(keras.layers.Dense(10)),
    ])
    assert model.built
    first = keras.Sequential([tfprune.prune_low_magnitude(keras.layers.Conv2D(4, 3, input_shape=(28, 28, 1))),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    assert first.built and first.input_shape == (None, 28, 28, 1)
    assert tfprune.collect_wrappers(first)[0].layer.kernel.shape == (3, 3, 1, 4)
    first.summary(print_fn=lambda *a, **k: None)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    assert tfprune.collect_wrappers(model)[0].layer.kernel.shape == (3, 3, 1, 4)


def test_get_prunable_weights_and_pruning_vars_on_wrapped_builtins():
    wrapper = tfprune.prune_low_magnitude(keras.layers.LSTM(3))
    keras.Sequential([keras.Input((5, 2)), wrapper])
    assert [v.path.split("/")[-1] for v in wrapper.layer.get_prunable_weights()] == ["kernel", "recurrent_kernel"]
    assert [(w is pw, m is mk) for (w, m, _), pw, mk in zip(wrapper.pruning_vars, wrapper.pruned_weights,
                                                          wrapper.masks)] == [(True, True)] * 2
    # the added method does not change which weights are pruned or how they are labelled
    assert wrapper.weight_labels == ["kernel", "recurrent_kernel"]


def test_at_extreme_sparsity_one_weight_is_kept():
    wrapper = tfprune.prune_low_magnitude(keras.layers.Dense(4), pruning_schedule=tfprune.ConstantSparsity(0.99, 0))
    keras.Sequential([keras.Input((10,)), wrapper])  # a 40-weight kernel
    wrapper.update_masks(1, [0.99])
    assert int(wrapper.masks[0].numpy().sum()) == 1
    wrapper.update_masks(2, [1.0])
    assert int(wrapper.masks[0].numpy().sum()) == 1  # never fewer than one, even at sparsity 1.0


def test_mha_called_with_keywords_in_a_functional_model_is_pruned():
    x = keras.Input((8, 16))
    y = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")(query=x, value=x)
    model = keras.Model(x, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(y)))
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
    mha = next(w for w in tfprune.collect_wrappers(pruned) if w.layer.name == "mha")
    assert len(mha.masks) == 4
    data = np.random.default_rng(0).normal(size=(2, 8, 16)).astype("float32")
    np.testing.assert_allclose(pruned(data), model(data), atol=1e-6)


def test_lists_pass_weightless_layers_through():
    conv, pool, flat, dense = (keras.layers.Conv2D(4, 3), keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                               keras.layers.Dense(3))
    out = tfprune.prune_low_magnitude([conv, pool, flat, dense])
    assert isinstance(out[0], tfprune.PruneLowMagnitude) and isinstance(out[3], tfprune.PruneLowMagnitude)
    assert out[1] is pool and out[2] is flat
    model = keras.Sequential([keras.Input((8, 8, 1))] + out)
    assert model.output_shape == (None, 3)


def test_rnn_built_from_cells_is_prunable():
    cells = [keras.layers.LSTMCell(4), keras.layers.GRUCell(3)]
    model = keras.Sequential([keras.Input((5, 2)), keras.layers.RNN(cells, name="stack"),
                              keras.layers.Dense(2)])
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
    rnn = next(w for w in tfprune.collect_wrappers(pruned) if w.layer.name == "stack")
    assert len(rnn.masks) == 4
    rnn.update_masks(1, [0.5] * 4)
    for mask in rnn.masks:
        assert int((mask.numpy() == 0).sum()) == int(np.round(mask.numpy().size * 0.5))
    data = np.ones((2, 5, 2), "float32")
    stripped = tfprune.strip_pruning(pruned)
    np.testing.assert_allclose(stripped(data), pruned(data), atol=1e-6)


def _mobile_block(first_kernel=3, first_strides=2):
    x = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, first_kernel, strides=first_strides, padding="same", name="stem")(x)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = keras.layers.Conv2D(16, 1, name="pw")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", name="conv3")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(4, name="head")(h))


def test_prune_for_latency_on_xnnpack_wraps_only_pointwise_convolutions():
    pruned = tfprune.prune_low_magnitude(_mobile_block(), pruning_policy=tfprune.PruneForLatencyOnXNNPack())
    assert [w.layer.name for w in tfprune.collect_wrappers(pruned)] == ["pw"]


@pytest.mark.parametrize("model, message", [
    (lambda: _mobile_block(first_kernel=5), "3x3 kernel and strides 2"),
    (lambda: _mobile_block(first_strides=1), "3x3 kernel and strides 2"),
    (lambda: keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, strides=2),
                               keras.layers.Conv2D(4, 1)]), r"shape \(H, W, 3\)"),
    (lambda: keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, strides=2),
                               keras.layers.Conv2D(4, 3)]), "no 1x1 convolution"),
])
def test_prune_for_latency_on_xnnpack_checks_the_model(model, message):
    with pytest.raises(ValueError, match=message):
        tfprune.prune_low_magnitude(model(), pruning_policy=tfprune.PruneForLatencyOnXNNPack())


def test_pruning_policy_bad_arguments():
    with pytest.raises(ValueError, match="PruningPolicy"):
        tfprune.prune_low_magnitude(_mobile_block(), pruning_policy="xnnpack")
    with pytest.raises(ValueError, match="whole model"):
        tfprune.prune_low_magnitude(keras.layers.Conv2D(4, 1), pruning_policy=tfprune.PruneForLatencyOnXNNPack())


def test_custom_pruning_policy():
    class DenseOnly(tfprune.PruningPolicy):
        def allow_pruning(self, layer):
            return isinstance(layer, keras.layers.Dense)

    pruned = tfprune.prune_low_magnitude(_mobile_block(), pruning_policy=DenseOnly())
    assert [w.layer.name for w in tfprune.collect_wrappers(pruned)] == ["head"]
