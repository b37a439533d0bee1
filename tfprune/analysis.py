"""Model cost: parameter counts, multiply-accumulates (MACs), and a before/after table.

MACs are counted per sample (batch of 1) from the static shapes of the model's graph; nested
models are followed. Layers without a formula below (activations, pooling, adds, ...) count 0.

Example:
    >>> from tfprune import analysis
    >>> analysis.count_params(model), analysis.count_macs(model)
    >>> print(analysis.comparison_table(model, pruned_model))
"""

from __future__ import annotations

import math
from typing import Any

import keras

from tfprune.keras_graph import flatten_model
from tfprune.layers import get_handler


def count_params(model: keras.Model) -> int:
    """Number of scalars in all weights (trainable and not, e.g. BN moving statistics), shared
    weights once.

    Example:
        >>> count_params(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))   # 10
    """
    return int(sum(math.prod(w.shape) for w in model.weights))


def layer_macs(layer: Any, input_shape: tuple, output_shape: tuple) -> int:
    """Multiply-accumulates of one call, per sample, from the layer's registered handler.

    Formulas (channels last; k = prod(kernel_size)):
      * Conv (groups g):        H_out*W_out*C_out * k*C_in/g
      * DepthwiseConv:          H_out*W_out*C_in*m * k
      * SeparableConv:          H_out*W_out*C_in*m * k  +  H_out*W_out*C_in*m*C_out
      * ConvTranspose:          H_in*W_in*C_in * k*C_out   (each input pixel scatters a kernel)
      * Dense:                  (leading dims) * C_in*units
      * Batch/LayerNormalization: one MAC per output element (scale and shift fold into one)
    Biases are not counted; other layers count 0 unless their handler says otherwise.

    Example:
        >>> layer_macs(conv, (None, 8, 8, 3), (None, 6, 6, 4))   # 3888 for a 3x3 Conv2D(4)
    """
    return int(get_handler(layer).macs(layer, input_shape, output_shape))


def per_layer_macs(model: keras.Model) -> dict[str, int]:
    """MACs per layer name (summed over calls of shared layers).

    Example:
        >>> per_layer_macs(model)["conv1"]
    """
    calls, _, _ = flatten_model(model)
    out: dict[str, int] = {}
    for call in calls:
        if call.input_shapes and call.output_shapes:
            macs = layer_macs(call.layer, call.input_shapes[0], call.output_shapes[0])
            out[call.layer.name] = out.get(call.layer.name, 0) + macs
    return out


def count_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one sample (see `layer_macs` for formulas).

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> count_macs(m)      # 6*6*4 * 3*3*3 = 3888
    """
    return int(sum(per_layer_macs(model).values()))


count_flops = count_macs  # the earlier name; it always counted MACs


def model_stats(model: keras.Model) -> dict[str, int]:
    """`{"params": ..., "macs": ...}` of a model.

    Example:
        >>> model_stats(model)["macs"]
    """
    return {"params": count_params(model), "macs": count_macs(model)}


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def comparison_table(before: keras.Model, after: keras.Model) -> str:
    """A before/after table of parameters and MACs.

    Example:
        >>> print(comparison_table(model, pruned))
        metric   before   after    after/before
        params   ...
    """
    b, a = model_stats(before), model_stats(after)
    rows = [("metric", "before", "after", "after/before")]
    for key in ("params", "macs"):
        ratio = a[key] / b[key] if b[key] else float("nan")
        rows.append((key, _human(b[key]), _human(a[key]), f"{ratio:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
