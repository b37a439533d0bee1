"""prune_filters: dependency graph -> importance -> plan -> a new, smaller Keras model.

The new model is built with `keras.models.clone_model` (nested models included) from edited layer
configs, then receives sliced copies of the original weights. It is a plain Keras model: it saves
as `.keras` and loads without custom objects. It is not compiled.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Iterable, Sequence

import keras
import numpy as np

from tfprune.structured.blocks import ResidualBranch, removal_call_function, residual_branches
from tfprune.structured.graph import DependencyGraph
from tfprune.structured.importance import Importance, get_importance
from tfprune.structured.planner import apply_counts, plan, score_groups
from tfprune.structured.report import GroupReport, LayerReport, PruningReport
from tfprune.keras_graph import copy_layer, iter_layers, layer_config


def _validate(pruning_ratio, max_pruning_ratio, round_to, pruning_ratio_dict) -> None:
    if not isinstance(pruning_ratio, (int, float)) or not 0 <= pruning_ratio < 1:
        raise ValueError(f"pruning_ratio must be a number in [0, 1), received {pruning_ratio!r}. Fix: e.g. 0.5.")
    if not isinstance(max_pruning_ratio, (int, float)) or not 0 < max_pruning_ratio <= 1:
        raise ValueError(f"max_pruning_ratio must be in (0, 1], received {max_pruning_ratio!r}. Fix: e.g. 0.9.")
    if round_to is not None and (not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1):
        raise ValueError(f"round_to must be a positive int or None, received {round_to!r}. Fix: e.g. 8.")
    for key, value in (pruning_ratio_dict or {}).items():
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"pruning_ratio_dict[{key!r}] must be in [0, 1), received {value!r}.")


def rebuild(model: keras.Model, graph: DependencyGraph, removed: np.ndarray,
            branches: Sequence[ResidualBranch] = ()) -> keras.Model:
    """A copy of `model` without the channel units marked in `removed` (a mask over unit roots) and
    without the residual `branches` (`structured.blocks`; their Add layers pass the shortcut on).

    Example:
        >>> graph = DependencyGraph(model)
        >>> removed, _ = plan(graph, get_importance("l1"), pruning_ratio=0.5)
        >>> smaller = rebuild(model, graph, removed)
    """

    def keeper(rec: Any) -> Any:
        return lambda slot: graph.kept_indices(rec.slots[slot], removed)

    changed = {}
    for rec in graph.records.values():
        if any(removed[graph.root_of[labels]].any() for labels in rec.slots.values()):
            changed[id(rec.layer)] = rec
    new_layers: dict[int, Any] = {}

    def new_inputs(inputs: Any, keys: Any) -> list:
        tensors = []
        for t, key in zip(inputs, keys):
            shape = tuple(t.shape)
            if shape and shape[-1] is not None:  # a dynamic last axis (token ids) has no channels
                shape = shape[:-1] + (len(graph.kept_indices(graph.values[key], removed)),)
            tensors.append(keras.Input(batch_shape=shape, dtype=t.dtype, name=t._keras_history.operation.name))
        return tensors

    def clone_layer(layer: Any) -> Any:
        if id(layer) in new_layers:  # shared by a nested model and the model around it: one copy
            return new_layers[id(layer)]
        if isinstance(layer, keras.Model) and id(layer) in graph.nested_inputs:
            new = clone_nested(layer, graph.nested_inputs[id(layer)][0])
            new_layers[id(layer)] = new
            return new
        rec = changed.get(id(layer))
        config = layer_config(layer)
        if rec is not None:
            config = rec.handler.new_config(rec, config, keeper(rec))
            new = rec.handler.new_layer(rec, layer, config)
        else:
            new = copy_layer(layer, config)
        new_layers[id(layer)] = new
        return new

    def clone_nested(inner: Any, keys: Any) -> Any:
        inputs = new_inputs(inner.inputs, keys)
        if isinstance(inner, keras.Sequential):
            return keras.Sequential(inputs + [clone_layer(layer) for layer in inner.layers], name=inner.name)
        return keras.models.clone_model(inner, input_tensors=_pack(inner, inputs), clone_function=clone_layer)

    if isinstance(model, keras.Sequential):
        new_model = keras.models.clone_model(model, clone_function=clone_layer)
    else:
        inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name)
                  for t in model.inputs]
        extra = {"call_function": removal_call_function(list(branches))} if branches else {}
        new_model = keras.models.clone_model(model, input_tensors=_pack(model, inputs), clone_function=clone_layer,
                                             **extra)
    gone = {name for b in branches for name in b.layers}
    for layer in iter_layers(model):
        new = new_layers.get(id(layer))
        if new is None or new is layer or not layer.weights or layer.name in gone:
            continue
        weights = layer.get_weights()
        rec = changed.get(id(layer))
        if rec is not None:
            weights = rec.handler.new_weights(rec, weights, keeper(rec))
        new.set_weights(weights)
    return new_model


def _pack(model, tensors):
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):
        return keras.tree.pack_sequence_as(struct, tensors)
    return tensors if len(tensors) > 1 else tensors[0]


def _layer_reports(graph, removed, decisions) -> list[LayerReport]:
    out = []
    for rec in graph.records.values():
        layer = rec.layer
        if not getattr(layer, "weights", None) or not rec.slots:
            continue
        slot = "out" if "out" in rec.slots else "in"
        labels = rec.slots[slot]
        kept = graph.kept_indices(labels, removed)
        groups = {graph.unit_to_group.get(u) for u in np.unique(graph.root_of[labels]).tolist()}
        groups.discard(None)
        group = groups.pop() if len(groups) == 1 else None
        decision = decisions[group] if group is not None else None
        before, after = len(labels), len(kept)
        note = ""
        if decision is not None and decision.status != "pruned":
            note = decision.reason
        elif group is None and len(labels):
            note = "channels from several groups" if len(groups) > 0 else "model input or frozen channels"
        if rec.info.get("approximate") and after < before:
            note = "normalises over the kept channels only (not exact)"
        slots = {}
        if rec.handler.is_producer(rec):
            for extra in rec.handler.produced_slots(rec):
                if extra != slot and extra in rec.slots:
                    slots[extra] = (len(rec.slots[extra]), graph.kept_indices(rec.slots[extra], removed))
        if slots:
            shape_note = rec.handler.report_note(rec, lambda s: graph.kept_indices(rec.slots[s], removed))
            note = shape_note or note
        out.append(LayerReport(
            name=layer.name, type=type(layer).__name__, group=group, channels_before=before,
            channels_after=after, requested_ratio=decision.requested_ratio if decision else None,
            achieved_ratio=(before - after) / before if before else 0.0, note=note, kept_indices=kept,
            slots=slots,
        ))
    return out


def prune_filters(
    model: keras.Model,
    pruning_ratio: float = 0.5,
    importance: str | Importance = "l1",
    global_pruning: bool = False,
    pruning_ratio_dict: dict[Any, float] | None = None,
    max_pruning_ratio: float = 0.9,
    round_to: int | None = None,
    ignored_layers: Iterable[Any] | None = None,
    example_inputs: Any = None,
    layer_norm: str = "exact",
    attention: str = "heads",
    target_macs: float | None = None,
    target_params: float | None = None,
    target_latency: float | None = None,
    latency_table: Any = None,
    latency_tolerance: float | None = 0.05,
    plan: Any = None,
    remove_blocks: bool = False,
) -> tuple[keras.Model, PruningReport]:
    """Remove whole filters/channels from a Keras model; return (smaller model, report).

    Args:
        model: a built Sequential or functional model (nested models are followed).
        pruning_ratio: fraction of each group's channels to remove (of all prunable channels with
            `global_pruning=True`).
        importance: 'l1', 'l2', 'fpgm', 'filter_sketch', 'bn_scale', 'taylor', 'random' or an
            `Importance` instance.
        global_pruning: rank channels of all groups together instead of per group.
        pruning_ratio_dict: per-layer ratios {layer or name: ratio}; applies to that layer's group.
        max_pruning_ratio: no group loses more than this fraction of its channels.
        round_to: keep every group's channel count a multiple of this number.
        ignored_layers: layers (or names) whose output channels must not change.
        example_inputs: a data batch, x or (x, y); needed by 'taylor'.
        layer_norm: LayerNormalization/RMSNormalization over pruned channels: 'exact' (default;
            becomes `structured.PrunedLayerNormalization`, whose statistics still count the
            removed channels as zeros, so the pruned model stays exact; loading the saved model
            needs tfprune imported), 'approximate' (a plain Keras layer over the kept channels only)
            or 'keep' (the channels such a layer normalises are not pruned).
        attention: MultiHeadAttention besides its output width: 'heads' (default; whole heads go,
            `num_heads` shrinks, a group's channels are heads, so ratios and `round_to` count heads),
            'head_dim' (the per-head query/key width and the value width shrink, the same positions
            in every head) or 'keep' (heads stay).
        target_macs: a budget instead of a ratio, as a fraction of the original model's MACs:
            each group keeps the channel count that keeps the most (normalised) importance under
            the budget (see `structured.budget`). An unreachable budget raises `BudgetError` with
            the smallest reachable cost.
        target_params: the same, as a fraction of the original model's parameters.
        target_latency: the same, as a fraction of the original model's latency in the runtime of
            `latency_table` (a `structured.LatencyTable`), planned with the table's predictions.
        latency_tolerance: with `target_latency`, each plan is measured against the original model
            (`LatencyTable.compare`; the measurement refines the table's fit) and planned again until
            the measured latency is within this fraction of the budget (default 5%); the report's
            budget says the measured fraction. None trusts the table's predictions (no whole-model
            measurement; the prediction is at most the budget).
        plan: apply a per-group plan instead: a `structured.Plan` (from `search_ratios`), or
            {producer layer name: kept channel count (int) or ratio to remove (float)}.
        remove_blocks: with a budget, the planner may also remove whole residual branches
            (`structured.blocks`: `Add([shortcut, branch(x)])` becomes the shortcut) by keeping 0
            channels of the group inside one; for runtimes that pay a fixed cost per operator
            (TensorFlow at batch 1), where narrow layers barely get faster. The removed branch's
            output is dropped, biases included: fine-tune afterwards. `report.removed_blocks` names
            the Add layers of the removed branches.

    The model's inputs and outputs keep their shapes; layers the dependency graph does not
    understand keep their channels (see `report.unsupported`).

    Example:
        >>> model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
        >>> pruned, report = prune_filters(model, pruning_ratio=0.5, importance="fpgm", round_to=8)
        >>> print(report)
        >>> pruned.save("resnet50_pruned.keras")
        >>> half, report = prune_filters(model, target_macs=0.5, round_to=8)   # half the MACs
        >>> fast, report = prune_filters(model, target_latency=0.3, latency_table=table, remove_blocks=True)
    """
    _validate(pruning_ratio, max_pruning_ratio, round_to, pruning_ratio_dict)
    targets = {kind: value for kind, value in (("macs", target_macs), ("params", target_params),
                                               ("latency", target_latency)) if value is not None}
    _validate_targets(targets, latency_table, plan, global_pruning, pruning_ratio_dict)
    if not isinstance(remove_blocks, bool):
        raise ValueError(f"remove_blocks must be True or False, received {remove_blocks!r}.")
    if remove_blocks and not targets:
        raise ValueError("remove_blocks=True needs a budget: the planner decides which residual branches to "
                         "remove. Fix: pass target_latency=, target_macs= or target_params=.")
    if latency_tolerance is not None and (isinstance(latency_tolerance, bool) or not isinstance(
            latency_tolerance, (int, float)) or not 0 < latency_tolerance < 1):
        raise ValueError(f"latency_tolerance must be a fraction in (0, 1) or None, received {latency_tolerance!r}. "
                         "Fix: e.g. 0.05 (measured latency within 5% of the budget), or None to trust predictions.")
    start = time.perf_counter()
    criterion = get_importance(importance)
    graph = DependencyGraph(model, ignored_layers=ignored_layers, layer_norm=layer_norm, attention=attention)
    criterion.prepare(model, example_inputs)
    budget = None
    branches = []
    if remove_blocks:
        branches = residual_branches(graph)
        if not branches:
            warnings.warn(f"remove_blocks=True: model {model.name!r} has no removable residual branch (an Add of a "
                          "shortcut and a branch with one channel group of its own); only channels are pruned.",
                          stacklevel=2)
    if targets:
        from tfprune.structured.budget import budgeted_plan

        (kind, fraction), = targets.items()
        pruned, removed, decisions, budget = budgeted_plan(
            model, graph, criterion, kind, fraction, latency_table, max_pruning_ratio, round_to, rebuild,
            tolerance=latency_tolerance, branches=branches)
    else:
        if plan is not None:
            from tfprune.structured.plans import plan_counts

            scores, decisions = score_groups(graph, criterion)
            counts = plan_counts(graph, plan, scores)
            removed, decisions = apply_counts(graph, scores, counts, decisions, max_pruning_ratio, round_to)
            for d in decisions:
                d.requested_ratio = counts.get(d.group.index, 0) / d.total if d.total else 0.0
        else:
            removed, decisions = _plan(
                graph, criterion, pruning_ratio, global_pruning=global_pruning,
                pruning_ratio_dict=pruning_ratio_dict, max_pruning_ratio=max_pruning_ratio, round_to=round_to,
            )
        pruned = rebuild(model, graph, removed)
    gone = [b for b in branches if decisions[b.group].status == "removed"]
    report = make_report(model, pruned, graph, removed, decisions, criterion, global_pruning,
                         time.perf_counter() - start, gone)
    report.budget = budget
    return pruned, report


_plan = plan


def _validate_targets(targets: dict, latency_table: Any, plan_: Any, global_pruning: bool,
                      pruning_ratio_dict: Any) -> None:
    if len(targets) > 1:
        raise ValueError(f"pass one budget, received {sorted('target_' + k for k in targets)}. "
                         "Fix: keep one of target_macs, target_params, target_latency.")
    for kind, value in targets.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"target_{kind} must be a fraction of the original in (0, 1], received {value!r}. "
                             "Fix: e.g. 0.5 for half.")
    if "latency" in targets and latency_table is None:
        raise ValueError("target_latency needs latency_table=structured.LatencyTable(...). "
                         "Fix: pass latency_table=LatencyTable(runtime='tflite', cache='latency.json').")
    if (targets or plan_ is not None) and (global_pruning or pruning_ratio_dict):
        raise ValueError("a budget or a plan chooses every group's channels: it cannot be combined with "
                         "global_pruning or pruning_ratio_dict. Fix: drop those arguments.")
    if targets and plan_ is not None:
        raise ValueError("pass either a budget (target_*) or plan=, not both.")


def make_report(model: keras.Model, pruned: keras.Model, graph: DependencyGraph, removed: np.ndarray,
                decisions: list, criterion: Any, global_pruning: bool, seconds: float,
                removed_branches: Sequence[ResidualBranch] = ()) -> PruningReport:
    """The PruningReport of `pruned`, rebuilt from `model` without the units marked in `removed` and
    without `removed_branches`."""
    from tfprune import analysis

    layers = _layer_reports(graph, removed, decisions)
    gone = {name: b.add for b in removed_branches for name in b.layers}
    for entry in layers:
        if entry.name in gone:
            entry.channels_after, entry.achieved_ratio = 0, 1.0
            entry.kept_indices = np.zeros(0, np.int64)
            entry.note = f"removed with its residual branch ({gone[entry.name]} passes its shortcut on)"

    groups = [
        GroupReport(
            index=d.group.index, producers=d.group.producers, channels_before=d.total,
            channels_after=d.total - d.removed, requested_ratio=d.requested_ratio,
            achieved_ratio=d.achieved_ratio, status=d.status, reason=d.reason,
        )
        for d in decisions
    ]
    return PruningReport(
        model_name=model.name, importance=getattr(criterion, "name", type(criterion).__name__),
        global_pruning=global_pruning, layers=layers, groups=groups,
        unsupported=list(graph.unsupported), params_before=analysis.count_params(model),
        params_after=analysis.count_params(pruned), macs_before=_macs(analysis, model),
        macs_after=_macs(analysis, pruned), seconds=seconds, removed_blocks=[b.add for b in removed_branches],
    )


def _macs(analysis, model) -> int:
    try:
        return analysis.count_macs(model)
    except ValueError:  # dynamic shapes: MACs are not defined
        return -1
