"""The default 8-bit scheme, per layer type: which `QuantizeConfig` each Keras layer gets.

What tfprune knows about quantizing a layer type lives with the rest of what it knows about that
type: its handler in `tfprune.layers` declares a `QuantizationSpec` (plain data). This module turns
a spec into a `LayerQuantization` row, and `quantize_config_for(layer)` / `layer_quantization(layer)`
look the spec up in the layer registry (exact class first, then the class hierarchy). A row says:

* `config`: a factory `layer -> QuantizeConfig` (weights per-channel symmetric narrow-range, outputs
  per-tensor asymmetric with moving-average ranges, as in TFLite's int8 specification);
* `fold`: how BatchNormalization folds into the layer (the kernel's trailing channel axes), or None;
* `fuses_activation`: TFLite fuses a following ReLU/ReLU6 into this op, so the op's own output
  needs no quantizer when the activation is its only reader;
* `same_scale_inputs`: TFLite wants the inputs on the output's scale (Concatenate), so a producer
  read only by it leaves its output unquantized and takes the output's range.

Layers whose handler declares no spec and that have no weights get an output quantizer; those with
weights are refused (`unsupported_layer_message`). `LAYER_QUANTIZATION` is a read-only view of the
rows of every registered layer class.

Example:
    >>> config = quantize_config_for(keras.layers.Conv2D(8, 3))
    >>> layer_quantization(keras.layers.Conv2D(8, 3)).fold.channel_dims
    1
    >>> tfprune.register_layer(MyConv, MyConvHandler())   # MyConvHandler.quantization = QuantizationSpec(...)
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
from typing import Any, Callable, Iterator

import keras

from tfprune.layers import QuantizationSpec, get_handler, lookup, registered_classes
from tfprune.layers.quantization_spec import INPUT_SCALE
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
    """What the quantization schemes do with one layer type, built from its `QuantizationSpec`
    (see the module docstring).

    Example:
        >>> row = layer_quantization(keras.layers.DepthwiseConv2D(3))
        >>> row.fold, row.fuses_activation     # FoldSpec('kernel', channel_dims=2), True
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


def _registered_config(name: str) -> Callable:
    def make(layer: Any) -> QuantizeConfig:
        cls = keras.saving.get_registered_object(name)
        if not (isinstance(cls, type) and issubclass(cls, QuantizeConfig)):
            raise ValueError(
                f"The QuantizationSpec of layer '{layer.name}' ({type(layer).__name__}) names config={name!r}, "
                "which is no registered QuantizeConfig class. Fix: decorate the class with "
                "`@keras.saving.register_keras_serializable(package='my_package')` and give "
                "config='my_package>ClassName'."
            )
        return cls()
    return make


def _config_factory(spec: QuantizationSpec) -> Callable[[Any], QuantizeConfig]:
    if spec.kind == "weights":
        return _weights(spec.channel_dims, spec.per_channel, spec.weights)
    if spec.kind == "activation":
        return _activation
    if spec.kind == "none":
        return _no_op
    if spec.kind == "config":
        return _registered_config(spec.config)
    return _output  # 'output', 'normalization'


@functools.lru_cache(maxsize=None)
def row_for(spec: QuantizationSpec) -> LayerQuantization:
    """The `LayerQuantization` of a `QuantizationSpec` (one row per distinct spec).

    Example:
        >>> row_for(QuantizationSpec("output", fuses_activation=True)).config(keras.layers.Add())
    """
    fold = FoldSpec(spec.weights[0], spec.channel_dims) if spec.folds_batchnorm else None
    return LayerQuantization(_config_factory(spec), fold, fuses_activation=spec.fuses_activation,
                             same_scale_inputs=spec.same_scale_inputs, separable=spec.separable,
                             normalization=spec.kind == "normalization")


def _spec_of(handler: Any) -> QuantizationSpec | None:
    spec = handler.quantization
    if spec is not None and not isinstance(spec, QuantizationSpec):
        raise TypeError(
            f"{type(handler).__name__}.quantization must be a tfprune.layers.QuantizationSpec or None; received "
            f"{type(spec).__name__}. Fix: e.g. QuantizationSpec('weights', ('kernel',)) or QuantizationSpec('output')."
        )
    return spec


# A model input is quantized by the QuantizeLayer of its first quantized reader, not by its InputLayer.
_INPUT_ROW = row_for(INPUT_SCALE)
_WEIGHTLESS_DEFAULT = LayerQuantization(_output)


class _RegisteredQuantization(collections.abc.Mapping):
    """Read-only view, layer class -> `LayerQuantization`, of every layer class registered with
    `tfprune.register_layer` whose handler declares a `QuantizationSpec`; read from the registry on
    each access, so later registrations show."""

    def _rows(self) -> dict[type, LayerQuantization]:
        rows = {keras.layers.InputLayer: _INPUT_ROW}
        for cls in registered_classes():
            spec = _spec_of(lookup(cls)) if issubclass(cls, keras.layers.Layer) else None
            if spec is not None:
                rows[cls] = row_for(spec)
        return rows

    def __getitem__(self, layer_class: type) -> LayerQuantization:
        return self._rows()[layer_class]

    def __iter__(self) -> Iterator[type]:
        return iter(self._rows())

    def __len__(self) -> int:
        return len(self._rows())

    def _read_only(self, *args: Any) -> None:
        raise TypeError(
            "LAYER_QUANTIZATION is a read-only view of the layer registry. Fix: declare the layer's "
            "quantization on its handler, `handler.quantization = tfprune.layers.QuantizationSpec(...)`, and "
            "register it: `tfprune.register_layer(LayerClass, handler)`."
        )

    __setitem__ = __delitem__ = _read_only

    def __repr__(self) -> str:
        return f"LAYER_QUANTIZATION({', '.join(cls.__name__ for cls in self)})"


LAYER_QUANTIZATION: collections.abc.Mapping = _RegisteredQuantization()
"""Read-only view, Keras layer class -> `LayerQuantization` (config factory, BN folding, fusion), of the
quantization every registered layer handler declares; `quantize_config_for(layer)` looks it up (exact
class, then base classes). Change it with `tfprune.register_layer`.

Example:
    >>> LAYER_QUANTIZATION[keras.layers.Conv2D].fuses_activation
    True
"""


class UnsupportedLayerQuantizationError(ValueError):
    """A layer with weights that the default scheme does not know how to quantize.

    Example:
        >>> try:
        ...     quantize_model(model_with_custom_layer)
        ... except UnsupportedLayerQuantizationError as err:
        ...     print(err)   # names the layer and both fixes
    """


def unsupported_layer_message(layer: Any) -> str:
    """The error text for a layer with weights and no QuantizeConfig: names it and the fixes."""
    return (
        f"Layer '{layer.name}' ({type(layer).__name__}) has weights and no quantization config in the default "
        "8-bit scheme. Fix: annotate it with a config, `tfprune.quantization.quantize_annotate_layer(layer, "
        "quantize_config=MyQuantizeConfig())`, or leave it float: annotate only the other layers with "
        "`quantize_annotate_layer` (or `quantize_annotate_model(model, skip=['" + layer.name + "'])`) and call "
        "`quantize_apply` (the TFLite export of a model with float layers is then not full integer). For a layer "
        "type of your own, declare its quantization once on its handler: `handler.quantization = "
        "tfprune.layers.QuantizationSpec(...)` and `tfprune.register_layer(" + type(layer).__name__ + ", handler)`."
    )


def layer_quantization(layer: Any) -> LayerQuantization | None:
    """The row of `layer`'s `QuantizationSpec`, declared by its handler in the layer registry (exact
    class, then base classes); None if it has none and has weights.

    A layer without a spec and without weights gets an output quantizer's row.

    Example:
        >>> layer_quantization(keras.layers.Add()).config(layer)
    """
    if isinstance(layer, keras.layers.InputLayer):
        return _INPUT_ROW
    spec = _spec_of(get_handler(layer))
    if spec is not None:
        return row_for(spec)
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
