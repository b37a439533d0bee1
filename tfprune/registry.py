"""Which weights of which layers are prunable.

Built-in Keras 3 layers are listed in `PRUNABLE_WEIGHTS` by class, as the
trailing components of each prunable variable's path (so an LSTM's
`lstm_cell/recurrent_kernel` is `"recurrent_kernel"`). Custom layers join by
implementing `PrunableLayer.get_prunable_weights()`.

Example:
    >>> class MyLayer(keras.layers.Layer, PrunableLayer):
    ...     def get_prunable_weights(self):
    ...         return [self.w]
"""

from __future__ import annotations

import abc

import keras

L = keras.layers

# Layer class -> names (trailing path components) of its prunable variables.
PRUNABLE_WEIGHTS: dict[type, tuple[str, ...]] = {
    L.Dense: ("kernel",),
    L.EinsumDense: ("kernel",),
    L.Conv1D: ("kernel",),
    L.Conv2D: ("kernel",),
    L.Conv3D: ("kernel",),
    L.Conv1DTranspose: ("kernel",),
    L.Conv2DTranspose: ("kernel",),
    L.Conv3DTranspose: ("kernel",),
    L.DepthwiseConv1D: ("kernel",),
    L.DepthwiseConv2D: ("kernel",),
    L.SeparableConv1D: ("depthwise_kernel", "pointwise_kernel"),
    L.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
    L.Embedding: ("embeddings",),
    L.SimpleRNN: ("kernel", "recurrent_kernel"),
    L.GRU: ("kernel", "recurrent_kernel"),
    L.LSTM: ("kernel", "recurrent_kernel"),
    L.MultiHeadAttention: ("query/kernel", "key/kernel", "value/kernel", "attention_output/kernel"),
}

# Layers with weights that are never pruned and pass through unwrapped.
PASS_THROUGH: tuple[type, ...] = tuple(
    cls
    for cls in (
        getattr(L, name, None)
        for name in (
            "BatchNormalization",
            "LayerNormalization",
            "GroupNormalization",
            "UnitNormalization",
            "RMSNormalization",
            "SpectralNormalization",
            "Normalization",
        )
    )
    if cls is not None
)


class PrunableLayer(abc.ABC):
    """Protocol for custom layers: return the variables to prune.

    Any layer with a `get_prunable_weights()` method is accepted, whether or not
    it inherits from this class.
    """

    @abc.abstractmethod
    def get_prunable_weights(self) -> list:
        """Returns the `keras.Variable`s of this layer that should be pruned."""


class UnsupportedLayerError(ValueError):
    """A layer with weights that tfprune does not know how to prune."""


def _is_custom_prunable(layer: keras.layers.Layer) -> bool:
    return callable(getattr(layer, "get_prunable_weights", None))


def _registered_names(layer: keras.layers.Layer) -> tuple[str, ...] | None:
    for cls in type(layer).__mro__:
        if cls in PRUNABLE_WEIGHTS:
            return PRUNABLE_WEIGHTS[cls]
    return None


def is_prunable(layer: keras.layers.Layer) -> bool:
    """True if `layer` has weights that tfprune can prune."""
    return _is_custom_prunable(layer) or _registered_names(layer) is not None


def is_pass_through(layer: keras.layers.Layer) -> bool:
    """True if `layer` (built) is left unwrapped when a whole model is pruned."""
    return isinstance(layer, PASS_THROUGH) or (not is_prunable(layer) and not layer.weights)


def prunable_weights(layer: keras.layers.Layer) -> list[tuple[str, keras.Variable]]:
    """The `(label, variable)` pairs to prune in a built `layer`.

    Labels are stable names used in summaries and hparams maps, e.g. `"kernel"`
    or `"query/kernel"`.

    Raises:
        UnsupportedLayerError: if the layer is neither registered nor a `PrunableLayer`.
    """
    if _is_custom_prunable(layer):
        variables = list(layer.get_prunable_weights())
        labels: list[str] = []
        for variable in variables:
            label = getattr(variable, "name", "weight")
            if label in labels:
                label = f"{label}_{len(labels)}"
            labels.append(label)
        return list(zip(labels, variables))
    names = _registered_names(layer)
    if names is None:
        raise UnsupportedLayerError(unsupported_message(layer))
    found: list[tuple[str, keras.Variable]] = []
    for name in names:
        parts = name.split("/")
        matches = [v for v in layer.weights if v.path.split("/")[-len(parts):] == parts]
        if len(matches) != 1:
            raise UnsupportedLayerError(
                f"Layer '{layer.name}' ({type(layer).__name__}) should have exactly one weight named "
                f"'{name}' but has {[v.path for v in layer.weights]}. Implement "
                "`get_prunable_weights()` on it (tfprune.PrunableLayer) to say which weights to prune."
            )
        found.append((name, matches[0]))
    return found


def unsupported_message(layer: keras.layers.Layer) -> str:
    """The error text for a layer with weights tfprune cannot prune."""
    return (
        f"Layer '{layer.name}' of type {type(layer).__name__} has weights but tfprune does not know which "
        "of them to prune. Either make it prunable by implementing `get_prunable_weights()` "
        "(subclass tfprune.PrunableLayer), or leave it out: apply `tfprune.prune_low_magnitude` only to the "
        "layers you want pruned (e.g. through `keras.models.clone_model(..., clone_function=...)`)."
    )
