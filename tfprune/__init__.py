"""tfprune: magnitude and structured pruning for Keras 3."""

from tfprune import analysis, distill, export, global_pruning, m_by_n, masks, structured, summary
from tfprune.callbacks import PruningSummaries, UpdatePruningStep, format_sparsity_table, sparsity_report
from tfprune.export import TFCheckpointWriter, format_report, strip_checkpoint
from tfprune.hparams import ContribSchedule, PruningHParams, get_pruning_hparams
from tfprune.prune import collect_wrappers, prune_low_magnitude, prune_scope, strip_pruning
from tfprune.registry import PrunableLayer, UnsupportedLayerError
from tfprune.global_pruning import GlobalPruningGroup, relink_global_pruning
from tfprune.m_by_n import check_m_by_n, m_by_n_report
from tfprune.masks import (
    block_magnitude_mask,
    global_magnitude_masks,
    m_by_n_mask,
    m_by_n_violations,
    magnitude_mask,
)
from tfprune.structured import DependencyGraph, prune_filters
from tfprune.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfprune.wrapper import PruneLowMagnitude

__version__ = "0.1.0"

__all__ = [
    "DependencyGraph",
    "GlobalPruningGroup",
    "global_pruning",
    "m_by_n",
    "m_by_n_report",
    "summary",
    "relink_global_pruning",
    "TFCheckpointWriter",
    "export",
    "format_report",
    "strip_checkpoint",
    "analysis",
    "distill",
    "block_magnitude_mask",
    "check_m_by_n",
    "global_magnitude_masks",
    "m_by_n_mask",
    "m_by_n_violations",
    "magnitude_mask",
    "prune_filters",
    "structured",
    "ConstantSparsity",
    "ContribSchedule",
    "PolynomialDecay",
    "PrunableLayer",
    "PruneLowMagnitude",
    "PruningHParams",
    "PruningSchedule",
    "PruningSummaries",
    "UnsupportedLayerError",
    "UpdatePruningStep",
    "collect_wrappers",
    "format_sparsity_table",
    "get_pruning_hparams",
    "masks",
    "prune_low_magnitude",
    "prune_scope",
    "sparsity_report",
    "strip_pruning",
]
