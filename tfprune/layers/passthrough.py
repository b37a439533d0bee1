"""Channel-wise layers: without weights (activations, dropout, pooling, padding, cropping) or with
per-channel weights on the last axis that are never magnitude-pruned (PReLU); Softmax, which the
dependency graph does not trace.

Example:
    >>> register_layer(MyChannelwiseActivation, PassThrough())
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import keras
import numpy as np

from tfprune.layers.base import (
    ELEMENTWISE_ACTIVATIONS,
    Keep,
    LayerHandler,
    Unsupported,
    activation_name,
    check_channels_last,
)
from tfprune.layers.quantization_spec import ACTIVATION, INPUT_SCALE, OUTPUT, QuantizationSpec
from tfprune.layers.registry import register_layer

Check = Callable[[dict, int], None]


class PassThrough(LayerHandler):
    """A layer that maps each channel to itself (no weights); `check(config, rank)` may refuse a call.

    Example:
        >>> tfprune.register_layer(MyChannelwiseActivation, PassThrough())
    """

    def __init__(self, check: Check | None = None, latency: str | None = None) -> None:
        self.check = check
        if latency is not None:
            self.latency = latency

    def latency_role(self, layer: Any) -> str:
        """'fused' only for element-wise activations (an Activation('softmax') is timed alone)."""
        if self.latency == "fused" and self.check is not None:
            try:
                self.check(layer.get_config(), 4)
            except Unsupported:
                return "alone"
        return self.latency

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        config = call.layer.get_config()
        check_channels_last(config)
        if self.check:
            self.check(config, len(call.input_shapes[0]))
        labels = graph.values[call.inputs[0]]
        graph.record(call.layer).slots.setdefault("in", labels)  # no weights: calls stay independent
        return [labels]

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        noise = config.get("noise_shape")
        if noise and noise[-1] not in (None, 1):
            config = dict(config, noise_shape=tuple(noise[:-1]) + (len(keep("in")),))
        return config


class PerChannel(PassThrough):
    """A pass-through with per-channel weights on the last axis (BatchNormalization, PReLU, scales).

    Its weights are never magnitude-pruned (it passes through a pruned model unwrapped); in the
    dependency graph its weights are sliced with the channels.

    Example:
        >>> tfprune.register_layer(MyPerChannelScale, PerChannel())
    """

    keeps_weights = True

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        config = call.layer.get_config()
        if self.check:
            self.check(config, len(call.input_shapes[0]))
        labels = graph.values[call.inputs[0]]
        labels = graph.slot(call.layer, "in", labels)
        return [labels]

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        idx, n = keep("in"), len(rec.slots["in"])
        return [w[..., idx] if w.ndim and w.shape[-1] == n else w for w in weights]


def check_activation(config: dict, rank: int) -> None:
    """Refuses an Activation layer whose function mixes channels (softmax, ...)."""
    name = activation_name(config.get("activation"))
    if name not in ELEMENTWISE_ACTIVATIONS:
        raise Unsupported(f"activation {name!r} mixes channels")


def check_rescaling(config: dict, rank: int) -> None:
    """Refuses a Rescaling layer with per-channel scale or offset."""
    for key in ("scale", "offset"):
        if np.ndim(config.get(key, 0)) > 0 and np.size(config.get(key)) > 1:
            raise Unsupported(f"per-channel Rescaling {key}")


def check_last_axis(config: dict, rank: int) -> None:
    """Refuses a normalization over any axis other than the last (channel) one."""
    axis = config.get("axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if [a % rank for a in axes if a is not None] != [rank - 1]:
        raise Unsupported(f"normalises over axis {axis}; only the last (channel) axis is understood")


def check_softmax(config: dict, rank: int) -> None:
    """Refuses a Softmax layer: it is not traced (over the channel axis it mixes channels)."""
    raise Unsupported(f"softmax over axis {config.get('axis', -1)} is not traced")


# Quantization of the pooling, padding, cropping and upsampling layers: TFLite runs max pooling,
# padding and cropping on their input's scale (nothing to quantize); average pooling, upsampling and
# the 3-D variants get an output range; MaxPooling2D and AveragePooling2D fuse a following ReLU.
_ON_INPUT_SCALE = {"MaxPooling1D", "MaxPooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "ZeroPadding1D",
                   "ZeroPadding2D", "Cropping1D", "Cropping2D"}
_FUSES_ACTIVATION = {"MaxPooling2D", "AveragePooling2D"}


def _quantization(name: str) -> QuantizationSpec:
    spec = INPUT_SCALE if name in _ON_INPUT_SCALE else OUTPUT
    return dataclasses.replace(spec, fuses_activation=name in _FUSES_ACTIVATION)


L = keras.layers
_PASS_THROUGH = PassThrough()
_ACTIVATION = PassThrough(latency="fused").with_quantization(ACTIVATION)  # fused into the producer by TFLite
# identity at inference: part of a model's fixed overhead, run on the input's scale
_NOT_TIMED = PassThrough(latency="untimed").with_quantization(INPUT_SCALE)
for _name in ["ReLU", "LeakyReLU", "ELU"]:
    register_layer(getattr(L, _name), _ACTIVATION)
for _name in ["Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
              "GaussianDropout", "AlphaDropout", "Identity", "ActivityRegularization"]:
    if hasattr(L, _name):
        register_layer(getattr(L, _name), _NOT_TIMED)
for _name in [
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "ZeroPadding1D",
    "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D",
]:
    if hasattr(L, _name):
        register_layer(getattr(L, _name), _PASS_THROUGH.with_quantization(_quantization(_name)))
register_layer(L.Activation, PassThrough(check_activation, latency="fused").with_quantization(ACTIVATION))
register_layer(L.Softmax, PassThrough(check_softmax).with_quantization(ACTIVATION))
register_layer(L.Rescaling, PassThrough(check_rescaling).with_quantization(OUTPUT))
register_layer(L.PReLU, PerChannel())
