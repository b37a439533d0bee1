"""Embedding: a producer of `output_dim` channels; the table is (input_dim, output_dim).

ReversibleEmbedding (keras.layers, used by keras_hub language models) also maps hidden channels back
to vocabulary logits when called with `reverse=True`; that call consumes the same channels its
table produces (with `tie_weights=False`, the rows of its `reverse_embeddings`), so both are pruned
together.

Example:
    >>> get_handler(keras.layers.Embedding(100, 8)).prunable_weights   # ('embeddings',)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfprune.layers.base import Keep, LayerHandler, Unsupported
from tfprune.layers.registry import register_layer


class EmbeddingHandler(LayerHandler):
    """Embedding: its table is magnitude-prunable; in the dependency graph its width is a producer."""

    prunable_weights = ("embeddings",)
    keras_int4_group_axis = -1  # scale/zero are [vocabulary, groups], g_idx runs along the embedding

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer = call.layer
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise Unsupported("LoRA or quantized Embedding")
        return [graph.producer(layer, layer.output_dim)]

    def is_producer(self, rec: Any) -> bool:
        return True

    def new_config(self, rec: Any, config: dict, keep: Keep) -> dict:
        return dict(config, output_dim=len(keep("out")))

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        return [weights[0][:, keep("out")]] + weights[1:]

    def filter_weight(self, layer: Any) -> tuple[Any, int]:
        return layer.embeddings, -1

    def zero_channels(self, layer: Any, removed: np.ndarray) -> None:
        weights = layer.get_weights()
        weights[0][:, removed] = 0
        layer.set_weights(weights)


class ReversibleEmbeddingHandler(EmbeddingHandler):
    """keras.layers.ReversibleEmbedding: forward calls produce channels; reverse calls consume them."""

    def trace(self, graph: Any, call: Any) -> list[np.ndarray]:
        layer = call.layer
        out = super().trace(graph, call)[0]
        if not call.argument("reverse", 1, False):
            return [out]
        labels = graph.slot(layer, "in_reverse", graph.values[call.inputs[0]])
        if len(labels) != len(out):
            raise Unsupported(f"reverse call on {len(labels)} channels, the table has {len(out)}")
        graph.union(labels, out)
        return [graph.fresh(layer.input_dim, reason=f"{layer.name} (reverse) outputs vocabulary logits")]

    def new_weights(self, rec: Any, weights: list[np.ndarray], keep: Keep) -> list[np.ndarray]:
        kept = keep("out")
        names = [v.path.split("/")[-1] for v in rec.layer.weights]
        return [w[kept] if name == "reverse_embeddings" else w[:, kept] if name == "embeddings" else w
                for name, w in zip(names, weights)]


register_layer(keras.layers.Embedding, EmbeddingHandler())
if hasattr(keras.layers, "ReversibleEmbedding"):
    register_layer(keras.layers.ReversibleEmbedding, ReversibleEmbeddingHandler())
