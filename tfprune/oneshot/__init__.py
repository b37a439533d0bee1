"""One-shot pruning without retraining, from calibration data: magnitude, Wanda and SparseGPT.

`prune(model, calibration_data, method=..., sparsity=0.5)` returns a new model whose supported layers
(Dense, EinsumDense, the MultiHeadAttention projections, Conv1D/Conv2D) have exactly
`round(inputs * sparsity)` zeros per output, or at least M zeros in every N consecutive inputs with
`sparsity_m_by_n=(M, N)`. The math is in small numpy functions (`wanda_prune`, `sparsegpt_prune`, ...).

Example:
    >>> pruned = tfprune.oneshot.prune(model, x_train[:256], method="sparsegpt", sparsity=0.5)
"""

from __future__ import annotations

from typing import Any, Sequence

import keras

from tfprune.oneshot.calibration import CalibrationSource
from tfprune.oneshot.driver import METHODS, LayerReport, prune_with_report
from tfprune.oneshot.layers import UnsupportedOneShotLayer, linear_view
from tfprune.oneshot.magnitude import magnitude_prune
from tfprune.oneshot.selection import prune_lowest_m_of_n, prune_lowest_per_output
from tfprune.oneshot.sparsegpt import HessianAccumulator, reconstruction_error, sparsegpt_prune
from tfprune.oneshot.wanda import InputNormAccumulator, wanda_prune, wanda_scores


def prune(
    model: keras.Model,
    calibration_data: Any = None,
    method: str = "sparsegpt",
    sparsity: float | None = None,
    sparsity_m_by_n: tuple[int, int] | None = None,
    layers: Sequence[str] | None = None,
    batch_size: int = 32,
    sequential: bool = True,
    dampening: float = 0.01,
    block_size: int = 128,
    dtype: str = "float32",
    verbose: bool = True,
) -> keras.Model:
    """A pruned copy of a Sequential/functional `model`; the input model is never modified.

    Args:
        model: a built Sequential or functional model (nested ones included).
        calibration_data: input batches (see `CalibrationSource`): arrays, `(x, y)` arrays, a batched
            `tf.data.Dataset`, a callable returning an iterator, or a generator. Not needed for magnitude.
        method: 'magnitude' (|W|), 'wanda' (|W| * input norm) or 'sparsegpt' (OBS reconstruction).
        sparsity: fraction of every output's input weights set to zero, in [0, 1).
        sparsity_m_by_n: `(M, N)` instead: at least M zeros in every N consecutive input weights (2:4).
        layers: names of the layers to prune (a MultiHeadAttention or nested model name selects all its
            projections/layers; 'mha/query' one of them). Default: every supported layer; with M-by-N,
            layers whose input width is not a multiple of N are then skipped (reported).
        batch_size: batch size used to split array calibration data.
        sequential: each layer sees inputs computed by the already pruned earlier layers (one calibration
            pass per layer, or per query/key/value group). False: one pass over the dense model for all.
        dampening: SparseGPT: fraction of the mean Hessian diagonal added to the diagonal.
        block_size: SparseGPT: input columns pruned per block (lazy updates of the rest).
        dtype: SparseGPT's computation dtype, 'float32' or 'float64'.
        verbose: print one progress line per calibration pass and per layer.

    Example:
        >>> pruned = prune(model, x_train[:256], method="wanda", sparsity_m_by_n=(2, 4))
    """
    pruned, _ = prune_with_report(model, calibration_data, method, sparsity, sparsity_m_by_n, layers, batch_size,
                                  sequential, dampening, block_size, dtype, verbose)
    return pruned


__all__ = [
    "METHODS", "CalibrationSource", "HessianAccumulator", "InputNormAccumulator", "LayerReport",
    "UnsupportedOneShotLayer", "linear_view", "magnitude_prune", "prune", "prune_lowest_m_of_n",
    "prune_lowest_per_output", "prune_with_report", "reconstruction_error", "sparsegpt_prune", "wanda_prune",
    "wanda_scores",
]
