"""Pure mask math: which weights to keep for a given sparsity.

All functions take and return tensors, run eagerly, inside `tf.function` and
under XLA, and never touch Keras state.

Example:
    >>> mask, threshold = magnitude_mask(tf.random.normal([64, 32]), 0.75)
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def num_to_prune(size: Any, sparsity: Any) -> tf.Tensor:
    """How many of `size` entries a `sparsity` removes: `round(size * sparsity)`, half to even."""
    size = tf.cast(size, tf.float64)
    return tf.cast(tf.round(size * tf.cast(sparsity, tf.float64)), tf.int32)


def magnitude_mask(weights: Any, sparsity: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """Mask that zeroes exactly `round(n * sparsity)` smallest-magnitude entries.

    Ties are broken deterministically: among equal magnitudes, entries with the
    lower flat (row-major) index are pruned first.

    Returns:
        `(mask, threshold)`: `mask` has the shape and dtype of `weights` (1 keeps,
        0 prunes); `threshold` is a float32 scalar, the smallest kept magnitude
        (`+inf` when everything is pruned).
    """
    weights = tf.convert_to_tensor(weights)
    flat = tf.reshape(tf.abs(tf.cast(weights, tf.float32)), [-1])
    n = tf.size(flat)
    k = tf.minimum(num_to_prune(n, sparsity), n)
    order = tf.argsort(flat, stable=True)
    ranks = tf.scatter_nd(tf.expand_dims(order, 1), tf.range(n), tf.expand_dims(n, 0))
    keep = ranks >= k
    mask = tf.reshape(tf.cast(keep, weights.dtype), tf.shape(weights))
    threshold = tf.cond(
        k < n,
        lambda: tf.gather(flat, tf.gather(order, tf.minimum(k, n - 1))),
        lambda: tf.constant(float("inf"), tf.float32),
    )
    return mask, threshold
