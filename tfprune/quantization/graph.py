"""Walking and copying Sequential/functional Keras 3 models, for annotation and quantization.

Example:
    >>> nodes = ordered_nodes(model)          # call nodes in topological order
    >>> copy = clone_with(model, copy_layer)  # same model, new layers, weights copied
"""

from __future__ import annotations

from typing import Any, Callable

import keras

from tfprune.keras_graph import copy_layer as _copy_layer
from tfprune.keras_graph import is_graph_model

__all__ = ["check_graph_model", "clone_with", "copy_layer", "copy_weights", "is_graph_model", "ordered_nodes"]


def check_graph_model(model: Any, what: str) -> None:
    """Raises a TypeError/ValueError naming the fix unless `model` is a built Sequential/functional model."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{what}` takes a keras.Model; received {type(model).__name__}. "
                        "Fix: pass a Sequential or functional model (a single layer: quantize_annotate_layer).")
    if not is_graph_model(model):
        raise ValueError(
            f"Model '{model.name}' is subclassed, which cannot be rebuilt layer by layer. Fix: annotate its layers "
            "where they are created, `self.conv = quantize_apply(quantize_annotate_layer(keras.layers.Conv2D(...)))`."
        )
    if not model.built or not model.inputs:
        raise ValueError(f"Model '{model.name}' is not built. Fix: give it a keras.Input (or call "
                         "model.build(input_shape)) first.")


def functional_of(model: keras.Model) -> keras.Model:
    """The functional graph of a Sequential (its `_functional`) or the model itself."""
    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(f"Sequential model '{model.name}' has no input shape. Fix: start it with keras.Input.")
        return graph
    return model


def ordered_nodes(model: keras.Model) -> list:
    """The model's call nodes, inputs first (topological order)."""
    graph = functional_of(model)
    nodes = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        nodes.extend(graph._nodes_by_depth[depth])
    return nodes


def all_layers(model: keras.Model) -> list:
    """Every layer of the model, nested models' layers included (not the nested models themselves)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(all_layers(layer))
        else:
            found.append(layer)
    return found


def copy_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new layer of the same class and config, not built (weights are copied after the rebuild);
    `keras_graph.LayerRebuildError` naming the fix if the layer cannot be re-created."""
    return _copy_layer(layer)


def fresh_inputs(model: keras.Model) -> list:
    """New `keras.Input`s with the shapes, dtypes and names of the model's inputs."""
    graph = functional_of(model)
    tensors = []
    for tensor in graph.inputs:
        name = tensor._keras_history.operation.name
        tensors.append(keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=name))
    return tensors


def copy_weights(old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Copies weights from `old` to `new` (same class, or `new` wrapping an equal layer)."""
    if not isinstance(old, keras.layers.Layer):
        return  # keras.ops operations in a functional graph (`x + y`) have no weights
    values = old.get_weights()
    if values:
        new.set_weights(values)


def clone_with(model: keras.Model, transform: Callable[[keras.layers.Layer], keras.layers.Layer]) -> keras.Model:
    """Clones a Sequential/functional model, mapping each layer through `transform`, then copies weights.

    `transform` returns a new layer of the same structure, a wrapper of a copy (whose `.layer` gets
    the weights), or a finished model (kept as is).
    """
    pairs: list[tuple[Any, Any]] = []

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        new = transform(layer)
        pairs.append((layer, new))
        return new

    clone = keras.models.clone_model(model, clone_function=clone_function)
    for old, new in pairs:
        if isinstance(new, keras.Model):
            continue
        if isinstance(new, keras.layers.Wrapper) and not isinstance(old, keras.layers.Wrapper):
            copy_weights(old, new.layer)
        else:
            copy_weights(old, new)
    return clone
