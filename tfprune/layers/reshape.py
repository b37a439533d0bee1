"""Flatten and Reshape in the dependency graph.

Example:
    >>> get_handler(keras.layers.Flatten())      # channel c repeats at every spatial position
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfprune.layers.base import Keep, LayerHandler, Unsupported, check_channels_last, static_shape
from tfprune.layers.quantization_spec import INPUT_SCALE
from tfprune.layers.registry import register_layer


class FlattenHandler(LayerHandler):
    """Flatten: channel c at every spatial position; a following Dense gets an expanded index map."""

    latency = "untimed"
    quantization = INPUT_SCALE

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        check_channels_last(call.layer.get_config())
        shape = static_shape(call.input_shapes[0])
        labels = graph.values[call.inputs[0]]
        return [np.tile(labels, int(np.prod(shape[1:-1], dtype=np.int64)))]


class ReshapeHandler(LayerHandler):
    """Reshape whose new last axis is a whole multiple r of the channel count: the channels repeat
    r times along it. Anything else (e.g. the channel split of a channel shuffle) is not understood."""

    latency = "untimed"
    quantization = INPUT_SCALE

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        in_shape = static_shape(call.input_shapes[0])
        out_shape = static_shape(call.output_shapes[0])
        channels, last = in_shape[-1], out_shape[-1]
        if len(in_shape) < 2 or len(out_shape) < 2 or last % channels:
            raise Unsupported(f"reshape {in_shape[1:]} -> {out_shape[1:]} splits the channel axis")
        labels = graph.slot(call.layer, "in", graph.values[call.inputs[0]])
        rec = graph.record(call.layer)
        rec.info.update(repeat=last // channels, target=tuple(out_shape[1:]))
        return [np.tile(labels, last // channels)]

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        target = list(rec.info["target"])
        target[-1] = rec.info["repeat"] * len(keep("in"))
        return dict(config, target_shape=tuple(target))


register_layer(keras.layers.Flatten, FlattenHandler())
register_layer(keras.layers.Reshape, ReshapeHandler())
