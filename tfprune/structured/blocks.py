"""Residual branches that can be removed whole: `y = Add([shortcut, branch(x)])` becomes `y = shortcut`.

Pruning channels leaves every layer in place, and where a runtime pays a fixed cost per operator
(TensorFlow's executor at batch 1) narrow layers barely get faster. Removing a residual branch removes
its operators. A branch qualifies when:

- it is the subgraph between one entry tensor and one input of a two-input `Add`, every tensor inside
  it is used only inside it, and the entry is the Add's other input or one of its ancestors (an
  identity or projection shortcut);
- its layers are called once, at the top level of a functional model, and none is in `ignored_layers`;
- exactly one prunable channel group, none of its channels frozen, lives only inside it (the width
  of a basic ResNet block, or of a MobileNetV2 inverted residual): the budgeted planner removes the
  branch by keeping 0 channels of that group.

The removed branch's output is dropped, including the constant it produces from its biases and
BatchNormalization shifts; fine-tune (or re-estimate BatchNormalization statistics) afterwards.

Example:
    >>> graph = DependencyGraph(resnet_cifar(20))
    >>> [b.add for b in residual_branches(graph)]        # ['s1b1_add', 's1b2_add', ...]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Hashable

import keras


@dataclasses.dataclass(frozen=True)
class ResidualBranch:
    """A removable residual branch: the `Add` layer, which of its inputs stays, the branch's layers (in
    call order), the channel group whose 0 kept channels means removing it, and how many operators
    removing it saves in a deployed model (its layers but BatchNormalization, which folds, and the Add).

    Example:
        >>> branch = residual_branches(DependencyGraph(resnet_cifar(20)))[0]
        >>> branch.add, branch.layers[0], branch.operators     # ('s1b1_add', 's1b1_1_conv', 4)
    """

    add: str
    shortcut: int
    layers: tuple[str, ...]
    group: int
    operators: int = 0


def _ancestors(key: Hashable, producer: dict, calls: list) -> set:
    seen, todo = {key}, [key]
    while todo:
        p = producer.get(todo.pop())
        if p is None:
            continue
        for t in calls[p].inputs:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def _branch_calls(start: int, producer: dict, consumers: dict, calls: list) -> set[int]:
    """The calls that feed `start` only through tensors used by no call outside them."""
    branch, changed = {start}, True
    while changed:
        changed = False
        for j in list(branch):
            for t in calls[j].inputs:
                p = producer.get(t)
                if p is not None and p not in branch and all(c in branch for c in consumers.get(t, ())):
                    branch.add(p)
                    changed = True
    return branch


def residual_branches(graph: Any) -> list[ResidualBranch]:
    """The residual branches of `graph.model` that can be removed whole (see the module docstring),
    in call order of their Add.

    Example:
        >>> residual_branches(DependencyGraph(keras.applications.MobileNetV2(weights=None)))[0].add
        'block_2_add'
    """
    model = graph.model
    if isinstance(model, keras.Sequential):
        return []
    top = {id(layer) for layer in model.layers}
    calls = graph.calls
    producer: dict[Hashable, int] = {}
    consumers: dict[Hashable, list[int]] = {}
    for i, call in enumerate(calls):
        for key in call.outputs:
            producer[key] = i
        for key in call.inputs:
            consumers.setdefault(key, []).append(i)
    model_outputs = set(graph.output_keys)
    records = {rec.name: rec for rec in graph.records.values()}
    found = []
    for i, call in enumerate(calls):
        layer = call.layer
        if not isinstance(layer, keras.layers.Add) or len(call.inputs) != 2 or id(layer) not in top:
            continue
        if records.get(layer.name) is None or records[layer.name].calls != 1:
            continue
        for side in (1, 0):
            branch_out, shortcut = call.inputs[side], call.inputs[1 - side]
            start = producer.get(branch_out)
            if start is None or consumers.get(branch_out) != [i]:
                continue
            branch = _branch_calls(start, producer, consumers, calls)
            entries = {t for j in branch for t in calls[j].inputs if producer.get(t) not in branch}
            if len(entries) != 1 or next(iter(entries)) not in _ancestors(shortcut, producer, calls):
                continue
            if not all(_removable_call(calls[j], top, records) for j in branch):
                continue
            if any(t in model_outputs or any(c not in branch and c != i for c in consumers.get(t, ()))
                   for j in branch for t in calls[j].outputs):
                continue
            names = [calls[j].layer.name for j in sorted(branch)]
            inside = set(names)
            if inside & graph.ignored_names:
                continue  # an ignored layer stays, and so does its branch
            groups = [g.index for g in graph.groups if g.prunable and g.layers and set(g.layers) <= inside]
            if len(groups) == 1 and graph.groups[groups[0]].frozen.any():
                continue  # channels that must stay (e.g. a layer the graph does not understand)
            if len(groups) == 1:
                operators = 1 + sum(1 for j in branch
                                    if not isinstance(calls[j].layer, keras.layers.BatchNormalization))
                found.append(ResidualBranch(layer.name, 1 - side, tuple(names), groups[0], operators))
                break
    return found


def _removable_call(call: Any, top: set, records: dict) -> bool:
    layer = call.layer
    rec = records.get(getattr(layer, "name", None))
    return (id(layer) in top and rec is not None and rec.calls == 1 and rec.layer is layer
            and not isinstance(layer, keras.Model))


def removal_call_function(branches: list[ResidualBranch]):
    """A `keras.models.clone_model(call_function=...)` that leaves the branches' layers uncalled and
    makes each of their Add layers return its shortcut input."""
    skipped = {name for b in branches for name in b.layers}
    shortcuts = {b.add: b.shortcut for b in branches}

    def call_function(layer: Any, *args: Any, **kwargs: Any) -> Any:
        if layer.name in shortcuts:
            return args[0][shortcuts[layer.name]]
        if layer.name in skipped:
            return args[0]  # a placeholder: only the removed Add reads it
        return layer(*args, **kwargs)

    return call_function
