"""Cost of a model as a function of how many channels each group keeps: MACs, parameters, latency.

`WidthModel` gives the channel count of every tensor of the dependency graph for given kept counts
(a tensor holding a group's channels shrinks in proportion to the channels the group keeps).
A `CostModel` is a constant plus one term per layer call (MACs), per layer (parameters) or per
fused block (latency, from a `LatencyTable`); each term is a function of its input and output
widths. Planners evaluate a candidate in microseconds with it, then check the real pruned model.

Example:
    >>> graph = DependencyGraph(model)
    >>> cost = macs_cost(graph)
    >>> cost.full, cost.cost({0: 8})          # MACs of the model, and with group 0 at 8 channels
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from tfprune import analysis

KINDS = ("macs", "params", "latency")


class WidthModel:
    """Channel counts of the graph's tensors, linear in the kept count of each group.

    Example:
        >>> widths = WidthModel(graph)
        >>> widths.width(key, {0: 8})
    """

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.sizes = {g.index: len(g.units) for g in graph.groups}
        self.full: dict[Any, int] = {}
        self.share: dict[Any, dict[int, float]] = {}
        for key, labels in graph.values.items():
            roots = graph.root_of[labels]
            self.full[key] = len(labels)
            share: dict[int, float] = {}
            for root in roots.tolist():
                g = graph.unit_to_group.get(root)
                if g is not None:
                    share[g] = share.get(g, 0.0) + 1.0
            self.share[key] = {g: n / self.sizes[g] for g, n in share.items()}

    def width(self, key: Any, kept: dict[int, int]) -> float:
        """Channels of tensor `key` when group g keeps `kept[g]` channels (others keep all)."""
        w = float(self.full[key])
        for g, per in self.share[key].items():
            if g in kept:
                w -= per * (self.sizes[g] - kept[g])
        return w

    def groups_of(self, key: Any) -> set[int]:
        return set(self.share[key])


@dataclasses.dataclass
class Term:
    """One cost term: `fn(input width, output width)` of the tensors `in_key` and `out_key`."""

    in_key: Any
    out_key: Any
    fn: Callable[[float, float], float]
    name: str = ""
    layers: tuple[str, ...] = ()  # the layers whose cost it is (a residual branch's removal drops them)


class CostModel:
    """`constant + sum(term.fn(widths))`, and its linearisation per group for the knapsack planner.

    Example:
        >>> cost = macs_cost(graph)
        >>> cost.cost({}) == cost.full
    """

    def __init__(self, kind: str, graph: Any, terms: list[Term], total: float, unit: str = "") -> None:
        self.kind, self.graph, self.terms, self.unit = kind, graph, terms, unit
        self.widths = WidthModel(graph)
        self.by_group: dict[int, list[int]] = {}
        for i, term in enumerate(terms):
            for g in self.widths.groups_of(term.in_key) | self.widths.groups_of(term.out_key):
                self.by_group.setdefault(g, []).append(i)
        self.removal: dict[int, set[int]] = {}  # group -> terms that vanish when it keeps 0 channels
        self.constant = 0.0
        self.constant = float(total) - self.cost({})
        self.full = float(total)

    def allow_removal(self, branches: Any, per_operator: float = 0.0) -> "CostModel":
        """Count a residual branch (`structured.blocks.ResidualBranch`) as removed when its group keeps
        0 channels: the terms of its layers and of its Add cost nothing then. `per_operator` adds what
        each of the branch's operators costs beyond its terms (a runtime's fixed cost per operator,
        which blocks timed alone do not show) as a term of the branch, part of the model's cost until
        the branch is removed. A branch already allowed is left as it is.

        Example:
            >>> cost = macs_cost(graph).allow_removal(residual_branches(graph))
        """
        for branch in branches:
            if branch.group in self.removal:
                continue
            names = set(branch.layers) | {branch.add}
            terms = {i for i, t in enumerate(self.terms) if t.layers and set(t.layers) <= names}
            if per_operator > 0 and branch.operators:
                key = next(k for k, share in self.widths.share.items() if branch.group in share)
                extra = per_operator * branch.operators
                terms.add(len(self.terms))
                self.terms.append(Term(key, key, lambda wi, wo, extra=extra: extra, f"{branch.add} operators",
                                       tuple(names)))
                self.constant -= extra  # the full model's cost stays what it was
            self.removal[branch.group] = terms
            self.by_group[branch.group] = sorted(set(self.by_group.get(branch.group, [])) | terms)
        return self

    def _gone(self, kept: dict[int, int]) -> set[int]:
        return {i for g, terms in self.removal.items() if kept.get(g) == 0 for i in terms}

    def _term(self, term: Term, kept: dict[int, int]) -> float:
        return term.fn(self.widths.width(term.in_key, kept), self.widths.width(term.out_key, kept))

    def _sum(self, indices: Any, kept: dict[int, int]) -> float:
        gone = self._gone(kept) if self.removal else ()
        return sum(self._term(self.terms[i], kept) for i in indices if i not in gone)

    def cost(self, kept: dict[int, int]) -> float:
        """Estimated cost when group g keeps `kept[g]` channels (groups not named keep all; 0 kept
        channels of a group `allow_removal` knows removes its residual branch)."""
        return self.constant + self._sum(range(len(self.terms)), kept)

    def deltas(self, kept: dict[int, int], group: int, options: np.ndarray) -> np.ndarray:
        """Change of the cost when `group` moves from `kept[group]` to each option, others fixed."""
        indices = self.by_group.get(group, [])
        base = self._sum(indices, kept)
        out = np.empty(len(options))
        for j, k in enumerate(options.tolist()):
            out[j] = self._sum(indices, {**kept, group: int(k)}) - base
        return out


def _records_by_layer(graph: Any) -> dict[int, Any]:
    return {id(rec.layer): rec for rec in graph.records.values()}


def _is_producer(rec: Any) -> bool:
    return rec is not None and rec.handler.is_producer(rec)


def _ratio(w: float, w0: float) -> float:
    return w / w0 if w0 else 1.0


def macs_cost(graph: Any) -> CostModel:
    """MACs per sample: a producer's MACs scale with input x output channels (SeparableConv: its
    depthwise part with the input only), any other layer's with its output channels.

    Example:
        >>> macs_cost(graph).full == analysis.count_macs(model)
    """
    recs = _records_by_layer(graph)
    terms = []
    for call in graph.calls:
        if not call.input_shapes or not call.output_shapes or not call.inputs or not call.outputs:
            continue
        macs0 = analysis.layer_macs(call.layer, call.input_shapes[0], call.output_shapes[0])
        if not macs0:
            continue
        rec = recs.get(id(call.layer))
        wi0, wo0 = call.input_shapes[0][-1] or 1, call.output_shapes[0][-1] or 1
        if _is_producer(rec) and hasattr(call.layer, "depthwise_kernel"):
            spatial = math.prod(call.output_shapes[0][1:-1])
            m = int(call.layer.depthwise_kernel.shape[-1])
            k = math.prod(call.layer.kernel_size)

            def fn(wi, wo, spatial=spatial, m=m, k=k):
                return spatial * wi * m * (k + wo)
        elif _is_producer(rec):
            def fn(wi, wo, m0=macs0, wi0=wi0, wo0=wo0):
                return m0 * _ratio(wi, wi0) * _ratio(wo, wo0)
        else:
            def fn(wi, wo, m0=macs0, wo0=wo0):
                return m0 * _ratio(wo, wo0)
        terms.append(Term(call.inputs[0], call.outputs[0], fn, call.layer.name, (call.layer.name,)))
    return CostModel("macs", graph, terms, analysis.count_macs(graph.model), "MACs")


def _weight_term(shapes: list[tuple], wi0: float, wo0: float) -> Callable[[float, float], float]:
    """Parameters of a layer's weights: a last axis equal to the output channels scales with them,
    the axis before it (a kernel's input channels) with the input channels."""

    def fn(wi, wo):
        total = 0.0
        for shape in shapes:
            size = float(math.prod(shape))
            if shape and shape[-1] == wo0:
                size *= _ratio(wo, wo0)
            if len(shape) >= 2:
                size *= _ratio(wi, wi0)
            total += size
        return total

    return fn


def params_cost(graph: Any) -> CostModel:
    """Parameters (all weights, BatchNormalization statistics included), per layer.

    Example:
        >>> params_cost(graph).full == analysis.count_params(model)
    """
    terms, seen = [], set()
    for call in graph.calls:
        layer = call.layer
        if id(layer) in seen or not getattr(layer, "weights", None) or not call.inputs or not call.outputs:
            continue
        seen.add(id(layer))
        shapes = [tuple(int(d) for d in w.shape) for w in layer.weights]
        wi0, wo0 = call.input_shapes[0][-1] or 1, call.output_shapes[0][-1] or 1
        terms.append(Term(call.inputs[0], call.outputs[0], _weight_term(shapes, wi0, wo0), layer.name,
                          (layer.name,)))
    return CostModel("params", graph, terms, analysis.count_params(graph.model), "parameters")


def exact_cost(kind: str, model: Any, latency_table: Any = None) -> float:
    """The cost of a built model: counted MACs / parameters, or the latency table's prediction (ms).

    Example:
        >>> exact_cost("macs", pruned)
    """
    if kind == "macs":
        return float(analysis.count_macs(model))
    if kind == "params":
        return float(analysis.count_params(model))
    if kind == "latency":
        if latency_table is None:
            raise ValueError("a latency budget needs latency_table=structured.LatencyTable(...).")
        return float(latency_table.predict(model))
    raise ValueError(f"cost kind must be one of {KINDS}, received {kind!r}.")


def cost_model(kind: str, graph: Any, latency_table: Any = None) -> CostModel:
    """The CostModel of `kind` ('macs', 'params' or 'latency') for a dependency graph.

    Example:
        >>> cost_model("latency", graph, LatencyTable(runtime="tflite"))
    """
    if kind == "macs":
        return macs_cost(graph)
    if kind == "params":
        return params_cost(graph)
    if kind == "latency":
        if latency_table is None:
            raise ValueError("a latency budget needs latency_table=structured.LatencyTable(...). "
                             "Fix: pass latency_table=LatencyTable(runtime='tflite', cache='latency.json').")
        return latency_table.cost_model(graph)
    raise ValueError(f"cost kind must be one of {KINDS}, received {kind!r}.")
