"""Pruning policies: which layers of a model `prune_low_magnitude` wraps, and which models qualify.

`prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())` prunes only the layers that
XNNPACK's sparse inference runs faster when sparse: 1x1 convolutions (stride 1, no dilation, no groups).
XNNPACK runs such a network in its sparse (CHW) mode only when it starts with a dense 3x3 stride-2
convolution over a 3-channel image, so the model is checked for that first, with an error naming
what to change.

Example:
    >>> pruned = tfprune.prune_low_magnitude(model, pruning_policy=tfprune.PruneForLatencyOnXNNPack())
"""

from __future__ import annotations

from typing import Any

import keras

from tfprune.keras_graph import flatten_model, is_graph_model

__all__ = ["PruningPolicy", "PruneForLatencyOnXNNPack"]


class PruningPolicy:
    """Base class: `allow_pruning(layer)` says whether a layer is wrapped; `ensure_model_supports_pruning`
    raises a ValueError for a model the policy cannot serve.

    Example:
        >>> class DenseOnly(PruningPolicy):
        ...     def allow_pruning(self, layer):
        ...         return isinstance(layer, keras.layers.Dense)
    """

    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        """Whether `layer` (prunable by tfprune) is wrapped under this policy."""
        return True

    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        """Raises ValueError (naming the fix) if `model` cannot be pruned under this policy."""


_INPUT_LAYERS = ("InputLayer", "ZeroPadding2D", "Rescaling", "Normalization")


def _is_pointwise(layer: Any) -> bool:
    return (type(layer) is keras.layers.Conv2D and tuple(layer.kernel_size) == (1, 1)
            and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1 and layer.data_format == "channels_last")


class PruneForLatencyOnXNNPack(PruningPolicy):
    """Prunes only the 1x1 convolutions that XNNPACK's sparse inference accelerates (see the module doc).

    Example:
        >>> tfprune.prune_low_magnitude(model, pruning_policy=PruneForLatencyOnXNNPack())
    """

    def allow_pruning(self, layer: keras.layers.Layer) -> bool:
        return _is_pointwise(layer)

    def ensure_model_supports_pruning(self, model: keras.Model) -> None:
        name = getattr(model, "name", type(model).__name__)
        if not is_graph_model(model):
            raise ValueError(
                f"PruneForLatencyOnXNNPack needs a Sequential or functional model to check its structure; "
                f"{name!r} is {type(model).__name__}. Fix: build the model with the functional API."
            )
        if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4 or model.inputs[0].shape[-1] != 3:
            raise ValueError(
                f"PruneForLatencyOnXNNPack: model {name!r} must take one image input of shape (H, W, 3) "
                f"(XNNPACK's sparse inference starts from an RGB image); its inputs are "
                f"{[tuple(t.shape) for t in model.inputs]}. Fix: feed a 3-channel image, channels last."
            )
        calls, _, _ = flatten_model(model)
        first = next((c.layer for c in calls if type(c.layer).__name__ not in _INPUT_LAYERS), None)
        if not (type(first) is keras.layers.Conv2D and tuple(first.kernel_size) == (3, 3)
                and tuple(first.strides) == (2, 2) and first.groups == 1):
            got = "nothing" if first is None else f"{first.name!r} ({type(first).__name__}" + (
                f", kernel {tuple(first.kernel_size)}, strides {tuple(first.strides)})"
                if isinstance(first, keras.layers.Conv2D) else ")")
            raise ValueError(
                f"PruneForLatencyOnXNNPack: model {name!r} must start with a dense Conv2D with a 3x3 kernel and "
                f"strides 2 (XNNPACK switches to its sparse mode there); its first layer is {got}. Fix: make "
                "the first layer keras.layers.Conv2D(filters, 3, strides=2, padding='same'), or prune without "
                "the policy."
            )
        if not any(_is_pointwise(c.layer) for c in calls):
            raise ValueError(
                f"PruneForLatencyOnXNNPack: model {name!r} has no 1x1 convolution (stride 1, no dilation, no "
                "groups), the only layers this policy prunes, so nothing would be pruned. Fix: prune without "
                "the policy."
            )
