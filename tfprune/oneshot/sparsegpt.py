"""SparseGPT: prune a layer by solving its reconstruction `min ||X W - X W'||` with OBS-style updates.

Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot" (2023).
The Hessian of the layer's squared error, `H = X^T X`, is accumulated over the calibration batches. Input
columns are processed left to right in blocks: inside a block the prune mask is chosen from
`W^2 / [H^-1]_ii^2`, each pruned column's error is spread over the later columns of the block through the
upper Cholesky factor of `H^-1` (the OBS update), and the rest of the matrix receives the block's updates
lazily, in one matrix product.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 8)); w = rng.normal(size=(8, 3))
    >>> acc = HessianAccumulator(8); acc.update(x)
    >>> pruned = sparsegpt_prune(w, acc.hessian(), sparsity=0.5)
    >>> (pruned == 0).sum(axis=0)
    array([4, 4, 4])
"""

from __future__ import annotations

import numbers

import numpy as np

from tfprune.oneshot.selection import prune_lowest_m_of_n, prune_lowest_per_output, zeros_per_output


class HessianAccumulator:
    """Streams input rows `(samples, inputs)` and accumulates `X^T X` in float64.

    Example:
        >>> acc = HessianAccumulator(2); acc.update(np.array([[1.0, 2.0]])); acc.hessian()
        array([[1., 2.],
               [2., 4.]])
    """

    def __init__(self, inputs: int):
        self.sum_outer = np.zeros((inputs, inputs), np.float64)
        self.samples = 0

    def update(self, rows: np.ndarray) -> None:
        """Adds a batch of input rows `(samples, inputs)`."""
        rows = np.asarray(rows, np.float64)
        self.sum_outer += rows.T @ rows
        self.samples += rows.shape[0]

    def hessian(self) -> np.ndarray:
        """`X^T X / samples` over every row seen (the scale does not change SparseGPT's result)."""
        if self.samples == 0:
            raise ValueError("No calibration rows were recorded for this layer: the calibration data never reached it.")
        return self.sum_outer / self.samples


def check_sparsegpt_options(dampening: object, block_size: object, dtype: object) -> np.dtype:
    """Validates SparseGPT's options; returns the computation dtype.

    Example:
        >>> check_sparsegpt_options(0.01, 128, "float64")
        dtype('float64')
    """
    if isinstance(dampening, bool) or not isinstance(dampening, numbers.Real) or not 0.0 <= float(dampening) < 1.0:
        raise ValueError(f"`dampening` must be a number in [0, 1) (a fraction of the mean Hessian diagonal); "
                         f"received {dampening!r}. Example: dampening=0.01.")
    if isinstance(block_size, bool) or not isinstance(block_size, (numbers.Integral, np.integer)) or block_size < 1:
        raise ValueError(f"`block_size` must be a positive integer; received {block_size!r}. Example: block_size=128.")
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype("float32"), np.dtype("float64")):
        raise ValueError(f"`dtype` must be 'float32' or 'float64'; received {dtype!r}.")
    return resolved


def dampened_inverse_factor(hessian: np.ndarray, dampening: float = 0.01, dtype: object = np.float64) -> np.ndarray:
    """Upper Cholesky factor `U` of `(H + d I)^-1` (`U^T U = (H + d I)^-1`), `d = dampening * mean(diag H)`.

    Inputs never seen (zero diagonal) get a unit diagonal so that the matrix stays invertible.

    Example:
        >>> dampened_inverse_factor(np.diag([4.0, 1.0]), dampening=0.0)
        array([[0.5, 0. ],
               [0. , 1. ]])
    """
    h = np.array(hessian, dtype=dtype, copy=True)
    diagonal = np.diagonal(h).copy()
    dead = diagonal == 0
    diagonal[dead] = 1
    damp = dampening * float(np.mean(diagonal))
    np.fill_diagonal(h, diagonal + damp)
    try:
        inverse = np.linalg.inv(np.linalg.cholesky(h))  # L^-1, with H = L L^T
    except np.linalg.LinAlgError as err:
        raise ValueError(
            f"The dampened Hessian is not positive definite ({err}). Fix: raise `dampening` (now {dampening}) "
            "or compute in dtype='float64'."
        ) from err
    h_inv = inverse.T @ inverse
    h_inv = (h_inv + h_inv.T) / 2
    return np.linalg.cholesky(h_inv).T.astype(dtype, copy=False)


def _block_counts(inputs: int, block_size: int, sparsity: float) -> list[tuple[int, int, int]]:
    """(start, end, zeros per output) for every block; the counts add up to the layer's total."""
    blocks = []
    for start in range(0, inputs, block_size):
        end = min(start + block_size, inputs)
        blocks.append((start, end, zeros_per_output(end, sparsity) - zeros_per_output(start, sparsity)))
    return blocks


def sparsegpt_prune(
    weights: np.ndarray,
    hessian: np.ndarray,
    sparsity: float | None = None,
    m_by_n: tuple[int, int] | None = None,
    dampening: float = 0.01,
    block_size: int = 128,
    dtype: object = np.float32,
) -> np.ndarray:
    """SparseGPT on one layer: `weights` `(inputs, outputs)`, `hessian` `(inputs, inputs)` -> pruned weights.

    Every output gets exactly `round(inputs * sparsity)` zeros (selected block by block; each block's share
    is fixed in advance), or at least M zeros in every N consecutive inputs with `m_by_n=(M, N)`. The kept
    weights are updated to compensate. `block_size` must be a multiple of N for M-by-N.

    Example:
        >>> sparsegpt_prune(np.ones((4, 2)), np.eye(4), m_by_n=(2, 4)).astype(int).T
        array([[0, 0, 1, 1],
               [0, 0, 1, 1]])
    """
    dtype = check_sparsegpt_options(dampening, block_size, dtype)
    weights = np.asarray(weights)
    inputs = weights.shape[0]
    if np.shape(hessian) != (inputs, inputs):
        raise ValueError(f"`hessian` must have shape ({inputs}, {inputs}); received {np.shape(hessian)}.")
    if (sparsity is None) == (m_by_n is None):
        raise ValueError("Pass exactly one of `sparsity` and `m_by_n`.")
    if m_by_n is not None:
        m, n = m_by_n
        if inputs % n or block_size % n:
            raise ValueError(f"M-by-N with N={n} needs the inputs ({inputs}) and `block_size` ({block_size}) "
                             "to be multiples of N.")
    factor = dampened_inverse_factor(hessian, dampening, dtype)
    w = weights.T.astype(dtype, copy=True)  # (outputs, inputs): one row per output, columns processed in order
    for start, end, zeros in _block_counts(inputs, block_size, 0.0 if sparsity is None else sparsity):
        block = w[:, start:end].copy()
        block_factor = factor[start:end, start:end]
        diagonal = np.diagonal(block_factor)
        errors = np.zeros_like(block)
        prune = np.zeros(block.shape, bool)
        if m_by_n is None:
            prune = prune_lowest_per_output((block**2 / diagonal**2).T, zeros).T
        for i in range(end - start):
            if m_by_n is not None and i % n == 0:
                group = block[:, i:i + n] ** 2 / diagonal[i:i + n] ** 2
                prune[:, i:i + n] = prune_lowest_m_of_n(group.T, m, n).T
            column = block[:, i]
            error = np.where(prune[:, i], column, 0) / diagonal[i]
            block[:, i:] -= np.outer(error, block_factor[i, i:])
            block[prune[:, i], i] = 0
            errors[:, i] = error
        w[:, start:end] = block
        w[:, end:] -= errors @ factor[start:end, end:]
    return w.T.astype(weights.dtype)


def reconstruction_error(hessian: np.ndarray, weights: np.ndarray, pruned: np.ndarray) -> float:
    """Relative layer error `||X (W - W')||^2 / ||X W||^2`, computed from `H = X^T X` (any scale).

    Example:
        >>> reconstruction_error(np.eye(2), np.array([[1.0], [1.0]]), np.array([[1.0], [0.0]]))
        0.5
    """
    h = np.asarray(hessian, np.float64)
    delta = np.asarray(weights, np.float64) - np.asarray(pruned, np.float64)
    w = np.asarray(weights, np.float64)
    denominator = float(np.sum(w * (h @ w)))
    return float(np.sum(delta * (h @ delta))) / max(denominator, np.finfo(np.float64).tiny)
