"""Normalization layers whose statistics still cover channels that structured pruning removed.

LayerNormalization (or RMSNormalization) over the channel axis takes its mean and variance over
every channel. Once channels are removed upstream, a plain layer of the smaller width would
normalise over the kept channels only and change the model. These layers keep the original count
`normalized_size`: the removed channels enter the statistics as the zeros they carried in the
original model, so the pruned model computes exactly what the original computes with those
channels forced to zero.

`prune_filters(..., layer_norm="exact")` (the default) creates them; they are registered for
Keras serialization, so a pruned `.keras` file loads with `keras.saving.load_model` once tfprune
is imported.

Example:
    >>> layer = PrunedLayerNormalization(normalized_size=64)   # built on 48 kept channels
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def _check_size(layer: keras.layers.Layer, input_shape: tuple) -> None:
    rank = len(input_shape)
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    if [a % rank for a in axes] != [rank - 1]:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r} normalises over axis {layer.axis}; it supports only the "
            "last (channel) axis. Fix: use keras.layers.LayerNormalization for other axes.")
    channels = input_shape[-1]
    if channels is not None and channels > layer.normalized_size:
        raise ValueError(
            f"{type(layer).__name__} {layer.name!r}: normalized_size={layer.normalized_size} is smaller than "
            f"the {channels} input channels. Fix: normalized_size counts the channels before pruning.")


def _moments(x: Any, normalized_size: int) -> tuple[Any, Any]:
    """Mean and (biased) variance over `normalized_size` channels, of which only x's are non-zero."""
    n = float(normalized_size)
    mean = ops.sum(x, axis=-1, keepdims=True) / n
    missing = n - float(x.shape[-1])
    variance = (ops.sum(ops.square(x - mean), axis=-1, keepdims=True) + missing * ops.square(mean)) / n
    return mean, variance


def _compute_dtype(x: Any) -> str:
    return keras.backend.result_type(x.dtype, "float32")


class _KeepsNormalizedSize:
    """Mixin: the `normalized_size` argument, its check against the input, and its config entry."""

    def __init__(self, normalized_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(normalized_size) < 1:
            raise ValueError(f"normalized_size must be a positive channel count, received {normalized_size}.")
        self.normalized_size = int(normalized_size)

    def build(self, input_shape: tuple) -> None:
        _check_size(self, tuple(input_shape))
        super().build(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "normalized_size": self.normalized_size}


@keras.saving.register_keras_serializable(package="tfprune")
class PrunedLayerNormalization(_KeepsNormalizedSize, keras.layers.LayerNormalization):
    """LayerNormalization over the last axis with statistics over `normalized_size` channels.

    Args:
        normalized_size: the channel count before pruning (>= the input's channels).
        **kwargs: as for `keras.layers.LayerNormalization` (axis must be the last axis).

    Example:
        >>> layer = PrunedLayerNormalization(normalized_size=64)   # 32 of 64 channels kept
        >>> layer(np.ones((2, 32), "float32")).shape
        TensorShape([2, 32])
    """

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, _compute_dtype(inputs))
        mean, variance = _moments(x, self.normalized_size)
        inv = ops.rsqrt(variance + self.epsilon)
        outputs = x * inv if self.rms_scaling else (x - mean) * inv
        if self.gamma is not None:
            outputs = outputs * ops.cast(self.gamma, outputs.dtype)
        if self.beta is not None:
            outputs = outputs + ops.cast(self.beta, outputs.dtype)
        return ops.cast(outputs, self.compute_dtype)


_RMSNormalization = getattr(keras.layers, "RMSNormalization", None)


@keras.saving.register_keras_serializable(package="tfprune")
class PrunedRMSNormalization(_KeepsNormalizedSize, _RMSNormalization or keras.layers.Layer):
    """RMSNormalization over the last axis with the mean square over `normalized_size` channels.

    Args:
        normalized_size: the channel count before pruning (>= the input's channels).
        **kwargs: as for `keras.layers.RMSNormalization` (axis must be the last axis).

    Example:
        >>> layer = PrunedRMSNormalization(normalized_size=64)
        >>> layer(np.ones((2, 32), "float32")).shape
        TensorShape([2, 32])
    """

    def __init__(self, normalized_size: int, **kwargs: Any) -> None:
        if _RMSNormalization is None:
            raise ImportError("PrunedRMSNormalization needs keras.layers.RMSNormalization. Fix: upgrade Keras.")
        super().__init__(normalized_size, **kwargs)

    def call(self, x: Any) -> Any:
        dtype = x.dtype
        x = ops.cast(x, _compute_dtype(x))
        mean_square = ops.sum(ops.square(x), axis=-1, keepdims=True) / float(self.normalized_size)
        epsilon = keras.config.epsilon() if self.epsilon is None else self.epsilon
        outputs = x * ops.rsqrt(mean_square + epsilon) * ops.cast(self.scale, x.dtype)
        return ops.cast(outputs, dtype)
