"""Flatten, Reshape and indexing (`x[:, 0, :]`) in the dependency graph.

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


def keeps_last_axis(key: Any, rank: int) -> bool:
    """Whether basic indexing `x[key]` of a rank-`rank` tensor keeps its last axis whole and last.

    Example:
        >>> keeps_last_axis((slice(None), 0, slice(None)), 3), keeps_last_axis((Ellipsis, 0), 3)   # True, False
    """
    key = key if isinstance(key, tuple) else (key,)
    if not all(k is None or k is Ellipsis or isinstance(k, (int, slice)) for k in key) or key.count(Ellipsis) > 1:
        return False  # tensor or list indices (gather), several ellipses
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > rank:
        return False
    fill = (slice(None),) * (rank - used)
    if Ellipsis in key:
        at = key.index(Ellipsis)
        key = key[:at] + fill + key[at + 1:]
    else:
        key = key + fill
    last = max(i for i, k in enumerate(key) if k is not None)
    entry = key[last]
    full = isinstance(entry, slice) and entry.start in (None, 0) and entry.stop is None and entry.step in (None, 1)
    return full and last == len(key) - 1


class GetItemHandler(LayerHandler):
    """`x[key]` (keras.ops GetItem) with slices and integers that leave the channel axis whole: the
    channels pass through (e.g. the [CLS] position `x[:, 0, :]`). Other keys are not understood."""

    latency = "untimed"

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        key = call.argument("key", 1)
        rank = len(call.input_shapes[0])
        if not keeps_last_axis(key, rank):
            raise Unsupported(f"indexing with {key!r} does not keep the channel axis whole")
        return [graph.values[call.inputs[0]]]


register_layer(keras.layers.Flatten, FlattenHandler())
register_layer(keras.layers.Reshape, ReshapeHandler())
register_layer(keras.src.ops.numpy.GetItem, GetItemHandler())
