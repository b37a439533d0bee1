"""Pruning criteria: `PruningMethod` and the built-in methods, pure numpy-in / numpy-out.

A method's `compute_mask(weight, default_mask)` returns a 0/1 array of `weight`'s shape: which
entries to keep. When a weight is pruned again, `compose` (PyTorch's `PruningContainer` rule)
hands the method only what is still unpruned:

* `"unstructured"`: the still-unpruned entries, as a 1-D array in flat (row-major) order;
* `"structured"`: the slices along the method's `axis` that still hold an unpruned entry;
* `"global"`: the whole weight and its current mask.

The method's `amount` is therefore taken from what is left: a second `L1Unstructured(0.5)` on a
weight already 50% pruned ends at 75%. Entries already pruned stay pruned whatever a method returns.

Selection uses tfprune's exact mask engine (`tfprune.masks.magnitude_mask`): a fraction prunes
`round(n * amount)` entries (half to even), an integer prunes exactly that many, and among equal
scores the lower flat index (the lower slice index, for structured methods) is pruned first.

Example:
    >>> L1Unstructured(0.5).compute_mask(np.array([0.3, -0.1, 0.2, 0.4]), np.ones(4))
    array([1., 0., 0., 1.], dtype=float32)
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import tensorflow as tf

from tfprune import masks as mask_lib

__all__ = [
    "PruningMethod",
    "Identity",
    "RandomUnstructured",
    "L1Unstructured",
    "RandomStructured",
    "LnStructured",
    "CustomFromMask",
    "compose",
    "as_mask_array",
    "pruning_count",
]

PRUNING_TYPES = ("unstructured", "structured", "global")


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def check_amount(amount: Any) -> int | float:
    """An integer count >= 0 or a fraction in [0, 1]; raises otherwise."""
    if isinstance(amount, bool) or not isinstance(amount, (numbers.Real, np.number)):
        raise TypeError(
            f"`amount` must be an int (how many to prune) or a float fraction in [0, 1]; received "
            f"{type(amount).__name__} {amount!r}. Example: amount=0.3 or amount=10."
        )
    if isinstance(amount, (numbers.Integral, np.integer)):
        if amount < 0:
            raise ValueError(f"`amount` must be >= 0 when it is a count; received {amount}.")
        return int(amount)
    value = float(amount)
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"`amount` must be in [0, 1] when it is a fraction; received {amount!r}. "
            "Pass e.g. 0.3 to prune 30%, or an int to prune that many."
        )
    return value


def pruning_count(amount: int | float, size: int, what: str = "entries") -> int:
    """How many of `size` items `amount` prunes; an int larger than `size` raises.

    Example:
        >>> pruning_count(0.25, 10)  # 2.5 rounds to even
        2
    """
    if isinstance(amount, int):
        if amount > size:
            raise ValueError(
                f"`amount`={amount} asks to prune more {what} than the {size} that can still be pruned. "
                f"Pass an int <= {size} or a fraction in [0, 1]."
            )
        return amount
    return int(mask_lib.num_to_prune(size, amount))


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (numbers.Integral, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be None or an int >= 0; received {seed!r}.")
    return int(seed)


def _check_norm(n: Any) -> float:
    if n == "fro":
        return 2.0
    if isinstance(n, bool) or not isinstance(n, (numbers.Real, np.number)) or np.isnan(n) or (n < 0 and n != -np.inf):
        raise ValueError(
            f"`n` must be a norm order: a number >= 0, np.inf, -np.inf or 'fro'; received {n!r}. Example: n=2."
        )
    return float(n)


def as_mask_array(mask: Any, shape: tuple[int, ...], what: str = "mask") -> np.ndarray:
    """Validates a 0/1 mask of `shape` (bool, integer or floating) and returns it as bool."""
    try:
        values = np.asarray(mask.numpy() if hasattr(mask, "numpy") else mask)
    except Exception:  # noqa: BLE001 - anything array-like fails here the same way
        values = np.asarray(mask, dtype=object)
    if values.dtype.kind not in "biuf":
        raise TypeError(
            f"The {what} must be a bool or real numeric array of 0s and 1s; received dtype {values.dtype}. "
            "Pass e.g. `weight != 0` or a float array of 0.0/1.0."
        )
    if tuple(values.shape) != tuple(shape):
        raise ValueError(
            f"The {what} has shape {tuple(values.shape)} but the weight has shape {tuple(shape)}; "
            "pass a mask of the weight's shape."
        )
    if values.dtype.kind != "b" and not np.all((values == 0) | (values == 1)):
        raise ValueError(f"The {what} must hold only 0 and 1 (1 keeps, 0 prunes); it holds other values.")
    return values.astype(bool)


def _normalize_axis(axis: Any, rank: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (numbers.Integral, np.integer)):
        raise TypeError(f"`axis` must be an int; received {axis!r}.")
    if rank == 0 or not -rank <= axis < rank:
        raise ValueError(
            f"`axis`={axis} is out of range for a weight of rank {rank}; pass an axis in [{-rank}, {rank}) "
            "(e.g. -1, the output channels of a Keras kernel)."
        )
    return int(axis) % rank


# --------------------------------------------------------------------------
# Selection through the mask engine
# --------------------------------------------------------------------------


def keep_largest(scores: np.ndarray, count: int) -> np.ndarray:
    """Bool keep-mask of `scores`' shape pruning exactly `count` smallest |scores|.

    Ties: the lower flat index is pruned first (tfprune.masks' rule).
    """
    size = scores.size
    if count <= 0 or size == 0:
        return np.ones(scores.shape, bool)
    values = np.asarray(scores, np.float64)
    # The engine prunes round(n * s): with s = count / n that is exactly `count` (float64).
    mask, _ = mask_lib.magnitude_mask(tf.constant(values.astype(np.float32)), count / size)
    keep = mask.numpy().astype(bool)
    if int(size - keep.sum()) != count:  # pragma: no cover - guards the engine's contract
        raise AssertionError(f"mask engine pruned {size - keep.sum()} instead of {count}")
    return keep


def _slice_view(t: np.ndarray, axis: int) -> np.ndarray:
    """2-D view: one row per slice along `axis` (also when there are no slices)."""
    moved = np.moveaxis(t, axis, 0)
    return moved.reshape(moved.shape[0], int(np.prod(moved.shape[1:], dtype=np.int64)))


def _expand_slices(keep_slices: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(keep_slices.reshape(view), shape)


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------


class PruningMethod:
    """Base class of pruning criteria; subclass it for your own.

    Set `pruning_type` to `"unstructured"`, `"structured"` (then also set `self.axis`) or `"global"`
    and implement `compute_mask(weight, default_mask)`, which returns a 0/1 array of `weight`'s shape
    (numpy or tensor). `weight` is what is still unpruned (see the module docstring); when
    importance scores are given, they are passed instead of the weight's values.

    Example:
        >>> class KeepPositive(PruningMethod):
        ...     pruning_type = "unstructured"
        ...     def compute_mask(self, weight, default_mask):
        ...         return default_mask * (weight > 0)
        >>> tfprune.functional.prune_weight(layer, "kernel", KeepPositive())
    """

    pruning_type: str = "unstructured"

    def compute_mask(self, weight: np.ndarray, default_mask: np.ndarray) -> Any:
        """Returns the keep-mask (1 keeps, 0 prunes) for `weight`, given the current `default_mask`."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_mask(weight, default_mask).")


class Identity(PruningMethod):
    """Keeps every entry: creates the mask (all ones) without pruning anything.

    Example:
        >>> Identity().compute_mask(np.ones(3), np.ones(3))
        array([1., 1., 1.])
    """

    pruning_type = "unstructured"

    def compute_mask(self, weight: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        return np.asarray(default_mask)


class L1Unstructured(PruningMethod):
    """Prunes the `amount` entries of smallest magnitude.

    Example:
        >>> L1Unstructured(2).compute_mask(np.array([3.0, -1.0, 2.0, 1.0]), np.ones(4))
        array([1., 0., 1., 0.], dtype=float32)
    """

    pruning_type = "unstructured"

    def __init__(self, amount: int | float):
        self.amount = check_amount(amount)

    def compute_mask(self, weight: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        count = pruning_count(self.amount, weight.size)
        keep = keep_largest(np.abs(weight), count)
        return (np.asarray(default_mask) * keep).astype(np.float32)


class RandomUnstructured(PruningMethod):
    """Prunes `amount` entries chosen uniformly at random; reproducible with `seed`.

    Example:
        >>> int(RandomUnstructured(3, seed=0).compute_mask(np.ones(10), np.ones(10)).sum())
        7
    """

    pruning_type = "unstructured"

    def __init__(self, amount: int | float, seed: int | None = None):
        self.amount = check_amount(amount)
        self.seed = _check_seed(seed)

    def compute_mask(self, weight: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        count = pruning_count(self.amount, weight.size)
        keep = keep_largest(_rng(self.seed).random(weight.shape), count)
        return (np.asarray(default_mask) * keep).astype(np.float32)


class LnStructured(PruningMethod):
    """Prunes the `amount` slices along `axis` with the smallest Ln norm (`n`: order, e.g. 1, 2, np.inf).

    A slice is `weight.take(i, axis)`: with `axis=-1` a Dense kernel's output units or a Conv2D
    kernel's filters. Ties: the lower slice index is pruned first.

    Example:
        >>> LnStructured(1, n=2, axis=-1).compute_mask(np.array([[3.0, 0.1], [4.0, 0.2]]), np.ones((2, 2)))
        array([[1., 0.],
               [1., 0.]], dtype=float32)
    """

    pruning_type = "structured"

    def __init__(self, amount: int | float, n: Any, axis: int = -1):
        self.amount = check_amount(amount)
        self.n = _check_norm(n)
        self.axis = axis

    def compute_mask(self, weight: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        weight = np.asarray(weight)
        axis = _normalize_axis(self.axis, weight.ndim)
        slices = weight.shape[axis]
        count = pruning_count(self.amount, slices, what="slices")
        norms = np.linalg.norm(_slice_view(weight.astype(np.float64), axis), ord=self.n, axis=1)
        keep = _expand_slices(keep_largest(norms, count), weight.shape, axis)
        return (np.asarray(default_mask) * keep).astype(np.float32)


class RandomStructured(PruningMethod):
    """Prunes `amount` slices along `axis` chosen uniformly at random; reproducible with `seed`.

    Example:
        >>> RandomStructured(1, axis=0, seed=0).compute_mask(np.ones((2, 3)), np.ones((2, 3))).sum()
        3.0
    """

    pruning_type = "structured"

    def __init__(self, amount: int | float, axis: int = -1, seed: int | None = None):
        self.amount = check_amount(amount)
        self.axis = axis
        self.seed = _check_seed(seed)

    def compute_mask(self, weight: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        weight = np.asarray(weight)
        axis = _normalize_axis(self.axis, weight.ndim)
        slices = weight.shape[axis]
        count = pruning_count(self.amount, slices, what="slices")
        keep = _expand_slices(keep_largest(_rng(self.seed).random(slices), count), weight.shape, axis)
        return (np.asarray(default_mask) * keep).astype(np.float32)


class CustomFromMask(PruningMethod):
    """Prunes where the given 0/1 `mask` is 0 (on top of what is already pruned).

    Example:
        >>> CustomFromMask(np.array([1, 0, 1])).compute_mask(np.ones(3), np.ones(3))
        array([1., 0., 1.], dtype=float32)
    """

    pruning_type = "global"

    def __init__(self, mask: Any):
        self.mask = mask

    def compute_mask(self, weight: np.ndarray, default_mask: np.ndarray) -> np.ndarray:
        keep = as_mask_array(self.mask, np.shape(weight))
        return (np.asarray(default_mask) * keep).astype(np.float32)


# --------------------------------------------------------------------------
# Composition (PyTorch's PruningContainer rule)
# --------------------------------------------------------------------------


def _call_method(method: PruningMethod, scores: np.ndarray, default: np.ndarray) -> np.ndarray:
    result = method.compute_mask(scores, default.astype(np.float32))
    return as_mask_array(result, scores.shape, what=f"mask returned by {type(method).__name__}.compute_mask")


def compose(method: PruningMethod, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The new bool keep-mask after applying `method` on top of the current bool `mask`.

    `scores` are the weight's values (zero where pruned) or the user's importance scores.

    Example:
        >>> compose(L1Unstructured(0.5), np.array([4., 0., 0., 1., 2., 3.]), np.array([1, 0, 0, 1, 1, 1], bool))
        array([ True, False, False, False, False,  True])
    """
    if not isinstance(method, PruningMethod):
        raise TypeError(
            f"Expected a tfprune.functional.PruningMethod; received {type(method).__name__}. "
            "Subclass PruningMethod and implement compute_mask(weight, default_mask)."
        )
    kind = getattr(method, "pruning_type", None)
    new = mask.copy()
    if kind == "unstructured":
        new[mask] = _call_method(method, scores[mask], np.ones(int(mask.sum()), bool))
    elif kind == "structured":
        if not hasattr(method, "axis"):
            raise AttributeError(f"{type(method).__name__} is structured and needs an `axis` attribute.")
        axis = _normalize_axis(method.axis, scores.ndim)
        alive = _slice_view(mask, axis).any(axis=1)
        index = (slice(None),) * axis + (alive,)
        new[index] = _call_method(method, scores[index], mask[index])
    elif kind == "global":
        new = _call_method(method, scores, mask)
    else:
        raise ValueError(
            f"{type(method).__name__}.pruning_type is {kind!r}; it must be one of {list(PRUNING_TYPES)}."
        )
    return np.logical_and(new, mask)
