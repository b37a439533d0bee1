"""Distiller: the loss matches a hand computation; the student learns from the teacher."""

import keras
import numpy as np
import pytest

from tfprune.distill import Distiller, distillation_loss
from tfprune.structured import prune_filters

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def mlp(seed: int, hidden: int = 16, softmax: bool = False) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax" if softmax else None, name="out")(x)
    return keras.Model(inputs, outputs)


def data(n: int = 96, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = np.argmax(x[:, :3] + 0.5 * x[:, 3:], axis=1)
    return x, y


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def hand_loss(student_logits, teacher_logits, y, alpha, temperature, weights=None):
    task = -log_softmax(student_logits)[np.arange(len(y)), y]
    log_t = log_softmax(teacher_logits / temperature)
    log_s = log_softmax(student_logits / temperature)
    kl = (np.exp(log_t) * (log_t - log_s)).sum(axis=-1)
    if weights is None:
        return alpha * task.mean() + (1 - alpha) * temperature ** 2 * kl.mean()
    return alpha * (task * weights).mean() + (1 - alpha) * temperature ** 2 * (kl * weights).sum() / weights.sum()


@pytest.mark.parametrize("alpha,temperature", [(0.3, 2.0), (0.0, 4.0), (1.0, 1.0)])
def test_loss_matches_hand_computation(alpha, temperature):
    student, teacher = mlp(0), mlp(1)
    x, y = data(16)
    distiller = Distiller(student, teacher, alpha=alpha, temperature=temperature)
    distiller.compile(keras.optimizers.SGD(0.0), LOSS)
    got = float(distiller.compute_loss(x, y, student(x), training=False))
    expected = hand_loss(np.asarray(student(x)), np.asarray(teacher(x)), y, alpha, temperature)
    assert got == pytest.approx(expected, rel=1e-5)
    # fit with lr 0 reports the same value for a single full batch
    logged = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert logged["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert set(logged) >= {"loss", "task_loss", "distillation_loss"}


def test_sample_weights_and_probability_outputs():
    student, teacher = mlp(0, softmax=True), mlp(1, softmax=True)
    x, y = data(8)
    w = np.linspace(0.5, 2.0, 8).astype("float32")
    distiller = Distiller(student, teacher, alpha=0.5, temperature=3.0, from_logits=False)
    distiller.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy())
    got = float(distiller.compute_loss(x, y, student(x), sample_weight=w))
    s_logits, t_logits = np.log(np.asarray(student(x))), np.log(np.asarray(teacher(x)))
    assert got == pytest.approx(hand_loss(s_logits, t_logits, y, 0.5, 3.0, w), rel=1e-4)
    kl = float(distillation_loss(t_logits, t_logits, 2.0))
    assert kl == pytest.approx(0.0, abs=1e-6)


def test_fit_trains_the_student_towards_the_teacher_and_leaves_the_teacher_alone():
    x, y = data(256)
    teacher = mlp(1, hidden=32)
    teacher.compile(keras.optimizers.Adam(1e-2), LOSS)
    teacher.fit(x, y, epochs=15, verbose=0)
    teacher_weights = [w.copy() for w in teacher.get_weights()]
    student = mlp(0, hidden=8)
    before = float(distillation_loss(teacher(x), student(x), 1.0))
    distiller = Distiller(student, teacher, alpha=0.0, temperature=2.0)
    distiller.compile(keras.optimizers.Adam(1e-2), LOSS, metrics=["accuracy"])
    distiller.fit(x, y, epochs=15, verbose=0)
    after = float(distillation_loss(teacher(x), student(x), 1.0))
    assert after < 0.5 * before
    for a, b in zip(teacher_weights, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(distiller.trainable_variables) == len(student.trainable_variables)
    assert teacher.trainable and len(teacher.trainable_variables) == 4  # the teacher's own flag is untouched


def test_distilling_into_a_pruned_student():
    x, y = data(128)
    teacher = mlp(1, hidden=32)
    teacher.compile(keras.optimizers.Adam(1e-2), LOSS, metrics=["accuracy"])
    teacher.fit(x, y, epochs=10, verbose=0)
    student, _ = prune_filters(teacher, pruning_ratio=0.5)
    assert student.get_layer("hidden").kernel.shape[-1] == 16
    distiller = Distiller(student, teacher, alpha=0.1, temperature=4.0)
    distiller.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    result = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert {"loss", "accuracy", "task_loss", "distillation_loss"} <= set(result)
    distiller.fit(x, y, epochs=2, verbose=0)
    assert distiller.predict(x[:4], verbose=0).shape == (4, 3)


def test_bad_arguments_and_saving():
    student, teacher = mlp(0), mlp(1)
    with pytest.raises(ValueError, match="alpha"):
        Distiller(student, teacher, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        Distiller(student, teacher, temperature=0)
    with pytest.raises(ValueError, match="different models"):
        Distiller(student, student)
    distiller = Distiller(student, teacher)
    distiller.compile(keras.optimizers.Adam())
    x, y = data(8)
    with pytest.raises(ValueError, match="compile it with loss"):
        distiller.fit(x, y, verbose=0)
    with pytest.raises(NotImplementedError, match="save distiller.student"):
        distiller.get_config()
