"""Subclassed models written either way are pruned by `fit`, or fail loudly."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfprune

X = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
Y = np.random.default_rng(1).normal(size=(64, 2)).astype("float32")


def _schedule():
    return tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1)


class NoTrainingArg(keras.Model):
    def __init__(self, unused: bool = False):
        super().__init__()
        self.d1 = tfprune.prune_low_magnitude(keras.layers.Dense(16), pruning_schedule=_schedule())
        self.d2 = tfprune.prune_low_magnitude(keras.layers.Dense(2), pruning_schedule=_schedule())
        self.spare = tfprune.prune_low_magnitude(keras.layers.Dense(2), pruning_schedule=_schedule()) if unused else None

    def call(self, x):  # the way most users write it: no `training`
        return self.d2(keras.ops.relu(self.d1(x)))


class WithTrainingArg(NoTrainingArg):
    def call(self, x, training=None):
        return self.d2(keras.ops.relu(self.d1(x, training=training)), training=training)


def _fit(model, **kwargs):
    model.compile("adam", "mse")
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()], **kwargs)
    return {r["layer"]: r for r in tfprune.sparsity_report(model)}


@pytest.mark.parametrize("cls", [NoTrainingArg, WithTrainingArg])
@pytest.mark.parametrize("built", [True, False])
def test_fit_prunes_subclassed_models(cls, built):
    model = cls()
    if built:
        model(X[:1])
    rows = _fit(model, validation_data=(X[:16], Y[:16]))
    assert len(rows) == 2
    for row in rows.values():
        assert row["sparsity"] == 0.5
        assert row["step"] == 8  # 4 batches x 2 epochs; validation batches do not count
    for wrapper in tfprune.collect_wrappers(model):
        assert not wrapper.fit_is_training  # nothing left switched on after fit
        kernel = wrapper.layer.kernel.numpy()
        assert int((kernel == 0).sum()) >= kernel.size // 2
    before = [w.pruning_step.numpy() for w in tfprune.collect_wrappers(model)]
    model.predict(X, verbose=0)
    model.evaluate(X, Y, verbose=0)
    assert [w.pruning_step.numpy() for w in tfprune.collect_wrappers(model)] == before


def test_a_wrapper_never_trained_is_an_error_naming_it():
    model = NoTrainingArg(unused=True)
    model(X[:1])
    model.spare(X[:1])
    with pytest.raises(RuntimeError, match="never called in training") as info:
        _fit(model)
    assert model.spare.name in str(info.value) and model.d1.name not in str(info.value)


def test_custom_loop_on_a_subclassed_model_without_training_arg():
    model = NoTrainingArg()
    model(X[:1])
    callback = tfprune.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    optimizer = keras.optimizers.SGD(0.01)
    for start in range(0, 64, 16):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = keras.ops.mean((model(X[start:start + 16], training=True) - Y[start:start + 16]) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
    callback.on_epoch_end(batch=-1)  # tfmot's keyword name
    assert [r["step"] for r in tfprune.sparsity_report(model)] == [4, 4]
    assert all(r["sparsity"] == 0.5 for r in tfprune.sparsity_report(model))
