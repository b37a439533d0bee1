"""Keras callbacks: initialize the pruning step, and write sparsity summaries.

Example:
    >>> model.fit(x, y, callbacks=[UpdatePruningStep(), PruningSummaries("logs")])
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfprune.global_pruning import relink_global_pruning
from tfprune.prune import collect_wrappers
from tfprune.sparsity import format_sparsity_table, weight_rows


class UpdatePruningStep(keras.callbacks.Callback):
    """Required in `fit`: starts the pruning step, re-applies masks at each epoch end, and checks at the
    end of training that every wrapper was trained.

    The step lives in each wrapper's `pruning_step` variable (saved with the model), so training resumed
    from a checkpoint continues the schedule where it stopped. Each training call of a wrapper advances
    its step by one; the first training batch is step 1.

    Subclassed models: Keras does not pass `training` to a model whose `call` has no `training`
    argument, so while `fit` trains, this callback tells the wrappers that a call without a flag is a
    training call (validation inside `fit` is not). Wrappers built by the first batch start on time too.
    If a wrapper's step did not advance during `fit` (a layer never called in training), `on_train_end`
    raises an error naming it instead of leaving the model unpruned in silence.

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=[UpdatePruningStep()])

        A custom training loop:

        >>> step_callback = UpdatePruningStep()
        >>> step_callback.set_model(model)
        >>> step_callback.on_train_begin()
        >>> for x, y in dataset:
        ...     with tf.GradientTape() as tape:
        ...         loss = loss_fn(y, model(x, training=True))
        ...     ...apply gradients...
        >>> step_callback.on_epoch_end(0)  # optional: zero stored pruned weights
    """

    def __init__(self) -> None:
        super().__init__()
        self.wrappers: list = []
        self._start_steps: dict[int, int] = {}
        self._in_fit = False

    def _set_fit_training(self, value: bool) -> None:
        for wrapper in collect_wrappers(self.model):
            wrapper.fit_is_training = value

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.wrappers = collect_wrappers(self.model)
        relink_global_pruning(self.model)
        self._start_steps = {}
        for wrapper in self.wrappers:
            if wrapper.built:
                step = int(keras.ops.convert_to_numpy(wrapper.pruning_step))
                if step < 0:
                    wrapper.pruning_step.assign(0)
                self._start_steps[id(wrapper)] = max(step, 0)
            else:
                self._start_steps[id(wrapper)] = 0
        # `fit` calls `on_train_batch_begin`; a custom loop that only calls `on_train_begin` does not.
        self._in_fit = False

    def on_train_batch_begin(self, batch: int | None = None, logs: dict | None = None) -> None:
        # Keras' `fit` gives its callbacks `params` (epochs, steps); a custom loop calling this hook does not,
        # and its calls pass `training=True` themselves.
        if not self._in_fit and self.params and "epochs" in self.params:
            self._in_fit = True
            self._set_fit_training(True)

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._in_fit:
            self._set_fit_training(False)

    def on_test_end(self, logs: dict | None = None) -> None:
        if self._in_fit:
            self._set_fit_training(True)

    def on_epoch_end(self, epoch: int | None = None, logs: dict | None = None, batch: int | None = None) -> None:
        """Zeroes stored pruned weights (`batch=` is accepted for tfmot's keyword name)."""
        for wrapper in self.wrappers:
            if wrapper.built:
                wrapper.apply_masks()

    def on_train_end(self, logs: dict | None = None) -> None:
        if not self._in_fit:
            return
        self._in_fit = False
        self._set_fit_training(False)
        untrained = [
            wrapper.name for wrapper in collect_wrappers(self.model)
            if not wrapper.built
            or int(keras.ops.convert_to_numpy(wrapper.pruning_step)) <= self._start_steps.get(id(wrapper), 0)
        ]
        if untrained:
            raise RuntimeError(
                f"Pruning wrappers {untrained} were never called in training, so they were not pruned. Fix: "
                "call every wrapped layer in the model's `call` on the training path (pass `training` on to "
                "layers that take it), or leave unused layers unwrapped."
            )
        waiting = sorted(
            f"{wrapper.layer.name} (step {int(keras.ops.convert_to_numpy(wrapper.pruning_step))})"
            for wrapper in collect_wrappers(self.model)
            if wrapper.built and int(keras.ops.convert_to_numpy(wrapper.last_update_step)) == 0
            and any(float(keras.ops.convert_to_numpy(s)) > 0 for s in wrapper.target_sparsities())
        )
        if waiting:
            warnings.warn(
                f"Training ended before the pruning schedule updated any mask of {', '.join(waiting)}: their "
                "weights are still dense although the schedule targets a sparsity above 0 (as in tfmot, masks "
                "change only at steps `begin_step + k * frequency`, counted from the first batch). Fix: train "
                "for more steps or pass a smaller `frequency` to the schedule.",
                stacklevel=2,
            )


def sparsity_report(model: keras.layers.Layer) -> list[dict]:
    """Per pruned weight: layer, weight, shape, size, zeros in the mask, sparsity, threshold, target, step
    (`tfprune.sparsity.weight_rows` of the wrapped weights).

    Example:
        >>> [row["sparsity"] for row in sparsity_report(pruned_model)]
    """
    return weight_rows(model, wrapped_only=True)


__all__ = ["PruningSummaries", "UpdatePruningStep", "format_sparsity_table", "sparsity_report"]


class PruningSummaries(keras.callbacks.TensorBoard):
    """A `keras.callbacks.TensorBoard` (loss, metrics and its options as usual, under `log_dir/train` and
    `log_dir/validation`) that also writes the pruning scalars into `log_dir`.

    Per pruned weight: `<layer>/<weight>/sparsity`, `<layer>/<weight>/threshold` and
    `<layer>/<weight>/target_sparsity`; for the model: `model/sparsity` (zeros over all pruned
    weights) and `model/target_sparsity` (size-weighted scheduled target). The summary step is
    the pruning step. In `fit` they are written at the end of every epoch (`update_freq='epoch'`),
    every batch ('batch') or every N batches (N); in a custom training loop, `on_epoch_begin(epoch)`
    writes them (as tfmot's callback does).

    Args:
        log_dir: directory for the event files.
        update_freq: 'epoch', 'batch', or an integer N (every N batches).
        **kwargs: further `keras.callbacks.TensorBoard` options (`histogram_freq`, `write_graph`, ...).

    Example:
        >>> model.fit(x, y, callbacks=[UpdatePruningStep(), PruningSummaries("logs/prune")])
    """

    def __init__(self, log_dir: str, update_freq: str | int = "epoch", **kwargs: Any) -> None:
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(f"`log_dir` must be a non-empty path; received {log_dir!r}.")
        if update_freq not in ("epoch", "batch") and not (
            isinstance(update_freq, int) and not isinstance(update_freq, bool) and update_freq > 0
        ):
            raise ValueError(f"`update_freq` must be 'epoch', 'batch' or a positive integer; received {update_freq!r}.")
        super().__init__(log_dir=str(log_dir), update_freq=update_freq, **kwargs)
        self._writer = None
        self._batches = 0
        self._in_fit = False

    def _check_model(self) -> None:
        if not collect_wrappers(self.model):
            raise ValueError(
                "PruningSummaries found no pruning wrappers in the model: prune it with "
                "tfprune.prune_low_magnitude first."
            )

    def _open(self) -> None:
        if self._writer is None:
            os.makedirs(self.log_dir, exist_ok=True)
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._check_model()
        super().on_train_begin(logs)
        self._open()
        self._in_fit = True

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        if not self._in_fit:  # a custom training loop: write now, as tfmot does
            self._check_model()
            self._open()
            self.write_summaries()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, logs)
        self._batches += 1
        if isinstance(self.update_freq, int) and self._batches % self.update_freq == 0:
            self.write_summaries()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.update_freq == "epoch":
            self.write_summaries()

    def on_train_end(self, logs: dict | None = None) -> None:
        super().on_train_end(logs)
        self._in_fit = False
        if self._writer is not None:
            self._writer.flush()

    def write_summaries(self) -> None:
        """Writes one set of pruning scalars at the current pruning step."""
        rows = sparsity_report(self.model)
        if not rows or self._writer is None:
            return
        step = max(r["step"] for r in rows)
        with self._writer.as_default(step=step):
            for row in rows:
                prefix = f"{row['layer']}/{row['weight']}"
                tf.summary.scalar(f"{prefix}/sparsity", row["sparsity"])
                tf.summary.scalar(f"{prefix}/threshold", row["threshold"])
                tf.summary.scalar(f"{prefix}/target_sparsity", row["target_sparsity"])
            total = sum(r["size"] for r in rows)
            tf.summary.scalar("model/sparsity", sum(r["zeros"] for r in rows) / total)
            tf.summary.scalar("model/target_sparsity", sum(r["target_sparsity"] * r["size"] for r in rows) / total)
        self._writer.flush()
