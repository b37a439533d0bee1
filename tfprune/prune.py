"""Public entry points: `prune_low_magnitude`, `strip_pruning`, `prune_scope`.

Example:
    >>> pruned = prune_low_magnitude(model, pruning_schedule=PolynomialDecay(0.0, 0.8, 0, 1000))
    >>> pruned.compile(...); pruned.fit(x, y, callbacks=[UpdatePruningStep()])
    >>> plain = strip_pruning(pruned)
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras

from tfprune import functional
from tfprune import layers as layer_registry
from tfprune.global_pruning import relink_global_pruning
from tfprune.hparams import PruningHParams, as_hparams
from tfprune.keras_graph import clone_graph_model, copy_layer, find_layers, is_graph_model
from tfprune.pruning_policy import PruningPolicy
from tfprune.schedules import PruningSchedule
from tfprune.wrapper import (
    PruneLowMagnitude,
    validate_block_size,
    validate_global,
    validate_m_by_n,
    validate_max_layer_sparsity,
    validate_pooling,
    validate_schedule,
)


def _copy_weights(old: keras.layers.Layer, new: keras.layers.Layer) -> None:
    """Weights of a plain layer into its new copy, or into the layer inside a new wrapper."""
    if isinstance(new, PruneLowMagnitude) and not isinstance(old, PruneLowMagnitude):
        new.layer.set_weights(old.get_weights())
    else:
        new.set_weights(old.get_weights())


def _clone_graph_model(model: keras.Model, transform: Any) -> keras.Model:
    return clone_graph_model(model, transform, copy_weights=_copy_weights)


def _check_params(
    pruning_schedule: Any, block_size: Any, block_pooling_type: Any, pruning_hparams: Any, sparsity_m_by_n: Any
) -> dict:
    if pruning_hparams is not None and pruning_schedule is not None:
        raise ValueError("Pass either `pruning_schedule` or `pruning_hparams`, not both.")
    return {
        "pruning_schedule": validate_schedule(pruning_schedule),
        "block_size": validate_block_size(block_size),
        "block_pooling_type": validate_pooling(block_pooling_type),
        "pruning_hparams": None if pruning_hparams is None else as_hparams(pruning_hparams),
        "sparsity_m_by_n": validate_m_by_n(sparsity_m_by_n),
    }


def prune_low_magnitude(
    to_prune: Any,
    pruning_schedule: PruningSchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    block_pooling_type: str = "AVG",
    pruning_hparams: PruningHParams | str | dict | None = None,
    sparsity_m_by_n: tuple[int, int] | None = None,
    global_pruning: bool = False,
    max_layer_sparsity: float | None = None,
    pruning_policy: PruningPolicy | None = None,
    **kwargs: Any,
) -> Any:
    """Wraps a layer, a list of layers, or every prunable layer of a model for magnitude pruning.

    Args:
        to_prune: a `keras.layers.Layer`, a list of layers (known layers with nothing to prune, such
            as pooling or Flatten, are returned as they are), or a built Sequential or functional
            model (nested models included). Models are cloned: the original keeps its weights.
            A single layer is wrapped as is (its weights are shared with the wrapper), which is
            how layers inside subclassed models are pruned.
        pruning_schedule: a `PruningSchedule`; default `ConstantSparsity(0.5, begin_step=0)`.
        block_size: `(height, width)` blocks pruned as a whole (weights seen as 2-D).
        block_pooling_type: 'AVG' or 'MAX', how a block's magnitude is pooled.
        pruning_hparams: contrib hyper-parameters (`PruningHParams`, `"k=v,..."` or dict) used
            instead of `pruning_schedule`, `block_size` and `block_pooling_type`.
        sparsity_m_by_n: `(M, N)`: M-by-N sparsity along the input channels (see `tfprune.masks.m_by_n_mask`).
        global_pruning: rank all pruned weights of the model together (one threshold).
        max_layer_sparsity: with `global_pruning`, the most any one weight may be pruned.
        pruning_policy: a `tfprune.PruningPolicy` (e.g. `PruneForLatencyOnXNNPack()`) choosing which
            layers of a model are wrapped; the model is checked against it first. Models only.

    Returns:
        The wrapped layer(s) or a new model with `PruneLowMagnitude` wrappers.

    Example:
        >>> pruned = prune_low_magnitude(model, pruning_hparams="target_sparsity=0.8,sparsity_function_end_step=500")
    """
    params = _check_params(pruning_schedule, block_size, block_pooling_type, pruning_hparams, sparsity_m_by_n)
    params.update(kwargs)
    if pruning_policy is not None:
        if not isinstance(pruning_policy, PruningPolicy):
            raise ValueError(
                f"`pruning_policy` must be a tfprune.PruningPolicy (e.g. tfprune.PruneForLatencyOnXNNPack()); "
                f"received {type(pruning_policy).__name__}."
            )
        if not isinstance(to_prune, keras.Model):
            raise ValueError("`pruning_policy` applies to a whole model: pass the model, not layers.")
        pruning_policy.ensure_model_supports_pruning(to_prune)
        params["_policy"] = pruning_policy
    is_global = bool(global_pruning) or max_layer_sparsity is not None
    if is_global:
        validate_global(params["block_size"], params["sparsity_m_by_n"], params["pruning_hparams"])
        params.update(global_pruning=True, max_layer_sparsity=validate_max_layer_sparsity(max_layer_sparsity))
    if isinstance(to_prune, (list, tuple)):
        result: Any = [item if _passes_through(item) else _prune_one(item, params) for item in to_prune]
    else:
        result = _prune_one(to_prune, params)
    if is_global:
        relink_global_pruning(result)  # the list or the model is one group
    return result


def _passes_through(item: Any) -> bool:
    """A layer of a list that is left as it is: a known layer type with nothing to prune (pooling,
    Flatten, BatchNormalization, ...)."""
    return (isinstance(item, keras.layers.Layer) and not isinstance(item, (keras.Model, PruneLowMagnitude))
            and not layer_registry.is_prunable(item) and layer_registry.lookup(type(item)) is not None)


def _prune_one(to_prune: Any, params: dict) -> Any:
    """Wraps one layer or clones one model with validated `params`."""
    if isinstance(to_prune, keras.Model):
        if not is_graph_model(to_prune):
            raise ValueError(
                f"Model '{to_prune.name}' is a subclassed model, which cannot be cloned layer by layer. "
                "Wrap its layers inside the model instead: `self.dense = tfprune.prune_low_magnitude("
                "keras.layers.Dense(10))` in `__init__` (with `global_pruning=True` for global pruning: "
                "`UpdatePruningStep` groups them when training starts)."
            )
        return _prune_graph_model(to_prune, params)
    if isinstance(to_prune, keras.layers.Layer):
        if isinstance(to_prune, PruneLowMagnitude):
            if params.get("global_pruning"):
                to_prune.global_pruning, to_prune.max_layer_sparsity = True, params["max_layer_sparsity"]
            return to_prune
        return PruneLowMagnitude(to_prune, **params)
    raise ValueError(
        "`to_prune` must be a keras.layers.Layer, a list of layers, or a Sequential/functional keras.Model; "
        f"received {type(to_prune).__name__}."
    )


def _prune_graph_model(model: keras.Model, params: dict) -> keras.Model:
    policy = params.get("_policy")
    wrapper_params = {k: v for k, v in params.items() if k != "_policy"}
    unsupported = [
        layer
        for layer in model.layers
        if not isinstance(layer, (PruneLowMagnitude, keras.Model, keras.layers.InputLayer))
        and not layer_registry.is_prunable(layer)
        and not layer_registry.is_pass_through(layer)
    ]
    if unsupported:
        raise layer_registry.UnsupportedLayerError(layer_registry.unsupported_message(unsupported[0]))

    def transform(layer: keras.layers.Layer) -> tuple[keras.layers.Layer, bool]:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            return _prune_graph_model(layer, params), True
        if isinstance(layer, PruneLowMagnitude):
            copy = PruneLowMagnitude.from_config(layer.get_config())
            return copy, False
        if layer_registry.is_prunable(layer) and (policy is None or policy.allow_pruning(layer)):
            return PruneLowMagnitude(copy_layer(layer), **wrapper_params), False
        return copy_layer(layer), False

    return _clone_graph_model(model, transform)


def _stripped_layer(wrapper: PruneLowMagnitude) -> keras.layers.Layer:
    layer = keras.layers.deserialize(keras.layers.serialize(wrapper.layer))
    if not layer.built:
        layer.build_from_config(wrapper.layer.get_build_config())
    layer.set_weights(wrapper.masked_weight_values())
    return layer


def strip_pruning(model: Any) -> Any:
    """Removes pruning wrappers: plain layers of the original classes and names, masks baked in
    (functional masks of `tfprune.functional` too).

    Sequential and functional models (nested included) are cloned; a subclassed model is
    stripped in place (its wrapper attributes are replaced by the plain layers) and returned.
    A single wrapper returns its plain layer.

    Example:
        >>> plain = strip_pruning(pruned_model)
        >>> plain.save("model.keras")  # loads without tfprune
    """
    if isinstance(model, PruneLowMagnitude):
        layer = _stripped_layer(model)
        functional.remove_all(layer)
        return layer
    if not isinstance(model, keras.Model):
        raise ValueError(f"`strip_pruning` expects a keras.Model or a PruneLowMagnitude; received {type(model).__name__}.")
    if is_graph_model(model):

        def transform(layer: keras.layers.Layer) -> tuple[keras.layers.Layer, bool]:
            if isinstance(layer, PruneLowMagnitude):
                return _stripped_layer(layer), True
            if isinstance(layer, keras.Model) and is_graph_model(layer):
                return strip_pruning(layer), True
            return copy_layer(layer), False

        plain = _clone_graph_model(model, transform)
        functional.remove_all(plain)
        return plain
    _strip_in_place(model)
    functional.remove_all(model)
    return model


def _replace_attribute(parent: keras.layers.Layer, name: str, value: Any) -> None:
    tracker = getattr(parent, "_tracker", None)
    was_locked = bool(getattr(tracker, "locked", False))
    if was_locked:
        tracker.unlock()
    try:
        old = getattr(parent, name)
        olds = list(old) if isinstance(old, (list, tuple)) else [old]
        delattr(parent, name)
        layers = getattr(parent, "_layers", None)
        if layers is not None:
            for item in olds:
                for index, tracked in enumerate(list(layers)):
                    if tracked is item:
                        del layers[index]
                        break
        setattr(parent, name, value)
    finally:
        if was_locked:
            tracker.lock()


def _plain(wrapper: PruneLowMagnitude) -> keras.layers.Layer:
    wrapper.layer.set_weights(wrapper.masked_weight_values())
    return wrapper.layer


def _strip_in_place(parent: keras.layers.Layer) -> None:
    for name, value in list(vars(parent).items()):
        if name.startswith("_"):
            continue
        if isinstance(value, PruneLowMagnitude):
            _replace_attribute(parent, name, _plain(value))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, PruneLowMagnitude) for v in value):
            items = [_plain(v) if isinstance(v, PruneLowMagnitude) else v for v in value]
            _replace_attribute(parent, name, tuple(items) if isinstance(value, tuple) else items)
        if isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, keras.layers.Layer) and not isinstance(item, PruneLowMagnitude):
                    _strip_in_place(item)
        elif isinstance(value, keras.layers.Layer) and not isinstance(value, PruneLowMagnitude):
            _strip_in_place(value)


@contextlib.contextmanager
def prune_scope() -> Iterator[None]:
    """Kept for tfmot users: tfprune's classes are registered, so loading needs no scope.

    Example:
        >>> with prune_scope():
        ...     model = keras.models.load_model("pruned.keras")
    """
    with keras.saving.custom_object_scope({"PruneLowMagnitude": PruneLowMagnitude}):
        yield


def collect_wrappers(model: Any) -> list[PruneLowMagnitude]:
    """All `PruneLowMagnitude` wrappers in a model (nested and subclassed models included), a wrapper,
    or a list of them.

    Example:
        >>> [w.layer.name for w in collect_wrappers(pruned_model)]
    """
    return find_layers(model, PruneLowMagnitude)
