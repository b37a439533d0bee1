"""MultiHeadAttention: magnitude-prunable projections, and heads in the dependency graph.

Magnitude pruning prunes the kernels of the query, key, value and output projections.

In the dependency graph the layer
  * consumes the channels of its query, value and key inputs (slots 'in', 'in_value', 'in_key'),
    so a transformer's residual stream is pruned coupled through it;
  * produces its output width ('out', the output projection's last axis);
  * produces its heads: 'qk' (num_heads * key_dim positions of the query and key projections,
    which must stay equal) and 'v' (num_heads * value_dim positions of the value projection, the
    gate if any, and the output projection's input). The graph's `attention` mode couples them:
      - 'heads': every position of a head is one unit, so a unit is a head; the rebuilt layer
        has fewer `num_heads` (at least one stays);
      - 'head_dim': position d of every head is one unit ('qk' and 'v' apart), so `key_dim` and
        `value_dim` shrink; the query projection absorbs sqrt(new key_dim / key_dim), so the
        attention logits keep their original scale and the pruned layer stays exact;
      - 'keep': heads are frozen.

MACs per sample (T query positions, S key positions, H heads; attention over all positions):
  T*d_q*H*k + S*d_k*H*k + S*d_v*H*v (+ T*d_q*H*v with a gate) + H*T*S*(k + v) + T*H*v*d_out.

Example:
    >>> get_handler(keras.layers.MultiHeadAttention(2, 4)).prunable_weights[0]   # 'query/kernel'
    >>> DependencyGraph(model, attention="head_dim")
"""

from __future__ import annotations

import math
from typing import Any, Callable

import keras
import numpy as np

from tfprune.layers.base import Keep, LayerHandler, Unsupported, prod
from tfprune.layers.registry import register_layer

ATTENTION_MODES = ("heads", "head_dim", "keep")

_PROJECTIONS = ("query", "key", "value", "gate", "output")


def check_attention_mode(mode: str) -> str:
    """`mode` if it is one of ATTENTION_MODES, else a ValueError naming them.

    Example:
        >>> check_attention_mode("heads")   # 'heads'
    """
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {list(ATTENTION_MODES)}, received {mode!r}.")
    return mode


def _sublayers(layer: Any) -> dict[str, Any]:
    subs = {
        "query": getattr(layer, "_query_dense", None),
        "key": getattr(layer, "_key_dense", None),
        "value": getattr(layer, "_value_dense", None),
        "gate": getattr(layer, "_gate_dense", None) if getattr(layer, "_use_gate", False) else None,
        "output": getattr(layer, "_output_dense", None),
    }
    return {k: v for k, v in subs.items() if v is not None}


def _variables(layer: Any) -> dict[str, Any]:
    """{'query/kernel': variable, 'query/bias': ..., ...} of a built MultiHeadAttention."""
    found = {}
    for role, sub in _sublayers(layer).items():
        for v in sub.weights:
            kind = v.path.split("/")[-1]
            found[f"{role}/{kind}"] = v
    return found


def _array(variables: dict, name: str, transform: Callable) -> np.ndarray | None:
    v = variables.get(name)
    if v is None:
        return None
    out = transform(v)
    return None if out is None else np.asarray(out, dtype=np.float64)


def check_projections(layer: Any) -> None:
    """Raises `Unsupported` unless `layer`'s weights are its plain query/key/value/(gate)/output kernels
    and biases (no LoRA, no quantization, nothing else)."""
    if getattr(layer, "quantization_mode", None) or any(
        getattr(sub, "lora_enabled", False) or getattr(sub, "quantization_mode", None)
        for sub in _sublayers(layer).values()
    ):
        raise Unsupported("LoRA or quantized attention projections")
    known = {id(v) for v in _variables(layer).values()}
    extra = [v.path for v in layer.weights if id(v) not in known]
    if extra:
        raise Unsupported(f"weights outside the query/key/value/output projections: {extra}")


def couple_heads(graph: Any, layer: Any, qk: np.ndarray, v: np.ndarray, returns_scores: bool = False) -> str:
    """Couples the 'qk' and 'v' labels of an attention layer as the graph's `attention` mode says
    (see the module docstring) and returns the mode. `returns_scores`: the call also returns the
    attention scores, whose head axis keeps the heads in 'heads' mode."""
    heads, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
    mode = graph.attention
    qk2, v2 = qk.reshape(heads, kd), v.reshape(heads, vd)
    if mode == "keep":
        graph.freeze(np.concatenate([qk, v]), f"{layer.name}: attention='keep'")
    elif mode == "heads":
        for d in range(1, kd):
            graph.union(qk2[:, 0], qk2[:, d])
        for d in range(vd):
            graph.union(qk2[:, 0], v2[:, d])
        if returns_scores:
            graph.freeze(qk, f"{layer.name} returns attention scores, which have a head axis")
    else:
        for h in range(1, heads):
            graph.union(qk2[0], qk2[h])
            graph.union(v2[0], v2[h])
    return mode


class MultiHeadAttentionHandler(LayerHandler):
    """keras.layers.MultiHeadAttention (and subclasses without further weights)."""

    prunable_weights = ("query/kernel", "key/kernel", "value/kernel", "attention_output/kernel")

    # cost -------------------------------------------------------------------------------
    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        shapes = getattr(layer, "_build_shapes_dict", None) or {}
        q_shape = tuple(shapes.get("query_shape", input_shape))
        v_shape = tuple(shapes.get("value_shape", q_shape))
        k_shape = tuple(shapes.get("key_shape") or v_shape)
        heads, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
        d_out = int(np.prod(layer.output_dense.kernel.shape[2:]))
        axes = [a for a in (layer.attention_axes or range(1, len(q_shape) - 1))]
        free = prod(q_shape[a] for a in range(1, len(q_shape) - 1) if a not in axes)
        t, s = prod(q_shape[a] for a in axes), prod(v_shape[a] for a in axes)
        positions_q, positions_k = free * t, prod(v_shape[1:-1])
        total = positions_q * q_shape[-1] * heads * kd
        total += positions_k * k_shape[-1] * heads * kd + positions_k * v_shape[-1] * heads * vd
        if "gate" in _sublayers(layer):
            total += positions_q * q_shape[-1] * heads * vd
        total += free * heads * t * s * (kd + vd)
        total += positions_q * heads * vd * d_out
        return int(total)

    # tracing ----------------------------------------------------------------------------
    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer = call.layer
        check_projections(layer)
        variables = _variables(layer)
        names = list(call.input_names) or ["query", "value", "key"][: len(call.inputs)]
        by_name = dict(zip(names, call.inputs))
        if "query" not in by_name or "value" not in by_name:
            raise Unsupported(f"cannot tell query and value apart among the call's inputs {names}")
        for name, key in by_name.items():
            if name not in ("query", "value", "key"):  # masks: positions, not channels
                graph.freeze(graph.values[key], f"{layer.name} reads it as {name}")
        rec = graph.record(layer)
        graph.slot(layer, "in", graph.values[by_name["query"]])
        graph.slot(layer, "in_value", graph.values[by_name["value"]])
        key_slot = "in_key" if "key" in by_name else "in_value"
        if key_slot == "in_key":
            graph.slot(layer, "in_key", graph.values[by_name["key"]])
        rec.info["key_slot"] = key_slot
        heads, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
        out_kernel = variables["output/kernel"]
        out = graph.producer(layer, int(np.prod(out_kernel.shape[2:])))
        if len(out_kernel.shape) > 3:
            graph.freeze(out, f"{layer.name} has a multi-axis output_shape {layer._output_shape}")
        qk = graph.producer(layer, heads * kd, slot="qk")
        v = graph.producer(layer, heads * vd, slot="v")
        rec.info["attention"] = couple_heads(graph, layer, qk, v, returns_scores=len(call.outputs) > 1)
        if any("cache" in name for name in by_name):
            graph.freeze(np.concatenate([qk, v]), f"{layer.name} reads a key/value cache, which has head axes")
        outputs = [out]
        for shape in call.output_shapes[1:]:  # attention scores: key positions on the last axis
            outputs.append(graph.fresh(int(shape[-1] or 0), reason=f"{layer.name} attention scores"))
        return outputs

    def is_producer(self, rec: Any) -> bool:
        return True

    def produced_slots(self, rec: Any) -> tuple[str, ...]:
        return ("out", "qk", "v")

    # rebuild ----------------------------------------------------------------------------
    @staticmethod
    def _kept_shape(rec: Any, keep: Keep) -> tuple[int, int, int]:
        layer = rec.layer
        heads, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
        kq, kv = keep("qk"), keep("v")
        if rec.info.get("attention") == "head_dim":
            return heads, len(kq) // heads, len(kv) // heads
        new_heads = len(np.unique(kq // kd))
        if len(kq) != new_heads * kd or len(kv) != new_heads * vd:  # pragma: no cover - graph invariant
            raise ValueError(f"{layer.name}: kept attention positions are not whole heads")
        return new_heads, kd, vd

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        heads, kd, vd = self._kept_shape(rec, keep)
        config = dict(config, num_heads=heads, key_dim=kd, value_dim=vd)
        n_out = len(keep("out"))
        single_axis = len(rec.layer.output_dense.kernel.shape) == 3
        if single_axis and (config.get("output_shape") or n_out != len(keep("in"))):
            config["output_shape"] = (n_out,)
        return config

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        layer = rec.layer
        heads, kd, vd = self._kept_shape(rec, keep)
        role = {id(v): name for name, v in _variables(layer).items()}
        rows = {"query": keep("in"), "key": keep(rec.info["key_slot"]), "value": keep("in_value"),
                "gate": keep("in")}
        kq, kv, kout = keep("qk"), keep("v"), keep("out")
        q_scale = math.sqrt(kd / layer.key_dim)  # keeps the logits' 1/sqrt(key_dim) scale
        out = []
        for variable, w in zip(layer.weights, weights):
            name = role[id(variable)]
            proj, kind = name.split("/")
            if proj == "output":
                if kind == "kernel":
                    w = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])[kv][..., kout]
                    w = w.reshape((heads, vd) + w.shape[1:])
                else:
                    w = w[..., kout]
            else:
                cols, width = (kq, kd) if proj in ("query", "key") else (kv, vd)
                if kind == "kernel":
                    w = w[rows[proj]].reshape(len(rows[proj]), -1)[:, cols].reshape(-1, heads, width)
                else:
                    w = w.reshape(-1)[cols].reshape(heads, width)
                if proj == "query" and q_scale != 1.0:
                    w = (w * q_scale).astype(weights[0].dtype)
            out.append(w)
        return out

    def report_note(self, rec: Any, keep: Keep) -> str:
        layer = rec.layer
        heads, kd, vd = self._kept_shape(rec, keep)
        if (heads, kd, vd) == (layer.num_heads, layer.key_dim, layer.value_dim):
            return ""
        return (f"heads {layer.num_heads}->{heads}, key_dim {layer.key_dim}->{kd}, "
                f"value_dim {layer.value_dim}->{vd}")

    # importance -------------------------------------------------------------------------
    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return layer.output_dense.kernel, -1

    def filter_sets(self, rec: Any, transform: Callable[[Any], Any] | None = None,
                    include_bias: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        layer = rec.layer
        transform = transform or np.asarray
        variables = _variables(layer)
        heads, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
        sets = []
        out_k = _array(variables, "output/kernel", transform)
        if out_k is not None:
            matrix = out_k.reshape(-1, out_k.shape[-1]).T
            bias = _array(variables, "output/bias", transform) if include_bias else None
            if bias is not None:
                matrix = np.concatenate([matrix, bias.reshape(-1, 1)], axis=1)
            sets.append((rec.slots["out"], matrix))
        mode = rec.info.get("attention")
        if mode == "keep":
            return sets

        def per_position(projs: tuple[str, ...], width: int) -> np.ndarray | None:
            # one row per (head, position): input-side kernels and biases, then the output rows
            parts = []
            for proj in projs:
                k = _array(variables, f"{proj}/kernel", transform)
                if k is not None:
                    parts.append(k.reshape(k.shape[0], -1).T)
                b = _array(variables, f"{proj}/bias", transform) if include_bias else None
                if b is not None:
                    parts.append(b.reshape(-1, 1))
            if out_k is not None and "value" in projs:
                parts.append(out_k.reshape(heads * vd, -1))
            return np.concatenate(parts, axis=1) if parts else None

        qk_rows = per_position(("query", "key"), kd)
        v_rows = per_position(("value", "gate"), vd)
        if mode == "heads":
            pieces = [m.reshape(heads, -1) for m in (qk_rows, v_rows) if m is not None]
            if pieces:
                sets.append((rec.slots["qk"].reshape(heads, kd)[:, 0], np.concatenate(pieces, axis=1)))
        else:
            if qk_rows is not None:
                sets.append((rec.slots["qk"], qk_rows))
            if v_rows is not None:
                sets.append((rec.slots["v"], v_rows))
        return sets

    def activation_probes(self, rec: Any) -> list[tuple[str, Any, str, int]]:
        layer = rec.layer
        probes = [("out", layer, "output", 1)]
        if rec.info.get("attention") != "keep":
            probes += [("context", layer.output_dense, "input", 2), ("q", layer.query_dense, "output", 2),
                       ("k", layer.key_dense, "output", 2)]
        return probes

    def activation_scores(self, rec: Any, stats: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Output channels: mean |output|. Heads: the mean L1 norm of the head's context vector (its
        attention output before the output projection). Head dims: mean |context| per value
        position, mean |q| * mean |k| per query/key position."""
        layer, mode = rec.layer, rec.info.get("attention")
        heads, kd = layer.num_heads, layer.key_dim
        found = []
        if "out" in stats:
            found.append((rec.slots["out"], stats["out"]))
        context = stats.get("context")
        if mode == "heads" and context is not None:
            found.append((rec.slots["qk"].reshape(heads, kd)[:, 0], context.reshape(heads, -1).sum(1)))
        elif mode == "head_dim":
            if context is not None:
                found.append((rec.slots["v"], context.reshape(-1)))
            if "q" in stats and "k" in stats:
                found.append((rec.slots["qk"], (stats["q"] * stats["k"]).reshape(-1)))
        return found

    # verification -----------------------------------------------------------------------
    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        out = layer.output_dense
        weights = out.get_weights()
        weights[0][..., removed] = 0
        for w in weights[1:]:
            w[..., removed] = 0
        out.set_weights(weights)

    def zero_slots(self, layer: Any, removed: dict[str, np.ndarray]) -> None:
        subs = _sublayers(layer)
        groups = {"qk": ("query", "key"), "v": ("value", "gate")}
        for slot, positions in removed.items():
            for proj in groups.get(slot, ()):
                sub = subs.get(proj)
                if sub is None:
                    continue
                weights = []
                for w in sub.get_weights():  # kernel (d, H, w) and bias (H, w)
                    flat = w.reshape(-1, layer.num_heads * w.shape[-1]) if w.ndim == 3 else w.reshape(1, -1)
                    flat[:, positions] = 0
                    weights.append(flat.reshape(w.shape))
                sub.set_weights(weights)
            if slot == "v":
                out = subs["output"]
                weights = out.get_weights()
                kernel = weights[0]
                flat = kernel.reshape(-1, *kernel.shape[2:])
                flat[positions] = 0
                weights[0] = flat.reshape(kernel.shape)
                out.set_weights(weights)


register_layer(keras.layers.MultiHeadAttention, MultiHeadAttentionHandler())
