"""Layers (and keras.ops on symbolic tensors) that combine tensors: Add, Multiply, ..., Concatenate.

Example:
    >>> get_handler(keras.layers.Add()).trace       # couples the channels of its inputs
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfprune.layers.base import LayerHandler, Unsupported
from tfprune.layers.quantization_spec import OUTPUT, QuantizationSpec
from tfprune.layers.registry import register_layer


class Merge(LayerHandler):
    """Add, Subtract, Multiply, Average, Maximum, Minimum (layers, or the same keras.ops on
    tensors): equal channels are coupled. An input with a single channel broadcasts (its channel
    is kept); a unary call (e.g. `x * 2.0`, `relu(x)`) passes channels through."""

    quantization = OUTPUT

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        if call.constants:
            raise Unsupported("a constant array argument would need slicing")
        labels = [graph.values[k] for k in call.inputs]
        sizes = [len(x) for x in labels]
        full = max(sizes)
        if any(s not in (1, full) for s in sizes):
            raise Unsupported(f"inputs with channel counts {sizes} do not broadcast channel-wise")
        wide = [x for x in labels if len(x) == full]
        for x in wide[1:]:
            graph.union(wide[0], x)
        if full > 1:
            for x in labels:
                if len(x) == 1:
                    graph.freeze(x, f"{call.layer.name} broadcasts a single channel")
        return [wide[0]]


class ConcatenateHandler(LayerHandler):
    """Concatenate on the channel axis joins label arrays (offset slices); on another axis the
    inputs' channels are coupled."""

    # TFLite wants the inputs on the output's scale: a producer read only by it takes its range
    quantization = QuantizationSpec("output", fuses_activation=True, same_scale_inputs=True)

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        labels = [graph.values[k] for k in call.inputs]
        rank = len(call.output_shapes[0])
        axis = call.layer.get_config()["axis"] % rank
        if axis == rank - 1:
            return [np.concatenate(labels)]
        for x in labels[1:]:
            if len(x) != len(labels[0]):
                raise Unsupported("inputs of different channel counts")
            graph.union(labels[0], x)
        return [labels[0]]


class FusingMerge(Merge):
    """Add, Subtract, Multiply: TFLite fuses a following activation into them."""

    latency = "anchor"
    quantization = dataclasses.replace(OUTPUT, fuses_activation=True)


L = keras.layers
_MERGE = Merge()
_FUSING_MERGE = FusingMerge()
for _name in ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]:
    register_layer(getattr(L, _name), _FUSING_MERGE if _name in ("Add", "Subtract", "Multiply") else _MERGE)
register_layer(L.Concatenate, ConcatenateHandler())
try:  # InceptionResNetV2's residual `x + branch * scale`
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
except ImportError:  # pragma: no cover - older Keras layouts
    CustomScaleLayer = None
if CustomScaleLayer is not None:
    register_layer(CustomScaleLayer, _MERGE)

# keras.ops used directly on symbolic tensors in a functional model (`a + b`, `ops.relu(x)`)
from keras.src.ops import nn as _ops_nn  # noqa: E402
from keras.src.ops import numpy as _ops_np  # noqa: E402

for _module, _names in [
    (_ops_np, ["Add", "Subtract", "Multiply", "Maximum", "Minimum", "Tanh", "Negative", "Abs", "Square"]),
    (_ops_nn, ["Relu", "Relu6", "Sigmoid", "Silu", "Gelu", "Elu", "Selu", "Softplus", "LeakyRelu",
               "HardSigmoid", "HardSilu"]),
]:
    for _name in _names:
        if hasattr(_module, _name):
            register_layer(getattr(_module, _name), _MERGE)
