"""Pure mask math: which weights to keep for a given sparsity.

All functions take and return tensors, run eagerly, inside `tf.function` and
under XLA (`jit_compile=True`), and never touch Keras state.

How the magnitude threshold is found
------------------------------------
Pruning to sparsity `s` means finding the k-th smallest magnitude, a selection
problem that needs no sort. Non-negative IEEE floats order exactly like their
bit patterns read as integers, so `|w|` is bit-cast to int32 and the k-th
smallest pattern is found digit by digit (radix select): one histogram of the
high 16 bits over all entries, then one histogram of the low 15 bits over the
entries in the chosen high bin (small tensors use three passes with smaller
histograms). Each pass is a single linear scan (`Bincount`), so the cost grows
linearly with the size of the tensor instead of as a full sort. Ties at the
threshold are resolved exactly by flat index, with a cumulative count that only
runs when a tie actually straddles the threshold.

Conventions shared by every function here:

* Selection is computed on `|w|` in float32 (float16, bfloat16 and float64
  weights are cast first; float64 magnitudes that only differ below float32
  precision count as equal).
* `-0.0` and `0.0` are the same magnitude.
* NaN counts as the largest magnitude (above `+inf`), so NaN entries are pruned
  last; the function never raises on non-finite values. A threshold can be NaN
  only if every kept entry is NaN.
* Ties: among equal magnitudes, the entry with the lower flat (row-major)
  index is pruned first.
* Counts are `round(n * sparsity)`, half to even (`num_to_prune`). A sparsity
  given as a Python number must lie in [0, 1]; a sparsity tensor (e.g. from a
  schedule at run time) is clipped to that range.
* Counts are int32: a tensor (or, for `global_magnitude_masks`, all tensors
  together) may hold up to 2**31 - 1 entries.

Example:
    >>> mask, threshold = magnitude_mask(tf.random.normal([64, 32]), 0.75)
    >>> int(tf.reduce_sum(mask))
    512
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "num_to_prune",
    "magnitude_mask",
    "block_magnitude_mask",
    "m_by_n_mask",
    "m_by_n_violations",
    "check_m_by_n",
    "input_channel_axis",
    "global_magnitude_masks",
]

_ABS_BITS = 0x7FFFFFFF  # clears the sign bit of a float32 bit pattern
_SMALL_INPUT = 1 << 18  # up to this many entries, select with smaller histograms
_TIE_ROW = 1024  # row length of the 2-D view used to locate a tie cut
_PAIRWISE_MAX_N = 16  # m-by-n groups up to this size rank by pairwise compare
_FLOAT_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _as_float_tensor(weights: Any, name: str = "weights") -> tf.Tensor:
    weights = tf.convert_to_tensor(weights)
    if weights.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"`{name}` must be a floating tensor (float16, bfloat16, float32 or "
            f"float64); received dtype {weights.dtype.name}. Cast the weights "
            "to a float dtype first."
        )
    return weights


def _magnitude_bits(weights: tf.Tensor) -> tf.Tensor:
    """int32 bit patterns of |w| in float32; ordered exactly like the magnitudes."""
    as_f32 = tf.cast(weights, tf.float32)
    return tf.bitwise.bitwise_and(tf.bitcast(as_f32, tf.int32), _ABS_BITS)


def _check_fraction(value: Any, name: str) -> None:
    """Raises eagerly for a Python/numpy number outside [0, 1]; tensors pass."""
    if isinstance(value, (numbers.Real, np.number)) and not isinstance(value, bool):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(
                f"`{name}` must be in [0, 1]; received {value!r}. Pass a fraction "
                "of entries to prune, e.g. 0.8 for 80%."
            )


def _as_float64(value: Any) -> tf.Tensor:
    """Python numbers go straight to float64 (not through float32, where 0.1 * 25 > 2.5)."""
    return tf.cast(tf.convert_to_tensor(value, dtype_hint=tf.float64), tf.float64)


def _histogram(keys: tf.Tensor, size: int) -> tf.Tensor:
    """Counts of each key in [0, size); keys >= size are ignored (keys are >= 0)."""
    return tf.raw_ops.Bincount(arr=keys, size=size, weights=tf.constant([], tf.int32))


def _digit_widths(bits_list: Sequence[tf.Tensor]) -> tuple[int, ...]:
    """Bits resolved per histogram pass (31 in all; bit 31 is the cleared sign).

    Large inputs use two passes (65536 + 32768 bins): fewest scans. Small ones
    use three passes over 2048 + 1024 + 1024 bins, where the cost of the bins
    themselves, not the scans, dominates.
    """
    sizes = [b.shape.num_elements() for b in bits_list]
    if all(s is not None for s in sizes) and sum(sizes) <= _SMALL_INPUT:
        return (11, 10, 10)
    return (16, 15)


def _select(bits_list: Sequence[tf.Tensor], caps: tf.Tensor, k: tf.Tensor):
    """Radix select over several tensors with per-tensor caps.

    With `f(t) = sum_i min(caps[i], #{bits_i <= t})`, returns the smallest bit
    pattern `t` with `f(t) > k` (for one tensor with `caps = [n]` this is the
    k-th smallest pattern, 0-based), together with, per tensor, how many
    entries lie strictly below `t` and how many equal it. Requires
    `k < sum(caps)`; a negative `k` returns `t = 0`.
    """
    caps = tf.reshape(caps, [-1, 1])
    widths = _digit_widths(bits_list)
    # Flat 1-D input: under XLA a 2-D Bincount input counts per row.
    bits_list = [tf.reshape(b, [-1]) for b in bits_list]
    prefix = tf.constant(0, tf.int32)  # the bits of t resolved so far
    below = tf.zeros([len(bits_list)], tf.int32)
    shift = 31
    for level, width in enumerate(widths):
        shift -= width
        bins = 1 << width

        def digit_keys(b: tf.Tensor) -> tf.Tensor:
            # Entries whose higher bits differ from the prefix get a key >= bins,
            # which the histogram ignores.
            keys = b if level == 0 else tf.bitwise.bitwise_xor(b, prefix)
            return tf.bitwise.right_shift(keys, shift) if shift else keys

        hist = tf.stack([_histogram(digit_keys(b), bins) for b in bits_list])
        cum = tf.cumsum(hist, axis=1)
        capped = tf.reduce_sum(tf.minimum(tf.expand_dims(below, 1) + cum, caps), axis=0)
        digit = tf.minimum(tf.reduce_sum(tf.cast(capped <= k, tf.int32)), bins - 1)
        equal = tf.gather(hist, digit, axis=1)
        below = below + tf.gather(cum, digit, axis=1) - equal
        prefix = tf.bitwise.bitwise_or(prefix, tf.bitwise.left_shift(digit, shift))
    return prefix, below, equal


def _keep_from_threshold(bits: tf.Tensor, t: tf.Tensor, r: tf.Tensor, equal: tf.Tensor) -> tf.Tensor:
    """Keeps `bits > t`, plus the entries equal to `t` except the first `r` in flat order."""

    def split_tie() -> tf.Tensor:
        flat = tf.reshape(bits, [-1])
        n = tf.size(flat)
        rows = (n + _TIE_ROW - 1) // _TIE_ROW
        padded = tf.pad(flat, [[0, rows * _TIE_ROW - n]], constant_values=-1)
        hits = tf.cast(tf.equal(tf.reshape(padded, [rows, _TIE_ROW]), t), tf.int32)
        per_row = tf.reduce_sum(hits, axis=1)
        row_cum = tf.cumsum(per_row)
        row = tf.minimum(tf.reduce_sum(tf.cast(row_cum < r, tf.int32)), rows - 1)
        before = tf.gather(row_cum, row) - tf.gather(per_row, row)
        in_row = tf.cumsum(tf.gather(hits, row))
        col = tf.reduce_sum(tf.cast(in_row < r - before, tf.int32))
        cut = row * _TIE_ROW + col + 1  # equal entries at flat index < cut are pruned
        keep = tf.logical_or(
            tf.greater(flat, t),
            tf.logical_and(tf.equal(flat, t), tf.range(n) >= cut),
        )
        return tf.reshape(keep, tf.shape(bits))

    return tf.cond(
        r <= 0,
        lambda: tf.greater_equal(bits, t),
        lambda: tf.cond(r >= equal, lambda: tf.greater(bits, t), split_tie),
    )


def _keep_count(bits: tf.Tensor, k: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Keep-mask pruning exactly `k` (0 <= k <= n) entries, and the threshold pattern."""
    n = tf.size(bits)
    t, below, equal = _select([bits], tf.reshape(n, [1]), tf.minimum(k, n - 1))
    keep = _keep_from_threshold(bits, t, k - below[0], equal[0])
    return keep, t


def _threshold_value(t: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    return tf.where(valid, tf.bitcast(t, tf.float32), tf.constant(float("inf"), tf.float32))


# --------------------------------------------------------------------------
# Unstructured magnitude masks
# --------------------------------------------------------------------------


def num_to_prune(size: Any, sparsity: Any) -> tf.Tensor:
    """How many of `size` entries a `sparsity` removes: `round(size * sparsity)`, half to even.

    Example:
        >>> int(num_to_prune(10, 0.25))  # 2.5 rounds to even
        2
    """
    size = tf.cast(size, tf.float64)
    return tf.cast(tf.round(size * _as_float64(sparsity)), tf.int32)


def magnitude_mask(weights: Any, sparsity: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """Mask that zeroes exactly `round(n * sparsity)` smallest-magnitude entries.

    Ties are broken deterministically: among equal magnitudes, entries with the
    lower flat (row-major) index are pruned first. NaN counts as the largest
    magnitude (see the module docstring). Runs in linear time (radix select, no
    sort), eagerly, in `tf.function` and under XLA; `sparsity` may be a Python
    float or a scalar tensor (clipped to [0, 1]).

    Args:
        weights: floating tensor of any shape (float16/bfloat16/float64 are
            selected in float32).
        sparsity: fraction of entries to prune, in [0, 1].

    Returns:
        `(mask, threshold)`: `mask` has the shape and dtype of `weights` (1 keeps,
        0 prunes); `threshold` is a float32 scalar, the smallest kept magnitude
        (`+inf` when everything is pruned).

    Example:
        >>> mask, t = magnitude_mask(tf.constant([0.3, -0.1, 0.2, 0.4]), 0.5)
        >>> mask.numpy(), float(t)
        (array([1., 0., 0., 1.], dtype=float32), 0.30000001192092896)
    """
    _check_fraction(sparsity, "sparsity")
    weights = _as_float_tensor(weights)
    bits = _magnitude_bits(weights)
    n = tf.size(bits)
    k = tf.clip_by_value(num_to_prune(n, tf.clip_by_value(_as_float64(sparsity), 0.0, 1.0)), 0, n)
    keep, t = _keep_count(bits, k)
    return tf.cast(keep, weights.dtype), _threshold_value(t, k < n)


def global_magnitude_masks(
    weights_list: Sequence[Any],
    sparsity: Any,
    max_layer_sparsity: Any = None,
) -> tuple[list[tf.Tensor], tf.Tensor]:
    """One magnitude threshold across several tensors (global unstructured pruning).

    Prunes exactly `round(total * sparsity)` entries over all tensors
    (`total = sum of sizes`), the smallest magnitudes first, as if the tensors
    were flattened and concatenated in list order (so ties go to the earlier
    tensor, then the lower flat index).

    With `max_layer_sparsity`, no tensor loses more than
    `round(n_i * max_layer_sparsity)` entries. Tensors that would exceed their
    ceiling are held at it (their own smallest entries are pruned) and the rest
    of the global count is spread over the other tensors with a common,
    higher threshold (water-filling), so the global count is still met exactly
    whenever `round(total * sparsity) <= sum_i round(n_i * max_layer_sparsity)`.
    When the ceilings make the target unreachable, every tensor is pruned to its
    ceiling (fewer than the target overall) and the threshold is `+inf`.

    Args:
        weights_list: non-empty list of floating tensors of any shapes.
        sparsity: global fraction to prune, in [0, 1] (number or scalar tensor).
        max_layer_sparsity: optional per-tensor ceiling in [0, 1].

    Returns:
        `(masks, threshold)`: one mask per tensor (its shape and dtype), and a
        float32 threshold: in every tensor below its ceiling, pruned magnitudes
        are <= threshold <= kept magnitudes (without ceilings it is the
        smallest kept magnitude overall); `+inf` when everything allowed is
        pruned.

    Example:
        >>> masks, t = global_magnitude_masks([tf.constant([1., 2.]), tf.constant([3., 4., 0.5])], 0.4)
        >>> [m.numpy().tolist() for m in masks]
        [[0.0, 1.0], [1.0, 1.0, 0.0]]
    """
    if isinstance(weights_list, (tf.Tensor, np.ndarray)) or not isinstance(weights_list, Sequence):
        raise TypeError(
            "`weights_list` must be a list of tensors; received "
            f"{type(weights_list).__name__}. For one tensor use `magnitude_mask`."
        )
    if not weights_list:
        raise ValueError("`weights_list` is empty; pass at least one weight tensor.")
    _check_fraction(sparsity, "sparsity")
    if max_layer_sparsity is not None:
        _check_fraction(max_layer_sparsity, "max_layer_sparsity")

    weights = [_as_float_tensor(w, f"weights_list[{i}]") for i, w in enumerate(weights_list)]
    bits_list = [_magnitude_bits(w) for w in weights]
    sizes = tf.stack([tf.size(b) for b in bits_list])
    total = tf.reduce_sum(sizes)
    k = tf.clip_by_value(num_to_prune(total, tf.clip_by_value(_as_float64(sparsity), 0.0, 1.0)), 0, total)
    if max_layer_sparsity is None:
        caps = sizes
    else:
        ceiling = tf.clip_by_value(_as_float64(max_layer_sparsity), 0.0, 1.0)
        caps = tf.minimum(num_to_prune(sizes, ceiling), sizes)
    capacity = tf.reduce_sum(caps)
    reachable = k < capacity

    t, below, equal = _select(bits_list, caps, tf.minimum(k, capacity - 1))
    base = tf.minimum(caps, below)
    ties_left = tf.minimum(k, capacity - 1) - tf.reduce_sum(base)
    room = tf.maximum(tf.minimum(caps, below + equal) - base, 0)
    take = tf.clip_by_value(ties_left - tf.cumsum(room, exclusive=True), 0, room)
    counts = tf.where(reachable, base + take, caps)

    masks = []
    for i, (w, bits) in enumerate(zip(weights, bits_list)):
        own = tf.logical_or(tf.logical_not(reachable), below[i] >= caps[i])
        keep = tf.cond(
            own,
            lambda bits=bits, i=i: _keep_count(bits, counts[i])[0],
            lambda bits=bits, i=i: _keep_from_threshold(bits, t, take[i], equal[i]),
        )
        masks.append(tf.cast(keep, w.dtype))
    return masks, _threshold_value(t, reachable)


# --------------------------------------------------------------------------
# Block sparsity
# --------------------------------------------------------------------------


def _static_shape(weights: tf.Tensor, what: str) -> list[int]:
    if not weights.shape.is_fully_defined() or weights.shape.rank == 0:
        raise ValueError(
            f"{what} needs weights of known shape and rank >= 1; received shape "
            f"{weights.shape}. Pass the layer's weight variable (its shape is fixed)."
        )
    return weights.shape.as_list()


def _resolve_block(block_size: Any, rows: int, cols: int) -> tuple[int, int]:
    try:
        bh, bw = (int(v) for v in block_size)
        valid = all(int(v) == v for v in block_size)
    except (TypeError, ValueError):
        valid = False
    if not valid or bh == 0 or bw == 0 or bh < -1 or bw < -1:
        raise ValueError(
            f"`block_size` must be two integers (height, width), each >= 1 or -1 for "
            f"the whole dimension; received {block_size!r}. Example: block_size=(4, 1)."
        )
    return (rows if bh == -1 else bh), (cols if bw == -1 else bw)


def block_magnitude_mask(
    weights: Any,
    sparsity: Any,
    block_size: Sequence[int] = (1, 1),
    pooling: str = "AVG",
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mask that prunes whole blocks of `weights` by pooled magnitude.

    The weights are viewed as a matrix `(prod(shape[:-1]), shape[-1])` (Dense
    `(in, out)`, Conv `(kh*kw*cin, cout)`; a 1-D tensor is `(1, n)`), padded to
    a multiple of `block_size` and cut into blocks. Each block's `|w|` is pooled
    (`'AVG'`: mean over the block's real, unpadded entries; `'MAX'`: largest
    magnitude) and exactly `round(num_blocks * sparsity)` blocks are pruned with
    the `magnitude_mask` rules on the pooled values (ties: lower block index in
    row-major block order first; a block holding NaN counts as largest).

    Args:
        weights: floating tensor of known shape, rank >= 1.
        sparsity: fraction of blocks to prune, in [0, 1] (number or scalar tensor).
        block_size: `(height, width)` of a block in the matrix view; `-1` means
            the whole dimension (e.g. `(1, -1)` prunes whole input rows).
        pooling: `'AVG'` or `'MAX'`.

    Returns:
        `(mask, threshold)`: the mask (shape and dtype of `weights`, every block
        all ones or all zeros) and the smallest kept pooled magnitude (float32,
        `+inf` when every block is pruned).

    Example:
        >>> mask, t = block_magnitude_mask(tf.random.normal([8, 8]), 0.5, block_size=(2, 2))
        >>> int(tf.reduce_sum(mask))
        32
    """
    _check_fraction(sparsity, "sparsity")
    weights = _as_float_tensor(weights)
    shape = _static_shape(weights, "block_magnitude_mask")
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    cols = shape[-1]
    bh, bw = _resolve_block(block_size, rows, cols)
    mode = str(pooling).upper()
    if mode not in ("AVG", "MAX"):
        raise ValueError(f"`pooling` must be 'AVG' or 'MAX'; received {pooling!r}.")

    grid_r, grid_c = -(-rows // bh), -(-cols // bw)
    pad = [[0, grid_r * bh - rows], [0, grid_c * bw - cols]]
    bits = tf.pad(tf.reshape(_magnitude_bits(weights), [rows, cols]), pad)
    blocks = tf.reshape(bits, [grid_r, bh, grid_c, bw])
    if mode == "MAX":
        # Max of the bit patterns is the bit pattern of the max magnitude (NaN largest).
        pooled = tf.bitcast(tf.reduce_max(blocks, axis=[1, 3]), tf.float32)
    else:
        total = tf.reduce_sum(tf.bitcast(blocks, tf.float32), axis=[1, 3])
        row_n = np.minimum(bh, rows - bh * np.arange(grid_r))
        col_n = np.minimum(bw, cols - bw * np.arange(grid_c))
        pooled = total / tf.constant(np.outer(row_n, col_n), tf.float32)

    block_mask, threshold = magnitude_mask(pooled, sparsity)
    full = tf.broadcast_to(block_mask[:, None, :, None], [grid_r, bh, grid_c, bw])
    mask = tf.reshape(full, [grid_r * bh, grid_c * bw])[:rows, :cols]
    return tf.cast(tf.reshape(mask, shape), weights.dtype), threshold


# --------------------------------------------------------------------------
# M-by-N (semi-structured) sparsity
# --------------------------------------------------------------------------


def input_channel_axis(rank: int) -> int:
    """The axis along which M-by-N groups run, for a kernel of this rank.

    Rank 1: axis 0. Rank >= 2: axis `rank - 2`, the input-channel axis of Keras
    kernels: Dense `(in, out)` -> 0, Conv1D `(k, cin, cout)` -> 1, Conv2D
    `(kh, kw, cin, cout)` -> 2, Conv3D -> 3 (for DepthwiseConv2D
    `(kh, kw, cin, multiplier)` it is `cin` too).

    Example:
        >>> input_channel_axis(4)
        2
    """
    if rank < 1:
        raise ValueError(f"M-by-N sparsity needs a tensor of rank >= 1; received rank {rank}.")
    return 0 if rank == 1 else rank - 2


def _check_m_n(m: Any, n: Any) -> tuple[int, int]:
    ok = all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in (m, n))
    if not ok or not 0 < m < n:
        raise ValueError(
            f"M-by-N sparsity sets at least m zeros in every n consecutive weights (tfmot's meaning) "
            f"and needs integers 0 < m < n; received m={m!r}, n={n!r}. Example: m=2, n=4 for 2:4."
        )
    return int(m), int(n)


def _groups(x: tf.Tensor, shape: list[int], axis: int, n: int, pad_value: int):
    """Moves `axis` last and splits it into groups of `n`: returns (groups, undo)."""
    rank = len(shape)
    perm = [d for d in range(rank) if d != axis] + [axis]
    moved_shape = [shape[d] for d in perm]
    length = shape[axis]
    padded_len = -(-length // n) * n
    rows = tf.reshape(tf.transpose(x, perm), [-1, length])
    rows = tf.pad(rows, [[0, 0], [0, padded_len - length]], constant_values=pad_value)
    groups = tf.reshape(rows, [-1, padded_len // n, n])

    def undo(g: tf.Tensor) -> tf.Tensor:
        back = tf.reshape(tf.reshape(g, [-1, padded_len])[:, :length], moved_shape)
        return tf.transpose(back, np.argsort(perm))

    return groups, undo


def _resolve_axis(axis: int | None, rank: int) -> int:
    if axis is None:
        return input_channel_axis(rank)
    if not -rank <= axis < rank:
        raise ValueError(f"`axis` must be in [{-rank}, {rank}) for a rank-{rank} tensor; received {axis}.")
    return axis % rank


def m_by_n_mask(weights: Any, m: int, n: int, axis: int | None = None) -> tf.Tensor:
    """Zeroes the `m` smallest magnitudes in every group of `n` consecutive weights.

    `(m, n)` means what `sparsity_m_by_n` means in tfmot: **at least `m` zeros** in
    every `n` consecutive weights, so each group keeps its `n - m` largest
    magnitudes (`(1, 4)` is 25% sparse, `(3, 4)` 75%; 2:4 is `m=2, n=4`).
    Groups run along the input-channel axis (`input_channel_axis`: Dense
    `(in, out)` axis 0, Conv `(kh, kw, cin, cout)` axis -2, 1-D axis 0) unless
    `axis` is given. When that axis is not a multiple of `n`, the last partial
    group keeps at most `n - m` too. Ties inside a group: the lower index is
    pruned first; NaN counts as the largest magnitude.

    Args:
        weights: floating tensor of known shape, rank >= 1.
        m: least number of zeros per group, `0 < m < n`.
        n: group length.
        axis: optional axis override.

    Returns:
        The mask, shape and dtype of `weights`; at most `n - m` ones per group.

    Example:
        >>> m_by_n_mask(tf.constant([[0.1], [-0.9], [0.5], [0.2]]), 1, 4).numpy().ravel()
        array([0., 1., 1., 1.], dtype=float32)
    """
    m, n = _check_m_n(m, n)
    kept = n - m
    weights = _as_float_tensor(weights)
    shape = _static_shape(weights, "m_by_n_mask")
    axis = _resolve_axis(axis, len(shape))
    groups, undo = _groups(_magnitude_bits(weights), shape, axis, n, pad_value=-1)
    if n <= _PAIRWISE_MAX_N:
        # An entry is beaten by a larger one, or by an equal one at a later index.
        later = tf.constant(np.triu(np.ones([n, n], bool), k=1))
        mine, other = groups[..., :, None], groups[..., None, :]
        beaten = tf.logical_or(other > mine, tf.logical_and(other == mine, later))
        keep = tf.reduce_sum(tf.cast(beaten, tf.int32), axis=-1) < kept
    else:
        order = tf.argsort(groups, axis=-1, stable=True)  # ascending, ties by index
        keep = tf.argsort(order, axis=-1, stable=True) >= m
    return tf.cast(undo(keep), weights.dtype)


def m_by_n_violations(weights: Any, m: int, n: int, axis: int | None = None) -> tf.Tensor:
    """Number of groups (as in `m_by_n_mask`) with fewer than `m` zeros.

    A full group violates when it holds more than `n - m` non-zeros; the last
    partial group is held to the same `n - m` non-zeros. NaN counts as non-zero.
    Returns an int32 scalar tensor (`int(...)` eagerly).

    Example:
        >>> int(m_by_n_violations(tf.ones([8, 3]), 2, 4))
        6
    """
    m, n = _check_m_n(m, n)
    weights = _as_float_tensor(weights)
    shape = _static_shape(weights, "m_by_n_violations")
    axis = _resolve_axis(axis, len(shape))
    nonzero = tf.cast(tf.not_equal(weights, tf.zeros([], weights.dtype)), tf.int32)
    groups, _ = _groups(nonzero, shape, axis, n, pad_value=0)
    return tf.reduce_sum(tf.cast(tf.reduce_sum(groups, axis=-1) > n - m, tf.int32))


def check_m_by_n(weights: Any, m: int, n: int, axis: int | None = None) -> tf.Tensor:
    """True when every group of `n` (as in `m_by_n_mask`) has at least `m` zeros.

    The tensor form of `tfprune.check_m_by_n` (same contract; that one also takes models and layers
    and returns Python bools): returns a boolean scalar tensor, usable inside `tf.function`.

    Example:
        >>> w = tf.random.normal([16, 8])
        >>> bool(check_m_by_n(w * m_by_n_mask(w, 2, 4), 2, 4))
        True
    """
    return tf.equal(m_by_n_violations(weights, m, n, axis), 0)
