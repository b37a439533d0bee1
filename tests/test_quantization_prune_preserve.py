"""Pruning-preserving QAT: zero weights stay exactly zero through quantization-aware training and into the
int8 kernels of the full-integer TFLite model (read back from the interpreter), M-by-N patterns included."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
import tfprune.quantization as tfq
from tests.tflite_int8 import assert_parity, channels, int8_kernels

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_model():
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(8, 3, use_bias=False, name="conv")(inputs)
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))          # folded into the conv
    x = L.ReLU()(L.DepthwiseConv2D(3, name="depthwise")(x))
    x = L.SeparableConv2D(8, 3, activation="relu", name="separable")(x)
    x = L.Flatten()(x)
    x = L.Dense(16, activation="relu", name="dense")(x)
    return keras.Model(inputs, L.Dense(4, name="logits")(x))


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 12, 12, 1)).astype("float32"), rng.integers(0, 4, n)


def pruned_model(**kwargs):
    x, y = data()
    pruned = tfprune.prune_low_magnitude(conv_model(), **kwargs)
    pruned.compile(keras.optimizers.Adam(1e-2), LOSS)
    pruned.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    return pruned


def kernels(model):
    """The float kernels in graph order, named as TFLite orders its conv / fully-connected weights."""
    names = {"conv": ["kernel"], "depthwise": ["kernel"], "separable": ["depthwise_kernel", "pointwise_kernel"],
             "dense": ["kernel"], "logits": ["kernel"]}
    by_name = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        base = layer.name.replace("quant_", "")
        if base in names and not isinstance(layer, (tfq.QuantizeWrapper, tfq.QuantizeFoldedBatchNorm,
                                                    tfq.QuantizeSeparableConv)):
            by_name[base] = [keras.ops.convert_to_numpy(getattr(layer, a)) for a in names[base]]
    return [k for name in names for k in by_name[name]]


def train(qat, epochs=2):
    x, y = data(seed=1)
    qat.compile(keras.optimizers.Adam(1e-2), LOSS)  # a large step: any leak through a zero would show
    qat.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return qat


def tflite_layout(op, kernel):
    """A Keras kernel in TFLite's layout (see tests.tflite_int8.int8_kernels)."""
    if op == "CONV_2D":
        return kernel.transpose(3, 0, 1, 2)
    if op == "DEPTHWISE_CONV_2D":
        return kernel.reshape((1,) + kernel.shape[:2] + (-1,))
    return kernel.T


def assert_zeros_kept(pruned_kernels, qat, exact_count=True):
    trained = kernels(qat)
    for before, after in zip(pruned_kernels, trained):
        assert np.all(after[before == 0] == 0)
        assert np.any(after[before != 0] != before[before != 0])  # it did train
    data_ = tfq.to_tflite(qat, inference_input_type=tf.int8)
    exported = int8_kernels(data_)
    assert [op for op, _, _ in exported] == ["CONV_2D", "DEPTHWISE_CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D",
                                             "FULLY_CONNECTED", "FULLY_CONNECTED"]
    for (op, int8, _), before in zip(exported, pruned_kernels):
        assert np.all(int8[tflite_layout(op, before) == 0] == 0), op  # every pruned position, exactly
    zeros_pruned = [int(np.sum(k == 0)) for k in pruned_kernels]
    zeros_tflite = [int(np.sum(k == 0)) for _, k, _ in exported]
    if exact_count:
        assert zeros_tflite == zeros_pruned
    else:  # a kept weight below half an int8 step of its channel rounds to 0 as well
        assert all(0 <= t - p <= max(2, 0.005 * k.size) for t, p, (_, k, _) in zip(zeros_tflite, zeros_pruned, exported))
    assert sum(zeros_pruned) > 0
    return data_, exported


def test_wrapped_model_is_stripped_and_keeps_its_zeros_into_the_int8_kernels():
    pruned = pruned_model(pruning_schedule=tfprune.ConstantSparsity(0.75, 0, frequency=1))
    before = kernels(tfprune.strip_pruning(pruned))
    qat = train(tfq.quantize_model(pruned, preserve_sparsity=True))  # still wrapped: stripped first
    assert not tfprune.collect_wrappers(qat)
    data_, _ = assert_zeros_kept(before, qat)
    assert_parity(data_, qat, data(seed=2)[0])
    # Plain QAT of the same stripped model does not keep them.
    plain = train(tfq.quantize_model(tfprune.strip_pruning(pruned)), epochs=1)
    assert sum(int(np.sum((b == 0) & (a != 0))) for b, a in zip(before, kernels(plain))) > 0


def test_scheme_by_name_keeps_two_of_four_through_quantize_apply():
    pruned = pruned_model(sparsity_m_by_n=(2, 4))
    stripped = tfprune.strip_pruning(pruned)
    before = kernels(stripped)
    annotated = tfq.quantize_annotate_model(stripped)
    qat = train(tfq.quantize_apply(annotated, "Default8BitPrunePreserveQuantizeScheme"))
    _, exported = assert_zeros_kept(before, qat, exact_count=False)
    op, dense, _ = exported[4]
    assert op == "FULLY_CONNECTED" and dense.shape == (16, 288)
    assert int(tfprune.m_by_n_violations(dense.T.astype("float32"), 2, 4)) == 0  # groups along the inputs


def test_no_gradient_reaches_a_pruned_weight():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, L.Dense(3, name="d")(inputs))
    kernel = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    kernel[::2] = 0.0
    model.get_layer("d").set_weights([kernel, np.zeros(3, "float32")])
    qat = tfq.quantize_model(model, scheme=tfq.Default8BitPrunePreserveQuantizeScheme)
    wrapper = qat.get_layer("quant_d")
    mask = [v for v in wrapper.weights if "sparsity_mask" in v.path]
    assert len(mask) == 1 and np.array_equal(mask[0].numpy(), (kernel != 0).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(qat(tf.ones((4, 6)), training=True) ** 2)
    grad = tape.gradient(loss, wrapper.layer.kernel).numpy()
    assert np.all(grad[kernel == 0] == 0) and np.all(grad[kernel != 0] != 0)


def test_pqat_model_saves_and_loads_with_its_masks(tmp_path):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, L.Dense(3)(inputs))
    kernel = model.layers[1].kernel.numpy()
    kernel[:3] = 0.0
    model.layers[1].kernel.assign(kernel)
    qat = tfq.quantize_model(model, preserve_sparsity=True)
    path = str(tmp_path / "pqat.keras")
    qat.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)
    masks = [v.numpy() for v in loaded.weights if "sparsity_mask" in v.path]
    assert len(masks) == 1 and masks[0][:3].sum() == 0 and masks[0][3:].all()


def test_wrapped_model_without_preserve_sparsity_names_strip_pruning():
    pruned = tfprune.prune_low_magnitude(conv_model(), pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
    with pytest.raises(ValueError, match=r"strip_pruning.*preserve_sparsity=True"):
        tfq.quantize_model(pruned)
    with pytest.raises(ValueError, match="strip_pruning"):
        tfq.quantize_apply(pruned,
                           "Default8BitPrunePreserveQuantizeScheme")
    with pytest.raises(ValueError, match="unknown quantization scheme 'Default8BitPrune'"):
        tfq.quantize_apply(tfq.quantize_annotate_model(conv_model()), "Default8BitPrune")
    with pytest.raises(ValueError, match="either `scheme`"):
        tfq.quantize_model(conv_model(), preserve_sparsity=True, scheme="Default8BitScheme")
