"""Block and M-by-N sparsity end to end: real models pruned during `fit`."""

import os

import keras
import numpy as np
import pytest

import tfprune
from tests.helpers import classification_data, expected_zeros, small_cnn
from tfprune.m_by_n import check_m_by_n, m_by_n_report

L = keras.layers


def _fit(model, x, y, epochs=2):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    return model


def _conv_dense_model():
    inputs = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = L.Conv2D(12, 3, activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(16, activation="relu", name="dense1")(x)
    return keras.Model(inputs, L.Dense(4, name="logits")(x), name="convdense")


def _block_counts(mask, weight, block):
    """(zero blocks, all blocks) of a mask in the 2-D view; asserts blocks are uniform and
    that stored weights are zero in pruned blocks."""
    rows = int(np.prod(mask.shape[:-1])) if mask.ndim > 1 else 1
    cols = mask.shape[-1]
    m2, w2 = mask.reshape(rows, cols), weight.reshape(rows, cols)
    bh = rows if block[0] == -1 else block[0]
    bw = cols if block[1] == -1 else block[1]
    zero_blocks = blocks = 0
    for r in range(0, rows, bh):
        for c in range(0, cols, bw):
            values = m2[r:r + bh, c:c + bw]
            assert np.all(values == values.flat[0]), "a block is partly pruned"
            blocks += 1
            if values.flat[0] == 0:
                zero_blocks += 1
                assert np.all(w2[r:r + bh, c:c + bw] == 0)
    return zero_blocks, blocks


def _wrapper_arrays(model):
    for wrapper in tfprune.collect_wrappers(model):
        for label, weight, mask, block in zip(wrapper.weight_labels, wrapper.pruned_weights, wrapper.masks,
                                              wrapper.weight_blocks):
            yield (wrapper.layer.name, label, keras.ops.convert_to_numpy(weight), keras.ops.convert_to_numpy(mask),
                   block)


@pytest.mark.parametrize("block,pooling", [((2, 2), "AVG"), ((4, 1), "MAX"), ((1, 3), "AVG"), ((2, -1), "MAX")])
def test_block_sparsity_after_fit(block, pooling):
    x, y = classification_data(shape=(8, 8, 4))
    schedule = tfprune.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=6, frequency=2)
    pruned = tfprune.prune_low_magnitude(_conv_dense_model(), pruning_schedule=schedule, block_size=block,
                                         block_pooling_type=pooling)
    _fit(pruned, x, y)
    seen = 0
    for name, label, weight, mask, weight_block in _wrapper_arrays(pruned):
        assert weight_block == block
        zero_blocks, blocks = _block_counts(mask, weight, block)
        assert zero_blocks == expected_zeros(blocks, 0.6), (name, label, zero_blocks, blocks)
        seen += 1
    assert seen == 4


def test_block_sparsity_contrib_hparams_and_dims_map():
    x, y = classification_data(shape=(8, 8, 4))
    hparams = (
        "target_sparsity=0.5,begin_pruning_step=0,pruning_frequency=2,sparsity_function_end_step=6,"
        "block_height=2,block_width=3,block_pooling_function=MAX,"
        "block_dims_map=[dense1/kernel:1x-1,conv2/kernel:-1x1]"
    )
    pruned = tfprune.prune_low_magnitude(_conv_dense_model(), pruning_hparams=hparams)
    _fit(pruned, x, y)
    blocks_by_layer = {}
    for name, label, weight, mask, block in _wrapper_arrays(pruned):
        zero_blocks, blocks = _block_counts(mask, weight, block)
        assert zero_blocks == expected_zeros(blocks, 0.5), (name, zero_blocks, blocks)
        blocks_by_layer[name] = block
    assert blocks_by_layer == {"conv1": (2, 3), "conv2": (-1, 1), "dense1": (1, -1), "logits": (2, 3)}
    # conv2 with (-1, 1): whole output filters; dense1 with (1, -1): whole input units.
    conv2_mask = next(m for n, _, _, m, _ in _wrapper_arrays(pruned) if n == "conv2")
    per_filter = conv2_mask.reshape(-1, conv2_mask.shape[-1])
    assert np.all((per_filter == 0).all(axis=0) | (per_filter == 1).all(axis=0))
    assert int((per_filter == 0).all(axis=0).sum()) == expected_zeros(12, 0.5)


def test_block_sparsity_survives_save_and_strip(tmp_path):
    x, y = classification_data(shape=(8, 8, 4))
    pruned = tfprune.prune_low_magnitude(_conv_dense_model(), pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=2),
                                         block_size=(2, 2))
    _fit(pruned, x, y, epochs=1)
    path = os.path.join(tmp_path, "block.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    assert all(w.block_size == (2, 2) for w in tfprune.collect_wrappers(loaded))
    _fit(loaded, x, y, epochs=1)
    plain = tfprune.strip_pruning(loaded)
    for name in ("conv1", "conv2", "dense1", "logits"):
        kernel = plain.get_layer(name).kernel.numpy()
        mask = (kernel != 0).astype("float32")
        # Zero blocks in the stripped kernel cover at least the target count.
        rows = int(np.prod(kernel.shape[:-1]))
        grid = mask.reshape(rows, -1)
        zero_blocks = sum(
            1 for r in range(0, rows, 2) for c in range(0, grid.shape[1], 2) if not grid[r:r + 2, c:c + 2].any()
        )
        blocks = -(-rows // 2) * -(-grid.shape[1] // 2)
        assert zero_blocks >= expected_zeros(blocks, 0.5), name


@pytest.mark.parametrize("m,n", [(2, 4), (1, 4), (3, 8)])
def test_m_by_n_after_fit(m, n):
    x, y = classification_data(shape=(8, 8, 4))
    pruned = tfprune.prune_low_magnitude(_conv_dense_model(), sparsity_m_by_n=(m, n))
    _fit(pruned, x, y)
    report = check_m_by_n(pruned, m, n)
    assert set(report) == {"conv1/kernel", "conv2/kernel", "dense1/kernel", "logits/kernel"}
    assert all(report.values()), report
    for name, label, weight, mask, _ in _wrapper_arrays(pruned):
        axis = weight.ndim - 2
        length = weight.shape[axis]
        moved = np.moveaxis(mask, axis, -1).reshape(-1, length)
        full = (length // n) * n
        if full:
            kept = moved[:, :full].reshape(moved.shape[0], -1, n).sum(-1)
            assert np.all(kept == n - m), name  # exactly N - M kept (M zeros) in every full group
        assert np.all(weight[mask == 0] == 0)
    # The stripped model still complies; an unpruned model does not.
    assert all(check_m_by_n(tfprune.strip_pruning(pruned), m, n).values())
    assert not all(check_m_by_n(_conv_dense_model(), m, n).values())


def test_m_by_n_mask_fixed_during_training():
    x, y = classification_data(shape=(8, 8, 4))
    pruned = tfprune.prune_low_magnitude(_conv_dense_model(), sparsity_m_by_n=(2, 4))
    _fit(pruned, x, y, epochs=1)
    first = [keras.ops.convert_to_numpy(m).copy() for w in tfprune.collect_wrappers(pruned) for m in w.masks]
    _fit(pruned, x, y, epochs=1)
    after = [keras.ops.convert_to_numpy(m) for w in tfprune.collect_wrappers(pruned) for m in w.masks]
    for a, b in zip(first, after):
        np.testing.assert_array_equal(a, b)


def test_check_m_by_n_tensor_and_report():
    assert check_m_by_n(np.array([[1.0], [0.0], [2.0], [0.0]]), 2, 4) is True
    assert check_m_by_n(np.array([[1.0], [1.0], [2.0], [0.0]]), 2, 4) is False
    assert check_m_by_n(np.array([[1.0], [1.0], [2.0], [0.0]]), 1, 4) is True  # one zero is enough for 1:4
    assert check_m_by_n(np.array([[1.0], [0.0], [2.0], [0.0]]), 3, 4) is False
    assert check_m_by_n(keras.Variable(np.zeros((8, 3), "float32")), 2, 4) is True
    model = small_cnn()
    rows = m_by_n_report(model, 2, 4)
    assert {r["weight"] for r in rows} == {"conv1/kernel", "dense1/kernel", "logits/kernel"}
    dense = next(r for r in rows if r["weight"] == "dense1/kernel")
    assert dense["violations"] == (150 // 4) * 16  # the last group has 2 entries and not dense["ok"]
    conv = next(r for r in rows if r["weight"] == "conv1/kernel")
    assert conv["ok"]  # one input channel: groups of 1


def test_check_m_by_n_inside_tf_function():
    import tensorflow as tf

    @tf.function
    def check(w):
        return check_m_by_n(w, 2, 4)

    assert bool(check(tf.constant([[1.0], [0.0], [2.0], [0.0]])))
    assert not bool(check(tf.ones([4, 2])))
