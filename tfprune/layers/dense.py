"""Dense and EinsumDense.

Dense MACs: (leading dims) * C_in * units per sample. EinsumDense is traced where its equation
maps the input's last axis and the output's last axis onto single kernel axes (see
`EinsumDenseHandler`).

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
from tfprune.layers.quantization_spec import QuantizationSpec
from tfprune.layers.registry import register_layer


class DenseHandler(OutputsOnLastAxis):
    """Dense: kernel is (in, units) and acts on the last axis."""

    prunable_weights = ("kernel",)
    # per tensor: TFLite's converter cannot transpose per-channel FULLY_CONNECTED weights
    quantization = QuantizationSpec("weights", ("kernel",), per_channel=False, folds_batchnorm=True,
                                    fuses_activation=True)

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


def parse_einsum(equation: str) -> tuple[str, str, str]:
    """(input letters, kernel letters, output letters) of an EinsumDense equation, '...' removed.

    Example:
        >>> parse_einsum("...b,bc->...c")   # ('b', 'bc', 'c')
    """
    try:
        inputs, out = equation.replace(" ", "").split("->")
        lhs, rhs = inputs.split(",")
    except ValueError:
        raise Unsupported(f"equation {equation!r} is not of the form 'x,k->y'") from None
    return lhs.replace("...", ""), rhs, out.replace("...", "")


def _einsum_axes(layer: Any) -> tuple[str, str, str, int | None, int | None]:
    """(lhs, rhs, out, kernel axis of the input's channels or None, kernel axis of the output's)."""
    equation = layer.equation
    lhs, rhs, out = parse_einsum(equation)
    raw_lhs, raw_out = equation.replace(" ", "").split("->")[0].split(",")[0], equation.split("->")[1].strip()
    in_axis = out_axis = None
    if not raw_lhs.endswith("...") and lhs and lhs[-1] in rhs and lhs[-1] not in out and rhs.count(lhs[-1]) == 1:
        in_axis = rhs.index(lhs[-1])
    if not raw_out.endswith("...") and out and out[-1] in rhs and out[-1] not in lhs and rhs.count(out[-1]) == 1:
        out_axis = rhs.index(out[-1])
    return lhs, rhs, out, in_axis, out_axis


class EinsumDenseHandler(LayerHandler):
    """EinsumDense: its kernel is magnitude-prunable. In the dependency graph it consumes its
    input's channels when its equation contracts the input's last axis with exactly one kernel axis,
    and produces channels when the output's last axis is a kernel axis that is not in the input
    (e.g. 'abc,cd->abd', '...b,bc->...c'); any other equation keeps those channels (reported with
    the reason). MACs: output elements per sample times the sizes of the contracted kernel axes.
    """

    prunable_weights = ("kernel",)

    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        try:
            lhs, rhs, out = parse_einsum(layer.equation)
        except Unsupported:
            return 0
        contracted = [int(layer.kernel.shape[i]) for i, c in enumerate(rhs) if c not in out]
        return prod(output_shape[1:]) * math.prod(contracted)

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer, config = call.layer, call.layer.get_config()
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise Unsupported("LoRA or quantized EinsumDense")
        lhs, rhs, out, in_axis, out_axis = _einsum_axes(layer)
        rec = graph.record(layer)
        labels = graph.values[call.inputs[0]]
        out_count = int(call.output_shapes[0][-1] or 0)
        reasons = []
        if in_axis is None:
            reasons.append(f"equation {layer.equation!r} does not contract the input's last axis with one "
                           "kernel axis")
            graph.freeze(labels, f"{layer.name}: {reasons[-1]}")
        graph.slot(layer, "in", labels)
        rec.info["in_axis"], rec.info["out_axis"] = in_axis, out_axis
        if out_axis is None:
            reasons.append(f"equation {layer.equation!r}: the output's last axis is not a kernel-only axis")
            graph.unsupported.append((layer.name, reasons[-1]))
            return [graph.fresh(out_count, reason=f"{layer.name}: {reasons[-1]}")]
        result = graph.producer(layer, out_count)
        bias_axes = config.get("bias_axes") or ""
        if bias_axes and out[-1] not in bias_axes:
            graph.freeze(result, f"{layer.name}: its bias (axes {bias_axes!r}) is shared by the output channels")
        freeze_mixing_activation(graph, layer, config, result)
        return [result]

    def is_producer(self, rec: Any) -> bool:
        return rec.info.get("out_axis") is not None

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        if rec.info.get("out_axis") is None:
            return config
        shape = config["output_shape"]
        shape = list(shape) if isinstance(shape, (list, tuple)) else [shape]
        shape[-1] = len(keep("out"))
        return dict(config, output_shape=shape)

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        kernel, rest = weights[0], weights[1:]
        in_axis, out_axis = rec.info.get("in_axis"), rec.info.get("out_axis")
        if in_axis is not None:
            kernel = np.take(kernel, keep("in"), axis=in_axis)
        if out_axis is not None:
            out_idx = keep("out")
            kernel = np.take(kernel, out_idx, axis=out_axis)
            rest = [w[..., out_idx] if w.ndim and w.shape[-1] == len(rec.slots["out"]) else w for w in rest]
        return [kernel] + rest

    def filter_weight(self, layer: Any) -> tuple[Any, int] | None:
        try:
            out_axis = _einsum_axes(layer)[4]
        except Unsupported:
            return None
        return None if out_axis is None else (layer.kernel, out_axis)

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        out_axis = _einsum_axes(layer)[4]
        if out_axis is None:  # a consumer only: nothing of its own to silence
            return
        weights = layer.get_weights()
        index = [slice(None)] * weights[0].ndim
        index[out_axis] = removed
        weights[0][tuple(index)] = 0
        for w in weights[1:]:
            w[..., removed] = 0
        layer.set_weights(weights)


register_layer(keras.layers.Dense, DenseHandler())
register_layer(keras.layers.EinsumDense, EinsumDenseHandler())
