"""Per-layer handlers, in a registry keyed by layer class.

A handler knows three things about one layer type:
  * `trace(graph, call)`: how channel labels flow from the layer's inputs to its outputs
    (and which it couples or freezes);
  * `new_config(record, config, keep)`: the layer's config once channels are removed;
  * `new_weights(record, weights, keep)`: its weights, sliced to match.
`keep(slot)` returns the kept positions of a slot ('in', 'out', 'mid') of that layer.

Adding a layer type is one entry: `register_handler(MyLayer, PassThrough())`. Lookup is by exact
class (a subclass may change `call`, so it is not assumed to behave like its parent); anything not
registered is treated as unknown, which freezes its channels.

Example:
    >>> register_handler(MyScaleLayer, PerChannel())     # per-channel weights on the last axis
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

Keep = Callable[[str], np.ndarray]

ELEMENTWISE_ACTIVATIONS = {
    "linear", "relu", "relu6", "sigmoid", "tanh", "swish", "silu", "gelu", "elu", "selu",
    "softplus", "softsign", "hard_sigmoid", "hard_swish", "hard_silu", "exponential",
    "leaky_relu", "mish", "log_sigmoid", "celu", "sparse_plus", "squareplus", "tanh_shrink",
    "hard_tanh", "soft_shrink", "hard_shrink", "threshold", None,
}


class Unsupported(Exception):
    """Raised by a handler's trace when it cannot reason about this particular call."""


def activation_name(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("config", value.get("class_name"))
    return getattr(value, "__name__", repr(value))


def check_channels_last(config: dict) -> None:
    fmt = config.get("data_format") or "channels_last"
    if fmt != "channels_last":
        raise Unsupported(f"data_format={fmt!r}; only channels_last is understood")


def static_shape(shape: tuple) -> tuple:
    if any(d is None for d in shape[1:]):
        raise Unsupported(f"needs a static shape, received {shape}")
    return shape


class LayerHandler:
    """Base handler: no weights, config unchanged."""

    def trace(self, graph, call) -> list[np.ndarray]:
        raise NotImplementedError

    def is_producer(self, rec) -> bool:
        return False

    def new_config(self, rec, config: dict, keep: Keep) -> dict:
        return config

    def new_weights(self, rec, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        return weights

    def new_layer(self, rec, layer: Any, config: dict) -> Any:
        """The pruned layer, from its new config (a handler may change the class)."""
        return layer.__class__.from_config(config)

    def filter_weight(self, layer) -> tuple[Any, int] | None:
        """(weight variable, output-channel axis) of a producer, for importance criteria."""
        return None

    def filters(self, layer) -> np.ndarray | None:
        """(output channels, fan-in) matrix of a producer's weights, for importance criteria."""
        found = self.filter_weight(layer)
        if found is None:
            return None
        weight, axis = found
        array = np.asarray(weight)
        return np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)


class Unknown(LayerHandler):
    def trace(self, graph, call):
        kind = type(call.layer).__name__
        return graph.unknown(call, f"{call.layer.name} ({kind}) is not understood by the dependency graph")


class PassThrough(LayerHandler):
    """Channel-wise layers without weights: activations, dropout, pooling, padding, cropping."""

    def __init__(self, check: Callable[[dict, int], None] | None = None) -> None:
        self.check = check

    def trace(self, graph, call):
        config = call.layer.get_config()
        check_channels_last(config)
        if self.check:
            self.check(config, len(call.input_shapes[0]))
        labels = graph.values[call.inputs[0]]
        graph.record(call.layer).slots.setdefault("in", labels)  # no weights: calls stay independent
        return [labels]

    def new_config(self, rec, config, keep):
        noise = config.get("noise_shape")
        if noise and noise[-1] not in (None, 1):
            config = dict(config, noise_shape=tuple(noise[:-1]) + (len(keep("in")),))
        return config


def _check_activation(config: dict, rank: int) -> None:
    name = activation_name(config.get("activation"))
    if name not in ELEMENTWISE_ACTIVATIONS:
        raise Unsupported(f"activation {name!r} mixes channels")


def _check_rescaling(config: dict, rank: int) -> None:
    for key in ("scale", "offset"):
        if np.ndim(config.get(key, 0)) > 0 and np.size(config.get(key)) > 1:
            raise Unsupported(f"per-channel Rescaling {key}")


def _check_last_axis(config: dict, rank: int) -> None:
    axis = config.get("axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    if [a % rank for a in axes if a is not None] != [rank - 1]:
        raise Unsupported(f"normalises over axis {axis}; only the last (channel) axis is understood")


class PerChannel(PassThrough):
    """Pass-through with per-channel weights on the last axis (BatchNormalization, PReLU, ...)."""

    def trace(self, graph, call):
        config = call.layer.get_config()
        if self.check:
            self.check(config, len(call.input_shapes[0]))
        labels = graph.values[call.inputs[0]]
        labels = graph.slot(call.layer, "in", labels)
        return [labels]

    def new_weights(self, rec, weights, keep):
        idx, n = keep("in"), len(rec.slots["in"])
        return [w[..., idx] if w.ndim and w.shape[-1] == n else w for w in weights]


LAYER_NORM_MODES = ("exact", "approximate", "keep")


def check_layer_norm_mode(mode: str) -> str:
    """`mode` if it is one of LAYER_NORM_MODES, else a ValueError naming them."""
    if mode not in LAYER_NORM_MODES:
        raise ValueError(f"layer_norm must be one of {list(LAYER_NORM_MODES)}, received {mode!r}.")
    return mode


class ChannelNormalization(PerChannel):
    """LayerNormalization / RMSNormalization over the channel axis: its statistics span every channel.

    What happens to the channels depends on the graph's `layer_norm` mode:
      * 'exact': the pruned layer is `pruned_class` (tfprune.structured.layers), whose statistics
        still cover the original channel count, the removed channels counting as zeros;
      * 'approximate': a plain layer of the kept width, normalising over the kept channels only
        (reported as not exact);
      * 'keep': the channels it normalises are not pruned.
    """

    def __init__(self, pruned_class: type) -> None:
        super().__init__(_check_last_axis)
        self.pruned_class = pruned_class

    def trace(self, graph, call):
        labels = super().trace(graph, call)
        layer, rec = call.layer, graph.record(call.layer)
        mode = graph.layer_norm
        if mode == "keep":
            graph.freeze(labels[0], f"{layer.name} ({type(layer).__name__}) normalises over these channels "
                                    "(layer_norm='keep')")
        elif mode == "approximate":
            rec.info["approximate"] = True
        else:
            rec.info["normalized_size"] = getattr(layer, "normalized_size", len(rec.slots["in"]))
        return labels

    def new_layer(self, rec, layer, config):
        size = rec.info.get("normalized_size")
        if size is None:
            return layer.__class__.from_config(config)
        return self.pruned_class.from_config(dict(config, normalized_size=size))


class LayerScaleHandler(PerChannel):
    """keras.applications' ConvNeXt LayerScale: a per-channel multiplier sized by `projection_dim`."""

    def new_config(self, rec, config, keep):
        return dict(config, projection_dim=len(keep("in")))


class Conv(LayerHandler):
    """Conv1D/2D/3D. groups > 1 keeps the group count: a position is removed from every group at
    once; groups == input channels (depthwise-like) passes channels through like DepthwiseConv."""

    def trace(self, graph, call):
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
        _freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def is_producer(self, rec):
        return not rec.info.get("depthwise")

    def new_config(self, rec, config, keep):
        config = dict(config, filters=len(keep("out")))
        if rec.info.get("depthwise"):
            config["groups"] = len(keep("in"))
        return config

    def new_weights(self, rec, weights, keep):
        out_idx, in_idx = keep("out"), keep("in")
        if rec.info.get("depthwise"):  # one input channel per group: the kernel's input axis stays
            in_idx = np.arange(weights[0].shape[-2])
        elif rec.layer.groups > 1:  # positions within one group (coupled across groups)
            in_idx = in_idx[in_idx < weights[0].shape[-2]]
        kernel = weights[0][..., in_idx, :][..., out_idx]
        return [kernel] + [w[out_idx] for w in weights[1:]]

    def filter_weight(self, layer):
        return layer.kernel, -1


class _MixingProducer(LayerHandler):
    """A producer whose every output channel reads all input channels: an "in" and an "out" slot.

    Subclasses name the config key of the output width and may check the layer in `check`.
    """

    width_key = "filters"

    def check(self, layer, config) -> None:
        """Raises `Unsupported` for configurations the handler cannot rebuild."""

    def trace(self, graph, call):
        layer, config = call.layer, call.layer.get_config()
        self.check(layer, config)
        graph.slot(layer, "in", graph.values[call.inputs[0]])
        out = graph.producer(layer, config[self.width_key])
        _freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def is_producer(self, rec):
        return True

    def new_config(self, rec, config, keep):
        return dict(config, **{self.width_key: len(keep("out"))})


class ConvTranspose(_MixingProducer):
    """Conv1D/2D/3DTranspose: kernel is (..., out, in)."""

    def check(self, layer, config) -> None:
        check_channels_last(config)

    def new_weights(self, rec, weights, keep):
        out_idx = keep("out")
        kernel = weights[0][..., keep("in")][..., out_idx, :]
        return [kernel] + [w[out_idx] for w in weights[1:]]

    def filter_weight(self, layer):
        return layer.kernel, -2


class Depthwise(LayerHandler):
    """DepthwiseConv1D/2D: output channel c*m+j comes from input channel c."""

    def trace(self, graph, call):
        layer, config = call.layer, call.layer.get_config()
        check_channels_last(config)
        in_labels = graph.slot(layer, "in", graph.values[call.inputs[0]])
        out = np.repeat(in_labels, config["depth_multiplier"])
        graph.record(layer).slots["out"] = out
        _freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def new_weights(self, rec, weights, keep):
        return [weights[0][..., keep("in"), :]] + [w[keep("out")] for w in weights[1:]]


class Separable(LayerHandler):
    """SeparableConv1D/2D: depthwise (passes channels, times depth_multiplier) then pointwise."""

    def trace(self, graph, call):
        layer, config = call.layer, call.layer.get_config()
        check_channels_last(config)
        in_labels = graph.slot(layer, "in", graph.values[call.inputs[0]])
        graph.record(layer).slots["mid"] = np.repeat(in_labels, config["depth_multiplier"])
        out = graph.producer(layer, config["filters"])
        _freeze_mixing_activation(graph, layer, config, out)
        return [out]

    def is_producer(self, rec):
        return True

    def new_config(self, rec, config, keep):
        return dict(config, filters=len(keep("out")))

    def new_weights(self, rec, weights, keep):
        out_idx = keep("out")
        depthwise = weights[0][..., keep("in"), :]
        pointwise = weights[1][..., keep("mid"), :][..., out_idx]
        return [depthwise, pointwise] + [w[out_idx] for w in weights[2:]]

    def filter_weight(self, layer):
        return layer.pointwise_kernel, -1


class DenseHandler(_MixingProducer):
    """Dense: kernel is (in, units) and acts on the last axis."""

    width_key = "units"

    def check(self, layer, config) -> None:
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise Unsupported("LoRA or quantized Dense")

    def new_weights(self, rec, weights, keep):
        out_idx = keep("out")
        return [weights[0][keep("in")][:, out_idx]] + [w[out_idx] for w in weights[1:]]

    def filter_weight(self, layer):
        return layer.kernel, -1


class EmbeddingHandler(LayerHandler):
    """Embedding: a producer of `output_dim` channels; the table is (input_dim, output_dim)."""

    def trace(self, graph, call):
        layer = call.layer
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise Unsupported("LoRA or quantized Embedding")
        return [graph.producer(layer, layer.output_dim)]

    def is_producer(self, rec):
        return True

    def new_config(self, rec, config, keep):
        return dict(config, output_dim=len(keep("out")))

    def new_weights(self, rec, weights, keep):
        return [weights[0][:, keep("out")]] + weights[1:]

    def filter_weight(self, layer):
        return layer.embeddings, -1


class Merge(LayerHandler):
    """Add, Subtract, Multiply, Average, Maximum, Minimum (layers, or the same keras.ops on
    tensors): equal channels are coupled. An input with a single channel broadcasts (its channel
    is kept); a unary call (e.g. `x * 2.0`, `relu(x)`) passes channels through."""

    def trace(self, graph, call):
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

    def trace(self, graph, call):
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


class FlattenHandler(LayerHandler):
    """Flatten: channel c at every spatial position; a following Dense gets an expanded index map."""

    def trace(self, graph, call):
        check_channels_last(call.layer.get_config())
        shape = static_shape(call.input_shapes[0])
        labels = graph.values[call.inputs[0]]
        return [np.tile(labels, int(np.prod(shape[1:-1], dtype=np.int64)))]


class ReshapeHandler(LayerHandler):
    """Reshape whose new last axis is a whole multiple r of the channel count: the channels repeat
    r times along it. Anything else (e.g. the channel split of a channel shuffle) is not understood."""

    def trace(self, graph, call):
        in_shape = static_shape(call.input_shapes[0])
        out_shape = static_shape(call.output_shapes[0])
        channels, last = in_shape[-1], out_shape[-1]
        if len(in_shape) < 2 or len(out_shape) < 2 or last % channels:
            raise Unsupported(f"reshape {in_shape[1:]} -> {out_shape[1:]} splits the channel axis")
        labels = graph.slot(call.layer, "in", graph.values[call.inputs[0]])
        rec = graph.record(call.layer)
        rec.info.update(repeat=last // channels, target=tuple(out_shape[1:]))
        return [np.tile(labels, last // channels)]

    def new_config(self, rec, config, keep):
        target = list(rec.info["target"])
        target[-1] = rec.info["repeat"] * len(keep("in"))
        return dict(config, target_shape=tuple(target))


def _freeze_mixing_activation(graph, layer, config, out) -> None:
    name = activation_name(config.get("activation"))
    if name not in ELEMENTWISE_ACTIVATIONS:
        graph.freeze(out, f"{layer.name} has activation {name!r}, which mixes channels")


L = keras.layers
_REGISTRY: dict[type, LayerHandler] = {}


def register_handler(layer_class: type, handler: LayerHandler) -> None:
    """Register `handler` for layers whose class is exactly `layer_class`.

    Example:
        >>> register_handler(MyChannelwiseActivation, PassThrough())
    """
    if not isinstance(handler, LayerHandler):
        raise TypeError(f"Expected a LayerHandler instance, received {type(handler).__name__}.")
    _REGISTRY[layer_class] = handler


def get_handler(layer: Any) -> LayerHandler:
    return _REGISTRY.get(type(layer), _UNKNOWN)


def supported_layer_classes() -> list[str]:
    """Names of the registered layer classes; keras.ops operations are listed as 'ops.Name'."""
    return sorted(cls.__name__ if issubclass(cls, keras.layers.Layer) else f"ops.{cls.__name__}"
                  for cls in _REGISTRY)


_UNKNOWN = Unknown()


def _register_defaults() -> None:
    passthrough = PassThrough()
    for name in [
        "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity",
        "ActivityRegularization", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "ZeroPadding1D",
        "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
        "UpSampling1D", "UpSampling2D", "UpSampling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    ]:
        if hasattr(L, name):
            register_handler(getattr(L, name), passthrough)
    register_handler(L.Activation, PassThrough(_check_activation))
    register_handler(L.Rescaling, PassThrough(_check_rescaling))
    register_handler(L.BatchNormalization, PerChannel(_check_last_axis))
    from tfprune.structured import layers as pruned_layers

    layer_norm = ChannelNormalization(pruned_layers.PrunedLayerNormalization)
    rms_norm = ChannelNormalization(pruned_layers.PrunedRMSNormalization)
    register_handler(L.LayerNormalization, layer_norm)
    register_handler(pruned_layers.PrunedLayerNormalization, layer_norm)
    if hasattr(L, "RMSNormalization"):
        register_handler(L.RMSNormalization, rms_norm)
        register_handler(pruned_layers.PrunedRMSNormalization, rms_norm)
    register_handler(L.Normalization, PerChannel(_check_last_axis))
    register_handler(L.PReLU, PerChannel())
    try:
        from keras.src.applications.convnext import LayerScale
    except ImportError:  # pragma: no cover - older Keras layouts
        LayerScale = None
    if LayerScale is not None:
        register_handler(LayerScale, LayerScaleHandler())
    try:  # InceptionResNetV2's residual `x + branch * scale`
        from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
    except ImportError:  # pragma: no cover - older Keras layouts
        CustomScaleLayer = None
    if CustomScaleLayer is not None:
        register_handler(CustomScaleLayer, Merge())
    for name in ["Conv1D", "Conv2D", "Conv3D"]:
        register_handler(getattr(L, name), Conv())
    for name in ["Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"]:
        register_handler(getattr(L, name), ConvTranspose())
    for name in ["DepthwiseConv1D", "DepthwiseConv2D"]:
        register_handler(getattr(L, name), Depthwise())
    for name in ["SeparableConv1D", "SeparableConv2D"]:
        register_handler(getattr(L, name), Separable())
    register_handler(L.Dense, DenseHandler())
    register_handler(L.Embedding, EmbeddingHandler())
    for name in ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"]:
        register_handler(getattr(L, name), Merge())
    register_handler(L.Concatenate, ConcatenateHandler())
    # keras.ops used directly on symbolic tensors in a functional model (`a + b`, `ops.relu(x)`)
    from keras.src.ops import nn as ops_nn
    from keras.src.ops import numpy as ops_np

    elementwise_op = Merge()
    for module, names in [
        (ops_np, ["Add", "Subtract", "Multiply", "Maximum", "Minimum", "Tanh", "Negative", "Abs", "Square"]),
        (ops_nn, ["Relu", "Relu6", "Sigmoid", "Silu", "Gelu", "Elu", "Selu", "Softplus", "LeakyRelu",
                  "HardSigmoid", "HardSilu"]),
    ]:
        for name in names:
            if hasattr(module, name):
                register_handler(getattr(module, name), elementwise_op)
    register_handler(L.Flatten, FlattenHandler())
    register_handler(L.Reshape, ReshapeHandler())


_register_defaults()
