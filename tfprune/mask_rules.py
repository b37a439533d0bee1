"""Mask rules: the strategy that decides when a wrapper's masks change and computes them.

A `PruneLowMagnitude` wrapper holds state (weights, masks, thresholds, steps); its `mask_rule`
attribute holds the strategy. In every training call the wrapper advances its step and hands over to
`mask_rule.training_update(wrapper, step)`; nothing else runs between mask updates but the masked
multiply of the forward pass.

* `LayerMaskRule` (the default): each weight of the wrapper is masked on its own, by magnitude, by
  blocks, by M-by-N groups, with optional threshold decay, when the schedule says so.
* `tfprune.global_pruning.GlobalPruningGroup`: one rule shared by several wrappers, ranking all
  their weights together.

A custom rule subclasses `MaskRule` and is assigned with `wrapper.mask_rule = rule`.

Example:
    >>> wrapper.mask_rule                     # LayerMaskRule()
    >>> wrapper.mask_rule.update_masks(wrapper, step=10)
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tfprune import masks as mask_lib

__all__ = ["MaskRule", "LayerMaskRule"]


def keep_one(sparsity: Any, weight: tf.Tensor) -> tf.Tensor:
    """`sparsity`, lowered where needed so that at least one entry of `weight` is kept (as tfmot does:
    `ConstantSparsity(0.99)` on a 40-entry kernel keeps 1, not 0)."""
    size = int(weight.shape.num_elements() or 0)
    sparsity = tf.cast(sparsity, tf.float64)
    if size <= 1:
        return tf.minimum(sparsity, 0.0)
    # the largest sparsity whose half-to-even count leaves one entry
    return tf.minimum(sparsity, (size - 1.0) / size)


class MaskRule:
    """Base class: decides in the training call whether and how the masks of a wrapper change.

    Example:
        >>> class EveryStep(tfprune.MaskRule):
        ...     def training_update(self, wrapper, step):
        ...         self.update_masks(wrapper, step)
        ...     def update_masks(self, wrapper, step, sparsities=None):
        ...         tfprune.LayerMaskRule().update_masks(wrapper, step, sparsities)
        >>> wrapper.mask_rule = EveryStep()
    """

    def drives(self, wrapper: Any) -> bool:
        """Whether `wrapper`'s training call runs this rule (a shared rule runs from one wrapper only)."""
        return True

    def training_update(self, wrapper: Any, step: tf.Tensor) -> None:
        """Called in each training call of `wrapper`, after its step advanced to `step`."""
        raise NotImplementedError

    def update_masks(self, wrapper: Any, step: Any, sparsities: list[Any] | None = None) -> None:
        """Recomputes the masks now (no schedule check)."""
        raise NotImplementedError


class LayerMaskRule(MaskRule):
    """Each weight of one wrapper masked from its own magnitudes (see the module docstring).

    Example:
        >>> LayerMaskRule().update_masks(wrapper, step=1, sparsities=[0.5])
    """

    def compute_mask(self, wrapper: Any, index: int, weight: tf.Tensor, sparsity: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`(mask, threshold)` of weight `index` of `wrapper` at `sparsity`."""
        if wrapper.sparsity_m_by_n is not None:
            m, n = wrapper.sparsity_m_by_n
            mask = mask_lib.m_by_n_mask(weight, m, n)
            return mask, tf.constant(0.0, tf.float32)
        block = wrapper.weight_blocks[index]
        if block != (1, 1):
            return mask_lib.block_magnitude_mask(weight, sparsity, block_size=block, pooling=wrapper.weight_pooling)
        mask, threshold = mask_lib.magnitude_mask(weight, keep_one(sparsity, weight))
        if wrapper.threshold_decay > 0:
            decay = wrapper.threshold_decay
            threshold = decay * wrapper.thresholds[index] + (1.0 - decay) * threshold
            mask = tf.cast(tf.abs(tf.cast(weight, tf.float32)) >= threshold, weight.dtype)
        return mask, threshold

    def update_masks(self, wrapper: Any, step: Any, sparsities: list[Any] | None = None) -> None:
        sparsities = wrapper.target_sparsities(step) if sparsities is None else sparsities
        for index, (weight, mask, threshold) in enumerate(zip(wrapper.pruned_weights, wrapper.masks,
                                                              wrapper.thresholds)):
            masked = tf.convert_to_tensor(weight) * tf.convert_to_tensor(mask)
            new_mask, new_threshold = self.compute_mask(wrapper, index, masked, sparsities[index])
            mask.assign(new_mask)
            threshold.assign(tf.cast(new_threshold, tf.float32))
            weight.assign(masked * new_mask)
        wrapper.last_update_step.assign(tf.cast(step, tf.int64))

    def should_update(self, wrapper: Any, step: Any) -> tf.Tensor:
        """Whether the schedule asks for a mask update at `step` (M-by-N: once, at step 1)."""
        if wrapper.sparsity_m_by_n is not None:
            return tf.equal(tf.cast(step, tf.int64), 1)
        return wrapper.weight_schedules[0].should_update(step, wrapper.last_update_step)

    def training_update(self, wrapper: Any, step: tf.Tensor) -> None:
        def update() -> tf.Tensor:
            self.update_masks(wrapper, step)
            return tf.constant(True)

        tf.cond(self.should_update(wrapper, step), update, lambda: tf.constant(False))

    def __repr__(self) -> str:
        return "LayerMaskRule()"
