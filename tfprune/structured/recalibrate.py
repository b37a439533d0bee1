"""Re-estimate BatchNormalization statistics of a (pruned) model on a few batches (EagleEye's
adaptive BN): a pruned model's moving statistics describe the channels of the original model, and
re-estimating them ranks candidate pruning plans almost as well as fine-tuning them.

Every BatchNormalization normalises each batch with that batch's own statistics (as in training,
while every other layer runs in inference mode: no dropout), and its moving mean and variance
become the average of the batch statistics over the steps. Deterministic for the same data.

Example:
    >>> pruned, _ = prune_filters(model, pruning_ratio=0.5)
    >>> recalibrate_batchnorm(pruned, x_train[:2048], steps=8, batch_size=256)
"""

from __future__ import annotations

from typing import Any, Iterator

import keras
import numpy as np

from tfprune.keras_graph import find_layers


def batches(data: Any, steps: int | None, batch_size: int = 64) -> Iterator[Any]:
    """Up to `steps` (None: all) input batches from an array, an (x, y) tuple, a tf.data.Dataset or an iterable."""
    if isinstance(data, tuple) and len(data) in (2, 3) and hasattr(data[0], "shape"):
        data = data[0]
    if isinstance(data, dict) or hasattr(data, "shape"):
        n = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
        for step, start in enumerate(range(0, n, batch_size)):
            if steps is not None and step >= steps:
                return
            yield ({k: v[start:start + batch_size] for k, v in data.items()} if isinstance(data, dict)
                   else data[start:start + batch_size])
        return
    for step, batch in enumerate(data):
        if steps is not None and step >= steps:
            return
        if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
            batch = batch[0]
        yield batch


def recalibrate_batchnorm(model: keras.Model, data: Any, steps: int | None = 10,
                          batch_size: int = 64) -> keras.Model:
    """Replace the moving statistics of every BatchNormalization of `model` (in place) by their
    average over `steps` batches of `data` (array, (x, y), tf.data.Dataset or iterable of batches);
    `steps=None` uses every batch of `data` (a finite one).

    The same mends a model after a short training run, whose moving averages lag behind its weights
    (the layers before a BatchNormalization keep changing): recalibrate it on its training data.

    Example:
        >>> recalibrate_batchnorm(pruned, x_calib, steps=4)
        >>> recalibrate_batchnorm(model, x_train, steps=None)    # all of x_train, 64 at a time
    """
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive int or None (every batch), received {steps!r}.")
    bns = find_layers(model, keras.layers.BatchNormalization)
    if not bns:
        return model
    sums: dict[int, list] = {id(bn): [0.0, 0.0] for bn in bns}
    count = 0

    def patched(bn):
        axis = bn.axis if isinstance(bn.axis, (list, tuple)) else [bn.axis]

        def call(inputs, training=None, mask=None):
            x = keras.ops.cast(inputs, "float32")
            rank = len(x.shape)
            reduce = [i for i in range(rank) if i not in [a % rank for a in axis]]
            mean = keras.ops.mean(x, axis=reduce)
            var = keras.ops.var(x, axis=reduce)
            acc = sums[id(bn)]
            acc[0] = acc[0] + keras.ops.convert_to_numpy(mean).astype(np.float64)
            acc[1] = acc[1] + keras.ops.convert_to_numpy(var).astype(np.float64)
            shape = [1] * rank
            for a in axis:
                shape[a % rank] = x.shape[a % rank]
            y = (x - keras.ops.reshape(mean, shape)) / keras.ops.sqrt(keras.ops.reshape(var, shape) + bn.epsilon)
            if bn.scale:
                y = y * keras.ops.reshape(bn.gamma, shape)
            if bn.center:
                y = y + keras.ops.reshape(bn.beta, shape)
            return keras.ops.cast(y, inputs.dtype)

        return call

    for bn in bns:
        bn.call = patched(bn)
    try:
        for batch in batches(data, steps, batch_size):
            model(batch, training=False)
            count += 1
    finally:
        for bn in bns:
            del bn.call
    if count == 0:
        raise ValueError("recalibrate_batchnorm received no data. Fix: pass an array or a non-empty dataset.")
    for bn in bns:
        mean, var = sums[id(bn)]
        bn.moving_mean.assign(np.asarray(mean / count, dtype=bn.moving_mean.dtype))
        bn.moving_variance.assign(np.asarray(var / count, dtype=bn.moving_variance.dtype))
    return model
