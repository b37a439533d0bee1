"""Which weights to prune from a score matrix: a fixed count per output, or M of every N inputs.

Weights are seen as a matrix `(inputs, outputs)`; each output column is a comparison group (as in Wanda).
These are pure numpy functions; True in a returned mask means "prune this weight".

    >>> scores = np.array([[3.0, 1.0], [1.0, 2.0], [2.0, 3.0], [0.5, 4.0]])
    >>> prune_lowest_per_output(scores, 2).astype(int)
    array([[0, 1],
           [1, 1],
           [0, 0],
           [1, 0]])
"""

from __future__ import annotations

import numbers

import numpy as np


def zeros_per_output(inputs: int, sparsity: float) -> int:
    """How many of an output's `inputs` weights `sparsity` prunes: round half up.

    Example:
        >>> zeros_per_output(10, 0.55)
        6
    """
    return int(np.floor(np.float64(inputs) * np.float64(sparsity) + 0.5))


def check_sparsity(sparsity: object) -> float:
    """`sparsity` as a float in [0, 1); raises ValueError otherwise.

    Example:
        >>> check_sparsity(0.5)
        0.5
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"`sparsity` must be a number in [0, 1); received {sparsity!r}. Example: sparsity=0.5.")
    return float(sparsity)


def check_m_by_n(pattern: object) -> tuple[int, int]:
    """`(M, N)`: at least M zeros in every N consecutive inputs, integers with 0 < M < N.

    Example:
        >>> check_m_by_n((2, 4))
        (2, 4)
    """
    ok = isinstance(pattern, (tuple, list)) and len(pattern) == 2 and all(
        isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in pattern
    )
    if not ok or not 0 < pattern[0] < pattern[1]:
        raise ValueError(
            "`sparsity_m_by_n` must be a pair of integers (M, N) with 0 < M < N: at least M zeros in every N "
            f"consecutive input weights; received {pattern!r}. Example: sparsity_m_by_n=(2, 4)."
        )
    return int(pattern[0]), int(pattern[1])


def prune_lowest_per_output(scores: np.ndarray, count: int) -> np.ndarray:
    """Mask of the `count` lowest scores of every column (ties: the lower input index is pruned first).

    Example:
        >>> prune_lowest_per_output(np.array([[1.0], [0.0], [1.0]]), 2).ravel()
        array([ True,  True, False])
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be a matrix (inputs, outputs); received shape {scores.shape}.")
    if not 0 <= count <= scores.shape[0]:
        raise ValueError(f"`count` must be in [0, {scores.shape[0]}]; received {count}.")
    order = np.argsort(scores, axis=0, kind="stable")
    mask = np.zeros(scores.shape, bool)
    np.put_along_axis(mask, order[:count], True, axis=0)
    return mask


def prune_lowest_m_of_n(scores: np.ndarray, m: int, n: int) -> np.ndarray:
    """Mask of the `m` lowest scores in every `n` consecutive inputs of every column.

    The number of inputs (rows) must be a multiple of `n`.

    Example:
        >>> prune_lowest_m_of_n(np.array([[4.0], [1.0], [3.0], [2.0]]), 2, 4).ravel()
        array([False,  True, False,  True])
    """
    scores = np.asarray(scores)
    inputs, outputs = scores.shape
    if inputs % n:
        raise ValueError(f"{inputs} inputs cannot be split into groups of {n}; M-by-N needs a multiple of N.")
    groups = scores.reshape(inputs // n, n, outputs)
    order = np.argsort(groups, axis=1, kind="stable")
    mask = np.zeros(groups.shape, bool)
    np.put_along_axis(mask, order[:, :m], True, axis=1)
    return mask.reshape(inputs, outputs)


def select(scores: np.ndarray, sparsity: float | None = None, m_by_n: tuple[int, int] | None = None) -> np.ndarray:
    """The prune mask for either a per-output `sparsity` or an `m_by_n` pattern.

    Example:
        >>> select(np.arange(8.0).reshape(4, 2), m_by_n=(1, 2)).astype(int)
        array([[1, 1],
               [0, 0],
               [1, 1],
               [0, 0]])
    """
    if (sparsity is None) == (m_by_n is None):
        raise ValueError("Pass exactly one of `sparsity` and `m_by_n`.")
    if m_by_n is not None:
        return prune_lowest_m_of_n(scores, *m_by_n)
    return prune_lowest_per_output(scores, zeros_per_output(np.shape(scores)[0], sparsity))
