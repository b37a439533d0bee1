"""Normalization layers and per-channel scales.

Their weights are never magnitude-pruned (they pass through a pruned model unwrapped). In the
dependency graph BatchNormalization, Normalization and PReLU-like layers slice their per-channel
weights with the channels; LayerNormalization/RMSNormalization over channels depend on the graph's
`layer_norm` mode (see `ChannelNormalization`). One MAC per output element is counted for Batch- and
LayerNormalization (scale and shift fold into one).

Example:
    >>> get_handler(keras.layers.BatchNormalization()).keeps_weights   # True
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfprune.layers import pruned_normalization
from tfprune.layers.base import Keep, LayerHandler, prod
from tfprune.layers.passthrough import PerChannel, check_last_axis
from tfprune.layers.quantization_spec import NORMALIZATION, OUTPUT
from tfprune.layers.registry import register_layer

LAYER_NORM_MODES = ("exact", "approximate", "keep")


def check_layer_norm_mode(mode: str) -> str:
    """`mode` if it is one of LAYER_NORM_MODES, else a ValueError naming them."""
    if mode not in LAYER_NORM_MODES:
        raise ValueError(f"layer_norm must be one of {list(LAYER_NORM_MODES)}, received {mode!r}.")
    return mode


class KeepsWeights(LayerHandler):
    """A layer whose weights are never pruned and whose channels the dependency graph does not trace
    (GroupNormalization, UnitNormalization, SpectralNormalization)."""

    keeps_weights = True


class BatchNormalizationHandler(PerChannel):
    """BatchNormalization over the channel axis."""

    latency = "fused"
    # an output range when it stands alone; folded into a conv / dense before it when that can be
    quantization = dataclasses.replace(OUTPUT, fuses_activation=True)

    def __init__(self) -> None:
        super().__init__(check_last_axis)

    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        return prod(output_shape[1:])

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        # zero scale, shift and mean: the output is zero for the zero input the producer now gives,
        # also without gamma (scale=False) or beta (center=False)
        for name in ("gamma", "beta", "moving_mean"):
            variable = getattr(layer, name, None)
            if variable is not None:
                values = np.array(variable.numpy())
                values[removed] = 0
                variable.assign(values)


class ChannelNormalization(PerChannel):
    """LayerNormalization / RMSNormalization over the channel axis: its statistics span every channel.

    What happens to the channels depends on the graph's `layer_norm` mode:
      * 'exact': the pruned layer is `pruned_class` (tfprune.structured.PrunedLayerNormalization),
        whose statistics still cover the original channel count, the removed channels counting as zeros;
      * 'approximate': a plain layer of the kept width, normalising over the kept channels only
        (reported as not exact);
      * 'keep': the channels it normalises are not pruned.
    """

    quantization = NORMALIZATION  # over the last axis; another axis is left to a QuantizeConfig

    def __init__(self, pruned_class: type, counts_macs: bool = True) -> None:
        super().__init__(check_last_axis)
        self.pruned_class = pruned_class
        self.counts_macs = counts_macs

    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        return prod(output_shape[1:]) if self.counts_macs else 0

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        labels = super().trace(graph, call)
        layer, rec = call.layer, graph.record(call.layer)
        mode = graph.layer_norm
        if mode == "keep":
            graph.freeze(labels[0], f"{layer.name} ({type(layer).__name__}) normalises over these channels "
                                    "(layer_norm='keep')")
        elif mode == "approximate":
            rec.info["approximate"] = True
        else:
            rec.info["normalized_size"] = getattr(layer, "normalized_size", len(rec.slots["in"]))
        return labels

    def new_layer(self, rec: Any, layer: Any, config: dict) -> Any:
        size = rec.info.get("normalized_size")
        if size is None:
            return layer.__class__.from_config(config)
        return self.pruned_class.from_config(dict(config, normalized_size=size))

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.LayerNormalization) and not layer.scale and not layer.rms_scaling:
            raise ValueError(f"{layer.name}: a zeroed reference needs LayerNormalization with scale=True.")
        for w in weights:  # gamma (and beta): the removed channels' outputs become zero
            w[removed] = 0
        layer.set_weights(weights)


class LayerScaleHandler(PerChannel):
    """keras.applications' ConvNeXt LayerScale: a per-channel multiplier sized by `projection_dim`."""

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        return dict(config, projection_dim=len(keep("in")))


L = keras.layers
register_layer(L.BatchNormalization, BatchNormalizationHandler())
_LAYER_NORM = ChannelNormalization(pruned_normalization.PrunedLayerNormalization)
register_layer(L.LayerNormalization, _LAYER_NORM)
register_layer(pruned_normalization.PrunedLayerNormalization, _LAYER_NORM)
if hasattr(L, "RMSNormalization"):
    _RMS_NORM = ChannelNormalization(pruned_normalization.PrunedRMSNormalization, counts_macs=False)
    register_layer(L.RMSNormalization, _RMS_NORM)
    register_layer(pruned_normalization.PrunedRMSNormalization, _RMS_NORM)
register_layer(L.Normalization, PerChannel(check_last_axis))
for _name in ("GroupNormalization", "UnitNormalization", "SpectralNormalization"):
    if hasattr(L, _name):
        register_layer(getattr(L, _name), KeepsWeights())
try:
    from keras.src.applications.convnext import LayerScale
except ImportError:  # pragma: no cover - older Keras layouts
    LayerScale = None
if LayerScale is not None:
    register_layer(LayerScale, LayerScaleHandler())
