"""Sparsity-preserving weight quantization: a fixed 0/1 mask in front of any weight quantizer.

`PrunePreserveQuantizer(inner)` keeps a non-trainable `sparsity_mask` of the weight's shape (set
from the weight's zeros by `init_sparsity_masks` when the model is quantized) and quantizes
`weight * mask`: a pruned weight gets no gradient and its quantized value is exactly 0 (symmetric
grids hold 0; for grids without 0, binary and DoReFa, the mask is applied after snapping too), so
the exported int8 kernel has the pruned model's zeros, M-by-N (2:4) patterns included.

Example:
    >>> quantizer = PrunePreserveQuantizer(LastValueQuantizer(per_axis=True))
    >>> init_sparsity_masks(qat_model)     # done by quantize_model(model, preserve_sparsity=True)
"""

from __future__ import annotations

from typing import Any

import keras

from tfprune.quantization.low_bit import GridWeightQuantizer
from tfprune.quantization.quantizers import SPARSITY_MASK as MASK_KEY
from tfprune.quantization.quantizers import Quantizer, deserialize_quantizer, serialize_quantizer

_PACKAGE = "tfprune"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PrunePreserveQuantizer(Quantizer):
    """Quantizes `weight * mask` with `quantizer`; the mask is fixed (see `init_sparsity_masks`).

    Example:
        >>> PrunePreserveQuantizer(TernaryWeightQuantizer())
    """

    def __init__(self, quantizer: Quantizer | dict) -> None:
        if isinstance(quantizer, dict):
            quantizer = deserialize_quantizer(quantizer)
        if not isinstance(quantizer, Quantizer) or isinstance(quantizer, PrunePreserveQuantizer):
            raise TypeError(f"`quantizer` must be a weight Quantizer; received {type(quantizer).__name__}.")
        self.quantizer = quantizer

    @property
    def per_axis(self) -> bool:
        return getattr(self.quantizer, "per_axis", False)

    @property
    def channel_dims(self) -> int:
        return getattr(self.quantizer, "channel_dims", 1)

    def build(self, tensor_shape: Any, name: str, layer: keras.layers.Layer) -> dict:
        variables = dict(self.quantizer.build(tensor_shape, name, layer))
        variables[MASK_KEY] = layer.add_weight(name=f"{name}_{MASK_KEY}", shape=tuple(tensor_shape),
                                               trainable=False, initializer="ones")
        return variables

    def __call__(self, inputs: Any, training: bool, weights: dict, **kwargs: Any) -> Any:
        mask = weights[MASK_KEY]
        inner_weights = {k: v for k, v in weights.items() if k != MASK_KEY}
        if isinstance(self.quantizer, GridWeightQuantizer):
            return self.quantizer(inputs, training, inner_weights, mask=mask)
        return self.quantizer(inputs * keras.ops.cast(mask, inputs.dtype), training, inner_weights)

    def with_channel_dims(self, channel_dims: int) -> "PrunePreserveQuantizer":
        """The same quantizer for a kernel with `channel_dims` trailing channel axes."""
        return PrunePreserveQuantizer(self.quantizer.with_channel_dims(channel_dims))

    def get_config(self) -> dict:
        return {"quantizer": serialize_quantizer(self.quantizer)}


def init_sparsity_masks(model: Any) -> int:
    """Sets every `PrunePreserveQuantizer` mask of a quantize-aware model (or layer) to `weight != 0`.

    Returns the number of masks set.

    Example:
        >>> init_sparsity_masks(quantize_apply(annotated, "Default8BitPrunePreserveQuantizeScheme"))
    """
    from tfprune.quantization.layers import weight_quantizer_slots

    layers = [model] if not hasattr(model, "_flatten_layers") else \
        list(model._flatten_layers(include_self=True, recursive=True))
    count = 0
    for layer in layers:
        for weight, _, variables in weight_quantizer_slots(layer):
            if MASK_KEY in variables:
                values = keras.ops.convert_to_numpy(weight)
                variables[MASK_KEY].assign((values != 0).astype(variables[MASK_KEY].dtype))
                count += 1
    return count


__all__ = ["PrunePreserveQuantizer", "init_sparsity_masks"]
