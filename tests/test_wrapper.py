"""The wrapper on every supported Keras 3 layer: exact sparsity, masking, gradients, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tests.helpers import expected_zeros

L = keras.layers

LAYERS = {
    "Dense": (lambda: L.Dense(7), (5, 9), "float32"),
    "EinsumDense": (lambda: L.EinsumDense("ab,bc->ac", output_shape=6, bias_axes="c"), (5, 9), "float32"),
    "Conv1D": (lambda: L.Conv1D(5, 3), (6, 9, 4), "float32"),
    "Conv2D": (lambda: L.Conv2D(5, 3), (4, 7, 7, 3), "float32"),
    "Conv3D": (lambda: L.Conv3D(4, 2), (3, 4, 4, 4, 2), "float32"),
    "Conv1DTranspose": (lambda: L.Conv1DTranspose(4, 3), (4, 6, 3), "float32"),
    "Conv2DTranspose": (lambda: L.Conv2DTranspose(4, 3), (4, 5, 5, 3), "float32"),
    "Conv3DTranspose": (lambda: L.Conv3DTranspose(3, 2), (3, 3, 3, 3, 2), "float32"),
    "DepthwiseConv1D": (lambda: L.DepthwiseConv1D(3, depth_multiplier=2), (4, 8, 5), "float32"),
    "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (4, 6, 6, 5), "float32"),
    "SeparableConv1D": (lambda: L.SeparableConv1D(6, 3), (4, 8, 5), "float32"),
    "SeparableConv2D": (lambda: L.SeparableConv2D(6, 3), (4, 6, 6, 5), "float32"),
    "Embedding": (lambda: L.Embedding(30, 8), (5, 7), "int32"),
    "SimpleRNN": (lambda: L.SimpleRNN(6), (4, 5, 3), "float32"),
    "GRU": (lambda: L.GRU(6), (4, 5, 3), "float32"),
    "LSTM": (lambda: L.LSTM(6), (4, 5, 3), "float32"),
}

EXPECTED_WEIGHTS = {
    "SeparableConv1D": ["depthwise_kernel", "pointwise_kernel"],
    "SeparableConv2D": ["depthwise_kernel", "pointwise_kernel"],
    "Embedding": ["embeddings"],
    "SimpleRNN": ["kernel", "recurrent_kernel"],
    "GRU": ["kernel", "recurrent_kernel"],
    "LSTM": ["kernel", "recurrent_kernel"],
}


def _inputs(shape, dtype):
    rng = np.random.default_rng(0)
    if dtype == "int32":
        return rng.integers(0, 30, size=shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


def _train_steps(wrapper, x, steps=3):
    callback = tfprune.UpdatePruningStep()
    model = keras.Sequential([keras.Input(x.shape[1:], dtype=x.dtype), wrapper])
    callback.set_model(model)
    callback.on_train_begin()
    optimizer = keras.optimizers.SGD(0.1)
    grads = None
    for _ in range(steps):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.reduce_sum(tf.square(tf.cast(out, tf.float32)))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
    return model, grads


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_builtin_layer_reaches_exact_sparsity(name):
    make, shape, dtype = LAYERS[name]
    x = _inputs(shape, dtype)
    wrapper = tfprune.prune_low_magnitude(make(), pruning_schedule=tfprune.ConstantSparsity(0.6, 0, frequency=1))
    model, grads = _train_steps(wrapper, x)
    assert wrapper.weight_labels == EXPECTED_WEIGHTS.get(name, ["kernel"])
    for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
        w, m = np.asarray(weight), np.asarray(mask)
        zeros = int(m.size - np.count_nonzero(m))
        assert zeros == expected_zeros(m.size, 0.6)
        # Stored weights are zero exactly where the mask is zero.
        assert np.all(w[m == 0] == 0)
    # Pruned weights received no gradient in the last step.
    by_id = {id(v): g for v, g in zip(model.trainable_variables, grads)}
    for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
        g = by_id[id(weight)]
        g = tf.convert_to_tensor(g) if not isinstance(g, tf.IndexedSlices) else tf.convert_to_tensor(g)
        assert np.all(np.asarray(g)[np.asarray(mask) == 0] == 0)
    # Inference equals the plain layer with masked weights.
    plain = tfprune.strip_pruning(wrapper)
    assert type(plain) is type(wrapper.layer) and plain.name == wrapper.layer.name
    np.testing.assert_allclose(np.asarray(plain(x)), np.asarray(model(x, training=False)), atol=1e-6)


def test_multi_head_attention_prunes_all_four_kernels():
    x = _inputs((3, 5, 8), "float32")
    inputs = keras.Input((5, 8))
    mha = L.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    outputs = mha(inputs, inputs)
    model = keras.Model(inputs, outputs)
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
    wrapper = tfprune.collect_wrappers(pruned)[0]
    assert wrapper.weight_labels == ["query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"]
    pruned.compile(optimizer="sgd", loss="mse")
    pruned.fit(x, np.zeros((3, 5, 8), "float32"), epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    for mask in wrapper.masks:
        m = np.asarray(mask)
        assert m.size - np.count_nonzero(m) == expected_zeros(m.size, 0.5)
    stripped = tfprune.strip_pruning(pruned)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)


def test_gradient_is_masked_not_the_forward_only():
    dense = L.Dense(3, use_bias=False)
    wrapper = tfprune.prune_low_magnitude(dense)
    x = tf.ones((2, 4))
    wrapper(x)
    mask = np.array([[1, 0, 1]] * 4, "float32")
    wrapper.masks[0].assign(mask)
    wrapper.pruning_step.assign(0)
    with tf.GradientTape() as tape:
        y = wrapper(x, training=False)
        loss = tf.reduce_sum(y)
    grad = tape.gradient(loss, dense.kernel)
    np.testing.assert_array_equal(np.asarray(grad), 2 * mask)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x) @ (np.asarray(dense.kernel) * mask), atol=1e-6)


class ScaledDense(L.Layer, tfprune.PrunableLayer):
    """A custom layer that opts in to pruning through the protocol."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], 5))
        self.scale = self.add_weight(name="scale", shape=(5,), initializer="ones")

    def call(self, x):
        return keras.ops.matmul(x, self.w) * self.scale

    def get_prunable_weights(self):
        return [self.w]


class Opaque(L.Layer):
    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=(input_shape[-1], 2))

    def call(self, x):
        return keras.ops.matmul(x, self.w)


def test_custom_prunable_layer_joins_through_protocol():
    x = _inputs((4, 6), "float32")
    wrapper = tfprune.prune_low_magnitude(ScaledDense(), pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
    _train_steps(wrapper, x, steps=2)
    assert wrapper.weight_labels == ["w"]
    assert len(wrapper.masks) == 1
    m = np.asarray(wrapper.masks[0])
    assert m.size - np.count_nonzero(m) == 15
    assert np.all(np.asarray(wrapper.layer.scale) != 0)


def test_unsupported_layer_error_names_layer_and_both_fixes():
    inputs = keras.Input((6,))
    outputs = L.Dense(3)(Opaque(name="mystery")(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(tfprune.UnsupportedLayerError) as info:
        tfprune.prune_low_magnitude(model)
    message = str(info.value)
    assert "mystery" in message and "Opaque" in message
    assert "get_prunable_weights" in message and "leave it out" in message
    with pytest.raises(tfprune.UnsupportedLayerError, match="mystery"):
        tfprune.prune_low_magnitude(Opaque(name="mystery"))


def test_normalization_and_weightless_layers_pass_through():
    inputs = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 3, name="c")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.LayerNormalization(name="ln")(x)
    x = L.ReLU(name="relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, L.Dropout(0.1, name="drop")(x))
    pruned = tfprune.prune_low_magnitude(model)
    kinds = {layer.name: type(layer).__name__ for layer in pruned.layers}
    assert kinds["prune_low_magnitude_c"] == "PruneLowMagnitude"
    assert kinds["bn"] == "BatchNormalization" and kinds["ln"] == "LayerNormalization"
    assert kinds["relu"] == "ReLU" and kinds["drop"] == "Dropout"


def test_bad_wrapper_arguments():
    with pytest.raises(ValueError, match="block_size"):
        tfprune.prune_low_magnitude(L.Dense(3), block_size=(0, 2))
    with pytest.raises(ValueError, match="block_pooling_type"):
        tfprune.prune_low_magnitude(L.Dense(3), block_pooling_type="MEDIAN")
    with pytest.raises(ValueError, match="pruning_schedule"):
        tfprune.prune_low_magnitude(L.Dense(3), pruning_schedule=0.5)
    with pytest.raises(ValueError, match="sparsity_m_by_n"):
        tfprune.prune_low_magnitude(L.Dense(3), sparsity_m_by_n=(4, 2))
    with pytest.raises(ValueError, match="to_prune"):
        tfprune.prune_low_magnitude("dense")
    with pytest.raises(ValueError, match="either"):
        tfprune.prune_low_magnitude(L.Dense(3), pruning_schedule=tfprune.ConstantSparsity(0.5, 0),
                                    pruning_hparams="target_sparsity=0.5")
    with pytest.raises(ValueError, match="pruning_frequency"):
        tfprune.prune_low_magnitude(L.Dense(3), pruning_hparams="pruning_frequency=0")


def test_list_of_layers_and_already_wrapped():
    layers = [L.Dense(3, name="a"), L.Conv2D(2, 3, name="b")]
    wrapped = tfprune.prune_low_magnitude(layers, pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
    assert [type(w).__name__ for w in wrapped] == ["PruneLowMagnitude", "PruneLowMagnitude"]
    assert [w.layer for w in wrapped] == layers
    assert tfprune.prune_low_magnitude(wrapped[0]) is wrapped[0]
    with pytest.raises(ValueError, match="already wrapped"):
        tfprune.PruneLowMagnitude(wrapped[0])


def test_list_of_layers_with_contrib_hparams():
    wrapped = tfprune.prune_low_magnitude([L.Dense(3, name="a"), L.Dense(2, name="b")],
                                          pruning_hparams="target_sparsity=0.7,weight_sparsity_map=[b/kernel:0.2]")
    for wrapper in wrapped:
        wrapper.build((None, 4))
    assert [w.weight_schedules[0].target_sparsity for w in wrapped] == [0.7, 0.2]


def test_m_by_n_warns_about_a_layer_it_cannot_make_sparse():
    """A first convolution on 1-channel images has groups of one weight along its input channels: 2:4
    keeps it whole (as tfmot does), and says so; the layers it does prune are not mentioned."""
    import warnings

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="stem")(inputs)
    x = keras.layers.Conv2D(8, 3, name="body")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(x)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruned = tfprune.prune_low_magnitude(model, sparsity_m_by_n=(2, 4),
                                             pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "Layer 'stem': kernel has 1 input channel(s)" in messages[0], messages
    assert "stays dense" in messages[0] and "Fix:" in messages[0]
    pruned.get_layer("prune_low_magnitude_body").update_masks(0)
    pruned.get_layer("prune_low_magnitude_stem").update_masks(0)
    rows = {r["layer"]: r for r in tfprune.sparsity_report(pruned)}
    assert rows["stem"]["sparsity"] == 0.0 and rows["body"]["sparsity"] == 0.5
