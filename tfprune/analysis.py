"""Model cost: parameter counts, multiply-accumulates (MACs), and a before/after table.

MACs are counted per sample (batch of 1) from the static shapes of the model's graph; nested
models are followed. Layers without a formula below (activations, pooling, adds, ...) count 0.

Example:
    >>> from tfprune import analysis
    >>> analysis.count_params(model), analysis.count_flops(model)
    >>> print(analysis.comparison_table(model, pruned_model))
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tfprune.structured.walk import flatten_model

_BaseConv = keras.src.layers.convolutional.base_conv.BaseConv
_BaseDepthwise = keras.src.layers.convolutional.base_depthwise_conv.BaseDepthwiseConv
_BaseSeparable = keras.src.layers.convolutional.base_separable_conv.BaseSeparableConv
_BaseTranspose = keras.src.layers.convolutional.base_conv_transpose.BaseConvTranspose


def count_params(model: keras.Model) -> int:
    """Number of scalars in all weights (trainable and not, e.g. BN moving statistics), shared
    weights once.

    Example:
        >>> count_params(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))   # 10
    """
    return int(sum(math.prod(w.shape) for w in model.weights))


def _prod(values) -> int:
    if any(v is None for v in values):
        raise ValueError(
            f"count_flops needs static shapes, received a dimension of None in {tuple(values)}. "
            "Fix: build the model on a fixed input size, e.g. keras.Input((224, 224, 3))."
        )
    return int(np.prod(values, dtype=np.int64))


def layer_macs(layer, input_shape: tuple, output_shape: tuple) -> int:
    """Multiply-accumulates of one call, per sample.

    Formulas (channels last; k = prod(kernel_size)):
      * Conv (groups g):        H_out*W_out*C_out * k*C_in/g
      * DepthwiseConv:          H_out*W_out*C_in*m * k
      * SeparableConv:          H_out*W_out*C_in*m * k  +  H_out*W_out*C_in*m*C_out
      * ConvTranspose:          H_in*W_in*C_in * k*C_out   (each input pixel scatters a kernel)
      * Dense:                  (leading dims) * C_in*units
      * Batch/LayerNormalization: one MAC per output element (scale and shift fold into one)
    Biases are not counted.
    """
    if isinstance(layer, _BaseSeparable):
        spatial = _prod(output_shape[1:-1])
        mid = math.prod(layer.depthwise_kernel.shape[-2:])
        return spatial * mid * math.prod(layer.kernel_size) + spatial * mid * output_shape[-1]
    if isinstance(layer, _BaseDepthwise):
        return _prod(output_shape[1:]) * math.prod(layer.kernel_size)
    if isinstance(layer, _BaseTranspose):
        return _prod(input_shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, _BaseConv):
        return _prod(output_shape[1:]) * math.prod(layer.kernel.shape[:-1])
    if isinstance(layer, keras.layers.Dense):
        return _prod(input_shape[1:-1]) * math.prod(layer.kernel.shape)
    if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.LayerNormalization)):
        return _prod(output_shape[1:])
    return 0


def per_layer_macs(model: keras.Model) -> dict[str, int]:
    """MACs per layer name (summed over calls of shared layers)."""
    calls, _, _ = flatten_model(model)
    out: dict[str, int] = {}
    for call in calls:
        if call.input_shapes and call.output_shapes:
            macs = layer_macs(call.layer, call.input_shapes[0], call.output_shapes[0])
            out[call.layer.name] = out.get(call.layer.name, 0) + macs
    return out


def count_flops(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one sample (see `layer_macs` for formulas).

    Example:
        >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
        >>> count_flops(m)      # 6*6*4 * 3*3*3 = 3888
    """
    return int(sum(per_layer_macs(model).values()))


def model_stats(model: keras.Model) -> dict[str, int]:
    return {"params": count_params(model), "macs": count_flops(model)}


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
