"""In-place functional pruning of built layers, in the style of `torch.nn.utils.prune`.

Each call masks one weight of a built layer where it is, in any model (Sequential, functional,
nested, subclassed): nothing is cloned or wrapped. The pruned entries are set to zero at once and
the weight's constraint becomes a `WeightMask`, which re-zeroes them after every optimizer update
(see `tfprune.functional.constraint`). `remove` bakes the mask in and restores the plain layer.

Example:
    >>> l1_unstructured(model.get_layer("dense"), "kernel", amount=0.3)
    >>> l1_unstructured(model.get_layer("dense"), "kernel", amount=0.5)  # 65% pruned now
    >>> remove(model.get_layer("dense"), "kernel")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfprune.functional.constraint import WeightMask
from tfprune.functional.methods import (
    CustomFromMask,
    Identity,
    L1Unstructured,
    LnStructured,
    PruningMethod,
    RandomStructured,
    RandomUnstructured,
    as_mask_array,
    check_amount,
    compose,
)
from tfprune.functional.targets import Target, check_built, pruned_targets, resolve

__all__ = [
    "identity",
    "random_unstructured",
    "l1_unstructured",
    "random_structured",
    "ln_structured",
    "global_unstructured",
    "custom_from_mask",
    "remove",
    "remove_all",
    "is_pruned",
    "get_mask",
    "prune_weight",
]


class SerializationError(ValueError):
    """The layer's config would not carry the mask, so it could not survive saving.

    Example:
        >>> try:
        ...     fp.l1_unstructured(layer_with_a_constraint_that_does_not_serialize, "kernel", amount=0.5)
        ... except fp.SerializationError as error:
        ...     print(error)
    """


# --------------------------------------------------------------------------
# The in-place machinery
# --------------------------------------------------------------------------


def _values(variable: Any) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable)


def _current_mask(target: Target) -> np.ndarray:
    constraint = target.mask_constraint
    if constraint is None:
        return np.ones(tuple(target.variable.shape), bool)
    return constraint.mask_array()


def _scores(target: Target, importance_scores: Any) -> np.ndarray:
    """The values a method ranks: the weight (zero where pruned) or the user's importance scores."""
    shape = tuple(target.variable.shape)
    if importance_scores is None:
        return _values(target.variable).astype(np.float64)
    values = np.asarray(importance_scores.numpy() if hasattr(importance_scores, "numpy") else importance_scores)
    if values.dtype.kind not in "biuf":
        raise TypeError(
            f"`importance_scores` for {target.describe()} must be a real numeric array; received dtype "
            f"{values.dtype}."
        )
    if tuple(values.shape) != shape:
        raise ValueError(
            f"`importance_scores` for {target.describe()} has shape {tuple(values.shape)}; it must have the "
            f"weight's shape {shape}."
        )
    return values.astype(np.float64)


def _serialized_masks(layer: keras.layers.Layer) -> int:
    """How many `WeightMask`s `layer.get_config()` serializes (-1 if the layer has no config)."""
    try:
        text = json.dumps(layer.get_config(), default=str)
    except NotImplementedError:
        return -1
    return text.count('"tfprune>WeightMask"')


def _attach(target: Target, keep: np.ndarray) -> WeightMask:
    """Gives an unmasked weight a `WeightMask` (the old constraint inside); raises, unchanged, if
    the layer's config would not carry it."""
    variable, owner = target.variable, target.owner
    inner = variable.constraint
    constraint = WeightMask(keep, inner=inner, dtype=keras.backend.standardize_dtype(variable.dtype))
    how = (
        "For a custom layer: accept a `<weight>_constraint` argument, pass it to `add_weight(constraint=...)`, "
        "keep it as an attribute of that name and return it from `get_config()`."
    )
    if target.attribute is None:
        raise SerializationError(
            f"{target.describe()} has no constraint argument in its layer's config, so a mask could not be "
            f"saved with the model. {how}"
        )
    holder = target.config_layer
    before = _serialized_masks(holder)
    setattr(owner, target.attribute, constraint)
    variable.constraint = constraint
    if before < 0 or _serialized_masks(holder) != before + 1:
        setattr(owner, target.attribute, inner)
        variable.constraint = inner
        raise SerializationError(
            f"The config of layer '{holder.name}' ({type(holder).__name__}) does not save the "
            f"constraint of {target.describe()} (it rebuilds that weight's owner '{owner.name}' on its own), "
            f"so a mask could not be saved with the model. {how}"
        )
    return constraint


def _plan(target: Target, method: PruningMethod, importance_scores: Any) -> np.ndarray:
    return compose(method, _scores(target, importance_scores), _current_mask(target))


def _commit(target: Target, keep: np.ndarray) -> None:
    constraint = target.mask_constraint
    if constraint is None:
        constraint = _attach(target, keep)
    else:
        constraint.mask.assign(keep.astype(constraint.mask.dtype))
    variable = target.variable
    variable.assign(keras.ops.multiply(variable, keras.ops.cast(constraint.mask, variable.dtype)))


def _check_attachable(target: Target) -> None:
    """Raises before anything changes if a first mask could not be saved with this weight."""
    if target.mask_constraint is None:
        probe = _attach(target, np.ones(tuple(target.variable.shape), bool))
        setattr(target.owner, target.attribute, probe.inner)
        target.variable.constraint = probe.inner


def prune_weight(
    layer: keras.layers.Layer, name: str, method: PruningMethod, importance_scores: Any = None
) -> keras.layers.Layer:
    """Prunes weight `name` of the built `layer` in place with `method`, on top of any earlier mask.

    Everything is validated and the new mask computed before the layer changes. Returns `layer`.

    Example:
        >>> prune_weight(layer, "kernel", L1Unstructured(0.5))
    """
    target = resolve(layer, name)
    keep = _plan(target, method, importance_scores)
    _commit(target, keep)  # a first mask is attached (or refused, unchanged) before the weight is zeroed
    return layer


# --------------------------------------------------------------------------
# torch.nn.utils.prune-style functions
# --------------------------------------------------------------------------


def identity(layer: keras.layers.Layer, name: str) -> keras.layers.Layer:
    """Adds an all-ones mask to weight `name` (nothing pruned): marks it pruned, e.g. so that a
    subclassed model's `build` has the slot a saved mask loads into.

    Example:
        >>> identity(model.get_layer("dense"), "kernel")
    """
    return prune_weight(layer, name, Identity())


def random_unstructured(
    layer: keras.layers.Layer, name: str, amount: int | float, seed: int | None = None
) -> keras.layers.Layer:
    """Prunes `amount` (fraction in [0, 1] or int count) of the still-unpruned entries at random.

    Example:
        >>> random_unstructured(layer, "kernel", amount=0.3, seed=0)
    """
    return prune_weight(layer, name, RandomUnstructured(amount, seed=seed))


def l1_unstructured(
    layer: keras.layers.Layer, name: str, amount: int | float, importance_scores: Any = None
) -> keras.layers.Layer:
    """Prunes `amount` of the still-unpruned entries with the smallest |value| (or |importance score|).

    Ties: the lower flat index is pruned first. A fraction prunes `round(n * amount)` (half to even).

    Example:
        >>> l1_unstructured(layer, "kernel", amount=0.5)
    """
    return prune_weight(layer, name, L1Unstructured(amount), importance_scores=importance_scores)


def random_structured(
    layer: keras.layers.Layer, name: str, amount: int | float, axis: int = -1, seed: int | None = None
) -> keras.layers.Layer:
    """Zeroes `amount` of the still-unpruned slices along `axis`, chosen at random.

    Example:
        >>> random_structured(conv, "kernel", amount=0.25, axis=-1, seed=0)  # a quarter of the filters
    """
    return prune_weight(layer, name, RandomStructured(amount, axis=axis, seed=seed))


def ln_structured(
    layer: keras.layers.Layer,
    name: str,
    amount: int | float,
    n: Any,
    axis: int = -1,
    importance_scores: Any = None,
) -> keras.layers.Layer:
    """Zeroes `amount` of the still-unpruned slices along `axis` with the smallest Ln norm.

    `axis=-1` is the output channels of Keras kernels (Dense units, Conv filters). The slices stay
    in the weight as zeros; `tfprune.structured.prune_filters` removes channels physically.

    Example:
        >>> ln_structured(conv, "kernel", amount=0.5, n=2, axis=-1)
    """
    return prune_weight(layer, name, LnStructured(amount, n=n, axis=axis), importance_scores=importance_scores)


def custom_from_mask(layer: keras.layers.Layer, name: str, mask: Any) -> keras.layers.Layer:
    """Prunes weight `name` where `mask` (0/1, the weight's shape; bool, int or float) is 0.

    Example:
        >>> custom_from_mask(layer, "bias", mask=np.array([1, 0, 1]))
    """
    target = resolve(layer, name)
    as_mask_array(mask, tuple(target.variable.shape))
    return prune_weight(layer, name, CustomFromMask(mask))


def global_unstructured(
    pairs: Sequence[tuple[keras.layers.Layer, str]],
    pruning_method: type[PruningMethod],
    amount: int | float,
    importance_scores: dict | None = None,
    **kwargs: Any,
) -> None:
    """Prunes `amount` of all still-unpruned entries of several weights together, by one ranking.

    `pruning_method` is an unstructured `PruningMethod` class (`L1Unstructured`, `RandomUnstructured`
    or your own), built as `pruning_method(amount=amount, **kwargs)` and applied to the still-unpruned
    entries of all weights concatenated in `pairs` order (ties go to the earlier weight, then the
    lower flat index). `importance_scores` maps `(layer, name)` to scores replacing that weight's values.

    Example:
        >>> global_unstructured([(conv, "kernel"), (dense, "kernel")], L1Unstructured, amount=0.8)
    """
    if not isinstance(pairs, Sequence) or isinstance(pairs, (str, bytes)) or not pairs:
        raise TypeError("`pairs` must be a non-empty list of (layer, weight_name) tuples, e.g. [(dense, 'kernel')].")
    if not (isinstance(pruning_method, type) and issubclass(pruning_method, PruningMethod)):
        raise TypeError(
            "`pruning_method` must be a PruningMethod class such as tfprune.functional.L1Unstructured; "
            f"received {pruning_method!r}."
        )
    if getattr(pruning_method, "pruning_type", None) != "unstructured":
        raise TypeError(
            f"global_unstructured needs an 'unstructured' pruning method; {pruning_method.__name__} is "
            f"{getattr(pruning_method, 'pruning_type', None)!r}."
        )
    check_amount(amount)
    method = pruning_method(amount=amount, **kwargs)
    scores_by_pair = dict(importance_scores or {})
    targets, seen = [], set()
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"Each entry of `pairs` must be a (layer, weight_name) tuple; received {pair!r}.")
        target = resolve(*pair)
        if id(target.variable) in seen:
            raise ValueError(f"{target.describe()} appears twice in `pairs`; list each weight once.")
        seen.add(id(target.variable))
        targets.append(target)
    unknown = [key for key in scores_by_pair if not any(key[0] is t.layer and key[1] == t.name for t in targets)]
    if unknown:
        raise ValueError(f"`importance_scores` has keys {unknown} that are not in `pairs`.")
    masks = [_current_mask(t) for t in targets]
    scores = [
        _scores(t, next((v for k, v in scores_by_pair.items() if k[0] is t.layer and k[1] == t.name), None))
        for t in targets
    ]
    alive = np.concatenate([s[m] for s, m in zip(scores, masks)])
    keep_alive = compose(method, alive, np.ones(alive.size, bool))
    new_masks, start = [], 0
    for mask in masks:
        new = mask.copy()
        count = int(mask.sum())
        new[mask] = keep_alive[start : start + count]
        start += count
        new_masks.append(new)
    for target in targets:
        _check_attachable(target)
    for target, keep in zip(targets, new_masks):
        _commit(target, keep)


def remove(layer: keras.layers.Layer, name: str) -> keras.layers.Layer:
    """Makes the pruning of weight `name` permanent: the zeros stay in the weight, the mask and its
    constraint go (the weight's earlier constraint, if any, comes back). Training may then change
    the zeros like any other entry.

    Example:
        >>> remove(layer, "kernel")
    """
    target = resolve(layer, name)
    if target.mask_constraint is None:
        raise ValueError(
            f"{target.describe()} is not pruned, so there is nothing to remove. Prune it first (e.g. "
            "tfprune.functional.l1_unstructured), or check tfprune.functional.is_pruned(layer)."
        )
    _remove_target(target)
    return layer


def _remove_target(target: Target) -> None:
    constraint = target.mask_constraint
    variable = target.variable
    variable.assign(keras.ops.multiply(variable, keras.ops.cast(constraint.mask, variable.dtype)))
    # A train step traced while the mask was attached still calls it: all ones makes that a no-op.
    constraint.mask.assign(np.ones(tuple(constraint.mask.shape), constraint.mask.dtype))
    if target.attribute is not None:
        setattr(target.owner, target.attribute, constraint.inner)
    variable.constraint = constraint.inner


def remove_all(model: keras.layers.Layer) -> list[str]:
    """`remove` for every pruned weight in a layer or model; returns their paths.

    Example:
        >>> remove_all(model)   # e.g. before saving a model that must load without tfprune
        ['dense/kernel', 'conv2d/kernel']
    """
    check_built(model)
    removed = []
    for target in pruned_targets(model):
        _remove_target(target)
        removed.append(target.variable.path)
    return removed


def is_pruned(layer: keras.layers.Layer) -> bool:
    """True if any weight of `layer` (or of its sublayers, e.g. a whole model) carries a mask.

    Example:
        >>> is_pruned(model)
        True
    """
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"Expected a Keras layer or model; received {type(layer).__name__}.")
    return bool(pruned_targets(layer))


def get_mask(layer: keras.layers.Layer, name: str) -> np.ndarray:
    """The current 0/1 mask of weight `name` (float, the weight's dtype); all ones if not pruned.

    Example:
        >>> get_mask(layer, "kernel").mean()   # fraction kept
    """
    target = resolve(layer, name)
    return _current_mask(target).astype(keras.backend.standardize_dtype(target.variable.dtype))
