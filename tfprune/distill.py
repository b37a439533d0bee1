"""Knowledge distillation for fine-tuning a pruned model with its unpruned teacher (Hinton et al. 2015).

`Distiller(student, teacher, alpha, temperature)` is a Keras model whose `fit` trains the student on

    alpha * task_loss(y, student(x)) + (1 - alpha) * T^2 * KL(softmax(teacher(x) / T) || softmax(student(x) / T))

The teacher runs in inference mode and is never updated (its `trainable` flag is left as it is). The task loss is the loss given to
`compile`; regularization losses of the student are added unscaled.

Example:
    >>> distiller = Distiller(student=pruned, teacher=dense, alpha=0.1, temperature=4.0)
    >>> distiller.compile(optimizer=keras.optimizers.Adam(1e-3),
    ...                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...                   metrics=["accuracy"])
    >>> distiller.fit(x, y, epochs=3)
    >>> distiller.student.save("student.keras")
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def _check(alpha: Any, temperature: Any) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], received {alpha!r}. Fix: e.g. alpha=0.1 "
                         "(weight of the task loss; 1 - alpha weighs the distillation term).")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, received {temperature!r}. Fix: e.g. temperature=4.")


def _log_softmax(values, temperature: float, from_logits: bool):
    if not from_logits:
        values = ops.log(ops.clip(values, 1e-7, 1.0))
    return ops.log_softmax(ops.cast(values, "float32") / temperature, axis=-1)


def distillation_loss(teacher_pred, student_pred, temperature: float = 1.0, from_logits: bool = True,
                      sample_weight=None):
    """Mean over the batch of KL(softmax(teacher / T) || softmax(student / T)) (not scaled by T^2).

    With `from_logits=False` the predictions are probabilities and are turned into log-probabilities.
    """
    log_t = _log_softmax(teacher_pred, temperature, from_logits)
    log_s = _log_softmax(student_pred, temperature, from_logits)
    per_sample = ops.sum(ops.exp(log_t) * (log_t - log_s), axis=-1)
    if sample_weight is None:
        return ops.mean(per_sample)
    weight = ops.reshape(ops.cast(sample_weight, "float32"), ops.shape(per_sample))
    return ops.sum(per_sample * weight) / ops.maximum(ops.sum(weight), 1e-12)


class Distiller(keras.Model):
    """Trains `student` on a blend of the task loss and a distillation loss from `teacher`.

    Args:
        student: the model being trained (typically the pruned model).
        teacher: the reference model (typically the unpruned model); it runs in inference mode and
            is not trained (its `trainable` flag is not changed).
        alpha: weight of the task loss; `1 - alpha` weighs the distillation term.
        temperature: softening temperature T; the distillation term is scaled by T^2 so that its
            gradients keep their size as T changes.
        from_logits: whether both models output logits (True) or probabilities (False).

    `fit`, `evaluate` and `predict` work as for the student; the logs add `task_loss` and
    `distillation_loss`. Save `distiller.student`, not the Distiller.
    """

    def __init__(self, student: keras.Model, teacher: keras.Model, alpha: float = 0.1,
                 temperature: float = 4.0, from_logits: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check(alpha, temperature)
        if student is teacher:
            raise ValueError("student and teacher must be different models. Fix: distil into a copy or the pruned model.")
        self.student = student
        self.teacher = teacher
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.from_logits = bool(from_logits)
        self.task_loss_tracker = keras.metrics.Mean(name="task_loss")
        self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")

    @property
    def trainable_weights(self) -> list:
        """Only the student's: the teacher is never updated (its own `trainable` flag is left alone)."""
        return self.student.trainable_weights

    @property
    def non_trainable_weights(self) -> list:
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.weights if id(v) not in trainable]

    @property
    def trainable_variables(self) -> list:
        return self.trainable_weights

    @property
    def non_trainable_variables(self) -> list:
        trainable = {id(v) for v in self.trainable_weights}
        return [v for v in self.variables if id(v) not in trainable]

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self._compile_loss is None:
            raise ValueError("Distiller needs the task loss: compile it with loss=... "
                             "(e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True)).")
        if y_pred is None:
            y_pred = self.student(x, training=training)
        if keras.tree.is_nested(y_pred):
            raise ValueError("Distiller supports models with a single output tensor.")
        task = self._compile_loss(y, y_pred, sample_weight)
        teacher_pred = self.teacher(x, training=False)
        distill = distillation_loss(teacher_pred, y_pred, self.temperature, self.from_logits, sample_weight)
        total = self.alpha * task + (1.0 - self.alpha) * self.temperature ** 2 * distill
        for extra in self.losses:
            total = total + self._aggregate_additional_loss(extra)
        self.task_loss_tracker.update_state(task)
        self.distillation_loss_tracker.update_state(distill)
        return total

    def get_config(self) -> dict:
        raise NotImplementedError(
            "A Distiller is a training wrapper and is not saved. Fix: save distiller.student instead."
        )
