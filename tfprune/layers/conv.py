"""Convolutions: Conv1D/2D/3D, their transposes, DepthwiseConv1D/2D and SeparableConv1D/2D.

MAC formulas (channels last; k = prod(kernel_size)), biases not counted:
  * Conv (groups g):  H_out*W_out*C_out * k*C_in/g
  * DepthwiseConv:    H_out*W_out*C_in*m * k
  * SeparableConv:    H_out*W_out*C_in*m * k  +  H_out*W_out*C_in*m*C_out
  * ConvTranspose:    H_in*W_in*C_in * k*C_out   (each input pixel scatters a kernel)

Example:
    >>> get_handler(keras.layers.Conv2D(8, 3)).macs(layer, (None, 8, 8, 3), (None, 6, 6, 8))
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from tfprune.layers.base import Keep, LayerHandler, check_channels_last, freeze_mixing_activation, prod
from tfprune.layers.quantization_spec import QuantizationSpec
from tfprune.layers.registry import register_layer


def _zero_kernel_and_bias(weights: list[np.ndarray], removed: np.ndarray) -> None:
    """Output channels on the kernel's last axis, the bias (and any further weights) on their first."""
    weights[0][..., removed] = 0
    for w in weights[1:]:
        w[removed] = 0


def _float64(variable: Any) -> np.ndarray:
    return np.asarray(variable.numpy(), dtype=np.float64)


def _folded_bias(layer: Any, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    bias = _float64(layer.bias) if layer.use_bias else np.zeros_like(scale)
    return bias * scale + shift


def foldable_producer(layer: Any) -> bool:
    """Linear activation, float weights, no quantization or LoRA: a BatchNormalization can merge in."""
    if not layer.built or getattr(layer, "activation", None) not in (None, keras.activations.linear):
        return False
    if getattr(layer, "quantization_mode", None) is not None or getattr(layer, "lora_enabled", False):
        return False
    return all(w.dtype in ("float16", "bfloat16", "float32", "float64") for w in layer.weights)


class OutputsOnLastAxis(LayerHandler):
    """Shared by Conv and Dense: output channels on the kernel's last axis (and the bias), where removed
    channels are zeroed and a following BatchNormalization folds in."""

    latency = "anchor"

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        weights = layer.get_weights()
        _zero_kernel_and_bias(weights, removed)
        layer.set_weights(weights)

    def can_fold_batchnorm(self, layer: Any) -> bool:
        return foldable_producer(layer)

    def fold_batchnorm(self, layer: Any, scale: np.ndarray, shift: np.ndarray) -> list[np.ndarray]:
        return [_float64(layer.kernel) * scale, _folded_bias(layer, scale, shift)]


class Conv(OutputsOnLastAxis):
    """Conv1D/2D/3D. groups > 1 keeps the group count: a position is removed from every group at
    once; groups == input channels (depthwise-like) passes channels through like DepthwiseConv."""

    prunable_weights = ("kernel",)
    quantization = QuantizationSpec("weights", ("kernel",), folds_batchnorm=True, fuses_activation=True)

    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        return prod(output_shape[1:]) * math.prod(layer.kernel.shape[:-1])

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer, config = call.layer, call.layer.get_config()
        check_channels_last(config)
        rec = graph.record(layer)
        labels = graph.values[call.inputs[0]]
        cin, groups, cout = len(labels), config.get("groups", 1), config["filters"]
        in_labels = graph.slot(layer, "in", labels)
        if groups > 1 and cin // groups == 1:
            rec.info["depthwise"] = True
            out = np.repeat(in_labels, cout // cin)
            rec.slots["out"] = out
        else:
            if groups > 1:
                rows = in_labels.reshape(groups, cin // groups)
                for g in range(1, groups):
                    graph.union(rows[0], rows[g])
            out = graph.producer(layer, cout)
            if groups > 1:
                rows = out.reshape(groups, cout // groups)
                for g in range(1, groups):
                    graph.union(rows[0], rows[g])
        freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def is_producer(self, rec: Any) -> bool:
        return not rec.info.get("depthwise")

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        config = dict(config, filters=len(keep("out")))
        if rec.info.get("depthwise"):
            config["groups"] = len(keep("in"))
        return config

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        out_idx, in_idx = keep("out"), keep("in")
        if rec.info.get("depthwise"):  # one input channel per group: the kernel's input axis stays
            in_idx = np.arange(weights[0].shape[-2])
        elif rec.layer.groups > 1:  # positions within one group (coupled across groups)
            in_idx = in_idx[in_idx < weights[0].shape[-2]]
        kernel = weights[0][..., in_idx, :][..., out_idx]
        return [kernel] + [w[out_idx] for w in weights[1:]]

    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return layer.kernel, -1


class ConvTranspose(LayerHandler):
    """Conv1D/2D/3DTranspose: kernel is (..., out, in)."""

    latency = "anchor"

    prunable_weights = ("kernel",)

    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        return prod(input_shape[1:-1]) * math.prod(layer.kernel.shape)

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer, config = call.layer, call.layer.get_config()
        check_channels_last(config)
        graph.slot(layer, "in", graph.values[call.inputs[0]])
        out = graph.producer(layer, config["filters"])
        freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def is_producer(self, rec: Any) -> bool:
        return True

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        return dict(config, filters=len(keep("out")))

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        out_idx = keep("out")
        kernel = weights[0][..., keep("in")][..., out_idx, :]
        return [kernel] + [w[out_idx] for w in weights[1:]]

    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return layer.kernel, -2

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        weights = layer.get_weights()
        weights[0][..., removed, :] = 0
        for w in weights[1:]:
            w[removed] = 0
        layer.set_weights(weights)


class Depthwise(LayerHandler):
    """DepthwiseConv1D/2D: output channel c*m+j comes from input channel c."""

    latency = "anchor"

    prunable_weights = ("kernel",)
    # per (input x multiplier) channel: the kernel's last two axes
    quantization = QuantizationSpec("weights", ("kernel",), channel_dims=2, folds_batchnorm=True,
                                    fuses_activation=True)

    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        return prod(output_shape[1:]) * math.prod(layer.kernel_size)

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer, config = call.layer, call.layer.get_config()
        check_channels_last(config)
        in_labels = graph.slot(layer, "in", graph.values[call.inputs[0]])
        out = np.repeat(in_labels, config["depth_multiplier"])
        graph.record(layer).slots["out"] = out
        freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        return [weights[0][..., keep("in"), :]] + [w[keep("out")] for w in weights[1:]]

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        weights = layer.get_weights()
        shape = weights[0].shape
        flat = weights[0].reshape(shape[:-2] + (-1,))
        flat[..., removed] = 0
        weights[0] = flat.reshape(shape)
        for w in weights[1:]:
            w[removed] = 0
        layer.set_weights(weights)

    def can_fold_batchnorm(self, layer: Any) -> bool:
        return foldable_producer(layer)

    def fold_batchnorm(self, layer: Any, scale: np.ndarray, shift: np.ndarray) -> list[np.ndarray]:
        kernel = _float64(layer.kernel)
        shape = kernel.shape  # (..., in_channels, depth_multiplier); channel c*m + k is [..., c, k]
        return [kernel * scale.reshape(shape[-2:]), _folded_bias(layer, scale, shift)]


class Separable(LayerHandler):
    """SeparableConv1D/2D: depthwise (passes channels, times depth_multiplier) then pointwise."""

    latency = "anchor"

    prunable_weights = ("depthwise_kernel", "pointwise_kernel")
    # run as TFLite runs it: depthwise (per input x multiplier channel), a quantized tensor, pointwise
    quantization = QuantizationSpec("weights", ("depthwise_kernel", "pointwise_kernel"), channel_dims=2,
                                    fuses_activation=True, separable=True)

    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        spatial = prod(output_shape[1:-1])
        mid = math.prod(layer.depthwise_kernel.shape[-2:])
        return spatial * mid * math.prod(layer.kernel_size) + spatial * mid * output_shape[-1]

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer, config = call.layer, call.layer.get_config()
        check_channels_last(config)
        in_labels = graph.slot(layer, "in", graph.values[call.inputs[0]])
        graph.record(layer).slots["mid"] = np.repeat(in_labels, config["depth_multiplier"])
        out = graph.producer(layer, config["filters"])
        freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def is_producer(self, rec: Any) -> bool:
        return True

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        return dict(config, filters=len(keep("out")))

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        out_idx = keep("out")
        depthwise = weights[0][..., keep("in"), :]
        pointwise = weights[1][..., keep("mid"), :][..., out_idx]
        return [depthwise, pointwise] + [w[out_idx] for w in weights[2:]]

    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return layer.pointwise_kernel, -1

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        weights = layer.get_weights()
        weights[1][..., removed] = 0
        for w in weights[2:]:
            w[removed] = 0
        layer.set_weights(weights)

    def can_fold_batchnorm(self, layer: Any) -> bool:
        return foldable_producer(layer)

    def fold_batchnorm(self, layer: Any, scale: np.ndarray, shift: np.ndarray) -> list[np.ndarray]:
        pointwise = _float64(layer.pointwise_kernel) * scale
        return [layer.depthwise_kernel.numpy(), pointwise, _folded_bias(layer, scale, shift)]


L = keras.layers
for _name in ["Conv1D", "Conv2D", "Conv3D"]:
    register_layer(getattr(L, _name), Conv())
for _name in ["Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"]:
    register_layer(getattr(L, _name), ConvTranspose())
for _name in ["DepthwiseConv1D", "DepthwiseConv2D"]:
    register_layer(getattr(L, _name), Depthwise())
for _name in ["SeparableConv1D", "SeparableConv2D"]:
    register_layer(getattr(L, _name), Separable())
