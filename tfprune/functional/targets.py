"""Which variable a weight name means in a built layer, and where its constraint lives.

A weight is named as users see it: `"kernel"`, `"bias"`, `"embeddings"`, `"recurrent_kernel"`
(an LSTM's weights live in its cell; the name is the same), `"depthwise_kernel"`... A name must
be unique among the layer's variables; otherwise it is qualified by as much of the variable's
path as needed, e.g. `"forward_lstm/lstm_cell/kernel"` in a Bidirectional layer. Any unique
trailing part of the path is accepted too, e.g. `"dense/kernel"` when the layer is a model.

The mask is kept by the constraint attribute that the owning layer passes to `add_weight` and
writes to its config: `kernel_constraint`, `bias_constraint`, `embeddings_constraint`,
`recurrent_constraint`, `depthwise_constraint`, `pointwise_constraint`, `gamma_constraint`...

Example:
    >>> target = resolve(dense, "kernel")
    >>> target.attribute
    'kernel_constraint'
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfprune.functional.constraint import WeightMask

__all__ = ["Target", "resolve", "weight_names", "pruned_targets"]


class WeightNameError(ValueError):
    """An unknown or ambiguous weight name.

    Example:
        >>> try:
        ...     fp.l1_unstructured(dense, "kernal", amount=0.5)
        ... except fp.WeightNameError as error:
        ...     print(error)
        Weight name 'kernal' does not exist in layer 'dense' (Dense). Valid names: ['kernel', 'bias'].
    """


@dataclasses.dataclass(frozen=True)
class Target:
    """One prunable weight: the layer it was named on, the sublayer owning it, its variable."""

    layer: keras.layers.Layer
    name: str
    owner: keras.layers.Layer
    variable: Any
    attribute: str | None  # the owner's constraint attribute, None if it has none

    @property
    def mask_constraint(self) -> WeightMask | None:
        constraint = self.variable.constraint
        return constraint if isinstance(constraint, WeightMask) else None

    @property
    def config_layer(self) -> keras.layers.Layer:
        """The layer whose config must carry the constraint: the one rebuilt from its config that
        contains the owner (below the innermost model on the way, e.g. the LSTM of a cell)."""
        chain = _chain(self.layer, self.owner) or [self.layer]
        models = [i for i, item in enumerate(chain[:-1]) if isinstance(item, keras.Model)]
        return chain[models[-1] + 1] if models else chain[0]

    def describe(self) -> str:
        return f"weight '{self.name}' of layer '{self.layer.name}' ({type(self.layer).__name__})"


def _chain(root: keras.layers.Layer, owner: keras.layers.Layer) -> list | None:
    """The layers from `root` down to `owner` (both included), or None."""
    if root is owner:
        return [root]
    for child in root._flatten_layers(include_self=False, recursive=False):
        found = _chain(child, owner)
        if found:
            return [root] + found
    return None


def _own_variables(layer: keras.layers.Layer) -> list:
    return list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))


def _sublayers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    return list(layer._flatten_layers(include_self=True, recursive=True))


def _constraint_attribute(owner: keras.layers.Layer, variable: Any) -> str | None:
    """The owner's attribute that holds `variable`'s constraint and appears in its config."""
    short = variable.name
    candidates = [f"{short}_constraint"]
    if short.endswith("_kernel"):
        candidates.append(short[: -len("_kernel")] + "_constraint")  # recurrent_, depthwise_, pointwise_
    if short == "kernel":
        candidates.append("depthwise_constraint")  # DepthwiseConv: variable `kernel`
    try:
        config = owner.get_config()
    except NotImplementedError:
        config = {}
    for attribute in candidates:
        if attribute in config and hasattr(owner, attribute):
            if getattr(owner, attribute) is variable.constraint:
                return attribute
    return None


def _candidates(layer: keras.layers.Layer) -> list[tuple[str, keras.layers.Layer, Any]]:
    """(name, owner, variable) for every floating variable of `layer` and its sublayers."""
    found = []
    for owner in _sublayers(layer):
        for variable in _own_variables(owner):
            if np.dtype(keras.backend.standardize_dtype(variable.dtype)).kind == "f":
                found.append((owner, variable))
    paths = [variable.path.split("/") for _, variable in found]
    named = []
    for (owner, variable), parts in zip(found, paths):
        # The shortest trailing part of the path that no other variable of the layer shares.
        for k in range(1, len(parts) + 1):
            if sum(other[-k:] == parts[-k:] for other in paths) == 1:
                break
        named.append(("/".join(parts[-k:]), owner, variable))
    return named


def weight_names(layer: keras.layers.Layer) -> list[str]:
    """The names `resolve` accepts for a built `layer`: its floating weights with a constraint slot.

    Example:
        >>> weight_names(keras.layers.LSTM(4))  # after build
        ['kernel', 'recurrent_kernel', 'bias']
    """
    return [name for name, owner, variable in _candidates(layer) if _constraint_attribute(owner, variable)]


def check_built(layer: Any) -> None:
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(
            f"Expected a Keras layer; received {type(layer).__name__}. Pass the layer that owns the weight, "
            "e.g. `model.get_layer('dense')` or `self.dense` in a subclassed model."
        )
    if not layer.built:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is not built, so it has no weights to prune yet. "
            "Build it first: call the model on data, give it a `keras.Input`, or call `layer.build(input_shape)`."
        )


def resolve(layer: keras.layers.Layer, name: str) -> Target:
    """The `Target` named `name` in the built `layer`; raises naming the valid names otherwise."""
    check_built(layer)
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a weight name such as 'kernel'; received {type(name).__name__}.")
    candidates = _candidates(layer)
    valid = weight_names(layer)
    matches = [(owner, variable) for n, owner, variable in candidates if n == name]
    if not matches:
        # Also accept the trailing components of the variable's path, e.g. "lstm_cell/kernel".
        parts = name.split("/")
        matches = [
            (owner, variable) for _, owner, variable in candidates if variable.path.split("/")[-len(parts):] == parts
        ]
    if len(matches) != 1:
        problem = "is ambiguous" if matches else "does not exist"
        raise WeightNameError(
            f"Weight name '{name}' {problem} in layer '{layer.name}' ({type(layer).__name__}). "
            f"Valid names: {valid}."
        )
    owner, variable = matches[0]
    return Target(layer, name, owner, variable, _constraint_attribute(owner, variable))


def pruned_targets(layer: keras.layers.Layer) -> list[Target]:
    """Every weight of `layer` (and its sublayers, models included) that carries a `WeightMask`."""
    found, seen = [], set()
    for owner in _sublayers(layer):
        for variable in _own_variables(owner):
            if isinstance(variable.constraint, WeightMask) and id(variable) not in seen:
                seen.add(id(variable))
                found.append(Target(owner, variable.name, owner, variable, _constraint_attribute(owner, variable)))
    return found
