"""The one place that walks and clones Keras 3 models.

Walking: `flatten_model` lists every layer call of a Sequential or functional model in topological
order, nested models inlined (the inputs of a nested model are aliased to the tensors the outer model
feeds it); `iter_layers` yields every non-model layer once; `find_layers` finds layers of a class in
any model, subclassed ones included; `functional_graphs` and `call_counts` look at every graph
reachable from a model.

Cloning: `copy_layer` re-creates a layer from its config and raises `LayerRebuildError` (naming the
layer and the fix) when it cannot, so no clone ever shares a layer, and with it weights, with its
source model. `clone_graph_model` clones a Sequential/functional model through a per-layer function.

The private Keras base classes tfprune needs (convolution families) are named here once.

Example:
    >>> calls, inputs, outputs = flatten_model(model)
    >>> [call.layer.name for call in calls][:3]
    >>> clone = clone_graph_model(model, lambda layer: (copy_layer(layer), False))
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from typing import Any, Callable, Hashable, Iterator

import keras
from keras.src.saving.serialization_lib import SafeModeScope

BaseConv = keras.src.layers.convolutional.base_conv.BaseConv
BaseDepthwiseConv = keras.src.layers.convolutional.base_depthwise_conv.BaseDepthwiseConv
BaseSeparableConv = keras.src.layers.convolutional.base_separable_conv.BaseSeparableConv
BaseConvTranspose = keras.src.layers.convolutional.base_conv_transpose.BaseConvTranspose
RMSNormalization = getattr(keras.layers, "RMSNormalization", None)

__all__ = [
    "BaseConv",
    "BaseConvTranspose",
    "BaseDepthwiseConv",
    "BaseSeparableConv",
    "Call",
    "LayerRebuildError",
    "as_functional",
    "call_counts",
    "clone_graph_model",
    "copy_layer",
    "find_layers",
    "flatten_model",
    "fresh_inputs",
    "functional_graphs",
    "is_graph_model",
    "iter_layers",
    "layer_config",
    "replace_sublayer",
]


class LayerRebuildError(ValueError):
    """A layer could not be re-created from its config, so a model containing it cannot be cloned."""


@dataclasses.dataclass
class Call:
    """One invocation of a layer (or operation) in the flattened graph."""

    layer: Any
    inputs: list[Hashable]
    input_shapes: list[tuple]
    outputs: list[Hashable]
    output_shapes: list[tuple]
    constants: bool = False  # a non-scalar constant among the arguments (e.g. `x * array`)
    input_names: list[str] = dataclasses.field(default_factory=list)  # call argument of each input
    arguments: tuple = ((), {})  # the call's (args, kwargs) as recorded, tensors included

    def argument(self, name: str, position: int, default: Any = None) -> Any:
        """The value passed for call argument `name` (keyword, else positional `position`), or `default`.

        Example:
            >>> call.argument("reverse", 1, False)      # ReversibleEmbedding(x, reverse=True)
        """
        args, kwargs = self.arguments
        if name in kwargs:
            return kwargs[name]
        return args[position] if len(args) > position else default


def _input_names(node: Any) -> list[str]:
    """The call-argument name of each of `node.input_tensors` (e.g. ['query', 'value'] for attention)."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    try:
        params = list(inspect.signature(node.operation.call).parameters)
    except (TypeError, ValueError, AttributeError):
        params = []
    named_args = tuple(
        keras.tree.map_structure(lambda _, n=(params[i] if i < len(params) else str(i)): n, a)
        for i, a in enumerate(args)
    )
    named_kwargs = {k: keras.tree.map_structure(lambda _, n=k: n, v) for k, v in kwargs.items()}
    flat_values = keras.tree.flatten((args, kwargs))
    flat_names = keras.tree.flatten((named_args, named_kwargs))
    if len(flat_values) != len(flat_names):  # pragma: no cover - unusual argument structures
        return [str(i) for i in range(len(node.input_tensors))]
    return [n for v, n in zip(flat_values, flat_names) if isinstance(v, keras.KerasTensor)]


def _has_constants(node: Any) -> bool:
    for value in keras.tree.flatten((node.arguments.args, node.arguments.kwargs)):
        if isinstance(value, keras.KerasTensor) or value is None or isinstance(value, (bool, int, float, str)):
            continue
        if getattr(value, "shape", ()) not in ((), None):
            return True
    return False


def is_graph_model(model: Any) -> bool:
    """True for Sequential and functional models (which can be cloned layer by layer).

    Example:
        >>> is_graph_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))   # True
    """
    return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional" or (
        isinstance(model, keras.Model) and getattr(model, "_is_graph_network", False)
    )


def as_functional(layer: Any) -> Any:
    """The functional graph of a Sequential or functional model, or None for a plain layer.

    Example:
        >>> as_functional(keras.layers.Dense(2)) is None   # True
    """
    if isinstance(layer, keras.Sequential):
        graph = getattr(layer, "_functional", None)
        if graph is None:
            raise ValueError(
                f"Sequential model {layer.name!r} has not been built with an input shape. "
                "Fix: start it with keras.Input(shape) or call model.build(input_shape) first."
            )
        return graph
    if isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth"):
        return layer
    return None


def _require_functional(model: Any) -> Any:
    graph = as_functional(model)
    if graph is None:
        raise TypeError(
            f"Expected a Sequential or functional keras.Model, received {type(model).__name__}. "
            "Fix: subclassed models have no inspectable graph; rebuild the model with the functional API."
        )
    return graph


def flatten_model(model: keras.Model, nested_inputs: dict | None = None) -> tuple[list[Call], list, list]:
    """Return (calls in topological order, input keys, output keys) of `model`.

    If `nested_inputs` is a dict, it receives {id(nested model): [its input keys, one list per call]}.
    A nested model called twice is walked twice (its layers then appear in two calls).

    Example:
        >>> calls, inputs, outputs = flatten_model(model)
    """
    graph = _require_functional(model)
    alias: dict[Hashable, Hashable] = {}
    calls: list[Call] = []
    counter = itertools.count(1)

    def canon(key: Hashable) -> Hashable:
        while key in alias:
            key = alias[key]
        return key

    def walk(fn: Any, scope: int) -> None:
        nodes_by_depth = fn._nodes_by_depth
        for depth in sorted(nodes_by_depth.keys(), reverse=True):
            for node in nodes_by_depth[depth]:
                if node.is_input or not node.operation:
                    continue
                op = node.operation
                in_keys = [canon((scope, id(t))) for t in node.input_tensors]
                inner = as_functional(op)
                if inner is not None:
                    inner_scope = next(counter)
                    if nested_inputs is not None:
                        nested_inputs.setdefault(id(op), []).append(in_keys)
                    for t, key in zip(inner.inputs, in_keys):
                        alias[(inner_scope, id(t))] = key
                    walk(inner, inner_scope)
                    for t, inner_t in zip(node.outputs, inner.outputs):
                        alias[(scope, id(t))] = canon((inner_scope, id(inner_t)))
                    continue
                calls.append(
                    Call(
                        layer=op,
                        inputs=in_keys,
                        input_shapes=[tuple(t.shape) for t in node.input_tensors],
                        outputs=[(scope, id(t)) for t in node.outputs],
                        output_shapes=[tuple(t.shape) for t in node.outputs],
                        constants=_has_constants(node),
                        input_names=_input_names(node),
                        arguments=(tuple(node.arguments.args), dict(node.arguments.kwargs)),
                    )
                )

    walk(graph, 0)
    inputs = [canon((0, id(t))) for t in graph.inputs]
    outputs = [canon((0, id(t))) for t in graph.outputs]
    return calls, inputs, outputs


def iter_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every non-model layer of a Sequential/functional `model`, nested models included, each once.

    Example:
        >>> [layer.name for layer in iter_layers(model)]
    """
    seen = set()
    stack = list(reversed(model.layers))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            stack.extend(reversed(layer.layers))
        else:
            yield layer


def find_layers(model: Any, layer_class: type | tuple[type, ...]) -> list[Any]:
    """Every layer of `layer_class` in `model` (any kind of model, a layer, or a list of them), each once,
    in tracking order; `model` itself counts if it is one.

    Example:
        >>> find_layers(pruned_model, tfprune.PruneLowMagnitude)
    """
    roots = list(model) if isinstance(model, (list, tuple)) else [model]
    found, seen = [], set()
    for root in roots:
        candidates = [root] + list(root._flatten_layers(include_self=False, recursive=True))
        for layer in candidates:
            if isinstance(layer, layer_class) and id(layer) not in seen:
                seen.add(id(layer))
                found.append(layer)
    return found


def functional_graphs(model: keras.Model) -> list[Any]:
    """Every distinct functional graph reachable from `model` (nested models included), each once.

    Example:
        >>> len(functional_graphs(model))   # 1 + the number of nested models
    """
    found, stack, seen = [], [model], set()
    while stack:
        graph = as_functional(stack.pop())
        if graph is None or id(graph) in seen:
            continue
        seen.add(id(graph))
        found.append(graph)
        for depth_nodes in graph._nodes_by_depth.values():
            for node in depth_nodes:
                if node.operation is not None and not node.is_input and as_functional(node.operation) is not None:
                    stack.append(node.operation)
    return found


def call_counts(model: keras.Model) -> dict[int, int]:
    """{id(layer): number of calls} over all graphs of `model` (a nested model counts once).

    Example:
        >>> max(call_counts(model).values())   # > 1 if a layer is shared
    """
    counts: dict[int, int] = {}
    for graph in functional_graphs(model):
        for depth_nodes in graph._nodes_by_depth.values():
            for node in depth_nodes:
                if node.operation is not None and not node.is_input:
                    counts[id(node.operation)] = counts.get(id(node.operation), 0) + 1
    return counts


def _rebuild_error(layer: Any, err: Exception) -> LayerRebuildError:
    detail = " ".join(str(err).split())
    detail = detail if len(detail) <= 160 else detail[:157] + "..."
    return LayerRebuildError(
        f"Layer '{layer.name}' ({type(layer).__name__}) cannot be re-created from its config "
        f"({type(err).__name__}: {detail}). Fix: give {type(layer).__name__} a `get_config()` that returns "
        "every `__init__` argument (and `from_config` if it needs more than `cls(**config)`), and register "
        "it with `@keras.saving.register_keras_serializable()`."
    )


def replace_sublayer(layer: keras.layers.Layer, attribute: str, new: keras.layers.Layer) -> None:
    """Sets `layer.<attribute>` to `new` in the place of the sublayer it held, so that `layer.weights`
    keeps its order (the old sublayer and its weights are no longer tracked).

    Example:
        >>> replace_sublayer(block, "_self_attention_layer", smaller_attention)
    """
    old = getattr(layer, attribute)
    if not any(sub is old for sub in layer._layers):
        raise ValueError(f"{layer.name}.{attribute} is not a tracked sublayer of {type(layer).__name__}.")
    layer._tracker.replace_tracked_value("layers", old, new)
    setattr(layer, attribute, new)  # already tracked in the old one's place: nothing is appended


def layer_config(layer: keras.layers.Layer) -> dict:
    """`layer.get_config()`, or `LayerRebuildError` naming the layer and the fix.

    Example:
        >>> layer_config(keras.layers.Dense(3))["units"]   # 3
    """
    try:
        return layer.get_config()
    except Exception as err:  # any failure of a user's get_config
        raise _rebuild_error(layer, err) from err


def copy_layer(layer: keras.layers.Layer, config: dict | None = None, layer_class: type | None = None) -> Any:
    """A new, unbuilt layer of `layer_class` (default: the layer's class) from `config` (default: its own).

    Raises:
        LayerRebuildError: if the layer cannot be re-created from its config. The clone would
            otherwise have to reuse the layer object and share its weights with the source model.

    Example:
        >>> dense2 = copy_layer(dense, dict(dense.get_config(), units=8))
    """
    cls = layer_class or layer.__class__
    config = layer_config(layer) if config is None else config
    try:
        # The layer comes from the user's own model in memory, not from a file: a Lambda's Python
        # function may be rebuilt (as keras.models.clone_model does).
        with SafeModeScope(safe_mode=False):
            return cls.from_config(config)
    except Exception as err:  # any failure of a user's from_config
        raise _rebuild_error(layer, err) from err


def fresh_inputs(model: keras.Model) -> Any:
    """New `keras.Input`s for a functional model's inputs (same shapes, dtypes and names), packed like
    its inputs; None for a Sequential model.

    Example:
        >>> clone = keras.models.clone_model(model, input_tensors=fresh_inputs(model))
    """
    if isinstance(model, keras.Sequential):
        return None
    tensors = []
    for tensor in model.inputs:
        layer = tensor._keras_history.operation
        tensors.append(
            keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, sparse=tensor.sparse, name=layer.name)
        )
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return keras.tree.pack_sequence_as(struct, tensors)
    return tensors if isinstance(struct, (list, tuple)) else tensors[0]


Transform = Callable[[keras.layers.Layer], "tuple[keras.layers.Layer, bool]"]


def clone_graph_model(model: keras.Model, transform: Transform,
                      copy_weights: Callable[[Any, Any], None] | None = None) -> keras.Model:
    """Clones a Sequential/functional model, mapping each layer through `transform(layer) -> (new layer,
    has_weights)`, then copies the original weights into every new layer that did not receive them
    (`copy_weights(old, new)`, default `new.set_weights(old.get_weights())`). Keras 3.15 compiles the clone of a
    compiled model like the original (fresh optimizer state); an uncompiled model gives an uncompiled clone.

    Example:
        >>> clone = clone_graph_model(model, lambda layer: (copy_layer(layer), False))
    """
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built: give it an `Input` (or call `model.build(input_shape)`) "
            "first, so that every layer has its weights."
        )
    pairs: list[tuple[Any, Any, bool]] = []

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        new_layer, has_weights = transform(layer)
        if new_layer is layer:
            raise LayerRebuildError(f"Internal error: layer '{layer.name}' would be shared with the source model.")
        pairs.append((layer, new_layer, has_weights))
        return new_layer

    clone = keras.models.clone_model(model, input_tensors=fresh_inputs(model), clone_function=clone_function)
    for old, new, has_weights in pairs:
        if has_weights or not isinstance(old, keras.layers.Layer) or not old.weights:
            continue  # keras.ops operations in a functional graph (`x + y`) have no weights
        if copy_weights is not None:
            copy_weights(old, new)
        else:
            new.set_weights(old.get_weights())
    return clone
