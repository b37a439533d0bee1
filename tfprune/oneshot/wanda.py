"""Wanda: score each weight by `|W_ij| * ||X_i||_2` (X_i: all calibration values of input i), prune per output.

Sun et al., "A Simple and Effective Pruning Approach for Large Language Models" (2023). One calibration
pass collects the squared norms of the input features; the kept weights are not changed.

    >>> acc = InputNormAccumulator(2)
    >>> acc.update(np.array([[3.0, 0.0], [4.0, 1.0]]))
    >>> acc.norms()
    array([5., 1.])
"""

from __future__ import annotations

import numpy as np

from tfprune.oneshot.selection import select


class InputNormAccumulator:
    """Streams rows `(samples, inputs)` and keeps the sum of squares of every input feature (float64).

    Example:
        >>> acc = InputNormAccumulator(3); acc.update(np.ones((4, 3))); acc.norms()
        array([2., 2., 2.])
    """

    def __init__(self, inputs: int):
        self.sum_squares = np.zeros(inputs, np.float64)
        self.samples = 0

    def update(self, rows: np.ndarray) -> None:
        """Adds a batch of input rows `(samples, inputs)`."""
        rows = np.asarray(rows, np.float64)
        self.sum_squares += np.einsum("ij,ij->j", rows, rows)
        self.samples += rows.shape[0]

    def norms(self) -> np.ndarray:
        """The L2 norm of every input feature over all rows seen."""
        return np.sqrt(self.sum_squares)


def wanda_scores(weights: np.ndarray, input_norms: np.ndarray) -> np.ndarray:
    """`|W_ij| * ||X_i||_2` for weights `(inputs, outputs)` and the per-input norms `(inputs,)`.

    Example:
        >>> wanda_scores(np.array([[1.0, -2.0], [3.0, 1.0]]), np.array([2.0, 0.5]))
        array([[2. , 4. ],
               [1.5, 0.5]])
    """
    weights = np.asarray(weights)
    norms = np.asarray(input_norms, np.float64)
    if norms.shape != (weights.shape[0],):
        raise ValueError(f"`input_norms` must have shape ({weights.shape[0]},); received {norms.shape}.")
    return np.abs(weights.astype(np.float64)) * norms[:, None]


def wanda_prune(
    weights: np.ndarray, input_norms: np.ndarray, sparsity: float | None = None, m_by_n: tuple[int, int] | None = None
) -> np.ndarray:
    """`weights` with the lowest Wanda scores of every output (or N-group) set to zero.

    Example:
        >>> wanda_prune(np.array([[1.0], [2.0]]), np.array([3.0, 1.0]), sparsity=0.5).ravel()
        array([1., 0.])
    """
    weights = np.asarray(weights)
    mask = select(wanda_scores(weights, input_norms), sparsity, m_by_n)
    return np.where(mask, np.zeros((), weights.dtype), weights)
