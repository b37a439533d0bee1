"""tfprune: magnitude and structured pruning for Keras 3.

Magnitude pruning: `prune_low_magnitude`, the schedules, `UpdatePruningStep`, `strip_pruning`.
Structured pruning: `tfprune.structured` (`prune_filters`, `DependencyGraph`, ...).
Quantization (QAT, calibrated PTQ, full-integer TFLite): `tfprune.quantization`.
One-shot pruning from calibration data (magnitude, Wanda, SparseGPT): `tfprune.oneshot`.
In-place pruning of built layers, `torch.nn.utils.prune` style: `tfprune.functional`.
Per-layer knowledge: `tfprune.layers` (`register_layer` gives a custom layer every capability).
Export: `strip_checkpoint` and the `tfprune-strip` command.

Example:
    >>> import tfprune
    >>> pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.PolynomialDecay(0.0, 0.8, 0, 1000))
    >>> pruned.fit(x, y, callbacks=[tfprune.UpdatePruningStep()])
    >>> plain = tfprune.strip_pruning(pruned)
"""

from tfprune import (
    analysis,
    distill,
    export,
    functional,
    global_pruning,
    layers,
    m_by_n,
    masks,
    oneshot,
    quantization,
    sparsity,
    structured,
    summary,
)
from tfprune.callbacks import PruningSummaries, UpdatePruningStep, sparsity_report
from tfprune.export import TFCheckpointWriter, format_report, strip_checkpoint
from tfprune.global_pruning import GlobalPruningGroup, relink_global_pruning
from tfprune.hparams import ContribSchedule, PruningHParams, get_pruning_hparams
from tfprune.layers import LayerHandler, PrunableLayer, UnsupportedLayerError, register_layer
from tfprune.m_by_n import check_m_by_n, m_by_n_report
from tfprune.mask_rules import LayerMaskRule, MaskRule
from tfprune.masks import (
    block_magnitude_mask,
    global_magnitude_masks,
    m_by_n_mask,
    m_by_n_violations,
    magnitude_mask,
)
from tfprune.prune import collect_wrappers, prune_low_magnitude, prune_scope, strip_pruning
from tfprune.pruning_policy import PruneForLatencyOnXNNPack, PruningPolicy
from tfprune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfprune.sparsity import format_sparsity_table
from tfprune.structured import DependencyGraph, prune_filters
from tfprune.wrapper import PruneLowMagnitude

__version__ = "0.1.0"

__all__ = [
    "ConstantSparsity",
    "ContribSchedule",
    "DependencyGraph",
    "GlobalPruningGroup",
    "LayerHandler",
    "LayerMaskRule",
    "MaskRule",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneForLatencyOnXNNPack",
    "PruneLowMagnitude",
    "PruningHParams",
    "PruningPolicy",
    "PruningSchedule",
    "PruningSummaries",
    "TFCheckpointWriter",
    "UnsupportedLayerError",
    "UpdatePruningStep",
    "analysis",
    "block_magnitude_mask",
    "check_m_by_n",
    "collect_wrappers",
    "distill",
    "export",
    "format_report",
    "format_sparsity_table",
    "functional",
    "get_pruning_hparams",
    "global_magnitude_masks",
    "global_pruning",
    "layers",
    "m_by_n",
    "m_by_n_mask",
    "m_by_n_report",
    "m_by_n_violations",
    "magnitude_mask",
    "masks",
    "oneshot",
    "prune_filters",
    "prune_low_magnitude",
    "prune_scope",
    "quantization",
    "register_layer",
    "relink_global_pruning",
    "sparsity",
    "sparsity_report",
    "strip_checkpoint",
    "strip_pruning",
    "structured",
    "summary",
]
