"""Check a pruned model against the original with the removed channels forced to zero.

`zeroed_reference(model, report)` copies the original model and silences every removed channel at
its source: the producer's filter and bias (an Embedding's column), the depthwise filter and bias,
and the BatchNormalization gamma, beta and mean of that channel; LayerNormalization/RMSNormalization
gamma (and beta) too, so that their outputs for a removed channel are zero while their statistics
still include its zero input. With activations that map 0 to 0 (ReLU, swish, ...), a removed
channel then carries exactly zero wherever it is consumed, so the copy must compute what the pruned
model computes. It relies only on the report's kept indices, not on the dependency graph.

Example:
    >>> pruned, report = prune_filters(model, 0.5)
    >>> max_abs_difference(model, pruned, report, x)   # ~1e-6
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfprune.keras_graph import RMSNormalization, iter_layers
from tfprune.layers import get_handler

_CHANNEL_NORMALIZATIONS = tuple(c for c in (keras.layers.LayerNormalization, RMSNormalization) if c is not None)


def copy_model(model: keras.Model) -> keras.Model:
    """A clone of `model` with the same weights.

    Example:
        >>> reference = copy_model(model)
    """
    clone = keras.models.clone_model(model, recursive=True)
    clone.set_weights(model.get_weights())
    return clone


def zeroed_reference(model: keras.Model, report: Any) -> keras.Model:
    """A copy of `model` in which every channel the report removed outputs exactly zero.

    Example:
        >>> reference = zeroed_reference(model, report)
    """
    reference = copy_model(model)
    by_name = {entry.name: entry for entry in report.layers}
    for layer in iter_layers(reference):
        entry = by_name.get(layer.name)
        if entry is None:
            continue
        if entry.channels_after != entry.channels_before:
            removed = np.setdiff1d(np.arange(entry.channels_before), entry.kept_indices)
            get_handler(layer).zero_channels(layer, removed)
        extra = {slot: np.setdiff1d(np.arange(n), kept) for slot, (n, kept) in entry.slots.items()
                 if len(kept) != n}
        if extra:  # e.g. attention heads: silence their projections
            get_handler(layer).zero_slots(layer, extra)
    return reference


def max_abs_difference(model: keras.Model, pruned: keras.Model, report: Any, inputs: Any) -> float:
    """Largest absolute output difference between `pruned` and the zeroed reference of `model`.

    Example:
        >>> max_abs_difference(model, pruned, report, x)   # ~1e-6
    """
    reference = zeroed_reference(model, report)
    expected = keras.tree.flatten(reference(inputs, training=False))
    actual = keras.tree.flatten(pruned(inputs, training=False))
    return float(max(np.max(np.abs(np.asarray(a) - np.asarray(e))) for a, e in zip(actual, expected)))


_RANDOM_RANGES = {"gamma": (0.5, 1.5), "scale": (0.5, 1.5), "moving_variance": (0.5, 2.0)}  # others ~ N(0, 0.2)


def randomize_statistics(model: keras.Model, seed: int = 0) -> keras.Model:
    """Give BatchNormalization/LayerNormalization/RMSNormalization layers and biases random values (in
    place), so that a check against `zeroed_reference` exercises them. Freshly initialised layers
    have gamma=1, beta=0, zero biases.
    """
    rng = np.random.default_rng(seed)
    for layer in iter_layers(model):
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, (keras.layers.BatchNormalization, *_CHANNEL_NORMALIZATIONS)):
            for name in ("gamma", "scale", "beta", "moving_mean", "moving_variance"):
                variable = getattr(layer, name, None)
                if isinstance(variable, keras.Variable):
                    low_high = _RANDOM_RANGES.get(name)
                    values = (rng.uniform(*low_high, variable.shape) if low_high
                              else rng.normal(0, 0.2, variable.shape))
                    variable.assign(values.astype(np.float32))
            continue
        if getattr(layer, "bias", None) is not None and weights[-1].ndim == 1:
            weights[-1] = rng.normal(0, 0.2, weights[-1].shape)
        layer.set_weights([w.astype(np.float32) for w in weights])
    return model
