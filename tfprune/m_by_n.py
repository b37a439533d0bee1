"""Model-level M-by-N (semi-structured) sparsity check.

`check_m_by_n(model, 2, 4)` reports, for every prunable weight of a Keras model, whether
every group of 4 consecutive weights along the input-channel axis holds at least 2 zeros
(tfmot's meaning of `sparsity_m_by_n=(M, N)`: at least M zeros in every N; Dense
`(in, out)`: axis 0; Conv `(kh, kw, cin, cout)`: axis -2). Wrapped
layers are checked with their masks applied; plain layers of registered prunable types
(e.g. after `strip_pruning`) are checked as stored.

Example:
    >>> report = check_m_by_n(pruned_model, 2, 4)
    >>> report
    {'conv1/kernel': True, 'dense1/kernel': True, 'logits/kernel': True}
    >>> all(report.values())
    True
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfprune import masks as mask_lib
from tfprune.sparsity import weight_values


def _weights_of(model: keras.layers.Layer) -> list[tuple[str, Any]]:
    """(`layer/weight`, value) of every prunable weight, masks applied for wrappers."""
    return [(f"{layer}/{label}", value) for layer, label, value, _ in weight_values(model)]


def check_m_by_n(model_or_weights: Any, m: int, n: int, axis: int | None = None) -> Any:
    """Whether weights follow M-by-N sparsity: at least `m` zeros in every `n` consecutive.

    Args:
        model_or_weights: a Keras model or layer (wrapped or plain), or one tensor/array.
        m: least number of zeros per group (2 for 2:4, 1 for 1:4 = 25% sparse), `0 < m < n`.
        n: group length along the input-channel axis (`tfprune.masks.input_channel_axis`).
        axis: optional axis override (applied to every weight).

    Returns:
        For a tensor: a Python bool (a boolean tensor inside `tf.function`). For a model or layer: a dict `{'layer/weight': bool}`
        over its prunable weights (empty when it has none).

    Example:
        >>> check_m_by_n(np.array([[1.0], [0.0], [2.0], [0.0]]), 2, 4)
        True
    """
    if isinstance(model_or_weights, keras.layers.Layer):
        return {
            name: bool(mask_lib.check_m_by_n(tf.constant(value), m, n, axis))
            for name, value in _weights_of(model_or_weights)
        }
    value = model_or_weights
    if isinstance(value, keras.Variable):
        value = keras.ops.convert_to_numpy(value)
    if not tf.is_tensor(value):
        value = tf.convert_to_tensor(np.asarray(value))
    result = mask_lib.check_m_by_n(value, m, n, axis)  # the tensor form: one contract for both
    return bool(result) if tf.executing_eagerly() else result


def m_by_n_report(model: keras.layers.Layer, m: int, n: int, axis: int | None = None) -> list[dict]:
    """Per prunable weight: name, shape, groups with fewer than `m` zeros in `n`, and whether it complies.

    Example:
        >>> [r for r in m_by_n_report(model, 2, 4) if not r["ok"]]
        []
    """
    rows = []
    for name, value in _weights_of(model):
        violations = int(mask_lib.m_by_n_violations(tf.constant(value), m, n, axis))
        rows.append({"weight": name, "shape": list(np.shape(value)), "violations": violations, "ok": violations == 0})
    return rows
