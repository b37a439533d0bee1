"""Global magnitude pruning: one threshold across all pruned weights of a model.

Like `torch.nn.utils.prune.global_unstructured`: the weights of every pruned layer are
ranked together and the smallest magnitudes of the whole model are pruned, so layers end
with different sparsities. The schedule gives the *global* sparsity. With
`max_layer_sparsity` no weight loses more than that fraction (the rest of the global count
goes to the other layers), so no layer is wiped out.

Chosen with `prune_low_magnitude(model, ..., global_pruning=True, max_layer_sparsity=0.95)`.
Every wrapper keeps its own mask (so `sparsity_report` shows the per-layer result), but
masks are computed by one *coordinator*: the first wrapper of the model, which, in its
training call and when its schedule says so, ranks `weight * mask` of all wrappers of the
group and assigns every mask. The wrappers remember global mode in their config; after
`keras.models.load_model`, `UpdatePruningStep` re-links them (or call
`relink_global_pruning(model)` in a custom training loop).

Example:
    >>> pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.8, 0),
    ...                                      global_pruning=True, max_layer_sparsity=0.95)
    >>> pruned.fit(x, y, callbacks=[tfprune.UpdatePruningStep()])
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfprune import masks as mask_lib
from tfprune.wrapper import PruneLowMagnitude


class GlobalPruningGroup:
    """Wrappers pruned together; the coordinator's schedule and step drive the updates.

    Not a Keras object (not tracked, not saved): it is rebuilt from the wrappers'
    `global_pruning` / `max_layer_sparsity` config by `relink_global_pruning`.
    """

    def __init__(self, wrappers: list[PruneLowMagnitude], max_layer_sparsity: float | None = None):
        if not wrappers:
            raise ValueError("A global pruning group needs at least one pruning wrapper.")
        self.wrappers = list(wrappers)
        self.max_layer_sparsity = max_layer_sparsity

    @property
    def coordinator(self) -> PruneLowMagnitude:
        return self.wrappers[0]

    def members(self) -> list[tuple[PruneLowMagnitude, int]]:
        """(wrapper, weight index) of every pruned weight, in model order."""
        return [(w, i) for w in self.wrappers for i in range(len(w.pruned_weights))]

    def update_masks(self, step: Any, sparsity: Any = None) -> None:
        """Recomputes every mask of the group now with one global threshold."""
        coordinator = self.coordinator
        if sparsity is None:
            sparsity = coordinator.target_sparsities(step)[0]
        members = self.members()
        masked = [
            tf.convert_to_tensor(w.pruned_weights[i]) * tf.convert_to_tensor(w.masks[i]) for w, i in members
        ]
        new_masks, _ = mask_lib.global_magnitude_masks(masked, sparsity, self.max_layer_sparsity)
        for (wrapper, i), value, new_mask in zip(members, masked, new_masks):
            wrapper.masks[i].assign(new_mask)
            # The smallest kept magnitude of this weight: the global threshold for layers
            # below their ceiling, the layer's own cut for layers held at it.
            magnitude = tf.abs(tf.cast(value, tf.float32))
            kept = tf.where(new_mask > 0, magnitude, tf.fill(tf.shape(magnitude), float("inf")))
            wrapper.thresholds[i].assign(tf.reduce_min(kept))
            wrapper.pruned_weights[i].assign(value * new_mask)
        for wrapper in self.wrappers:
            wrapper.last_update_step.assign(tf.cast(step, tf.int64))

    def training_update(self, step: tf.Tensor) -> None:
        """Called from the coordinator's training call, after it advanced its step."""
        coordinator = self.coordinator
        if not all(w.built for w in self.wrappers):
            # Only while a subclassed model is first traced (later layers not built yet);
            # that trace builds the layers and the training function is traced again.
            return
        schedule = coordinator.weight_schedules[0]

        def update() -> tf.Tensor:
            self.update_masks(step)
            return tf.constant(True)

        tf.cond(schedule.should_update(step, coordinator.last_update_step), update, lambda: tf.constant(False))


def _global_wrappers(model: Any) -> list[PruneLowMagnitude]:
    from tfprune.prune import collect_wrappers

    if isinstance(model, (list, tuple)):
        found = []
        for item in model:
            found.extend(collect_wrappers(item))
    else:
        found = collect_wrappers(model)
    return [w for w in found if getattr(w, "global_pruning", False)]


def relink_global_pruning(model: Any) -> GlobalPruningGroup | None:
    """Groups the global-mode wrappers of `model` (a model, a wrapper or a list of them).

    Needed after building a model from config (e.g. `keras.models.load_model`); done by
    `UpdatePruningStep.on_train_begin` and by `prune_low_magnitude(..., global_pruning=True)`.
    Returns the group, or None when the model has no global-mode wrapper.

    Example:
        >>> model = keras.models.load_model("pruned.keras")
        >>> relink_global_pruning(model)  # custom training loops only
    """
    wrappers = _global_wrappers(model)
    if not wrappers:
        return None
    ceilings = {w.max_layer_sparsity for w in wrappers}
    if len(ceilings) > 1:
        raise ValueError(
            f"Wrappers pruned globally together must share `max_layer_sparsity`; found {sorted(map(str, ceilings))}."
        )
    group = GlobalPruningGroup(wrappers, ceilings.pop())
    for wrapper in wrappers:
        object.__setattr__(wrapper, "_global_group", group)
        wrapper._external_masks = True
    return group


link = relink_global_pruning


def global_pruning_group(model: Any) -> GlobalPruningGroup | None:
    """The group the model's global-mode wrappers belong to (None if not linked)."""
    wrappers = _global_wrappers(model)
    return getattr(wrappers[0], "_global_group", None) if wrappers else None


def prune_globally(to_prune: Any, params: dict, max_layer_sparsity: float | None = None) -> Any:
    """Wraps `to_prune` like `prune_low_magnitude` and links its wrappers for global pruning.

    `params` are the checked wrapper arguments of `prune_low_magnitude`. Accepts a
    Sequential/functional model, a layer or a list of layers (the list is one group).
    """
    from tfprune import prune as prune_lib

    params = dict(params)
    if params.get("sparsity_m_by_n") is not None or tuple(params.get("block_size", (1, 1))) != (1, 1):
        raise ValueError(
            "`global_pruning` ranks single weights across layers; it cannot be combined with "
            "`block_size` or `sparsity_m_by_n`."
        )
    if max_layer_sparsity is not None:
        max_layer_sparsity = float(max_layer_sparsity)
        if not 0.0 <= max_layer_sparsity <= 1.0:
            raise ValueError(f"`max_layer_sparsity` must be in [0, 1]; received {max_layer_sparsity!r}.")
    params["global_pruning"] = True
    params["max_layer_sparsity"] = max_layer_sparsity

    def wrap(layer: Any) -> Any:
        if isinstance(layer, PruneLowMagnitude):
            layer.global_pruning, layer.max_layer_sparsity = True, max_layer_sparsity
            return layer
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(
                "`to_prune` must be a keras.layers.Layer, a list of layers, or a Sequential/functional "
                f"keras.Model; received {type(layer).__name__}."
            )
        return PruneLowMagnitude(layer, **params)

    if isinstance(to_prune, (list, tuple)):
        result: Any = [wrap(layer) for layer in to_prune]
    elif isinstance(to_prune, keras.Model):
        if not prune_lib._is_graph_model(to_prune):
            raise ValueError(
                f"Model '{to_prune.name}' is a subclassed model, which cannot be cloned layer by layer. "
                "Wrap its layers inside the model with `tfprune.prune_low_magnitude(layer, global_pruning=True)`; "
                "`UpdatePruningStep` groups them when training starts."
            )
        result = prune_lib._prune_graph_model(to_prune, params)
    else:
        result = wrap(to_prune)
    relink_global_pruning(result)
    return result
