"""The layer registry: layer class -> `LayerHandler`, and the lookups built on it.

One lookup rule for every capability: the layer's exact class first, then its base classes in
method-resolution order, so a subclass of Dense is handled as Dense unless registered itself.
Handlers for optional packages (keras_hub) are imported the first time a class of that package is
looked up (see `deferred`). Anything not found gets `Unknown` (nothing pruned or counted; its channels are frozen in the
dependency graph).

Example:
    >>> register_layer(MyScale, PerChannel())
    >>> get_handler(MyScale()).keeps_weights     # True
"""

from __future__ import annotations

from typing import Any

import keras

from tfprune.layers.base import LayerHandler, Unknown, UnsupportedLayerError
from tfprune.layers.deferred import load_handlers_for

_REGISTRY: dict[type, LayerHandler] = {}
_UNKNOWN = Unknown()


def register_layer(layer_class: type, handler: LayerHandler) -> None:
    """Registers `handler` for `layer_class` (and, unless they are registered themselves, its subclasses).

    Registering again replaces the previous handler.

    Example:
        >>> tfprune.register_layer(MyChannelwiseActivation, tfprune.layers.PassThrough())
    """
    if not isinstance(layer_class, type):
        raise TypeError(f"Expected a layer class, received {type(layer_class).__name__}: {layer_class!r}.")
    if not isinstance(handler, LayerHandler):
        raise TypeError(
            f"Expected a LayerHandler instance (e.g. tfprune.layers.PassThrough()), received "
            f"{type(handler).__name__}."
        )
    _REGISTRY[layer_class] = handler


def lookup(layer_class: type) -> LayerHandler | None:
    """The handler registered for `layer_class` or its nearest registered base class, else None.

    A class from a package with deferred handlers (keras_hub) first loads them.
    """
    load_handlers_for(layer_class)
    for cls in layer_class.__mro__:
        handler = _REGISTRY.get(cls)
        if handler is not None:
            return handler
    return None


def get_handler(layer: Any) -> LayerHandler:
    """The handler of a layer (or keras operation) instance; `Unknown` if none is registered.

    Example:
        >>> get_handler(keras.layers.Conv2D(8, 3)).prunable_weights   # ('kernel',)
    """
    return lookup(type(layer)) or _UNKNOWN


def registered_classes() -> list[type]:
    """Every registered class (layers and keras operations)."""
    return list(_REGISTRY)


def supported_layer_classes() -> list[str]:
    """Names of the registered classes; keras.ops operations are listed as 'ops.Name'.

    Example:
        >>> "Conv2D" in supported_layer_classes()   # True
    """
    return sorted(cls.__name__ if issubclass(cls, keras.layers.Layer) else f"ops.{cls.__name__}"
                  for cls in _REGISTRY)


# magnitude pruning ---------------------------------------------------------------------------


def _is_custom_prunable(layer: Any) -> bool:
    # the class's method: the one a wrapper adds to a wrapped built-in layer does not count
    return callable(getattr(type(layer), "get_prunable_weights", None))


def is_prunable(layer: Any) -> bool:
    """True if `layer` has weights that magnitude pruning can prune.

    Example:
        >>> is_prunable(keras.layers.Dense(4))   # True
    """
    return _is_custom_prunable(layer) or bool(get_handler(layer).prunable_weight_names(layer))


def is_pass_through(layer: Any) -> bool:
    """True if `layer` (built) is left unwrapped when a whole model is pruned: it has no weights, or
    its handler says its weights are never pruned.

    Example:
        >>> is_pass_through(keras.layers.BatchNormalization())   # True
    """
    if is_prunable(layer):
        return False
    return get_handler(layer).keeps_weights or not layer.weights


def prunable_weights(layer: Any) -> list[tuple[str, Any]]:
    """The `(label, variable)` pairs to prune in a built `layer`.

    Labels are stable names used in summaries and hparams maps, e.g. `"kernel"` or `"query/kernel"`.

    Raises:
        UnsupportedLayerError: if the layer is neither registered with prunable weights nor a
            `PrunableLayer`.

    Example:
        >>> [label for label, _ in prunable_weights(built_lstm)]   # ['kernel', 'recurrent_kernel']
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
    names = get_handler(layer).prunable_weight_names(layer)
    if not names:
        raise UnsupportedLayerError(unsupported_message(layer))
    found: list[tuple[str, Any]] = []
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


def unsupported_message(layer: Any) -> str:
    """The error text for a layer with weights tfprune cannot prune."""
    return (
        f"Layer '{layer.name}' of type {type(layer).__name__} has weights but tfprune does not know which "
        "of them to prune. Either make it prunable by implementing `get_prunable_weights()` "
        "(subclass tfprune.PrunableLayer) or by registering a handler that names them "
        "(`tfprune.register_layer(cls, handler)` with `handler.prunable_weights = ('kernel',)`), or leave it "
        "out: apply `tfprune.prune_low_magnitude` only to the layers you want pruned (e.g. through "
        "`keras.models.clone_model(..., clone_function=...)`)."
    )
