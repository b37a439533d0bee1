"""Global magnitude pruning: one threshold across layers, per-layer ceiling, save and resume."""

import os

import keras
import numpy as np
import pytest

import tfprune
from tests.helpers import classification_data, expected_zeros, small_cnn, train_custom_loop
from tfprune.global_pruning import global_pruning_group, relink_global_pruning

L = keras.layers


def _fit(model, x, y, epochs=2):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    return model


def _pruned_values(model):
    """(kept magnitudes, pruned magnitudes) over all wrappers, taken before training zeroed them."""
    kept, pruned = [], []
    for wrapper in tfprune.collect_wrappers(model):
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
            w, m = np.abs(keras.ops.convert_to_numpy(weight)), keras.ops.convert_to_numpy(mask)
            kept.append(w[m > 0])
            pruned.append(w[m == 0])
    return np.concatenate(kept), np.concatenate(pruned)


def _schedule(sparsity=0.8):
    return tfprune.ConstantSparsity(sparsity, begin_step=1, frequency=100)


def test_global_count_and_single_threshold():
    x, y = classification_data()
    model = small_cnn()
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=_schedule(0.8), global_pruning=True)
    wrappers = tfprune.collect_wrappers(pruned)
    before = {id(w): [np.abs(keras.ops.convert_to_numpy(v)) for v in w.pruned_weights] for w in wrappers}
    # One update at step 1 (frequency 100): check the ranking against the weights it saw.
    pruned.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    rows = tfprune.sparsity_report(pruned)
    total = sum(r["size"] for r in rows)
    assert sum(r["zeros"] for r in rows) == expected_zeros(total, 0.8)
    kept, cut = [], []
    for w in wrappers:
        for value, mask in zip(before[id(w)], w.masks):
            m = keras.ops.convert_to_numpy(mask)
            kept.append(value[m > 0])
            cut.append(value[m == 0])
    kept, cut = np.concatenate(kept), np.concatenate(cut)
    assert kept.min() >= cut.max()  # one threshold across layers (ties allowed)
    sparsities = {r["layer"]: r["sparsity"] for r in rows}
    assert len({round(s, 3) for s in sparsities.values()}) > 1, sparsities  # layers differ
    thresholds = [r["threshold"] for r in rows]
    assert min(thresholds) == pytest.approx(kept.min())


def test_ceiling_respected_and_global_count_kept():
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(
        small_cnn(), pruning_schedule=tfprune.ConstantSparsity(0.9, 0, frequency=2), global_pruning=True,
        max_layer_sparsity=0.92,
    )
    _fit(pruned, x, y)
    rows = tfprune.sparsity_report(pruned)
    for row in rows:
        assert row["zeros"] <= expected_zeros(row["size"], 0.92), row
    total = sum(r["size"] for r in rows)
    assert sum(r["zeros"] for r in rows) == expected_zeros(total, 0.9)
    # dense1 (most weights) is held at its ceiling, the others take the rest.
    dense = next(r for r in rows if r["layer"] == "dense1")
    assert dense["zeros"] == expected_zeros(dense["size"], 0.92)
    # Stored weights are zero at pruned positions.
    for wrapper in tfprune.collect_wrappers(pruned):
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
            w, m = keras.ops.convert_to_numpy(weight), keras.ops.convert_to_numpy(mask)
            assert np.all(w[m == 0] == 0)


def test_polynomial_schedule_reaches_global_target():
    x, y = classification_data()
    schedule = tfprune.PolynomialDecay(0.0, 0.7, begin_step=0, end_step=6, frequency=2)
    pruned = tfprune.prune_low_magnitude(small_cnn(), pruning_schedule=schedule, global_pruning=True)
    _fit(pruned, x, y)
    rows = tfprune.sparsity_report(pruned)
    total = sum(r["size"] for r in rows)
    assert sum(r["zeros"] for r in rows) == expected_zeros(total, 0.7)
    kept, cut = _pruned_values(pruned)
    assert kept.min() > 0


def test_config_and_save_load_keep_global_mode(tmp_path):
    x, y = classification_data()
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=12, frequency=4)
    pruned = tfprune.prune_low_magnitude(small_cnn(), pruning_schedule=schedule, global_pruning=True,
                                         max_layer_sparsity=0.95)
    _fit(pruned, x, y, epochs=1)  # 4 steps: halfway
    wrapper = tfprune.collect_wrappers(pruned)[0]
    config = wrapper.get_config()
    assert config["global_pruning"] is True and config["max_layer_sparsity"] == 0.95
    path = os.path.join(tmp_path, "global.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    loaded_wrappers = tfprune.collect_wrappers(loaded)
    assert all(w.global_pruning and w.max_layer_sparsity == 0.95 for w in loaded_wrappers)
    _fit(loaded, x, y, epochs=3)  # steps 5..16
    group = global_pruning_group(loaded)
    assert group is not None and group.coordinator is loaded_wrappers[0]
    rows = tfprune.sparsity_report(loaded)
    total = sum(r["size"] for r in rows)
    assert sum(r["zeros"] for r in rows) == expected_zeros(total, 0.8)
    assert len({r["zeros"] * 1.0 / r["size"] for r in rows}) > 1
    for row in rows:
        assert row["zeros"] <= expected_zeros(row["size"], 0.95)


def test_list_of_layers_is_one_group():
    layers = tfprune.prune_low_magnitude([L.Dense(8, name="a"), L.Dense(3, name="b")],
                                         pruning_schedule=_schedule(0.5), global_pruning=True)
    group = relink_global_pruning(layers)
    assert group.wrappers == layers and group.coordinator is layers[0]
    inputs = keras.Input((6,))
    model = keras.Model(inputs, layers[1](layers[0](inputs)))
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=(16,))
    _fit(model, x, y, epochs=1)
    rows = tfprune.sparsity_report(model)
    assert sum(r["zeros"] for r in rows) == expected_zeros(6 * 8 + 8 * 3, 0.5)


def test_subclassed_model_grouped_by_callback():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1 = tfprune.prune_low_magnitude(L.Dense(8), pruning_schedule=_schedule(0.6), global_pruning=True)
            self.d2 = tfprune.prune_low_magnitude(L.Dense(3), pruning_schedule=_schedule(0.6), global_pruning=True)

        def call(self, inputs, training=None):
            return self.d2(self.d1(inputs, training=training), training=training)

    model = Net()
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=(16,))
    model(x[:1])  # build the wrappers (UpdatePruningStep initializes built wrappers)
    _fit(model, x, y, epochs=1)
    assert global_pruning_group(model).wrappers == [model.d1, model.d2]
    rows = tfprune.sparsity_report(model)
    assert sum(r["zeros"] for r in rows) == expected_zeros(6 * 8 + 8 * 3, 0.6)


def test_invalid_combinations():
    with pytest.raises(ValueError, match="block_size"):
        tfprune.prune_low_magnitude(small_cnn(), global_pruning=True, block_size=(2, 2))
    with pytest.raises(ValueError, match="sparsity_m_by_n"):
        tfprune.prune_low_magnitude(small_cnn(), global_pruning=True, sparsity_m_by_n=(2, 4))
    with pytest.raises(ValueError, match="max_layer_sparsity"):
        tfprune.prune_low_magnitude(small_cnn(), global_pruning=True, max_layer_sparsity=1.5)


@pytest.mark.parametrize("hparams, named", [
    ("target_sparsity=0.8,weight_sparsity_map=[conv:0.9]", "weight_sparsity_map=conv:0.9"),
    ("target_sparsity=0.8,threshold_decay=0.9", "threshold_decay=0.9"),
    ("target_sparsity=0.8,block_height=2,block_width=2", "block_height=2, block_width=2"),
    ("target_sparsity=0.8,block_dims_map=[dense:2x1]", "block_dims_map=dense:2x1"),
])
def test_contrib_hparams_global_pruning_cannot_honour_are_refused(hparams, named):
    with pytest.raises(ValueError, match=f"pruning_hparams {named} have no meaning there. Fix: drop them"):
        tfprune.prune_low_magnitude(small_cnn(), pruning_hparams=hparams, global_pruning=True)


def test_contrib_hparams_drive_the_global_schedule():
    x, y = classification_data()
    hparams = "target_sparsity=0.7,begin_pruning_step=0,sparsity_function_end_step=1,pruning_frequency=1"
    pruned = tfprune.prune_low_magnitude(small_cnn(), pruning_hparams=hparams, global_pruning=True)
    _fit(pruned, x, y, epochs=1)
    rows = tfprune.sparsity_report(pruned)
    assert sum(r["zeros"] for r in rows) == expected_zeros(sum(r["size"] for r in rows), 0.7)
    assert len({round(r["sparsity"], 3) for r in rows}) > 1  # one threshold: the layers end differently


def test_strip_after_global_pruning():
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), pruning_schedule=_schedule(0.8), global_pruning=True)
    _fit(pruned, x, y, epochs=1)
    plain = tfprune.strip_pruning(pruned)
    zeros = sum(int(np.sum(plain.get_layer(r["layer"]).kernel.numpy() == 0)) for r in tfprune.sparsity_report(pruned))
    total = sum(r["size"] for r in tfprune.sparsity_report(pruned))
    assert zeros >= expected_zeros(total, 0.8)


def test_custom_training_loop_and_ceiling_alone_enables_global():
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), pruning_schedule=tfprune.ConstantSparsity(0.85, 1, frequency=3),
                                         max_layer_sparsity=0.9)
    assert all(w.global_pruning for w in tfprune.collect_wrappers(pruned))
    train_custom_loop(pruned, x, y, keras.optimizers.SGD(0.01), batches=4)
    rows = tfprune.sparsity_report(pruned)
    total = sum(r["size"] for r in rows)
    assert sum(r["zeros"] for r in rows) == expected_zeros(total, 0.85)
    assert all(r["zeros"] <= expected_zeros(r["size"], 0.9) for r in rows)
    assert all(r["step"] == 4 for r in rows)
