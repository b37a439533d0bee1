"""Mask math: exact counts, tie rule, agreement with numpy and tfmot, structured masks."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule as tfmot_schedule

from tfprune import masks

SPARSITIES = [0.0, 0.05, 0.1, 0.25, 0.5, 0.6, 0.75, 0.9, 0.999, 1.0]


# --------------------------------------------------------------------------
# numpy references
# --------------------------------------------------------------------------


def ref_keep(weights, k):
    """Keep-mask pruning the k smallest |w| (float32); stable: lower index first; NaN largest."""
    mag = np.abs(np.asarray(weights).astype(np.float32)).ravel()
    keep = np.ones(mag.size, bool)
    keep[np.argsort(mag, kind="stable")[:k]] = False
    return keep.reshape(np.shape(weights))


def ref_count(n, sparsity):
    return int(np.round(np.float64(n) * np.float64(sparsity)))


def ref_threshold(weights, keep):
    mag = np.abs(np.asarray(weights).astype(np.float32))
    return np.float32(np.inf) if not keep.any() else mag[keep].min()


def ref_global(weights_list, sparsity, max_layer=None):
    """Water-filling by iteration: saturate tensors over their ceiling, re-select the rest."""
    sizes = [np.size(w) for w in weights_list]
    k = ref_count(sum(sizes), sparsity)
    caps = sizes if max_layer is None else [min(ref_count(n, max_layer), n) for n in sizes]
    if k >= sum(caps):
        return [ref_keep(w, c) for w, c in zip(weights_list, caps)]
    fixed = {}
    while True:
        free = [i for i in range(len(sizes)) if i not in fixed]
        remaining = k - sum(fixed.values())
        flat = np.concatenate([np.asarray(weights_list[i], np.float32).ravel() for i in free])
        keep = ref_keep(flat, remaining)
        counts, start = {}, 0
        for i in free:
            counts[i] = int((~keep[start : start + sizes[i]]).sum())
            start += sizes[i]
        over = [i for i in free if counts[i] > caps[i]]
        if not over:
            out, start = [], 0
            for i in range(len(sizes)):
                if i in fixed:
                    out.append(ref_keep(weights_list[i], fixed[i]))
                else:
                    out.append(keep[start : start + sizes[i]].reshape(np.shape(weights_list[i])))
                    start += sizes[i]
            return out
        for i in over:
            fixed[i] = caps[i]


def tfmot_update_mask(weights, sparsity):
    """tfmot 0.8.1's own mask update (`Pruning._update_mask`) at a constant sparsity."""
    pruning = pruning_impl.Pruning(
        training_step_fn=lambda: tf.constant(0, tf.int64),
        pruning_vars=[],
        pruning_schedule=tfmot_schedule.ConstantSparsity(sparsity, 0),
        block_size=(1, 1),
        block_pooling_type="AVG",
    )
    threshold, mask = pruning._update_mask(tf.constant(weights))
    return mask.numpy(), float(threshold)


def topk_formula_mask(weights, sparsity):
    """The same computation written out: k kept = max(round(n*(1-s)), 1), top_k, abs >= values[k-1]."""
    mag = np.abs(weights).astype(np.float32)
    n = mag.size
    kept = max(int(np.round(np.float32(n) * (np.float32(1) - np.float32(sparsity)))), 1)
    values, _ = tf.math.top_k(mag.ravel(), k=n)
    threshold = values.numpy()[kept - 1]
    return (mag >= threshold).astype(np.float32), float(threshold)


def random_weights(shape, seed, kind="normal"):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=shape).astype(np.float32)
    if kind == "ties":  # few distinct magnitudes, both signs, +-0
        return (rng.integers(-3, 4, size=shape) * 0.5).astype(np.float32)
    raise ValueError(kind)


# --------------------------------------------------------------------------
# magnitude_mask
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("shape", [(1,), (7,), (37, 23), (3, 3, 5, 4), (2100,)])
def test_exact_count_and_reference_agreement(shape, kind):
    w = random_weights(shape, seed=sum(shape), kind=kind)
    n = w.size
    for s in SPARSITIES:
        mask, threshold = masks.magnitude_mask(w, s)
        k = ref_count(n, s)
        assert mask.shape == w.shape and mask.dtype == tf.float32
        assert int(n - mask.numpy().sum()) == k, (s, k)
        keep = ref_keep(w, k)
        np.testing.assert_array_equal(mask.numpy().astype(bool), keep)
        assert threshold.dtype == tf.float32
        assert float(threshold) == ref_threshold(w, keep)


@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.5, 0.73, 0.9, 0.99])
def test_agrees_with_tfmot_without_ties(sparsity):
    w = random_weights((64, 48), seed=int(sparsity * 100))
    assert np.unique(np.abs(w)).size == w.size  # no ties
    ours, ours_t = masks.magnitude_mask(w, sparsity)
    theirs, theirs_t = tfmot_update_mask(w, sparsity)
    formula, formula_t = topk_formula_mask(w, sparsity)
    np.testing.assert_array_equal(theirs, formula)
    assert theirs_t == formula_t
    # tfmot computes the kept count as round(n * (1 - s)) in float32; compare
    # where that equals n - round(n * s).
    assert theirs.sum() == w.size - ref_count(w.size, sparsity)
    np.testing.assert_array_equal(ours.numpy(), theirs)
    assert float(ours_t) == theirs_t
    np.testing.assert_array_equal(ours.numpy().astype(bool), ref_keep(w, ref_count(w.size, sparsity)))


def test_tie_rule_lower_flat_index_pruned_first():
    w = np.array([[2.0, -1.0, 1.0], [1.0, -0.0, 1.0]], np.float32)
    mask, threshold = masks.magnitude_mask(w, 0.5)  # prune 3: the zero, then two of the four 1s
    np.testing.assert_array_equal(mask.numpy(), [[1, 0, 0], [1, 0, 1]])
    assert float(threshold) == 1.0
    mask, _ = masks.magnitude_mask(np.ones([2, 3], np.float32), 4 / 6)
    np.testing.assert_array_equal(mask.numpy(), [[0, 0, 0], [0, 1, 1]])


@pytest.mark.parametrize("prune", [1, 1023, 1024, 1025, 2500, 4999])
def test_tie_cut_across_rows(prune):
    # About 6800 equal magnitudes straddle the threshold; the cut is located row by row.
    w = np.full([100, 73], 0.25, np.float32)
    w[::7, ::3] = 1.0
    w[1::11, 1::5] = 0.125
    n_small = int((w == 0.125).sum())
    k = n_small + prune
    mask, threshold = masks.magnitude_mask(w, k / w.size)
    assert ref_count(w.size, k / w.size) == k
    np.testing.assert_array_equal(mask.numpy().astype(bool), ref_keep(w, k))
    assert float(threshold) == 0.25


def test_sparsity_edges():
    w = random_weights((10, 100), seed=3)
    mask, threshold = masks.magnitude_mask(w, 0.0)
    assert mask.numpy().all() and float(threshold) == np.abs(w).min()
    mask, threshold = masks.magnitude_mask(w, 0.999)
    assert mask.numpy().sum() == 1 and float(threshold) == np.abs(w).max()
    mask, threshold = masks.magnitude_mask(w, 1.0)
    assert not mask.numpy().any() and float(threshold) == np.inf


def test_single_entry_and_empty():
    for s, kept in [(0.0, 1), (0.4, 1), (0.5, 1), (0.6, 0), (1.0, 0)]:  # 0.5 rounds to even: 0
        mask, threshold = masks.magnitude_mask(tf.constant([-3.0]), s)
        assert mask.numpy().tolist() == [float(kept)]
        assert float(threshold) == (3.0 if kept else np.inf)
    mask, threshold = masks.magnitude_mask(tf.zeros([0, 4]), 0.5)
    assert mask.shape == (0, 4) and float(threshold) == np.inf


def test_all_equal_weights():
    w = np.full([9, 9], -0.5, np.float32)
    mask, threshold = masks.magnitude_mask(w, 0.3)
    k = ref_count(81, 0.3)
    assert mask.numpy().ravel().tolist() == [0.0] * k + [1.0] * (81 - k)
    assert float(threshold) == 0.5


def test_zero_and_negative_zero_are_equal_magnitudes():
    w = np.array([-0.0, 0.0, -0.0, 0.0, 1e-30, -1e-30], np.float32)
    mask, threshold = masks.magnitude_mask(w, 0.5)
    np.testing.assert_array_equal(mask.numpy(), [0, 0, 0, 1, 1, 1])
    assert float(threshold) == 0.0
    mask, threshold = masks.magnitude_mask(w, 5 / 6)
    np.testing.assert_array_equal(mask.numpy(), [0, 0, 0, 0, 0, 1])
    assert float(threshold) == np.float32(1e-30)


def test_nan_and_inf_count_as_largest():
    w = np.array([np.nan, 1.0, -np.inf, 0.5, -np.nan, 2.0, np.inf], np.float32)
    mask, threshold = masks.magnitude_mask(w, 2 / 7)
    np.testing.assert_array_equal(mask.numpy(), [1, 0, 1, 0, 1, 1, 1])
    assert float(threshold) == 2.0
    mask, threshold = masks.magnitude_mask(w, 4 / 7)
    np.testing.assert_array_equal(mask.numpy(), [1, 0, 0, 0, 1, 0, 1])
    assert float(threshold) == np.inf
    mask, threshold = masks.magnitude_mask(w, 6 / 7)
    np.testing.assert_array_equal(mask.numpy(), [0, 0, 0, 0, 1, 0, 0])
    assert np.isnan(float(threshold))


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16, tf.float64])
def test_low_and_high_precision_dtypes(dtype):
    w = tf.cast(random_weights((40, 30), seed=7), dtype)
    mask, threshold = masks.magnitude_mask(w, 0.65)
    assert mask.dtype == dtype and mask.shape == w.shape
    as_f32 = tf.cast(w, tf.float32).numpy()  # selection happens in float32
    keep = ref_keep(as_f32, ref_count(1200, 0.65))
    np.testing.assert_array_equal(tf.cast(mask, tf.float32).numpy().astype(bool), keep)
    assert threshold.dtype == tf.float32 and float(threshold) == ref_threshold(as_f32, keep)


def test_dynamic_sparsity_in_tf_function_and_xla():
    w = random_weights((33, 65), seed=11, kind="ties")
    traced = tf.function(masks.magnitude_mask, input_signature=[tf.TensorSpec([33, 65]), tf.TensorSpec([])])
    compiled = tf.function(masks.magnitude_mask, jit_compile=True, reduce_retracing=True)
    for s in [0.0, 0.2, 0.5, 0.9, 0.999, 1.0]:
        k = ref_count(w.size, np.float32(s))  # float32 sparsity tensor
        keep = ref_keep(w, k)
        for fn in (traced, compiled):
            mask, threshold = fn(tf.constant(w), tf.constant(s, tf.float32))
            np.testing.assert_array_equal(mask.numpy().astype(bool), keep)
            assert float(threshold) == ref_threshold(w, keep)
    assert traced.experimental_get_tracing_count() == 1


def test_sparsity_tensor_is_clipped_and_numbers_validated():
    w = random_weights((10, 10), seed=1)
    assert masks.magnitude_mask(w, tf.constant(1.5))[0].numpy().sum() == 0
    assert masks.magnitude_mask(w, tf.constant(-0.5))[0].numpy().sum() == 100
    with pytest.raises(ValueError, match=r"\[0, 1\]; received 1.5"):
        masks.magnitude_mask(w, 1.5)
    with pytest.raises(TypeError, match="floating tensor"):
        masks.magnitude_mask(tf.constant([1, 2, 3]), 0.5)


def test_num_to_prune_rounds_half_to_even_in_float64():
    assert [int(masks.num_to_prune(n, 0.5)) for n in (1, 3, 5, 7)] == [0, 2, 2, 4]
    assert int(masks.num_to_prune(25, 0.1)) == 2  # 0.1 is not widened through float32
    assert int(masks.num_to_prune(25, tf.constant(0.1, tf.float32))) == 3  # float32 0.1 > 0.1


class _MaskedDense(keras.layers.Layer):
    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 6), initializer="glorot_uniform")
        self.sparsity = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.7), trainable=False)
        self.kept = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        mask, _ = masks.magnitude_mask(self.kernel, self.sparsity)
        self.kept.assign(tf.reduce_sum(mask))
        return tf.matmul(x, self.kernel * mask)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_inside_keras_training_step(jit_compile):
    layer = _MaskedDense()
    model = keras.Sequential([keras.Input((10,)), layer])
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 10)).astype(np.float32), rng.normal(size=(32, 6)).astype(np.float32)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert float(layer.kept.numpy()) == 60 - ref_count(60, np.float32(0.7))
    layer.sparsity.assign(0.25)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert float(layer.kept.numpy()) == 60 - ref_count(60, 0.25)


# --------------------------------------------------------------------------
# block_magnitude_mask
# --------------------------------------------------------------------------


def _blocks(mask2d, bh, bw):
    rows, cols = mask2d.shape
    padded = np.pad(mask2d, [[0, -rows % bh], [0, -cols % bw]], constant_values=np.nan)
    g = padded.reshape(padded.shape[0] // bh, bh, padded.shape[1] // bw, bw).transpose(0, 2, 1, 3)
    return g.reshape(g.shape[0] * g.shape[1], bh * bw)


def ref_block_keep(w2d, sparsity, bh, bw, pooling):
    mag = _blocks(np.abs(w2d), bh, bw)
    pooled = np.nanmax(mag, axis=1) if pooling == "MAX" else np.nanmean(mag, axis=1)
    return ref_keep(pooled, ref_count(pooled.size, sparsity))


@pytest.mark.parametrize(
    "shape,block,pooling",
    [
        ((10, 7), (3, 2), "AVG"),
        ((10, 7), (3, 2), "MAX"),
        ((16, 8), (4, 1), "AVG"),
        ((3, 3, 4, 8), (4, 4), "MAX"),  # conv kernel viewed as (36, 8)
        ((12, 9), (1, -1), "AVG"),  # whole rows
        ((12, 9), (-1, 2), "max"),  # whole columns, partial last block
        ((50,), (1, 8), "AVG"),  # 1-D as (1, 50)
    ],
)
def test_block_structure_and_count(shape, block, pooling):
    w = random_weights(shape, seed=5)
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    bh = rows if block[0] == -1 else block[0]
    bw = shape[-1] if block[1] == -1 else block[1]
    for s in [0.0, 0.3, 0.5, 0.8, 1.0]:
        mask, threshold = masks.block_magnitude_mask(w, s, block_size=block, pooling=pooling)
        assert mask.shape == w.shape and mask.dtype == tf.float32
        per_block = _blocks(mask.numpy().reshape(rows, -1), bh, bw)
        block_keep = np.nanmax(per_block, axis=1)
        assert (np.nanmin(per_block, axis=1) == block_keep).all()  # all-zero or all-kept
        num_blocks = per_block.shape[0]
        assert int((block_keep == 0).sum()) == ref_count(num_blocks, s)
        expected = ref_block_keep(w.reshape(rows, -1), s, bh, bw, pooling.upper())
        np.testing.assert_array_equal(block_keep.astype(bool), expected)
        if expected.all() or not expected.any():
            continue
        assert np.isfinite(float(threshold))


def test_block_avg_and_max_differ_as_expected():
    # Block 0: one large entry among zeros (high max, low mean). Block 1: uniform 0.5.
    w = np.array([[1.6, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, -0.5]], np.float32)
    avg, avg_t = masks.block_magnitude_mask(w, 0.5, block_size=(2, 2), pooling="AVG")
    mx, mx_t = masks.block_magnitude_mask(w, 0.5, block_size=(2, 2), pooling="MAX")
    np.testing.assert_array_equal(avg.numpy(), [[0, 0, 1, 1], [0, 0, 1, 1]])  # mean 0.4 < 0.5
    np.testing.assert_array_equal(mx.numpy(), [[1, 1, 0, 0], [1, 1, 0, 0]])  # max 1.6 > 0.5
    assert float(avg_t) == 0.5 and float(mx_t) == np.float32(1.6)


def test_block_avg_ignores_padding():
    # (2, 3) with blocks (2, 2): the last block has 2 real entries; its mean must not count the pad.
    w = np.array([[0.3, 0.3, 0.4], [0.3, 0.3, 0.4]], np.float32)
    mask, threshold = masks.block_magnitude_mask(w, 0.5, block_size=(2, 2))
    np.testing.assert_array_equal(mask.numpy(), [[0, 0, 1], [0, 0, 1]])
    assert float(threshold) == pytest.approx(0.4)


def test_block_mask_under_xla_with_dynamic_sparsity():
    w = random_weights((24, 16), seed=2)
    fn = tf.function(lambda w, s: masks.block_magnitude_mask(w, s, (4, 4), "MAX"), jit_compile=True)
    for s in [0.25, 0.5]:
        mask, _ = fn(tf.constant(w), tf.constant(s))
        eager, _ = masks.block_magnitude_mask(w, s, (4, 4), "MAX")
        np.testing.assert_array_equal(mask.numpy(), eager.numpy())
        assert mask.numpy().sum() == 16 * (24 - ref_count(24, s))


@pytest.mark.parametrize("block", [(0, 2), (2,), (-2, 1), (1.5, 1), "ab"])
def test_block_errors(block):
    with pytest.raises(ValueError, match="block_size"):
        masks.block_magnitude_mask(tf.ones([4, 4]), 0.5, block_size=block)


def test_block_other_errors():
    with pytest.raises(ValueError, match="'AVG' or 'MAX'"):
        masks.block_magnitude_mask(tf.ones([4, 4]), 0.5, (2, 2), pooling="SUM")
    with pytest.raises(ValueError, match="rank >= 1"):
        masks.block_magnitude_mask(tf.constant(1.0), 0.5, (1, 1))


# --------------------------------------------------------------------------
# M-by-N
# --------------------------------------------------------------------------


def ref_m_by_n_keep(w, m, n, axis):
    """Keeps the n - m largest of every n consecutive entries along `axis` (at least m zeros)."""
    mag = np.moveaxis(np.abs(w.astype(np.float32)), axis, -1)
    length = mag.shape[-1]
    keep = np.zeros(mag.shape, bool)
    for idx in np.ndindex(mag.shape[:-1]):
        for start in range(0, length, n):
            group = mag[idx][start : start + n]
            top = np.argsort(group, kind="stable")[::-1][: n - m]  # largest; later index wins ties
            keep[idx + (start + top,)] = True
    return np.moveaxis(keep, -1, axis)


@pytest.mark.parametrize(
    "shape,m,n,axis",
    [
        ((16, 8), 2, 4, 0),  # Dense (in, out): along inputs
        ((3, 3, 10, 4), 2, 4, 2),  # Conv: along cin, partial last group of 2
        ((5, 12, 3), 1, 2, 1),  # Conv1D
        ((30,), 3, 8, 0),  # 1-D, partial group of 6
        ((40, 3), 5, 32, 0),  # large group: sort path, partial group of 8
        ((7, 2), 14, 20, 0),  # group longer than the axis: 6 of the 7 kept
        ((12, 3), 3, 4, 0),  # 3 zeros in every 4: 75% sparse
        ((40, 3), 27, 32, 0),  # sort path, partial group of 8 keeps 5
    ],
)
@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_m_by_n_keeps_the_n_minus_m_largest(shape, m, n, axis, kind):
    w = random_weights(shape, seed=len(shape) + m, kind=kind)
    assert masks.input_channel_axis(len(shape)) == axis
    mask = masks.m_by_n_mask(w, m, n)
    assert mask.shape == w.shape and mask.dtype == tf.float32
    np.testing.assert_array_equal(mask.numpy().astype(bool), ref_m_by_n_keep(w, m, n, axis))
    assert bool(masks.check_m_by_n(w * mask.numpy(), m, n))
    full_groups = (shape[axis] // n) * (np.prod(shape) // shape[axis])
    assert int(tf.reduce_sum(mask)) >= full_groups * (n - m)  # every full group keeps exactly n - m
    assert int(tf.reduce_sum(mask)) <= -(-shape[axis] // n) * (np.prod(shape) // shape[axis]) * (n - m)


def test_m_by_n_ties_and_zeros():
    w = np.array([[1.0], [1.0], [1.0], [1.0], [0.0], [0.0], [0.0], [3.0]], np.float32)
    mask = masks.m_by_n_mask(w, 2, 4)
    np.testing.assert_array_equal(mask.numpy().ravel(), [0, 0, 1, 1, 0, 0, 1, 1])


def test_m_by_n_axis_override_and_xla():
    w = random_weights((6, 8), seed=9)
    mask = masks.m_by_n_mask(w, 3, 4, axis=-1)
    np.testing.assert_array_equal(mask.numpy().astype(bool), ref_m_by_n_keep(w, 3, 4, 1))
    assert int(tf.reduce_sum(mask)) == 6 * 2  # one kept in each group of 4
    compiled = tf.function(lambda w: masks.m_by_n_mask(w, 2, 4), jit_compile=True)
    np.testing.assert_array_equal(compiled(tf.constant(w)).numpy(), masks.m_by_n_mask(w, 2, 4).numpy())


def test_m_by_n_bfloat16():
    w = tf.cast(random_weights((8, 4), seed=4), tf.bfloat16)
    mask = masks.m_by_n_mask(w, 2, 4)
    assert mask.dtype == tf.bfloat16
    expected = ref_m_by_n_keep(tf.cast(w, tf.float32).numpy(), 2, 4, 0)
    np.testing.assert_array_equal(tf.cast(mask, tf.float32).numpy().astype(bool), expected)


def test_m_by_n_violations_counts_groups():
    w = np.zeros([8, 3], np.float32)
    assert int(masks.m_by_n_violations(w, 2, 4)) == 0 and bool(masks.check_m_by_n(w, 2, 4))
    w[0:3, 0] = 1.0  # group (rows 0-3, col 0): 3 non-zeros
    w[4:8, 2] = -1.0  # group (rows 4-7, col 2): 4 non-zeros
    w[4:6, 1] = 2.0  # 2 non-zeros: fine
    assert int(masks.m_by_n_violations(w, 2, 4)) == 2
    assert not bool(masks.check_m_by_n(w, 2, 4))
    assert int(masks.m_by_n_violations(w, 1, 4)) == 1  # only the all-non-zero group lacks one zero
    assert int(masks.m_by_n_violations(w, 3, 4)) == 3  # every group with 2+ non-zeros lacks zeros
    assert int(masks.m_by_n_violations(np.full([6], np.nan, np.float32), 3, 4)) == 2  # NaN is non-zero
    # The partial last group (2 of 6 entries) is held to n - m non-zeros.
    assert int(masks.m_by_n_violations(np.array([0, 0, 0, 1, 1, 1], np.float32), 3, 4)) == 1


def test_m_by_n_sparsity_follows_tfmot_meaning():
    w = random_weights((64, 8), seed=3)
    for m, n, expected in [(1, 4, 0.25), (2, 4, 0.5), (3, 4, 0.75), (1, 2, 0.5), (2, 8, 0.25)]:
        mask = masks.m_by_n_mask(w, m, n).numpy()
        assert 1.0 - mask.mean() == pytest.approx(expected), (m, n)


@pytest.mark.parametrize("m,n", [(4, 4), (0, 4), (5, 4), (2.0, 4), (True, 4)])
def test_m_by_n_errors(m, n):
    with pytest.raises(ValueError, match=r"at least m zeros.*0 < m < n; received"):
        masks.m_by_n_mask(tf.ones([8, 2]), m, n)


# --------------------------------------------------------------------------
# global_magnitude_masks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_global_matches_reference(kind):
    ws = [random_weights(s, seed=i, kind=kind) for i, s in enumerate([(20, 10), (7,), (3, 3, 2, 4), (50, 3)])]
    ws[1] *= 10.0  # a layer of large weights should keep more
    total = sum(w.size for w in ws)
    for s in [0.0, 0.2, 0.5, 0.8, 1.0]:
        got, threshold = masks.global_magnitude_masks(ws, s)
        expected = ref_global(ws, s)
        for g, e, w in zip(got, expected, ws):
            assert g.shape == w.shape
            np.testing.assert_array_equal(g.numpy().astype(bool), e)
        assert total - sum(g.numpy().sum() for g in got) == ref_count(total, s)
        joint_w = np.concatenate([w.ravel() for w in ws])
        joint_keep = np.concatenate([e.ravel() for e in expected])
        assert float(threshold) == ref_threshold(joint_w, joint_keep)


@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_global_ceiling_water_filling(kind):
    small = random_weights((10, 10), seed=1, kind=kind) * 0.01
    medium = random_weights((8, 8), seed=2, kind=kind) * 0.1
    large = random_weights((40,), seed=3, kind=kind)
    ws = [small, medium, large]
    total = sum(w.size for w in ws)
    for s, ceiling in [(0.5, 0.6), (0.5, 0.9), (0.3, 0.35), (0.7, 0.75), (0.62, 0.62)]:
        got, threshold = masks.global_magnitude_masks(ws, s, max_layer_sparsity=ceiling)
        pruned = [int(w.size - g.numpy().sum()) for g, w in zip(got, ws)]
        assert sum(pruned) == ref_count(total, s)
        assert all(p <= ref_count(w.size, ceiling) for p, w in zip(pruned, ws))
        for g, e in zip(got, ref_global(ws, s, ceiling)):
            np.testing.assert_array_equal(g.numpy().astype(bool), e)
        # Tensors below their ceiling are split by the threshold.
        for g, w, p in zip(got, ws, pruned):
            if p < ref_count(w.size, ceiling):
                mag, keep = np.abs(w), g.numpy().astype(bool)
                assert (mag[~keep] <= threshold.numpy()).all() and (mag[keep] >= threshold.numpy()).all()
    # The ceiling binds: without it the small layer would lose far more than 60%.
    assert masks.global_magnitude_masks(ws, 0.5)[0][0].numpy().sum() < 100 - ref_count(100, 0.6)


def test_global_unreachable_target_prunes_to_each_ceiling():
    ws = [random_weights((10, 10), seed=1), random_weights((30,), seed=2)]
    got, threshold = masks.global_magnitude_masks(ws, 0.8, max_layer_sparsity=0.5)
    assert [int(g.numpy().sum()) for g in got] == [50, 15]
    for g, w in zip(got, ws):
        np.testing.assert_array_equal(g.numpy().astype(bool), ref_keep(w, ref_count(w.size, 0.5)))
    assert float(threshold) == np.inf


def test_global_in_tf_function_and_xla_with_dynamic_sparsity():
    ws = [random_weights((12, 5), seed=1, kind="ties"), random_weights((9,), seed=2, kind="ties")]
    fn = tf.function(lambda a, b, s: masks.global_magnitude_masks([a, b], s, 0.7))
    xla = tf.function(lambda a, b, s: masks.global_magnitude_masks([a, b], s, 0.7), jit_compile=True)
    for s in [0.1, 0.5, 0.66]:
        expected = ref_global(ws, np.float32(s), 0.7)
        for f in (fn, xla):
            got, _ = f(tf.constant(ws[0]), tf.constant(ws[1]), tf.constant(s))
            for g, e in zip(got, expected):
                np.testing.assert_array_equal(g.numpy().astype(bool), e)


def test_global_errors():
    with pytest.raises(ValueError, match="empty"):
        masks.global_magnitude_masks([], 0.5)
    with pytest.raises(TypeError, match="list of tensors"):
        masks.global_magnitude_masks(tf.ones([3]), 0.5)
    with pytest.raises(ValueError, match="max_layer_sparsity"):
        masks.global_magnitude_masks([tf.ones([3])], 0.5, max_layer_sparsity=2)


def test_all_paths_agree_on_random_sweep():
    """Eager, graph and XLA agree with the numpy reference over many shapes and sparsities."""
    rng = np.random.default_rng(0)
    graph = tf.function(masks.magnitude_mask, reduce_retracing=True)
    for trial, s in itertools.product(range(6), [0.15, 0.55, 0.95]):
        shape = tuple(rng.integers(1, 40, size=rng.integers(1, 4)))
        w = (rng.integers(-20, 20, size=shape) / 4).astype(np.float32) if trial % 2 else rng.normal(size=shape).astype(np.float32)
        keep = ref_keep(w, ref_count(w.size, np.float32(s)))
        mask, _ = graph(w, tf.constant(s))
        np.testing.assert_array_equal(mask.numpy().astype(bool), keep)


def test_benchmark_tool_runs_and_reports():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "tools" / "bench_mask_update.py"
    spec = importlib.util.spec_from_file_location("bench_mask_update", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--sizes", "4096", "16384", "--repeats", "1", "--tfmot-repeats", "1", "--ties"])
    assert result["sizes"] == [4096, 16384] and len(result["ties"]) == 2
    assert all(v > 0 for v in result["tfprune_ms"] + result["tfmot_ms"] + result["single_pass_ms"])


@pytest.mark.parametrize("kind", ["normal", "ties"])
def test_large_tensors_use_two_pass_select_exactly(kind):
    w = random_weights((600, 500), seed=21, kind=kind)  # > 2**18 entries: 16 + 15 bit passes
    assert w.size > masks._SMALL_INPUT
    graph = tf.function(masks.magnitude_mask)
    for s in [0.0, 0.3, 0.8, 0.9999, 1.0]:
        keep = ref_keep(w, ref_count(w.size, np.float32(s)))
        mask, threshold = graph(w, tf.constant(s))
        np.testing.assert_array_equal(mask.numpy().astype(bool), keep)
        assert float(threshold) == ref_threshold(w, keep)
    ws = [w, random_weights((1000,), seed=3, kind=kind)]
    got, _ = masks.global_magnitude_masks(ws, 0.6, max_layer_sparsity=0.61)
    for g, e in zip(got, ref_global(ws, 0.6, 0.61)):
        np.testing.assert_array_equal(g.numpy().astype(bool), e)


def test_unknown_static_shape_in_tf_function():
    fn = tf.function(masks.magnitude_mask, input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([])])
    for shape in [(5, 7), (1, 1), (30, 40)]:
        w = random_weights(shape, seed=shape[0], kind="ties")
        keep = ref_keep(w, ref_count(w.size, np.float32(0.45)))
        mask, _ = fn(w, tf.constant(0.45))
        np.testing.assert_array_equal(mask.numpy().astype(bool), keep)
    block = tf.function(lambda w: masks.block_magnitude_mask(w, 0.5, (2, 2)), input_signature=[tf.TensorSpec([None, 4])])
    with pytest.raises(ValueError, match="known shape"):
        block.get_concrete_function()
