"""Training-time structured pruning: BNSparsity, SoftFilterPruning, iterative_prune, compile_like."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune.structured import (
    BNSparsity,
    DependencyGraph,
    SoftFilterPruning,
    bn_l1_penalty,
    compile_like,
    gamma_summary,
    iterative_prune,
    prune_filters,
    remove_bn_sparsity,
    zero_units,
)
from tfprune.structured.models import resnet_cifar
from tfprune.structured.verify import copy_model, max_abs_difference

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_bn_net(seed: int = 0, filters=(16, 16)) -> keras.Model:
    """Two conv-BN-ReLU blocks with a residual add, global pooling and a classifier."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(filters[0], 3, padding="same", use_bias=False, name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    a = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(filters[1], 3, padding="same", use_bias=False, name="c2")(a)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Add(name="add")([x, a])
    x = keras.layers.ReLU(name="r2")(x)
    x = keras.layers.Conv2D(12, 1, name="c3")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)
    x = keras.layers.ReLU(name="r3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inputs, outputs, name="conv_bn_net")
    return model


def data(n: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10, 10, 3)).astype("float32")
    y = (x[:, :5, :5, 0].mean(axis=(1, 2)) > 0).astype("int64") + 2 * (x[:, 5:, 5:, 1].mean(axis=(1, 2)) > 0)
    return x, y


def compiled(model: keras.Model, lr: float = 1e-2) -> keras.Model:
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    return model


# ----- BNSparsity -----

def test_bn_sparsity_shrinks_gammas_compared_with_plain_training():
    x, y = data()
    plain = compiled(conv_bn_net())
    plain.fit(x, y, epochs=3, batch_size=32, verbose=0)
    slim = compiled(conv_bn_net())
    slim.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[BNSparsity(strength=5e-2)])
    before, after = gamma_summary(plain), gamma_summary(slim)
    assert before["channels"] == after["channels"] == 16 + 16 + 12
    assert after["mean_abs_gamma"] < before["mean_abs_gamma"] - 0.02


def test_bn_sparsity_penalty_is_in_the_loss_only_during_fit():
    x, y = data(64)
    model = compiled(conv_bn_net(), lr=0.0)  # lr 0: weights stay, only the loss differs
    penalty = float(bn_l1_penalty(model, 0.1))
    expected = 0.1 * sum(np.abs(model.get_layer(n).gamma.numpy()).sum() for n in ("bn1", "bn2", "bn3"))
    assert penalty == pytest.approx(expected, rel=1e-5)
    history = model.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False,
                        callbacks=[BNSparsity(strength=0.1)])
    # one batch, lr 0: the training loss is the plain loss (BN in training mode) plus the penalty
    train_plain = compiled(conv_bn_net(), lr=0.0).fit(x, y, epochs=1, batch_size=64, verbose=0).history["loss"][0]
    assert history.history["loss"][0] == pytest.approx(train_plain + expected, rel=1e-4)
    assert model.losses == []  # removed after fit
    twin = compiled(copy_model(model))  # same weights, never saw the callback
    assert model.evaluate(x, y, batch_size=64, verbose=0) == pytest.approx(twin.evaluate(x, y, batch_size=64, verbose=0))
    again = model.fit(x, y, epochs=1, batch_size=64, verbose=0).history["loss"][0]
    assert again == pytest.approx(train_plain, rel=1e-4)


def test_bn_sparsity_then_bn_scale_global_pruning_removes_small_gammas():
    x, y = data()
    model = compiled(conv_bn_net())
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[BNSparsity(strength=1e-2)])
    gammas = np.abs(model.get_layer("bn3").gamma.numpy())
    gammas[:6] = 1e-4 * np.arange(1, 7)  # six clearly weakest channels of 28 (c1 and c2 share 16 through the add)
    model.get_layer("bn3").gamma.assign(gammas)
    pruned, report = prune_filters(model, pruning_ratio=6 / 28, importance="bn_scale", global_pruning=True)
    entry = next(e for e in report.layers if e.name == "c3")
    np.testing.assert_array_equal(entry.kept_indices, np.arange(6, 12))
    assert max_abs_difference(model, pruned, report, x[:8]) < 1e-4


def test_bn_sparsity_validates_and_restores_existing_regularizers():
    with pytest.raises(ValueError, match="strength"):
        BNSparsity(strength=-1)
    with pytest.raises(ValueError, match="not BatchNormalization"):
        bn_l1_penalty(conv_bn_net(), 1e-4, layers=["c1"])
    no_bn = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    compiled(no_bn)
    with pytest.raises(ValueError, match="no BatchNormalization"):
        no_bn.fit(np.zeros((4, 4)), np.zeros(4), verbose=0, callbacks=[BNSparsity()])
    model = compiled(conv_bn_net())
    own = keras.regularizers.L2(1e-3)
    model.get_layer("bn1").gamma.regularizer = own
    x, y = data(32)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[BNSparsity(1e-3, layers=["bn1"])])
    assert model.get_layer("bn1").gamma.regularizer is own
    assert model.get_layer("bn2").gamma.regularizer is None


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise KeyboardInterrupt


def test_bn_sparsity_left_over_by_an_interrupted_fit_is_removed():
    x, y = data(64)
    model = compiled(conv_bn_net())
    own = keras.regularizers.L2(1e-3)
    model.get_layer("bn2").gamma.regularizer = own
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[BNSparsity(0.1), _Interrupt()])
    assert len(model.losses) == 3  # the penalty lingers: on_train_end never ran
    assert remove_bn_sparsity(model) == 3
    assert len(model.losses) == 1 and model.get_layer("bn2").gamma.regularizer is own
    # a new BNSparsity fit also starts clean: one penalty per gamma, not two
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[BNSparsity(0.1), _Interrupt()])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[BNSparsity(0.1)])
    assert remove_bn_sparsity(model) == 0
    assert model.get_layer("bn2").gamma.regularizer is own


# ----- SoftFilterPruning -----

class _Probe(keras.callbacks.Callback):
    """Records the c1/c3 kernels right after every epoch end (runs after SoftFilterPruning)."""

    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_epoch_end(self, epoch, logs=None):
        self.kernels.append({n: self.model.get_layer(n).kernel.numpy().copy() for n in ("c1", "c3")})


def _zero_filters(kernel):
    return np.nonzero(~np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0))[0]


def test_soft_filter_pruning_zeroes_exactly_and_filters_recover():
    x, y = data()
    model = compiled(conv_bn_net())
    sfp = SoftFilterPruning(pruning_ratio=0.25, importance="l2")
    probe = _Probe()
    model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[sfp, probe])
    assert sfp.events == 3
    for snapshot in probe.kernels:
        assert len(_zero_filters(snapshot["c1"])) == 4  # c1 and c2 share a group through the add: 16 * 0.25
        assert len(_zero_filters(snapshot["c3"])) == 3
    c3_bias = model.get_layer("c3").bias.numpy()
    np.testing.assert_array_equal(c3_bias[_zero_filters(probe.kernels[-1]["c3"])], 0)
    zeroed = _zero_filters(probe.kernels[-1]["c1"])
    # without the callback, training updates the zeroed filters again
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    kernel = model.get_layer("c1").kernel.numpy()
    assert np.all(np.abs(kernel[..., zeroed]).reshape(-1, len(zeroed)).sum(axis=0) > 0)


def test_soft_filter_pruning_zeroes_lowest_l2_filters_per_group():
    model = conv_bn_net()
    kernel = model.get_layer("c3").kernel.numpy()
    kernel[..., [2, 7, 9]] *= 1e-3
    model.get_layer("c3").kernel.assign(kernel)
    sfp = SoftFilterPruning(pruning_ratio=0.25, importance="l2")
    sfp.set_model(model)
    zeroed = sfp.apply()
    assert zeroed == 16 * 0.25 * 2 + 3  # c1 and c2 (coupled), c3
    np.testing.assert_array_equal(_zero_filters(model.get_layer("c3").kernel.numpy()), [2, 7, 9])
    c1, c2 = (_zero_filters(model.get_layer(n).kernel.numpy()) for n in ("c1", "c2"))
    np.testing.assert_array_equal(c1, c2)  # coupled by the residual add: the same channels


def test_soft_filter_pruning_every_n_steps_and_finalize_matches_zeroed_model():
    x, y = data()
    model = compiled(conv_bn_net())
    sfp = SoftFilterPruning(pruning_ratio=0.5, importance="fpgm", frequency=3)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[sfp])  # 8 steps: events at 3, 6, end
    assert sfp.events == 3
    pruned, report = sfp.finalize()
    assert pruned.get_layer("c3").kernel.shape[-1] == 6
    assert pruned.get_layer("c1").kernel.shape[-1] == 8
    assert report.params_after < report.params_before
    # the zeroed filters are exactly the removed ones; BN statistics of removed channels are dropped
    assert max_abs_difference(model, pruned, report, x[:16]) < 1e-4
    assert pruned.output_shape == model.output_shape


def test_soft_filter_pruning_rejects_bad_arguments():
    with pytest.raises(ValueError, match="frequency"):
        SoftFilterPruning(0.3, frequency=0)
    with pytest.raises(ValueError, match="pruning_ratio"):
        SoftFilterPruning(1.5)
    with pytest.raises(ValueError, match="taylor"):
        SoftFilterPruning(0.3, importance="taylor")
    with pytest.raises(RuntimeError, match="finalize"):
        SoftFilterPruning(0.3).finalize()


def test_zero_units_touches_only_producers():
    model = conv_bn_net()
    graph = DependencyGraph(model)
    removed = np.zeros(len(graph.root_of), dtype=bool)
    group = next(g for g in graph.groups if "c3" in g.producers)
    removed[group.units[:2]] = True
    bn_before = model.get_layer("bn3").get_weights()
    assert zero_units(graph, removed) == 2
    assert len(_zero_filters(model.get_layer("c3").kernel.numpy())) == 2
    for a, b in zip(bn_before, model.get_layer("bn3").get_weights()):
        np.testing.assert_array_equal(a, b)


# ----- iterative_prune -----

def test_iterative_prune_reaches_one_shot_channel_counts_with_fine_tuning_between():
    x, y = data()
    model = compiled(conv_bn_net())
    model.fit(x, y, epochs=1, verbose=0)
    calls = []

    def fine_tune(pruned, step):
        compile_like(pruned, model)
        pruned.fit(x, y, epochs=1, batch_size=32, verbose=0)
        calls.append((step, pruned.get_layer("c3").kernel.shape[-1]))
        return pruned

    final, reports = iterative_prune(model, target_ratio=0.5, steps=3, fine_tune_fn=fine_tune, importance="l1")
    one_shot, _ = prune_filters(model, pruning_ratio=0.5, importance="l1")
    assert [c for _, c in calls] == [10, 8, 6]
    assert [s for s, _ in calls] == [1, 2, 3]
    assert len(reports) == 3
    for layer in ("c1", "c2", "c3"):
        assert final.get_layer(layer).kernel.shape == one_shot.get_layer(layer).kernel.shape
    assert final.optimizer is not model.optimizer


def test_iterative_prune_global_and_round_to():
    model = conv_bn_net(filters=(32, 32))
    final, reports = iterative_prune(model, 0.5, steps=2, fine_tune_fn=None, global_pruning=True, round_to=4)
    widths = [final.get_layer(n).kernel.shape[-1] for n in ("c1", "c3")]
    assert all(w % 4 == 0 for w in widths)
    total_before = 32 + 12
    assert sum(widths) <= total_before * 0.5 + 8
    assert reports[-1].params_after < reports[0].params_before


def test_iterative_prune_rejects_bad_arguments():
    model = conv_bn_net()
    with pytest.raises(ValueError, match="steps"):
        iterative_prune(model, 0.5, steps=0, fine_tune_fn=None)
    with pytest.raises(ValueError, match="target_ratio"):
        iterative_prune(model, 1.0, steps=2, fine_tune_fn=None)
    with pytest.raises(TypeError, match="fine_tune_fn"):
        iterative_prune(model, 0.5, steps=2, fine_tune_fn="fit")
    with pytest.raises(ValueError, match="target_ratio, not pruning_ratio"):
        iterative_prune(model, 0.5, steps=2, fine_tune_fn=None, pruning_ratio=0.3)


# ----- optimizer state after physical pruning -----

def test_compile_like_gives_a_fresh_optimizer_with_the_same_settings():
    x, y = data(64)
    model = conv_bn_net()
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    pruned, _ = prune_filters(model, 0.5)
    compile_like(pruned, model, learning_rate=0.01)
    assert isinstance(pruned.optimizer, keras.optimizers.SGD)
    assert pruned.optimizer is not model.optimizer
    assert pruned.optimizer.get_config()["momentum"] == pytest.approx(0.9)
    assert float(pruned.optimizer.learning_rate) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="learning_rate"):
        compile_like(pruned, model, learning_rate=-1.0)
    schedule = keras.optimizers.schedules.CosineDecay(0.02, decay_steps=10)
    compile_like(pruned, model, learning_rate=schedule)
    assert pruned.optimizer.learning_rate.numpy() == pytest.approx(0.02)
    compile_like(pruned, model, learning_rate=0.01)
    history = pruned.fit(x, y, epochs=1, verbose=0).history
    assert set(history) == {"loss", "accuracy"}
    assert int(pruned.optimizer.iterations.numpy()) == 2


def test_reusing_the_old_optimizer_on_a_pruned_model_fails_loudly():
    x, y = data(64)
    model = compiled(conv_bn_net())
    model.fit(x, y, epochs=1, verbose=0)
    pruned, _ = prune_filters(model, 0.5)
    pruned.compile(model.optimizer, LOSS)
    with pytest.raises(ValueError, match="new optimizer|Unknown variable"):
        pruned.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="not compiled"):
        compile_like(pruned, conv_bn_net())


@pytest.mark.slow
def test_soft_filter_pruning_on_resnet56():
    model = resnet_cifar(depth=20)
    model.compile(keras.optimizers.SGD(0.01), LOSS)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    sfp = SoftFilterPruning(0.3, importance="l2")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[sfp])
    pruned, report = sfp.finalize()
    assert report.macs_after < 0.7 * report.macs_before
    assert max_abs_difference(model, pruned, report, tf.constant(x[:4])) < 1e-3
