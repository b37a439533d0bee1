"""Channel dependency graph: which channels of which layers must be removed together.

Every channel a layer produces gets an integer *label*. Each tensor carries an array of labels, one
per entry of its channel (last) axis. Layers propagate labels (pass-throughs copy them, Concatenate
joins them, Flatten tiles them, depthwise layers repeat them) and couple them (Add, Multiply and
shared layers union the labels at equal positions). After tracing, each union-find class of labels is
one *unit*: a set of channels that stay or go together. Producers connected through a unit form a
*group*, the thing an importance criterion scores and the planner prunes.

A label can be *frozen* with a reason (model inputs and outputs, layers the graph cannot reason
about, ignored layers); a frozen unit is never removed, so anything unknown leaves the model correct.

Example:
    >>> graph = DependencyGraph(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)))
    >>> print(graph)              # one line per group
    >>> graph.groups[0].producers
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Hashable, Iterable

import keras
import numpy as np

from tfprune import layers as handlers_lib
from tfprune.keras_graph import Call, flatten_model


class UnionFind:
    """Union-find over integer labels; each class may carry reasons that freeze it."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.reasons: dict[int, set[str]] = {}

    def add(self, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, label: int) -> int:
        parent = self.parent
        root = label
        while parent[root] != root:
            root = parent[root]
        while parent[label] != root:
            parent[label], label = root, parent[label]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        self.parent[rb] = ra
        if rb in self.reasons:
            self.reasons.setdefault(ra, set()).update(self.reasons.pop(rb))

    def freeze(self, label: int, reason: str) -> None:
        self.reasons.setdefault(self.find(int(label)), set()).add(reason)


@dataclasses.dataclass
class LayerRecord:
    """What the trace learned about one layer: label arrays per slot ('in', 'out', 'mid')."""

    layer: Any
    handler: "handlers_lib.LayerHandler"
    slots: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    calls: int = 0

    @property
    def name(self) -> str:
        return self.layer.name


@dataclasses.dataclass
class Group:
    """Producers whose output channels are coupled, and the units (channel sets) they share.

    Example:
        >>> group = DependencyGraph(model).groups[0]
        >>> group.producers, len(group.units), group.prunable     # e.g. (['conv1'], 16, True)
    """

    index: int
    producers: list[str]
    units: np.ndarray
    frozen: np.ndarray
    reasons: list[str]
    layers: list[str]
    members: list = dataclasses.field(default_factory=list, repr=False)

    @property
    def prunable(self) -> bool:
        return bool((~self.frozen).any())

    def __str__(self) -> str:
        state = "prunable" if self.prunable else "unprunable: " + "; ".join(self.reasons)
        return f"group {self.index}: {len(self.units)} channels, producers {self.producers} ({state})"


class DependencyGraph:
    """The coupled-channel groups of a Sequential or functional Keras model.

    Args:
        model: a built Sequential or functional model (nested models are followed).
        ignored_layers: layers (or names) whose output channels must not change (their inputs
            still shrink with the layers that feed them).
        layer_norm: how LayerNormalization/RMSNormalization over channels is pruned: 'exact' (its
            statistics keep counting the removed channels as zeros, see structured.PrunedLayerNormalization),
            'approximate' (a plain layer over the kept channels) or 'keep' (its channels stay).
        attention: what MultiHeadAttention prunes besides its output width: 'heads' (whole heads; a
            unit is one head), 'head_dim' (the per-head query/key width and the value width, the same
            positions in every head) or 'keep' (its heads stay).

    Example:
        >>> graph = DependencyGraph(model)
        >>> [g.producers for g in graph.groups if g.prunable]
        >>> graph.unsupported      # [(layer name, reason), ...]
    """

    def __init__(self, model: keras.Model, ignored_layers: Iterable[Any] | None = None,
                 layer_norm: str = "exact", attention: str = "heads") -> None:
        self.layer_norm = handlers_lib.check_layer_norm_mode(layer_norm)
        self.attention = handlers_lib.check_attention_mode(attention)
        self.model = model
        self.uf = UnionFind()
        self.values: dict[Hashable, np.ndarray] = {}
        self.records: dict[int, LayerRecord] = {}
        self.unsupported: list[tuple[str, str]] = []
        self.nested_inputs: dict[int, list[list[Hashable]]] = {}
        calls, input_keys, output_keys = flatten_model(model, self.nested_inputs)
        self.calls, self.output_keys = calls, list(output_keys)
        graph_inputs = model.inputs
        for key, tensor in zip(input_keys, graph_inputs):
            self.values[key] = self.fresh(_channels(tuple(tensor.shape)), reason="model input")
        for call in calls:
            self._trace(call)
        for per_call in self.nested_inputs.values():  # a nested model called twice has one shape
            for keys in per_call[1:]:
                for first, other in zip(per_call[0], keys):
                    a, b = self.values[first], self.values[other]
                    if len(a) == len(b):
                        self.union(a, b)
                    else:
                        self.freeze(a, "nested model called on different channel counts")
                        self.freeze(b, "nested model called on different channel counts")
        for key in output_keys:
            self.freeze(self.values[key], "model output")
        ignored_names = {getattr(x, "name", x) for x in (ignored_layers or [])}
        self.ignored_names = frozenset(ignored_names)
        known = {rec.name for rec in self.records.values()}
        missing = sorted(ignored_names - known)
        if missing:
            raise ValueError(
                f"ignored_layers names {missing} are not layers of model {model.name!r}. "
                "Fix: pass layer objects or names from model.summary()."
            )
        for rec in self.records.values():
            if rec.name in ignored_names:  # its output channels stay; its inputs may still shrink
                labels = rec.slots.get("out", rec.slots.get("in"))
                if labels is not None:
                    self.freeze(labels, f"{rec.name} is in ignored_layers")
        self._finalize()

    # ----- API used by layer handlers while tracing -----
    def fresh(self, count: int | None, reason: str | None = None) -> np.ndarray:
        labels = self.uf.add(count or 0)
        if reason:
            self.freeze(labels, reason)
        return labels

    def record(self, layer: Any) -> LayerRecord:
        rec = self.records.get(id(layer))
        if rec is None:
            rec = LayerRecord(layer=layer, handler=handlers_lib.get_handler(layer))
            self.records[id(layer)] = rec
        return rec

    def slot(self, layer: Any, name: str, labels: np.ndarray) -> np.ndarray:
        """Record `labels` in a slot of `layer`; a second call of a shared layer unions them."""
        rec = self.record(layer)
        old = rec.slots.get(name)
        if old is None:
            rec.slots[name] = labels
            return labels
        if len(old) != len(labels):
            reason = f"{layer.name} is shared between tensors of different channel counts"
            self.freeze(old, reason)
            self.freeze(labels, reason)
            return old
        self.union(old, labels)
        return old

    def producer(self, layer: Any, count: int, slot: str = "out") -> np.ndarray:
        """Labels a producer layer creates in `slot` ('out', or e.g. an attention layer's heads):
        created once, shared by all its calls."""
        rec = self.record(layer)
        if slot not in rec.slots:
            rec.slots[slot] = self.fresh(count)
        return rec.slots[slot]

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            self.uf.union(x, y)

    def freeze(self, labels: np.ndarray, reason: str) -> None:
        for x in np.unique(labels).tolist():
            self.uf.freeze(x, reason)

    def unknown(self, call: Call, reason: str) -> list[np.ndarray]:
        """Fallback for anything the graph cannot reason about: freeze inputs, opaque outputs."""
        self.unsupported.append((call.layer.name, reason))
        for key in call.inputs:
            self.freeze(self.values[key], reason)
        return [self.fresh(_channels(shape), reason=reason) for shape in call.output_shapes]

    # ----- tracing -----
    def _trace(self, call: Call) -> None:
        handler = handlers_lib.get_handler(call.layer)
        if isinstance(call.layer, keras.layers.Layer):
            rec = self.record(call.layer)
            rec.calls += 1
        try:
            outputs = handler.trace(self, call)
        except handlers_lib.Unsupported as err:
            outputs = self.unknown(call, f"{call.layer.name}: {err}")
        except Exception as err:  # a handler bug must not break the model: keep its channels
            outputs = self.unknown(call, f"{call.layer.name}: tracing failed ({type(err).__name__}: {err})")
        for key, labels in zip(call.outputs, outputs):
            self.values[key] = labels

    def _finalize(self) -> None:
        uf = self.uf
        self.root_of = np.array([uf.find(i) for i in range(len(uf.parent))], dtype=np.int64)
        self.frozen_root = np.zeros(len(uf.parent), dtype=bool)
        for root in uf.reasons:
            self.frozen_root[root] = True
        # Group producers that share a unit.
        # (record, slot) pairs: a layer may produce several sets of channels (attention: output
        # width and heads), each joining its own group
        producer_recs = [(r, slot) for r in self.records.values() if r.handler.is_producer(r)
                         for slot in r.handler.produced_slots(r) if slot in r.slots]
        owner: dict[int, int] = {}
        parent = list(range(len(producer_recs)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, (rec, slot) in enumerate(producer_recs):
            for root in np.unique(self.root_of[rec.slots[slot]]).tolist():
                if root in owner:
                    parent[find(i)] = find(owner[root])
                else:
                    owner[root] = i
        members: dict[int, list[int]] = {}
        for i in range(len(producer_recs)):
            members.setdefault(find(i), []).append(i)
        unit_to_group: dict[int, int] = {}
        self.groups: list[Group] = []
        for idxs in members.values():
            units = np.unique(np.concatenate([self.root_of[producer_recs[i][0].slots[producer_recs[i][1]]]
                                              for i in idxs]))
            if len(units) == 0:
                continue
            frozen = self.frozen_root[units]
            reasons = sorted({r for u in units[frozen].tolist() for r in uf.reasons.get(u, ())})
            group = Group(
                index=len(self.groups),
                producers=list(dict.fromkeys(producer_recs[i][0].name for i in idxs)),
                units=units,
                frozen=frozen,
                reasons=reasons,
                layers=[],
            )
            for u in units.tolist():
                unit_to_group[u] = group.index
            self.groups.append(group)
        self.unit_to_group = unit_to_group
        for rec in self.records.values():
            touched = set()
            for labels in rec.slots.values():
                for u in np.unique(self.root_of[labels]).tolist():
                    if u in unit_to_group:
                        touched.add(unit_to_group[u])
            for g in sorted(touched):
                self.groups[g].layers.append(rec.name)
                self.groups[g].members.append(rec)

    # ----- queries -----
    @functools.cached_property
    def layer_parts(self) -> dict[int, list[np.ndarray]]:
        """Groups whose units are split over several layers: {group index: [unit roots per part]}.

        Usually every layer of a group holds all of its units, and the group is absent here. When
        branches are concatenated into a coupled sum (Inception-ResNet), each branch holds a part
        only; the planner prunes each part at the group's ratio, so that no layer is emptied or cut
        beyond `max_pruning_ratio`, and `round_to` holds per layer.
        """
        segments: dict[int, set[tuple[int, ...]]] = {}
        for rec in self.records.values():
            for labels in rec.slots.values():
                by_group: dict[int, list[int]] = {}
                for root in np.unique(self.root_of[labels]).tolist():
                    group = self.unit_to_group.get(root)
                    if group is not None:
                        by_group.setdefault(group, []).append(root)
                for group, units in by_group.items():
                    segments.setdefault(group, set()).add(tuple(units))
        parts: dict[int, list[np.ndarray]] = {}
        for group, layer_sets in segments.items():
            if len(layer_sets) <= 1:
                continue
            signature: dict[int, list[int]] = {}
            for k, layer_set in enumerate(sorted(layer_sets)):
                for unit in layer_set:
                    signature.setdefault(unit, []).append(k)
            split: dict[tuple[int, ...], list[int]] = {}
            for unit, keys in signature.items():
                split.setdefault(tuple(keys), []).append(unit)
            if len(split) > 1:
                parts[group] = [np.array(sorted(units), dtype=np.int64) for units in split.values()]
        return parts

    def roots(self, labels: np.ndarray) -> np.ndarray:
        return self.root_of[labels]

    def kept_indices(self, labels: np.ndarray, removed_units: np.ndarray) -> np.ndarray:
        """Positions of `labels` whose unit is not in the boolean mask `removed_units` (by root)."""
        return np.nonzero(~removed_units[self.root_of[labels]])[0]

    def __str__(self) -> str:
        lines = [f"DependencyGraph of {self.model.name!r}: {len(self.groups)} groups"]
        lines += ["  " + str(g) for g in self.groups]
        if self.unsupported:
            lines.append("  not understood (their channels are kept):")
            lines += [f"    {name}: {reason}" for name, reason in self.unsupported]
        return "\n".join(lines)


def _channels(shape: tuple) -> int:
    if not shape:
        return 1
    return int(shape[-1]) if shape[-1] is not None else 0
