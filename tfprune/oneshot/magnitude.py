"""Magnitude one-shot pruning: the smallest |W| of every output (or of every N-group) become zero.

    >>> w = np.array([[0.1, -2.0], [-0.5, 0.2]])
    >>> magnitude_prune(w, sparsity=0.5)
    array([[ 0. , -2. ],
           [-0.5,  0. ]])
"""

from __future__ import annotations

import numpy as np

from tfprune.oneshot.selection import select


def magnitude_prune(
    weights: np.ndarray, sparsity: float | None = None, m_by_n: tuple[int, int] | None = None
) -> np.ndarray:
    """`weights` `(inputs, outputs)` with the lowest-magnitude entries of each output set to zero.

    Example:
        >>> magnitude_prune(np.array([[1.0], [-3.0], [2.0], [0.5]]), m_by_n=(2, 4)).ravel()
        array([ 0., -3.,  2.,  0.])
    """
    weights = np.asarray(weights)
    return np.where(select(np.abs(weights), sparsity, m_by_n), np.zeros((), weights.dtype), weights)
