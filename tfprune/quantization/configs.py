"""The default 8-bit scheme, per layer type: which `QuantizeConfig` each Keras layer class gets.

`LAYER_QUANTIZATION` is the one table of what tfprune knows about quantizing a layer type, and
`quantize_config_for(layer)` / `layer_quantization(layer)` the one lookup (exact class first, then
the class hierarchy). Each entry says:

* `config`: a factory `layer -> QuantizeConfig` (weights per-channel symmetric narrow-range, outputs
  per-tensor asymmetric with moving-average ranges, as in TFLite's int8 specification);
* `fold`: how BatchNormalization folds into the layer (the kernel's trailing channel axes), or None;
* `fuses_activation`: TFLite fuses a following ReLU/ReLU6 into this op, so the op's own output
  needs no quantizer when the activation is its only reader;
* `same_scale_inputs`: TFLite wants the inputs on the output's scale (Concatenate), so a producer
  read only by it leaves its output unquantized and takes the output's range.

Layers absent from the table that have no weights get an output quantizer; those with weights are
refused (`unsupported_layer_message`).

Example:
    >>> config = quantize_config_for(keras.layers.Conv2D(8, 3))
    >>> layer_quantization(keras.layers.Conv2D(8, 3)).fold.channel_dims
    1
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import keras

from tfprune.quantization.quantize_config import QuantizeConfig
from tfprune.quantization.quantizers import (
    FixedRangeQuantizer,
    LastValueQuantizer,
    MovingAverageQuantizer,
    Quantizer,
    deserialize_quantizer,
    serialize_quantizer,
)

L = keras.layers
_PACKAGE = "tfprune"


def _attribute_for_setting(layer: Any, name: str) -> str:
    """Keras 3 keeps some weights behind a read-only property (`Dense.kernel` -> `_kernel`)."""
    return f"_{name}" if hasattr(layer, f"_{name}") and isinstance(getattr(type(layer), name, None), property) else name


@keras.saving.register_keras_serializable(package=_PACKAGE)
class WeightsQuantizeConfig(QuantizeConfig):
    """Quantizes the named weights with one weight quantizer and the output with another.

    Example:
        >>> WeightsQuantizeConfig(["kernel"], LastValueQuantizer(per_axis=True), MovingAverageQuantizer())
    """

    def __init__(self, weight_attrs: list[str], weight_quantizer: Quantizer | dict,
                 output_quantizer: Quantizer | dict | None = None,
                 activation_input_quantizer: Quantizer | dict | None = None) -> None:
        def load(q: Any) -> Any:
            return deserialize_quantizer(q) if isinstance(q, dict) else q

        self.weight_attrs = list(weight_attrs)
        self.weight_quantizer = load(weight_quantizer)
        self.output_quantizer = load(output_quantizer)
        # For an activation TFLite runs as its own op (softmax, sigmoid, tanh): its input needs a range too.
        self.activation_input_quantizer = load(activation_input_quantizer)
        self.quantizes_activation_inputs = self.activation_input_quantizer is not None

    def get_weights_and_quantizers(self, layer: Any) -> list[tuple[Any, Quantizer]]:
        return [(getattr(layer, name), self.weight_quantizer) for name in self.weight_attrs]

    def get_activations_and_quantizers(self, layer: Any) -> list[tuple[Any, Quantizer]]:
        if self.activation_input_quantizer is None:
            return []
        return [(layer.activation, self.activation_input_quantizer)]

    def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
        for name, value in zip(self.weight_attrs, quantize_weights):
            setattr(layer, _attribute_for_setting(layer, name), value)

    def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
        if self.activation_input_quantizer is not None:
            (layer.activation,) = quantize_activations

    def get_output_quantizers(self, layer: Any) -> list[Quantizer]:
        return [] if self.output_quantizer is None else [self.output_quantizer]

    def get_config(self) -> dict:
        return {"weight_attrs": self.weight_attrs, "weight_quantizer": serialize_quantizer(self.weight_quantizer),
                "output_quantizer": serialize_quantizer(self.output_quantizer),
                "activation_input_quantizer": serialize_quantizer(self.activation_input_quantizer)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OutputQuantizeConfig(QuantizeConfig):
    """Quantizes only the output (Add, Concatenate, pooling, activations...).

    Example:
        >>> OutputQuantizeConfig()                                  # learned range
        >>> OutputQuantizeConfig(FixedRangeQuantizer(0.0, 255 / 256))  # softmax
    """

    def __init__(self, output_quantizer: Quantizer | dict | None = None) -> None:
        if isinstance(output_quantizer, dict):
            output_quantizer = deserialize_quantizer(output_quantizer)
        self.output_quantizer = output_quantizer or MovingAverageQuantizer()

    def get_weights_and_quantizers(self, layer: Any) -> list:
        return []

    def get_activations_and_quantizers(self, layer: Any) -> list:
        return []

    def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
        pass

    def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: Any) -> list[Quantizer]:
        return [self.output_quantizer]

    def get_config(self) -> dict:
        return {"output_quantizer": serialize_quantizer(self.output_quantizer)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class NoOpQuantizeConfig(QuantizeConfig):
    """Quantizes nothing: for layers TFLite runs on the input's scale (max pooling, reshape, dropout).

    Example:
        >>> quantize_annotate_layer(keras.layers.Flatten(), NoOpQuantizeConfig())
    """

    def get_weights_and_quantizers(self, layer: Any) -> list:
        return []

    def get_activations_and_quantizers(self, layer: Any) -> list:
        return []

    def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
        pass

    def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: Any) -> list:
        return []

    def get_config(self) -> dict:
        return {}


@dataclasses.dataclass(frozen=True)
class FoldSpec:
    """How BatchNormalization folds into a layer: the kernel attribute and its trailing channel axes.

    Example:
        >>> FoldSpec("kernel", channel_dims=2)   # DepthwiseConv2D: channel = input x multiplier
    """

    kernel: str = "kernel"
    channel_dims: int = 1


@dataclasses.dataclass(frozen=True)
class LayerQuantization:
    """One row of `LAYER_QUANTIZATION` (see the module docstring).

    Example:
        >>> LAYER_QUANTIZATION[MyConv] = LayerQuantization(lambda layer: MyConvConfig(), fuses_activation=True)
    """

    config: Callable[[Any], QuantizeConfig]
    fold: FoldSpec | None = None
    fuses_activation: bool = False
    same_scale_inputs: bool = False
    separable: bool = False  # depthwise then pointwise, with a range for the tensor between (TFLite's two ops)
    normalization: bool = False  # computed as TFLite's int8 op chain (`normalization.QuantizeNormalization`)


def _weights(channel_dims: int = 1, per_axis: bool = True, attrs: tuple[str, ...] = ("kernel",)) -> Callable:
    def make(layer: Any) -> QuantizeConfig:
        quantizer = LastValueQuantizer(num_bits=8, per_axis=per_axis, symmetric=True, narrow_range=True,
                                       channel_dims=channel_dims)
        output, before = _activation_quantizers(layer)
        return WeightsQuantizeConfig(list(attrs), quantizer, output, before)
    return make


def _activation_quantizers(layer: Any) -> tuple[Quantizer, Quantizer | None]:
    """(output quantizer, quantizer of the activation's input or None) for a layer's fused `activation=`."""
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if name in FUSED_ACTIVATIONS:
        return MovingAverageQuantizer(), None
    if name in FIXED_OUTPUT_RANGES:
        return FixedRangeQuantizer(*FIXED_OUTPUT_RANGES[name]), MovingAverageQuantizer()
    return MovingAverageQuantizer(), MovingAverageQuantizer()


def _separable(layer: Any) -> QuantizeConfig:
    """Depthwise kernel per (input x multiplier) channel, pointwise kernel per output channel."""
    output, before = _activation_quantizers(layer)
    return WeightsQuantizeConfig(["depthwise_kernel", "pointwise_kernel"],
                                 LastValueQuantizer(per_axis=True, channel_dims=2), output, before)


def _output(layer: Any) -> QuantizeConfig:
    return OutputQuantizeConfig()


def _no_op(layer: Any) -> QuantizeConfig:
    return NoOpQuantizeConfig()


# TFLite's int8 kernels with fixed output scales: (min, max) such that the fake-quant grid is theirs.
FIXED_OUTPUT_RANGES = {
    "softmax": (0.0, 255.0 / 256.0),
    "sigmoid": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
}
FUSED_ACTIVATIONS = ("relu", "relu6", "linear")


def _activation_name(layer: Any) -> str | None:
    if isinstance(layer, L.Softmax):
        return "softmax"
    if isinstance(layer, L.ReLU):
        plain = float(layer.negative_slope) == 0.0 and float(layer.threshold) == 0.0
        max_value = None if layer.max_value is None else float(layer.max_value)
        if plain and max_value is None:
            return "relu"
        if plain and max_value == 6.0:
            return "relu6"
        return None
    if isinstance(layer, L.Activation):
        return getattr(layer.activation, "__name__", None)
    return None


def is_fused_activation(layer: Any) -> bool:
    """True for ReLU / ReLU6 / linear layers, which TFLite fuses into the op before them."""
    return _activation_name(layer) in FUSED_ACTIVATIONS


def _activation(layer: Any) -> QuantizeConfig:
    name = _activation_name(layer)
    if name in FIXED_OUTPUT_RANGES:
        return OutputQuantizeConfig(FixedRangeQuantizer(*FIXED_OUTPUT_RANGES[name]))
    return OutputQuantizeConfig()


def _classes(*names: str) -> list[type]:
    return [getattr(L, name) for name in names if hasattr(L, name)]


def _build_table() -> dict[type, LayerQuantization]:
    table: dict[type, LayerQuantization] = {}
    for cls in _classes("Conv1D", "Conv2D", "Conv3D"):
        table[cls] = LayerQuantization(_weights(1), FoldSpec("kernel", 1), fuses_activation=True)
    for cls in _classes("DepthwiseConv1D", "DepthwiseConv2D"):
        table[cls] = LayerQuantization(_weights(2), FoldSpec("kernel", 2), fuses_activation=True)
    # TFLite transposes FULLY_CONNECTED weights, which its converter cannot do per channel: per tensor.
    for cls in _classes("SeparableConv1D", "SeparableConv2D"):
        table[cls] = LayerQuantization(_separable, fuses_activation=True, separable=True)
    table[L.Dense] = LayerQuantization(_weights(1, per_axis=False), FoldSpec("kernel", 1), fuses_activation=True)
    for cls in _classes("Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"):
        table[cls] = LayerQuantization(_output, fuses_activation=cls in (L.Add, L.Subtract, L.Multiply))
    table[L.Concatenate] = LayerQuantization(_output, fuses_activation=True, same_scale_inputs=True)
    for cls in _classes("MaxPooling1D", "MaxPooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "Flatten",
                        "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise",
                        "GaussianDropout", "AlphaDropout", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D",
                        "Cropping2D", "Identity", "ActivityRegularization", "InputLayer"):
        table[cls] = LayerQuantization(_no_op, fuses_activation=cls in (L.MaxPooling2D,))
    for cls in _classes("AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
                        "BatchNormalization", "Rescaling", "UpSampling2D", "LeakyReLU"):
        table[cls] = LayerQuantization(_output, fuses_activation=cls in (L.AveragePooling2D, L.BatchNormalization))
    for cls in _classes("ReLU", "Activation", "Softmax"):
        table[cls] = LayerQuantization(_activation)
    for cls in _classes("LayerNormalization", "RMSNormalization"):  # last axis; structured pruning's too
        table[cls] = LayerQuantization(_output, normalization=True)
    return table


LAYER_QUANTIZATION: dict[type, LayerQuantization] = _build_table()
"""The per-layer table: Keras layer class -> `LayerQuantization` (config factory, BN folding, fusion).

Looked up by `quantize_config_for(layer)` (exact class, then base classes).

Example:
    >>> LAYER_QUANTIZATION[keras.layers.Conv2D].fuses_activation
    True
"""
_WEIGHTLESS_DEFAULT = LayerQuantization(_output)


class UnsupportedLayerQuantizationError(ValueError):
    """A layer with weights that the default scheme does not know how to quantize.

    Example:
        >>> try:
        ...     quantize_model(model_with_custom_layer)
        ... except UnsupportedLayerQuantizationError as err:
        ...     print(err)   # names the layer and both fixes
    """


def unsupported_layer_message(layer: Any) -> str:
    """The error text for a layer with weights and no QuantizeConfig: names it and both fixes."""
    return (
        f"Layer '{layer.name}' ({type(layer).__name__}) has weights and no quantization config in the default "
        "8-bit scheme. Fix: annotate it with a config, `tfprune.quantization.quantize_annotate_layer(layer, "
        "quantize_config=MyQuantizeConfig())`, or leave it float: annotate only the other layers with "
        "`quantize_annotate_layer` (or `quantize_annotate_model(model, skip=['" + layer.name + "'])`) and call "
        "`quantize_apply` (the TFLite export of a model with float layers is then not full integer)."
    )


def layer_quantization(layer: Any) -> LayerQuantization | None:
    """The table row for `layer`'s class (exact class, then base classes); None if it has none.

    A layer without a row and without weights gets an output quantizer's row.

    Example:
        >>> layer_quantization(keras.layers.Add()).config(layer)
    """
    cls = type(layer)
    if cls in LAYER_QUANTIZATION:
        return LAYER_QUANTIZATION[cls]
    for base in cls.__mro__[1:]:
        if base in LAYER_QUANTIZATION:
            return LAYER_QUANTIZATION[base]
    if not getattr(layer, "weights", None):
        return _WEIGHTLESS_DEFAULT
    return None


def quantize_config_for(layer: Any) -> QuantizeConfig:
    """The default 8-bit `QuantizeConfig` for `layer`.

    Raises:
        UnsupportedLayerQuantizationError: a layer with weights the scheme does not know.

    Example:
        >>> quantize_config_for(keras.layers.Dense(10)).get_output_quantizers(layer)
    """
    row = layer_quantization(layer)
    if row is None:
        raise UnsupportedLayerQuantizationError(unsupported_layer_message(layer))
    return row.config(layer)
