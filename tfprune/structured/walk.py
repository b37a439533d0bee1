"""Flatten a Keras 3 model (Sequential, functional, nested models) into a list of layer calls.

Every tensor is named by a hashable key; the inputs of a nested model are aliased to the tensors
the outer model feeds it, so a nested model reads like inline layers. A nested model called twice
is walked twice (its layers then appear in two calls: handlers treat them as shared layers).

Example:
    >>> calls, inputs, outputs = flatten_model(model)
    >>> [call.layer.name for call in calls][:3]
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Hashable

import keras


@dataclasses.dataclass
class Call:
    """One invocation of a layer (or operation) in the flattened graph."""

    layer: Any
    inputs: list[Hashable]
    input_shapes: list[tuple]
    outputs: list[Hashable]
    output_shapes: list[tuple]
    constants: bool = False  # a non-scalar constant among the arguments (e.g. `x * array`)


def _has_constants(node) -> bool:
    for value in keras.tree.flatten((node.arguments.args, node.arguments.kwargs)):
        if isinstance(value, keras.KerasTensor) or value is None or isinstance(value, (bool, int, float, str)):
            continue
        if getattr(value, "shape", ()) not in ((), None):
            return True
    return False


def as_functional(layer: Any):
    """The functional graph of a Sequential or functional model, or None for a plain layer."""
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


def flatten_model(model: keras.Model, nested_inputs: dict | None = None):
    """Return (calls in topological order, input keys, output keys) of `model`.

    If `nested_inputs` is a dict, it receives {id(nested model): [its input keys, one list per call]}.
    """
    graph = as_functional(model)
    if graph is None:
        raise TypeError(
            f"Expected a Sequential or functional keras.Model, received {type(model).__name__}. "
            "Fix: subclassed models have no inspectable graph; rebuild the model with the functional API."
        )
    alias: dict[Hashable, Hashable] = {}
    calls: list[Call] = []
    counter = itertools.count(1)

    def canon(key: Hashable) -> Hashable:
        while key in alias:
            key = alias[key]
        return key

    def walk(fn, scope: int) -> None:
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
                    )
                )

    walk(graph, 0)
    inputs = [canon((0, id(t))) for t in graph.inputs]
    outputs = [canon((0, id(t))) for t in graph.outputs]
    return calls, inputs, outputs


def iter_layers(model: keras.Model):
    """Every non-model layer of `model`, nested models included, each once."""
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
