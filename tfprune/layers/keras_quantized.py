"""Layers quantized by Keras 3's own `model.quantize("int8" | "int4")` (Dense, EinsumDense, Embedding):
the sparsity and the stored bytes of their quantized weights.

Keras keeps the integer codes in the weight's variable (int4: two codes packed per int8), a
`<weight>_scale` and, for int4 with groups, a `<weight>_zero` and a `g_idx` (group of each row or column).
A weight is zero when its code is 0 (symmetric int8, per-channel int4) or equals its group's zero point
(grouped int4: `(code - zero) * scale = 0`). The layer's weight property returns the unpacked codes.

Example:
    >>> model.quantize("int8")
    >>> quantized_weight(model.get_layer("dense"), "kernel")
    {'quantization': 'int8', 'shape': [16, 32], 'zeros': 307, 'bytes': 640}
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfprune.layers.registry import get_handler

__all__ = ["quantization_mode", "quantized_weight"]


def quantization_mode(layer: Any) -> str | None:
    """Keras' `quantization_mode` of a layer ('int8', 'int4', ...), or None for a float layer."""
    return getattr(layer, "quantization_mode", None) or None


def _numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def quantized_weight(layer: Any, label: str) -> dict | None:
    """`{"quantization", "shape", "zeros", "bytes"}` of weight `label` of a Keras-quantized layer (None if float).

    `zeros` counts weights whose dequantized value is 0; `bytes` is what the layer stores for the
    weight: its codes (packed for int4), scales, zero points and group indices.
    """
    mode = quantization_mode(layer)
    if mode is None:
        return None
    codes = _numpy(getattr(layer, label)).astype(np.int32)  # unpacked
    zero = getattr(layer, f"{label}_zero", None)
    if zero is None:
        zeros = int(np.sum(codes == 0))
    else:
        groups = _numpy(layer.g_idx).astype(np.int64)
        points = _numpy(zero).astype(np.int32)
        if get_handler(layer).keras_int4_group_axis == 0:
            full = points[groups, :]
        else:
            full = points[:, groups]
        zeros = int(np.sum(codes.reshape(full.shape) == full))
    names = {label, f"{label}_scale", f"{label}_zero", "g_idx"}
    stored = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in layer.weights
                 if v.path.rsplit("/", 1)[-1] in names)
    return {"quantization": mode, "shape": list(codes.shape), "zeros": zeros, "bytes": int(stored)}
