"""keras_hub layers: Transformer blocks and position embeddings (this module imports keras_hub).

tfprune imports this module the first time its registry looks up a keras_hub layer, so keras_hub is
needed only by models that use it.

`TransformerEncoder` / `TransformerDecoder` (self-attention, as in BERT and GPT-2) are single
layers holding a MultiHeadAttention, two LayerNormalizations and a two-Dense feed-forward network
around a residual stream. In the dependency graph a block
  * consumes and returns the hidden channels of its input ('in'); its attention output and
    feed-forward output projections ('out') are added to them, so they are coupled;
  * produces its heads ('qk', 'v', coupled by the graph's `attention` mode as for
    MultiHeadAttention) and its feed-forward width ('ffn');
  * normalises over the hidden channels as the graph's `layer_norm` mode says ('exact': the pruned
    block keeps statistics over the original width).
The pruned block is the same keras_hub class when only `intermediate_dim` changed, else
`PrunedTransformerEncoder` / `PrunedTransformerDecoder` (fewer `num_heads`, explicit `key_dim`,
`value_dim`, `normalized_size`). Kept with a reason: cross-attention (`encoder_sequence`), calls
with a cache or returning attention scores, subclasses (their call may differ), LoRA or quantized
sublayers, a feed-forward activation that mixes channels.

`PositionEmbedding` produces a table column per hidden channel of its input, whose width it takes,
so its output and input channels are coupled. `TokenAndPositionEmbedding` produces `embedding_dim`
channels from both of its tables.

Example:
    >>> backbone = keras_hub.models.BertBackbone(100, 2, 4, 32, 64, max_sequence_length=16)
    >>> pruned, report = tfprune.structured.prune_filters(backbone, 0.5, attention="heads")
"""

from __future__ import annotations

import types
from typing import Any, Callable

import keras_hub
import numpy as np

from tfprune.layers.attention import MultiHeadAttentionHandler, check_projections, couple_heads
from tfprune.layers.base import ELEMENTWISE_ACTIVATIONS, Keep, LayerHandler, Unsupported, prod
from tfprune.layers.pruned_transformer import (
    ATTENTION,
    NORMS,
    PrunedTransformerDecoder,
    PrunedTransformerEncoder,
)
from tfprune.layers.registry import register_layer

FFN_IN, FFN_OUT = "_feedforward_intermediate_dense", "_feedforward_output_dense"
ELEMENTWISE = ELEMENTWISE_ACTIVATIONS | {"gelu_approximate"}  # keras_hub's tanh approximation of GELU
_MHA = MultiHeadAttentionHandler()


def _is_adapted(layer: Any) -> bool:
    return bool(getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None))


def _attention_record(rec: Any) -> Any:
    """The block's attention as a MultiHeadAttention record: its inputs and output are the hidden channels."""
    x = rec.slots["in"]
    slots = {"in": x, "in_value": x, "out": rec.slots["out"], "qk": rec.slots["qk"], "v": rec.slots["v"]}
    info = {"attention": rec.info["attention"], "key_slot": "in_value"}
    return types.SimpleNamespace(layer=getattr(rec.layer, ATTENTION), slots=slots, info=info, name=rec.layer.name)


def _attention_keep(keep: Keep) -> Keep:
    return lambda slot: keep("in" if slot == "in_value" else slot)


def _dense_rows(dense: Any, transform: Callable, include_bias: bool) -> np.ndarray | None:
    kernel = transform(dense.kernel)
    if kernel is None:
        return None
    rows = np.asarray(kernel, dtype=np.float64).T
    bias = transform(dense.bias) if include_bias and dense.bias is not None else None
    if bias is not None:
        rows = np.concatenate([rows, np.asarray(bias, dtype=np.float64).reshape(-1, 1)], axis=1)
    return rows


def _zero_last_axis(layer: Any, removed: np.ndarray) -> None:
    weights = layer.get_weights()
    for w in weights:
        w[..., removed] = 0
    layer.set_weights(weights)


class TransformerBlockHandler(LayerHandler):
    """keras_hub TransformerEncoder / TransformerDecoder with self-attention only (see the module docstring)."""

    def __init__(self, plain: type, pruned: type, sequence_argument: str) -> None:
        self.plain, self.pruned, self.sequence_argument = plain, pruned, sequence_argument

    # cost -------------------------------------------------------------------------------
    def macs(self, layer: Any, input_shape: tuple, output_shape: tuple) -> int:
        total = _MHA.macs(getattr(layer, ATTENTION), input_shape, input_shape)
        total += len(NORMS) * prod(input_shape[1:])  # one MAC per element and LayerNormalization
        hidden, width = int(input_shape[-1]), int(getattr(layer, FFN_IN).kernel.shape[-1])
        return int(total + 2 * prod(input_shape[1:-1]) * hidden * width)

    # tracing ----------------------------------------------------------------------------
    def _check(self, call: Any) -> dict:
        layer = call.layer
        if type(layer) not in (self.plain, self.pruned):
            raise Unsupported(f"{type(layer).__name__} subclasses {self.plain.__name__}; its call may differ")
        if getattr(layer, "_cross_attention_layer", None) is not None:
            raise Unsupported("cross-attention (encoder_sequence) is not traced")
        if len(call.outputs) != 1:
            raise Unsupported("the call returns attention scores or a cache")
        by_name = dict(zip(call.input_names, call.inputs))
        if self.sequence_argument not in by_name:
            raise Unsupported(f"cannot find the `{self.sequence_argument}` input among {call.input_names}")
        if any("cache" in name for name in by_name):
            raise Unsupported("called with a key/value cache")
        check_projections(getattr(layer, ATTENTION))
        if _is_adapted(layer) or any(_is_adapted(getattr(layer, n)) for n in (FFN_IN, FFN_OUT)):
            raise Unsupported("LoRA or quantized feed-forward layers")
        tracked = [id(v) for sub in layer._layers for v in sub.weights]
        if tracked != [id(v) for v in layer.weights]:
            raise Unsupported("weights outside its sublayers")
        return by_name

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer = call.layer
        by_name = self._check(call)
        for name, key in by_name.items():
            if name != self.sequence_argument:  # masks: positions, not channels
                graph.freeze(graph.values[key], f"{layer.name} reads it as {name}")
        rec = graph.record(layer)
        x = graph.slot(layer, "in", graph.values[by_name[self.sequence_argument]])
        out = graph.producer(layer, len(x))  # attention and feed-forward outputs, added to the stream
        graph.union(out, x)
        self._trace_norms(graph, rec, x, len(call.input_shapes[0]))
        attention = getattr(layer, ATTENTION)
        qk = graph.producer(layer, attention.num_heads * attention.key_dim, slot="qk")
        v = graph.producer(layer, attention.num_heads * attention.value_dim, slot="v")
        rec.info["attention"] = couple_heads(graph, attention, qk, v)
        ffn = graph.producer(layer, int(getattr(layer, FFN_IN).kernel.shape[-1]), slot="ffn")
        activation = getattr(getattr(layer, FFN_IN).activation, "__name__", None)
        if activation not in ELEMENTWISE:
            graph.freeze(ffn, f"{layer.name}: feed-forward activation {activation!r} may mix channels")
        return [x]

    def _trace_norms(self, graph: Any, rec: Any, x: np.ndarray, rank: int) -> None:
        layer, mode = rec.layer, graph.layer_norm
        norms = [getattr(layer, name) for name in NORMS]
        for norm in norms:
            axes = norm.axis if isinstance(norm.axis, (list, tuple)) else [norm.axis]
            if [a % rank for a in axes] != [rank - 1]:
                graph.freeze(x, f"{layer.name}.{norm.name} normalises over axis {norm.axis}")
        if mode == "keep":
            graph.freeze(x, f"{layer.name} normalises over these channels (layer_norm='keep')")
        elif mode == "approximate":
            rec.info["approximate"] = True
        else:
            rec.info["normalized_size"] = max(getattr(n, "normalized_size", len(x)) for n in norms)

    def is_producer(self, rec: Any) -> bool:
        return True

    def produced_slots(self, rec: Any) -> tuple[str, ...]:
        return ("out", "qk", "v", "ffn")

    # rebuild ----------------------------------------------------------------------------
    def _sizes(self, rec: Any, keep: Keep) -> dict:
        heads, kd, vd = _MHA._kept_shape(_attention_record(rec), _attention_keep(keep))
        hidden = len(keep("in"))
        size = rec.info.get("normalized_size")
        return {"num_heads": heads, "key_dim": kd, "value_dim": vd, "hidden": hidden,
                "intermediate_dim": len(keep("ffn")),
                "normalized_size": size if size is not None and size != hidden else None}

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        sizes = self._sizes(rec, keep)
        hidden, heads = sizes["hidden"], sizes["num_heads"]
        config = dict(config, num_heads=heads, intermediate_dim=sizes["intermediate_dim"])
        if config.get("decoder_sequence_shape"):
            config["decoder_sequence_shape"] = list(config["decoder_sequence_shape"][:-1]) + [hidden]
        plain = (sizes["key_dim"] == hidden // heads and sizes["value_dim"] == sizes["key_dim"]
                 and sizes["normalized_size"] is None and type(rec.layer) is self.plain)
        if not plain:
            config.update(key_dim=sizes["key_dim"], value_dim=sizes["value_dim"],
                          normalized_size=sizes["normalized_size"])
        return config

    def new_layer(self, rec: Any, layer: Any, config: dict) -> Any:
        cls = self.pruned if "key_dim" in config else self.plain
        return cls.from_config(config)

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        layer = rec.layer
        roles = {id(getattr(layer, name)): name for name in (ATTENTION, FFN_IN, FFN_OUT) + NORMS}
        hidden, ffn = keep("in"), keep("ffn")
        out, start = [], 0
        for sub in layer._layers:
            chunk = weights[start:start + len(sub.weights)]
            start += len(sub.weights)
            if not chunk:
                continue
            role = roles.get(id(sub))
            if role == ATTENTION:
                chunk = _MHA.new_weights(_attention_record(rec), chunk, _attention_keep(keep))
            elif role in NORMS:
                chunk = [w[..., hidden] for w in chunk]
            elif role == FFN_IN:
                chunk = [chunk[0][hidden][:, ffn]] + [b[ffn] for b in chunk[1:]]
            elif role == FFN_OUT:
                chunk = [chunk[0][ffn][:, hidden]] + [b[hidden] for b in chunk[1:]]
            else:
                raise ValueError(f"{layer.name}: sublayer {sub.name!r} has weights that tfprune cannot slice.")
            out.extend(chunk)
        if start != len(weights):
            raise ValueError(f"{layer.name}: {len(weights)} weights, its sublayers hold {start}.")
        return out

    def report_note(self, rec: Any, keep: Keep) -> str:
        sizes, attention = self._sizes(rec, keep), getattr(rec.layer, ATTENTION)
        before = (attention.num_heads, attention.key_dim, attention.value_dim,
                  int(getattr(rec.layer, FFN_IN).kernel.shape[-1]))
        after = (sizes["num_heads"], sizes["key_dim"], sizes["value_dim"], sizes["intermediate_dim"])
        if before == after:
            return ""
        names = ("heads", "key_dim", "value_dim", "intermediate_dim")
        return ", ".join(f"{n} {b}->{a}" for n, b, a in zip(names, before, after))

    # importance -------------------------------------------------------------------------
    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return getattr(layer, FFN_OUT).kernel, -1

    def filter_sets(self, rec: Any, transform: Callable[[Any], Any] | None = None,
                    include_bias: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        sets = _MHA.filter_sets(_attention_record(rec), transform, include_bias)
        transform = transform or np.asarray
        for slot, name in (("ffn", FFN_IN), ("out", FFN_OUT)):
            rows = _dense_rows(getattr(rec.layer, name), transform, include_bias)
            if rows is not None:
                sets.append((rec.slots[slot], rows))
        return sets

    def activation_probes(self, rec: Any) -> list[tuple[str, Any, str, int]]:
        probes = _MHA.activation_probes(_attention_record(rec))
        return probes + [("ffn", getattr(rec.layer, FFN_IN), "output", 1),
                         ("ffn_out", getattr(rec.layer, FFN_OUT), "output", 1)]

    def activation_scores(self, rec: Any, stats: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        found = _MHA.activation_scores(_attention_record(rec), stats)
        if "ffn" in stats:
            found.append((rec.slots["ffn"], stats["ffn"]))
        if "ffn_out" in stats:
            found.append((rec.slots["out"], stats["ffn_out"]))
        return found

    # verification -----------------------------------------------------------------------
    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        _MHA.zero_channels(getattr(layer, ATTENTION), removed)
        for name in NORMS + (FFN_OUT,):  # gamma and beta; kernel columns and bias
            _zero_last_axis(getattr(layer, name), removed)

    def zero_slots(self, layer: Any, removed: dict[str, np.ndarray]) -> None:
        heads = {slot: removed[slot] for slot in ("qk", "v") if slot in removed}
        if heads:
            _MHA.zero_slots(getattr(layer, ATTENTION), heads)
        if "ffn" in removed:
            _zero_last_axis(getattr(layer, FFN_IN), removed["ffn"])


class PositionEmbeddingHandler(LayerHandler):
    """keras_hub PositionEmbedding: one table column per hidden channel of its input."""

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer = call.layer
        if len(call.inputs) > 1:
            raise Unsupported("called with explicit positions or a tensor start_index")
        x = graph.slot(layer, "in", graph.values[call.inputs[0]])
        width = int(layer.position_embeddings.shape[-1])
        if len(x) != width:
            raise Unsupported(f"its table has {width} channels, its input {len(x)}")
        out = graph.producer(layer, width)
        graph.union(out, x)
        return [out]

    def is_producer(self, rec: Any) -> bool:
        return True

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        return [weights[0][:, keep("out")]] + weights[1:]

    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return layer.position_embeddings, -1

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        _zero_last_axis(layer, removed)


class TokenAndPositionEmbeddingHandler(LayerHandler):
    """keras_hub TokenAndPositionEmbedding: a producer of `embedding_dim` channels (token and position
    tables; with `tie_weights=False`, rows of the token table's reverse matrix too)."""

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer = call.layer
        if len(call.inputs) > 1:
            raise Unsupported("called with explicit positions or a tensor start_index")
        if _is_adapted(layer.token_embedding):
            raise Unsupported("LoRA or quantized token embedding")
        return [graph.producer(layer, layer.embedding_dim)]

    def is_producer(self, rec: Any) -> bool:
        return True

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        return dict(config, embedding_dim=len(keep("out")))

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        kept = keep("out")
        names = [v.path.split("/")[-1] for v in rec.layer.weights]
        return [w[kept] if name == "reverse_embeddings" else w[:, kept] for name, w in zip(names, weights)]

    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return layer.token_embedding.embeddings, -1

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        for sub in (layer.token_embedding, layer.position_embedding):
            weights = sub.get_weights()
            weights[0][:, removed] = 0
            sub.set_weights(weights)


_ENCODER = TransformerBlockHandler(keras_hub.layers.TransformerEncoder, PrunedTransformerEncoder, "inputs")
_DECODER = TransformerBlockHandler(keras_hub.layers.TransformerDecoder, PrunedTransformerDecoder, "decoder_sequence")
register_layer(keras_hub.layers.TransformerEncoder, _ENCODER)
register_layer(PrunedTransformerEncoder, _ENCODER)
register_layer(keras_hub.layers.TransformerDecoder, _DECODER)
register_layer(PrunedTransformerDecoder, _DECODER)
register_layer(keras_hub.layers.PositionEmbedding, PositionEmbeddingHandler())
register_layer(keras_hub.layers.TokenAndPositionEmbedding, TokenAndPositionEmbeddingHandler())
