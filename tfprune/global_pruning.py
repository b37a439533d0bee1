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
from tfprune.keras_graph import find_layers
from tfprune.mask_rules import MaskRule
from tfprune.wrapper import PruneLowMagnitude, validate_max_layer_sparsity


class GlobalPruningGroup(MaskRule):
    """The mask rule of wrappers pruned together; the coordinator's schedule and step drive the updates.

    It is every member's `mask_rule`. Not a Keras object (not tracked, not saved): it is rebuilt from
    the wrappers' `global_pruning` / `max_layer_sparsity` config by `relink_global_pruning`.

    Example:
        >>> group = relink_global_pruning(model)
        >>> group.update_masks(group.coordinator, step=100)
    """

    def __init__(self, wrappers: list[PruneLowMagnitude], max_layer_sparsity: float | None = None):
        if not wrappers:
            raise ValueError("A global pruning group needs at least one pruning wrapper.")
        self.wrappers = list(wrappers)
        self.max_layer_sparsity = validate_max_layer_sparsity(max_layer_sparsity)

    @property
    def coordinator(self) -> PruneLowMagnitude:
        """The wrapper whose training call computes the masks of the whole group."""
        return self.wrappers[0]

    def members(self) -> list[tuple[PruneLowMagnitude, int]]:
        """(wrapper, weight index) of every pruned weight, in model order."""
        return [(w, i) for w in self.wrappers for i in range(len(w.pruned_weights))]

    def drives(self, wrapper: Any) -> bool:
        return wrapper is self.coordinator

    def update_masks(self, wrapper: Any = None, step: Any = None, sparsity: Any = None) -> None:
        """Recomputes every mask of the group now with one global threshold (`sparsity` defaults to
        the coordinator's schedule at `step`)."""
        coordinator = self.coordinator
        if isinstance(sparsity, (list, tuple)):
            sparsity = sparsity[0]
        if sparsity is None:
            sparsity = coordinator.target_sparsities(step)[0]
        members = self.members()
        masked = [
            tf.convert_to_tensor(w.pruned_weights[i]) * tf.convert_to_tensor(w.masks[i]) for w, i in members
        ]
        new_masks, _ = mask_lib.global_magnitude_masks(masked, sparsity, self.max_layer_sparsity)
        for (member, i), value, new_mask in zip(members, masked, new_masks):
            member.masks[i].assign(new_mask)
            # The smallest kept magnitude of this weight: the global threshold for layers
            # below their ceiling, the layer's own cut for layers held at it.
            magnitude = tf.abs(tf.cast(value, tf.float32))
            kept = tf.where(new_mask > 0, magnitude, tf.fill(tf.shape(magnitude), float("inf")))
            member.thresholds[i].assign(tf.reduce_min(kept))
            member.pruned_weights[i].assign(value * new_mask)
        for member in self.wrappers:
            member.last_update_step.assign(tf.cast(step, tf.int64))

    def training_update(self, wrapper: Any, step: tf.Tensor) -> None:
        """Runs from the coordinator's training call, after it advanced its step."""
        coordinator = self.coordinator
        if wrapper is not coordinator:
            return
        if not all(w.built for w in self.wrappers):
            # Only while a subclassed model is first traced (later layers not built yet);
            # that trace builds the layers and the training function is traced again.
            return
        schedule = coordinator.weight_schedules[0]

        def update() -> tf.Tensor:
            self.update_masks(coordinator, step)
            return tf.constant(True)

        tf.cond(schedule.should_update(step, coordinator.last_update_step), update, lambda: tf.constant(False))

    def __repr__(self) -> str:
        return f"GlobalPruningGroup({len(self.wrappers)} wrappers, max_layer_sparsity={self.max_layer_sparsity})"


def _global_wrappers(model: Any) -> list[PruneLowMagnitude]:
    return [w for w in find_layers(model, PruneLowMagnitude) if w.global_pruning]


def relink_global_pruning(model: Any) -> GlobalPruningGroup | None:
    """Groups the global-mode wrappers of `model` (a model, a wrapper or a list of them): the group
    becomes the `mask_rule` of each.

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
        wrapper.mask_rule = group
    return group


link = relink_global_pruning


def global_pruning_group(model: Any) -> GlobalPruningGroup | None:
    """The group the model's global-mode wrappers belong to (None if not linked).

    Example:
        >>> global_pruning_group(model).max_layer_sparsity
    """
    wrappers = _global_wrappers(model)
    rule = wrappers[0].mask_rule if wrappers else None
    return rule if isinstance(rule, GlobalPruningGroup) else None
