"""keras_hub Transformer blocks after structured pruning (this module imports keras_hub).

keras_hub's `TransformerEncoder` and `TransformerDecoder` give each attention head
`hidden_dim // num_heads` positions and normalise over their whole input. Once heads, head
positions or hidden channels are removed that no longer holds, so `prune_filters` rebuilds such a
block as one of these subclasses, which build the same sublayers and then set their sizes:
  * `key_dim` / `value_dim`: the per-head widths of the self-attention;
  * `normalized_size` (optional): the hidden width before pruning; the block's LayerNormalizations
    become `PrunedLayerNormalization` with statistics over that many channels (the removed ones
    counting as zeros), so the pruned block computes what the original computes with them zeroed.

The call is keras_hub's own. Both classes are registered for Keras serialization; a saved model
that contains them loads with `keras.saving.load_model` once tfprune is imported (tfprune imports
this module, and with it keras_hub, only then).

Example:
    >>> block = PrunedTransformerEncoder(intermediate_dim=32, num_heads=2, key_dim=8, normalized_size=32)
    >>> block(keras.ops.zeros((1, 6, 24))).shape        # (1, 6, 24)
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras
import keras_hub

from tfprune.keras_graph import replace_sublayer
from tfprune.layers.pruned_normalization import PrunedLayerNormalization

ATTENTION = "_self_attention_layer"
NORMS = ("_self_attention_layer_norm", "_feedforward_layer_norm")


@contextlib.contextmanager
def _heads_fit(block: Any, hidden: int) -> Iterator[None]:
    """While the base class builds, at least one position per head (its attention is then replaced)."""
    heads = block.num_heads
    if hidden // heads == 0:
        block.num_heads = 1
    try:
        yield
    finally:
        block.num_heads = heads


class _PrunedSizes:
    """Mixin: the `key_dim` / `value_dim` / `normalized_size` arguments and the sublayers they resize."""

    def _set_sizes(self, key_dim: int, value_dim: int | None, normalized_size: int | None) -> None:
        if int(key_dim) < 1 or (value_dim is not None and int(value_dim) < 1):
            raise ValueError(f"key_dim and value_dim must be positive, received {key_dim} and {value_dim}.")
        if normalized_size is not None and int(normalized_size) < 1:
            raise ValueError(f"normalized_size must be a positive channel count, received {normalized_size}.")
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim) if value_dim is not None else self.key_dim
        self.normalized_size = None if normalized_size is None else int(normalized_size)

    def _resize_sublayers(self, shape: tuple) -> None:
        old = getattr(self, ATTENTION)
        sizes = dict(num_heads=self.num_heads, key_dim=self.key_dim, value_dim=self.value_dim)
        attention = type(old).from_config(dict(old.get_config(), **sizes))
        attention.build(query_shape=shape, value_shape=shape)
        replace_sublayer(self, ATTENTION, attention)
        if self.normalized_size is None:
            return
        for name in NORMS:
            old = getattr(self, name)
            norm = PrunedLayerNormalization.from_config(dict(old.get_config(), normalized_size=self.normalized_size))
            norm.build(shape)
            replace_sublayer(self, name, norm)

    def _size_config(self) -> dict:
        return {"key_dim": self.key_dim, "value_dim": self.value_dim, "normalized_size": self.normalized_size}


@keras.saving.register_keras_serializable(package="tfprune")
class PrunedTransformerEncoder(_PrunedSizes, keras_hub.layers.TransformerEncoder):
    """keras_hub `TransformerEncoder` with explicit per-head widths (and optionally normalisation over
    the hidden width before pruning).

    Args:
        intermediate_dim, num_heads: as for `keras_hub.layers.TransformerEncoder`.
        key_dim: query/key positions per head; value_dim: value positions per head (default key_dim).
        normalized_size: the hidden width before pruning (>= the input's), or None for plain
            LayerNormalization.
        **kwargs: as for `keras_hub.layers.TransformerEncoder`.

    Example:
        >>> PrunedTransformerEncoder(32, 2, key_dim=8, value_dim=4)(keras.ops.zeros((1, 6, 24))).shape
    """

    def __init__(self, intermediate_dim: int, num_heads: int, key_dim: int, value_dim: int | None = None,
                 normalized_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(intermediate_dim, num_heads, **kwargs)
        self._set_sizes(key_dim, value_dim, normalized_size)

    def build(self, inputs_shape: tuple) -> None:
        shape = tuple(inputs_shape)
        with _heads_fit(self, shape[-1]):
            super().build(shape)
        self._resize_sublayers(shape)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._size_config()}


@keras.saving.register_keras_serializable(package="tfprune")
class PrunedTransformerDecoder(_PrunedSizes, keras_hub.layers.TransformerDecoder):
    """keras_hub `TransformerDecoder` (self-attention only) with explicit per-head widths (and
    optionally normalisation over the hidden width before pruning).

    Args:
        intermediate_dim, num_heads: as for `keras_hub.layers.TransformerDecoder`.
        key_dim, value_dim, normalized_size: as for `PrunedTransformerEncoder`.
        **kwargs: as for `keras_hub.layers.TransformerDecoder`.

    Example:
        >>> PrunedTransformerDecoder(32, 2, key_dim=8, normalize_first=True)(keras.ops.zeros((1, 6, 24))).shape
    """

    def __init__(self, intermediate_dim: int, num_heads: int, key_dim: int, value_dim: int | None = None,
                 normalized_size: int | None = None, **kwargs: Any) -> None:
        decoder_shape = kwargs.pop("decoder_sequence_shape", None)
        encoder_shape = kwargs.pop("encoder_sequence_shape", None)
        if encoder_shape:
            raise ValueError("PrunedTransformerDecoder has no cross-attention; received encoder_sequence_shape="
                             f"{encoder_shape}. Fix: use keras_hub.layers.TransformerDecoder for cross-attention.")
        super().__init__(intermediate_dim, num_heads, **kwargs)
        self._set_sizes(key_dim, value_dim, normalized_size)
        if decoder_shape:
            self.build(decoder_shape)

    def build(self, decoder_sequence_shape: tuple, encoder_sequence_shape: tuple | None = None) -> None:
        if encoder_sequence_shape:
            raise ValueError("PrunedTransformerDecoder has no cross-attention. Fix: call it on the decoder "
                             "sequence only.")
        shape = tuple(decoder_sequence_shape)
        with _heads_fit(self, shape[-1]):
            super().build(shape)
        self._resize_sublayers(shape)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._size_config()}
