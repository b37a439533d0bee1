"""Fold inference-mode BatchNormalization into the preceding conv or dense layer (a deployment step).

A BatchNormalization in inference mode is a per-channel affine map
`y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta`. When `x` comes straight
from a linear layer (Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D, Dense with no activation),
the map can be merged into that layer's kernel and bias, and the BatchNormalization disappears.

Rules (anything else is copied unchanged; a layer that cannot be folded is never folded wrongly):
  * the producer has a linear activation, is not quantized and has no LoRA adapter;
  * the BatchNormalization normalises the producer's channel axis (last axis, or axis 1 for a
    `channels_first` conv);
  * the producer's output is read by that BatchNormalization only and is not a model output;
  * neither layer is shared (each is called exactly once, in one model) and the BatchNormalization
    is not called with a hard-coded `training=True`.

Nested Sequential/functional models are followed: pairs that lie inside one nested model are
folded there (the nested model is rebuilt). A pair split across a model boundary (a nested model
ending in a conv, followed by a BatchNormalization outside it) is left as it is. Subclassed models
are refused.

The result is a plain Keras model (saves as `.keras`, loads without custom objects); it computes
the original model's `training=False` outputs. Do not train it: the statistics are baked in.
A layer that cannot be re-created from its config raises `keras_graph.LayerRebuildError` (naming
the layer and the fix) rather than being shared with the original model.

Example:
    >>> model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    >>> folded = fold_batchnorm(model)
    >>> sum(isinstance(l, keras.layers.BatchNormalization) for l in folded.layers)   # 0
    >>> folded.save("mobilenetv2_folded.keras")
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfprune.keras_graph import as_functional, call_counts, copy_layer, functional_graphs, layer_config
from tfprune.layers import get_handler


def _producer_ok(layer: Any) -> bool:
    return get_handler(layer).can_fold_batchnorm(layer)


def _bn_axis_matches(producer, bn, rank: int) -> bool:
    axis = bn.axis % rank
    if isinstance(producer, keras.layers.Dense):
        return axis == rank - 1
    channels_first = getattr(producer, "data_format", "channels_last") == "channels_first"
    return axis == (1 if channels_first else rank - 1)


def find_foldable(model: keras.Model) -> dict[int, tuple[Any, Any]]:
    """{id(producer): (producer, batch_norm)} for every pair `fold_batchnorm` folds, nested models included.

    Example:
        >>> [(p.name, bn.name) for p, bn in find_foldable(model).values()][:2]
    """
    counts = call_counts(model)
    pairs: dict[int, tuple[Any, Any]] = {}
    for graph in functional_graphs(model):
        consumers: dict[int, int] = {}
        for depth_nodes in graph._nodes_by_depth.values():
            for node in depth_nodes:
                if node.is_input or node.operation is None:
                    continue
                for t in node.input_tensors:
                    consumers[id(t)] = consumers.get(id(t), 0) + 1
        outputs = {id(t) for t in graph.outputs}
        for depth_nodes in graph._nodes_by_depth.values():
            for node in depth_nodes:
                bn = node.operation
                if node.is_input or not isinstance(bn, keras.layers.BatchNormalization):
                    continue
                if counts.get(id(bn)) != 1 or len(node.input_tensors) != 1:
                    continue
                if node.arguments.kwargs.get("training") is True:
                    continue
                x = node.input_tensors[0]
                history = getattr(x, "_keras_history", None)
                producer = history.operation if history is not None else None
                if producer is None or not _producer_ok(producer) or counts.get(id(producer)) != 1:
                    continue
                if consumers.get(id(x)) != 1 or id(x) in outputs or x.shape is None:
                    continue
                if not _bn_axis_matches(producer, bn, len(x.shape)):
                    continue
                pairs[id(producer)] = (producer, bn)
    return pairs


def _bn_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) with bn(x) == x * scale + shift in inference mode, in float64."""
    mean = np.asarray(bn.moving_mean.numpy(), dtype=np.float64)
    var = np.asarray(bn.moving_variance.numpy(), dtype=np.float64)
    gamma = np.asarray(bn.gamma.numpy(), dtype=np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta.numpy(), dtype=np.float64) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def _folded_weights(producer: Any, bn: Any) -> list[np.ndarray]:
    """The weights of the producer rebuilt with use_bias=True, with `bn` merged in."""
    scale, shift = _bn_affine(bn)
    return get_handler(producer).fold_batchnorm(producer, scale, shift)


class _Folder:
    def __init__(self, model: keras.Model):
        self.pairs = find_foldable(model)
        self.folded_bns = {id(bn) for _, bn in self.pairs.values()}
        self.copies: list[tuple[Any, Any]] = []  # (old layer, new layer) whose weights must be set
        self.models: dict[int, keras.Model] = {}

    def clone_layer(self, layer: Any) -> Any:
        if as_functional(layer) is not None:  # nested Sequential/functional model: fold inside it
            if id(layer) not in self.models:
                self.models[id(layer)] = self.fold_model(layer)
            return self.models[id(layer)]
        if id(layer) in self.folded_bns:
            return layer  # never called: `call_layer` skips it
        config = layer_config(layer)
        if id(layer) in self.pairs:
            config["use_bias"] = True
        new = copy_layer(layer, config)
        self.copies.append((layer, new))
        return new

    def call_layer(self, layer: Any, *args: Any, **kwargs: Any) -> Any:
        if id(layer) in self.folded_bns:
            return args[0]
        return layer(*args, **kwargs)

    def fold_model(self, model: keras.Model) -> keras.Model:
        if isinstance(model, keras.Sequential):
            graph = as_functional(model)
            first = model._layers[0] if model._layers else None
            if isinstance(first, keras.layers.InputLayer):
                inputs = keras.Input(batch_shape=first.batch_shape, dtype=first.dtype, name=first.name)
            else:
                t = graph.inputs[0]
                inputs = keras.Input(batch_shape=t.shape, dtype=t.dtype)
            layers = [self.clone_layer(layer) for layer in model.layers if id(layer) not in self.folded_bns]
            new = keras.Sequential([inputs] + layers, name=model.name, trainable=model.trainable)
            if model.compiled:  # as keras.models.clone_model does for functional models
                new.compile_from_config(model.get_compile_config())
            return new
        return keras.models.clone_model(model, clone_function=self.clone_layer, call_function=self.call_layer)

    def copy_weights(self) -> None:
        for old, new in self.copies:
            if not old.weights:
                continue
            pair = self.pairs.get(id(old))
            weights = _folded_weights(*pair) if pair is not None else old.get_weights()
            new.set_weights([np.asarray(w).astype(v.dtype) for w, v in zip(weights, new.weights)])


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """A new model with every foldable BatchNormalization merged into its producer's kernel and bias.

    Args:
        model: a built Sequential or functional Keras model.

    Returns:
        A new plain Keras model (compiled from the original's compile config if it was compiled):
        folded producers get `use_bias=True`, the folded BatchNormalization layers are gone, every
        other layer is a copy (same config and weights). See the module docstring for what is folded
        and when a BatchNormalization is kept.

    Example:
        >>> pruned, report = prune_filters(model, pruning_ratio=0.5, round_to=16)
        >>> deployed = fold_batchnorm(pruned)
        >>> np.allclose(deployed(x), pruned(x, training=False), atol=1e-4)   # True
    """
    if as_functional(model) is None:
        raise TypeError(
            f"Expected a Sequential or functional keras.Model, received {type(model).__name__}. "
            "Fix: subclassed models have no inspectable graph; rebuild the model with the functional API."
        )
    folder = _Folder(model)
    new_model = folder.fold_model(model)
    folder.copy_weights()
    return new_model
