"""PruningReport: what prune_filters did, per layer and per group, and why groups were left alone.

Example:
    >>> pruned, report = prune_filters(model, 0.5)
    >>> print(report)                 # tables
    >>> report.to_dict()["layers"][0]  # {'name': ..., 'channels_before': ..., ...}
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class LayerReport:
    name: str
    type: str
    group: int | None
    channels_before: int
    channels_after: int
    requested_ratio: float | None
    achieved_ratio: float
    note: str = ""
    kept_indices: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    # further produced slots (attention: 'qk', 'v'): {slot: (positions before, kept positions)}
    slots: dict[str, tuple[int, np.ndarray]] = dataclasses.field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kept_indices"] = [int(i) for i in self.kept_indices]
        d["slots"] = {k: {"before": int(n), "kept_indices": [int(i) for i in kept]}
                      for k, (n, kept) in self.slots.items()}
        return d


@dataclasses.dataclass
class GroupReport:
    index: int
    producers: list[str]
    channels_before: int
    channels_after: int
    requested_ratio: float
    achieved_ratio: float
    status: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _table(rows: list[tuple]) -> str:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _short(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclasses.dataclass
class PruningReport:
    """Outcome of `prune_filters`. `str(report)` is a readable table; `to_dict()` is JSON-ready.

    Example:
        >>> pruned, report = prune_filters(model, 0.5)
        >>> print(report)
        >>> report.params_before, report.params_after    # e.g. (682, 346)
        >>> json.dumps(report.to_dict())
    """

    model_name: str
    importance: str
    global_pruning: bool
    layers: list[LayerReport]
    groups: list[GroupReport]
    unsupported: list[tuple[str, str]]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    seconds: float
    budget: dict | None = None  # budgeted pruning: kind, target fraction, budgeted and predicted cost
    removed_blocks: list[str] = dataclasses.field(default_factory=list)  # Add layers of removed residual branches

    def layer(self, name: str) -> LayerReport:
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(f"No layer {name!r} in the report; known: {[e.name for e in self.layers][:10]}...")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "importance": self.importance,
            "global_pruning": self.global_pruning,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "seconds": round(self.seconds, 3),
            "layers": [entry.to_dict() for entry in self.layers],
            "groups": [g.to_dict() for g in self.groups],
            "unsupported": [{"layer": n, "reason": r} for n, r in self.unsupported],
            "budget": self.budget,
            "removed_blocks": list(self.removed_blocks),
        }

    def __str__(self) -> str:
        def ratio(x):
            return "-" if x is None else f"{x:.2f}"

        head = (
            f"Structured pruning of {self.model_name!r} (importance={self.importance}, "
            f"{'global' if self.global_pruning else 'per-group'}): params {self.params_before:,} -> "
            f"{self.params_after:,}, MACs {self.macs_before:,} -> {self.macs_after:,} "
            f"({self.seconds:.2f}s)"
        )
        layer_rows = [("layer", "type", "group", "before", "after", "requested", "achieved", "note")]
        for e in self.layers:
            layer_rows.append((e.name, e.type, "-" if e.group is None else e.group, e.channels_before,
                               e.channels_after, ratio(e.requested_ratio), ratio(e.achieved_ratio),
                               _short(e.note, 50)))
        group_rows = [("group", "producers", "before", "after", "requested", "achieved", "status / reason")]
        for g in self.groups:
            producers = ", ".join(g.producers)
            group_rows.append((g.index, _short(producers, 40), g.channels_before, g.channels_after,
                               ratio(g.requested_ratio), ratio(g.achieved_ratio),
                               g.status + (f": {_short(g.reason)}" if g.reason else "")))
        parts = [head]
        if self.budget:
            b = self.budget
            parts.append(
                f"Budget: {b['kind']} <= {b['target']:.3f} of the original ({b['budgeted']:,.6g} {b['unit']}); "
                f"predicted {b['predicted']:,.6g} {b['unit']} ({b['predicted'] / b['original']:.3f}); "
                f"original {b['original']:,.6g}, smallest reachable {b['smallest']:,.6g}"
                + (f"; measured {b['measured_fraction']:.3f} of the original (tolerance {b['tolerance']:.0%}, "
                   f"{b['attempts']} measured plan(s))" if "measured_fraction" in b else ""))
        if self.removed_blocks:
            parts.append(f"Removed residual branches ({len(self.removed_blocks)}; each Add passes its shortcut on): "
                         + ", ".join(self.removed_blocks))
        parts += ["", _table(layer_rows), "", _table(group_rows)]
        if self.unsupported:
            parts += ["", "Layers the dependency graph does not understand (their channels are kept):"]
            parts += [f"  {name}: {reason}" for name, reason in self.unsupported]
        return "\n".join(parts)
