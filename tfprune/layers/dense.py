"""Dense and EinsumDense.

Dense MACs: (leading dims) * C_in * units per sample. EinsumDense is magnitude-prunable (its kernel);
the dependency graph does not trace it yet, so its channels are frozen.

Example:
    >>> get_handler(keras.layers.Dense(4)).prunable_weights   # ('kernel',)
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from tfprune.layers.base import Keep, LayerHandler, Unsupported, freeze_mixing_activation, prod
from tfprune.layers.conv import OutputsOnLastAxis
from tfprune.layers.registry import register_layer


class DenseHandler(OutputsOnLastAxis):
    """Dense: kernel is (in, units) and acts on the last axis."""

    prunable_weights = ("kernel",)

    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        return prod(input_shape[1:-1]) * math.prod(layer.kernel.shape)

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer, config = call.layer, call.layer.get_config()
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise Unsupported("LoRA or quantized Dense")
        graph.slot(layer, "in", graph.values[call.inputs[0]])
        out = graph.producer(layer, config["units"])
        freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def is_producer(self, rec: Any) -> bool:
        return True

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        return dict(config, units=len(keep("out")))

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        out_idx = keep("out")
        return [weights[0][keep("in")][:, out_idx]] + [w[out_idx] for w in weights[1:]]

    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return layer.kernel, -1


class EinsumDenseHandler(LayerHandler):
    """EinsumDense: its kernel is magnitude-prunable."""

    prunable_weights = ("kernel",)


register_layer(keras.layers.Dense, DenseHandler())
register_layer(keras.layers.EinsumDense, EinsumDenseHandler())
