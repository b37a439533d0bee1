"""`LayerHandler`: everything tfprune knows about one layer type, in one object.

A handler answers, for the layers it is registered for:

Magnitude pruning (`tfprune.prune_low_magnitude`)
    * `prunable_weights`: trailing path components of the variables to prune (`("kernel",)`,
      `("query/kernel", ...)`); empty if the layer has none;
    * `keeps_weights`: True if the layer has weights that are never pruned, so it passes through a
      pruned model unwrapped (normalization layers, per-channel scales).

Cost (`tfprune.analysis`, `tfprune.structured.LatencyTable`)
    * `macs(layer, input_shape, output_shape)`: multiply-accumulates of one call, per sample;
    * `latency_role(layer)`: how a latency table times it: 'anchor' (TFLite and TensorFlow fuse a
      following BatchNormalization or activation into it: Conv, Dense, Depthwise, Add), 'fused' (that
      BatchNormalization or activation), 'untimed' (layout or training-only: Flatten, Reshape, Dropout;
      part of a model's fixed overhead) or 'alone' (timed on its own, the default).

Structured pruning (`tfprune.structured`)
    * `trace(graph, call)`: how channel labels flow from the layer's inputs to its outputs;
    * `is_producer(record)`, `filter_weight(layer)`: whether it creates channels, and its filters;
    * `new_config(record, config, keep)`, `new_weights(record, weights, keep)`, `new_layer(...)`:
      the rebuilt layer once channels are removed (`keep(slot)` gives the kept positions of a slot:
      'in', 'out' or 'mid');
    * `report_note(record, keep)`: how the layer's shape changes beyond its channel count (attention
      heads), for the pruning report;
    * `zero_channels(layer, removed)`: silence removed output channels in place (verification);
    * `produced_slots(record)`, `zero_slots(layer, removed)`: for a layer that produces more than
      its output channels (attention heads), the slots it produces and how to silence them;
    * `filter_sets(record, transform, include_bias)`: per produced slot, the (labels, one row of
      weights per channel) an importance criterion scores;
    * `activation_probes(record)`, `activation_scores(record, stats)`: which (sub)layer inputs or
      outputs an activation-based criterion measures, and the per-channel scores from them.

BatchNormalization folding (`tfprune.structured.fold_batchnorm`)
    * `can_fold_batchnorm(layer)`, `fold_batchnorm(layer, scale, shift)`: whether an inference
      BatchNormalization after this layer merges into it, and the merged weights.

Quantization (`tfprune.quantization`)
    * `quantization`: a `QuantizationSpec` (plain data: which weights, their channel axes, BatchNormalization
      folding, activation fusion, ...) from which every quantization scheme builds the layer's
      `QuantizeConfig`; None (not declared) quantizes a weightless layer's output and refuses one with
      weights. `with_quantization(spec)` is a copy of a shared handler with another spec, for a class
      registered with it.

Room for more: a one-shot pruner can look a layer up the same way and read further attributes of its
handler.

Example:
    >>> class Scale(keras.layers.Layer): ...            # y = x * w, one weight per channel
    >>> tfprune.register_layer(Scale, tfprune.layers.PerChannel())
"""

from __future__ import annotations

import abc
import copy
from typing import Any, Callable

import keras
import numpy as np

from tfprune.layers.quantization_spec import QuantizationSpec

Keep = Callable[[str], np.ndarray]

ELEMENTWISE_ACTIVATIONS = {
    "linear", "relu", "relu6", "sigmoid", "tanh", "swish", "silu", "gelu", "elu", "selu",
    "softplus", "softsign", "hard_sigmoid", "hard_swish", "hard_silu", "exponential",
    "leaky_relu", "mish", "log_sigmoid", "celu", "sparse_plus", "squareplus", "tanh_shrink",
    "hard_tanh", "soft_shrink", "hard_shrink", "threshold", None,
}


class Unsupported(Exception):
    """Raised by a handler's `trace` when it cannot reason about one particular call.

    Example:
        >>> class Handler(tfprune.layers.PassThrough):
        ...     def trace(self, graph, call):
        ...         if call.layer.data_format == "channels_first":
        ...             raise Unsupported("channels_first")   # the layer keeps its channels, with this reason
        ...         return super().trace(graph, call)
    """


class UnsupportedLayerError(ValueError):
    """A layer with weights that tfprune does not know how to prune.

    Example:
        >>> try:
        ...     tfprune.prune_low_magnitude(keras.Sequential([keras.Input((4,)), MyScale()]))
        ... except tfprune.UnsupportedLayerError as error:
        ...     print(error)          # names the layer and both fixes
    """


class PrunableLayer(abc.ABC):
    """Protocol for custom layers: return the variables magnitude pruning should prune.

    Any layer with a `get_prunable_weights()` method is accepted, whether or not it inherits from
    this class; the method wins over a registered handler's `prunable_weights`.

    Example:
        >>> class MyLayer(keras.layers.Layer, tfprune.PrunableLayer):
        ...     def get_prunable_weights(self):
        ...         return [self.w]
    """

    @abc.abstractmethod
    def get_prunable_weights(self) -> list:
        """Returns the `keras.Variable`s of this layer that should be pruned."""


def activation_name(value: Any) -> Any:
    """A comparable name for an `activation=` config value (string, dict or callable).

    Example:
        >>> activation_name({"class_name": "function", "config": "relu"})   # 'relu'
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("config", value.get("class_name"))
    return getattr(value, "__name__", repr(value))


def check_channels_last(config: dict) -> None:
    """Raises `Unsupported` unless the layer's config is channels_last (or has no data_format)."""
    fmt = config.get("data_format") or "channels_last"
    if fmt != "channels_last":
        raise Unsupported(f"data_format={fmt!r}; only channels_last is understood")


def static_shape(shape: tuple) -> tuple:
    """`shape` if every non-batch dimension is known, else `Unsupported`."""
    if any(d is None for d in shape[1:]):
        raise Unsupported(f"needs a static shape, received {shape}")
    return shape


def prod(values: Any) -> int:
    """The product of static dimensions as an int; a None dimension is a ValueError with the fix."""
    values = tuple(values)
    if any(v is None for v in values):
        raise ValueError(
            f"Counting MACs needs static shapes, received a dimension of None in {values}. "
            "Fix: build the model on a fixed input size, e.g. keras.Input((224, 224, 3))."
        )
    return int(np.prod(values, dtype=np.int64))


def freeze_mixing_activation(graph: Any, layer: Any, config: dict, out: np.ndarray) -> None:
    """Freezes a producer's output channels when its fused activation mixes channels (e.g. softmax)."""
    name = activation_name(config.get("activation"))
    if name not in ELEMENTWISE_ACTIVATIONS:
        graph.freeze(out, f"{layer.name} has activation {name!r}, which mixes channels")


class LayerHandler:
    """Base handler: no prunable weights, no MACs, channels not understood by the dependency graph.

    Subclass it and override what applies; see the module docstring for each capability.

    Example:
        >>> class ScaleHandler(tfprune.LayerHandler):
        ...     prunable_weights = ("w",)                 # magnitude pruning may prune `w`
        ...     def macs(self, layer, input_shape, output_shape):
        ...         return int(np.prod(output_shape[1:]))
        >>> tfprune.register_layer(Scale, ScaleHandler())
    """

    prunable_weights: tuple[str, ...] = ()
    keeps_weights: bool = False
    latency: str = "alone"  # see latency_role
    # Keras' own `layer.quantize("int4")` with groups: the axis of the (unpacked) weight its `g_idx`
    # runs along, 0 (Dense, EinsumDense: scale/zero are [groups, columns]) or -1 (Embedding).
    keras_int4_group_axis: int = 0
    quantization: QuantizationSpec | None = None  # see the module docstring

    def with_quantization(self, spec: QuantizationSpec | None) -> LayerHandler:
        """A copy of this handler declaring `spec`: one class of a shared handler quantized its own way.

        Example:
            >>> register_layer(L.MaxPooling2D, PassThrough().with_quantization(QuantizationSpec("none")))
        """
        if spec is not None and not isinstance(spec, QuantizationSpec):
            raise TypeError(f"Expected a tfprune.layers.QuantizationSpec or None, received {type(spec).__name__}.")
        handler = copy.copy(self)
        handler.quantization = spec
        return handler

    # magnitude pruning ---------------------------------------------------------------
    def prunable_weight_names(self, layer: Any) -> tuple[str, ...]:
        """Trailing path components of `layer`'s prunable variables (default: `prunable_weights`)."""
        return self.prunable_weights

    # cost -----------------------------------------------------------------------------
    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        """Multiply-accumulates of one call of `layer`, per sample."""
        return 0

    def latency_role(self, layer: Any) -> str:
        """'anchor', 'fused', 'untimed' or 'alone': how `structured.LatencyTable` times the layer."""
        return self.latency

    # structured pruning -----------------------------------------------------------------
    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        """Output label arrays of one call; the base class leaves the channels to `graph.unknown`."""
        kind = type(call.layer).__name__
        return graph.unknown(call, f"{call.layer.name} ({kind}) is not understood by the dependency graph")

    def is_producer(self, rec: Any) -> bool:
        """Whether the layer creates output channels whose count can change."""
        return False

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        """The layer's config once channels are removed."""
        return config

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        """The layer's weights (`get_weights()` order), sliced to the kept channels."""
        return weights

    def new_layer(self, rec: Any, layer: Any, config: dict) -> Any:
        """The pruned layer, from its new config (a handler may change the class)."""
        return layer.__class__.from_config(config)

    def report_note(self, rec: Any, keep: Keep) -> str:
        """How the rebuilt layer's shape changes beyond its channel count (e.g. 'heads 8->4, ...'), or ''."""
        return ""

    def filter_weight(self, layer: Any) -> tuple[Any, int] | None:
        """(weight variable, output-channel axis) of a producer, for importance criteria."""
        return None

    def filters(self, layer: Any) -> np.ndarray | None:
        """(output channels, fan-in) matrix of a producer's weights, for importance criteria."""
        found = self.filter_weight(layer)
        if found is None:
            return None
        weight, axis = found
        array = np.asarray(weight)
        return np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        """Makes the listed output channels of `layer` exactly zero, in place (default: nothing)."""

    def produced_slots(self, rec: Any) -> tuple[str, ...]:
        """Slots whose labels the layer creates (default: its output channels, 'out')."""
        return ("out",)

    def zero_slots(self, layer: Any, removed: dict[str, np.ndarray]) -> None:
        """Silences removed positions of produced slots other than 'out' (e.g. heads), in place."""

    def filter_sets(self, rec: Any, transform: Callable[[Any], Any] | None = None,
                    include_bias: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(labels, matrix with one row per label)] of the weights behind each produced channel.

        `transform(variable)` gives the array to use for a variable (default: its values; None skips
        it, e.g. a weight without gradient); `include_bias` appends the bias as a column.

        Example:
            >>> [(labels, rows)] = handler.filter_sets(rec)       # Dense: rows = kernel.T
        """
        found = self.filter_weight(rec.layer)
        if found is None or "out" not in rec.slots:
            return []
        weight, axis = found
        if transform is None:
            matrix = self.filters(rec.layer)
            transform = np.asarray
        else:
            values = transform(weight)
            if values is None:
                return []
            values = np.asarray(values)
            matrix = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        bias = getattr(rec.layer, "bias", None) if include_bias else None
        if bias is not None:
            b = transform(bias)
            if b is not None and np.size(b) == matrix.shape[0]:
                matrix = np.concatenate([matrix, np.reshape(b, (-1, 1))], axis=1)
        return [(rec.slots["out"], matrix)]

    def activation_probes(self, rec: Any) -> list[tuple[str, Any, str, int]]:
        """[(name, layer or sublayer, 'input' | 'output', trailing axes kept)] an activation-based
        importance measures: the mean |value| over all other axes is recorded under `name`."""
        if self.is_producer(rec) and "out" in rec.slots and getattr(rec.layer, "call", None) is not None:
            return [("out", rec.layer, "output", 1)]
        return []

    def activation_scores(self, rec: Any, stats: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(labels, scores)] from the recorded means of `activation_probes` (default: 'out')."""
        if "out" in stats and "out" in rec.slots and len(stats["out"]) == len(rec.slots["out"]):
            return [(rec.slots["out"], stats["out"])]
        return []

    # BatchNormalization folding -----------------------------------------------------------
    def can_fold_batchnorm(self, layer: Any) -> bool:
        """Whether an inference BatchNormalization reading this layer's output can merge into it."""
        return False

    def fold_batchnorm(self, layer: Any, scale: np.ndarray, shift: np.ndarray) -> list[np.ndarray]:
        """The layer's weights with `y * scale + shift` merged in (the layer then has a bias)."""
        raise NotImplementedError(f"{type(layer).__name__} does not fold BatchNormalization.")


class Unknown(LayerHandler):
    """What an unregistered layer gets: nothing is pruned or counted, its channels are frozen."""
