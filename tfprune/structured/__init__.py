"""Structured (filter/channel) pruning for Keras 3 models.

Pipeline: `DependencyGraph` finds the groups of coupled channels, an `Importance` scores them,
`plan` picks what to remove, `rebuild` creates the smaller model. `prune_filters` runs all four.

Layers: `PrunedLayerNormalization` / `PrunedRMSNormalization` keep LayerNormalization exact once
channels are removed (`prune_filters(..., layer_norm="exact")`).

Latency-aware and automatic pruning: `sensitivity` (one group at a time), `LatencyTable` (measured
per-block latency in TFLite or TensorFlow, calibrated on whole pruned models), budgets in
`prune_filters(target_macs= | target_params= | target_latency=)` (a latency budget measured), `search_ratios` (evolution / bee colony over per-group channel counts) and
`recalibrate_batchnorm` (EagleEye's BN re-estimation).

Training-time helpers: `BNSparsity` (network slimming), `SoftFilterPruning`, `iterative_prune`,
and `compile_like` (a fresh optimizer for the pruned model).

Example:
    >>> from tfprune import structured
    >>> pruned, report = structured.prune_filters(model, pruning_ratio=0.5, importance="l1")
    >>> print(report)
"""

from tfprune.structured.graph import DependencyGraph, Group
from tfprune.layers import LayerHandler, PassThrough, PerChannel, Unsupported, supported_layer_classes
from tfprune.layers import register_layer as register_handler
from tfprune.structured.importance import (
    ActivationImportance,
    BNScaleImportance,
    FilterSketchImportance,
    FPGMImportance,
    Importance,
    MagnitudeImportance,
    RandomImportance,
    TaylorImportance,
    get_importance,
    register_importance,
)
from tfprune.structured import verify
from tfprune.structured.activations import record_activations
from tfprune.structured.finetune import compile_like
from tfprune.structured.fold import find_foldable, fold_batchnorm
from tfprune.structured.iterative import iterative_prune
from tfprune.layers.pruned_normalization import PrunedLayerNormalization, PrunedRMSNormalization
from tfprune.structured.planner import plan
from tfprune.structured.pruner import prune_filters, rebuild
from tfprune.structured.report import PruningReport
from tfprune.structured.slimming import BNSparsity, bn_l1_penalty, gamma_summary, remove_bn_sparsity
from tfprune.structured.soft import SoftFilterPruning, zero_units
from tfprune.structured.blocks import ResidualBranch, residual_branches
from tfprune.structured.budget import BudgetError, knapsack
from tfprune.structured.latency import LatencyFit, LatencyTable, LatencyTableError
from tfprune.structured.plans import Plan
from tfprune.structured.recalibrate import recalibrate_batchnorm
from tfprune.structured.search import search_ratios
from tfprune.structured.sensitivity import SensitivityResult, sensitivity

__all__ = [
    "ActivationImportance",
    "ResidualBranch",
    "residual_branches",
    "record_activations",
    "BudgetError",
    "LatencyFit",
    "LatencyTable",
    "LatencyTableError",
    "Plan",
    "SensitivityResult",
    "knapsack",
    "recalibrate_batchnorm",
    "search_ratios",
    "sensitivity",
    "PrunedLayerNormalization",
    "PrunedRMSNormalization",
    "BNScaleImportance",
    "BNSparsity",
    "SoftFilterPruning",
    "bn_l1_penalty",
    "compile_like",
    "find_foldable",
    "fold_batchnorm",
    "gamma_summary",
    "iterative_prune",
    "remove_bn_sparsity",
    "zero_units",
    "DependencyGraph",
    "FPGMImportance",
    "FilterSketchImportance",
    "Group",
    "Importance",
    "LayerHandler",
    "MagnitudeImportance",
    "PassThrough",
    "PerChannel",
    "PruningReport",
    "RandomImportance",
    "TaylorImportance",
    "Unsupported",
    "get_importance",
    "register_importance",
    "plan",
    "prune_filters",
    "rebuild",
    "register_handler",
    "supported_layer_classes",
    "verify",
]
