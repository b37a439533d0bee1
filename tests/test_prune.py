"""Whole-model pruning: Sequential, functional, nested, subclassed; strip; save and resume."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tests.helpers import classification_data, expected_zeros, small_cnn, train_custom_loop

L = keras.layers
SCHEDULE = dict(pruning_schedule=tfprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6, frequency=2))


def _fit(model, x, y, epochs=2, **compile_kwargs):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    return model


def _assert_final_sparsity(model, target):
    rows = tfprune.sparsity_report(model)
    assert rows
    for row in rows:
        assert row["zeros"] == expected_zeros(row["size"], target), row


def _nested_model():
    block_in = keras.Input((10, 10, 6))
    block = keras.Model(block_in, L.Conv2D(6, 3, padding="same", name="inner_conv")(block_in), name="block")
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(6, 3, name="stem")(inputs)
    x = block(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(4, name="head")(x), name="outer")


def _sequential_model():
    return keras.Sequential(
        [keras.Input((12, 12, 1)), L.Conv2D(4, 3, name="c1"), L.ReLU(), L.Flatten(), L.Dense(4, name="d1")]
    )


@pytest.mark.parametrize("builder", [small_cnn, _nested_model, _sequential_model], ids=["functional", "nested", "sequential"])
def test_prune_train_strip(builder):
    x, y = classification_data()
    model = builder()
    original = [np.copy(w) for w in model.get_weights()]
    pruned = tfprune.prune_low_magnitude(model, **SCHEDULE)
    _fit(pruned, x, y)
    _assert_final_sparsity(pruned, 0.75)
    # The original model is untouched (pruning works on a clone).
    for before, after in zip(original, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    stripped = tfprune.strip_pruning(pruned)
    assert not tfprune.collect_wrappers(stripped)
    names = [layer.name for layer in stripped.layers]
    assert names == [layer.name for layer in model.layers]
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0))


def test_nested_model_wrappers_are_found_and_pruned():
    pruned = tfprune.prune_low_magnitude(_nested_model(), **SCHEDULE)
    names = sorted(w.layer.name for w in tfprune.collect_wrappers(pruned))
    assert names == ["head", "inner_conv", "stem"]


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = tfprune.prune_low_magnitude(L.Conv2D(4, 3, name="sub_conv"), **SCHEDULE)
        self.flatten = L.Flatten()
        self.head = tfprune.prune_low_magnitude(L.Dense(4, name="sub_head"), **SCHEDULE)

    def call(self, x, training=None):
        return self.head(self.flatten(self.conv(x, training=training)), training=training)


def test_subclassed_model_with_wrapped_layers():
    x, y = classification_data()
    model = Subclassed()
    model(x[:1])
    _fit(model, x, y)
    _assert_final_sparsity(model, 0.75)
    expected = model.predict(x, verbose=0)
    stripped = tfprune.strip_pruning(model)
    assert not tfprune.collect_wrappers(stripped)
    assert isinstance(stripped.conv, L.Conv2D) and stripped.conv.name == "sub_conv"
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), expected)
    with pytest.raises(ValueError, match="subclassed"):
        tfprune.prune_low_magnitude(Subclassed())


def test_fit_without_callback_fails_clearly():
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), **SCHEDULE)
    pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(Exception, match="UpdatePruningStep"):
        pruned.fit(x, y, epochs=1, verbose=0)


def test_custom_training_loop():
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), **SCHEDULE)
    train_custom_loop(pruned, x, y, keras.optimizers.Adam(1e-2), batches=8)
    _assert_final_sparsity(pruned, 0.75)
    assert all(int(w.pruning_step) == 8 for w in tfprune.collect_wrappers(pruned))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), **SCHEDULE)
    _fit(pruned, x, y)
    _assert_final_sparsity(pruned, 0.75)
    wrapper = tfprune.collect_wrappers(pruned)[0]
    assert wrapper.layer.compute_dtype == policy.split("_")[1]
    assert wrapper.masks[0].dtype == "float32"
    stripped = tfprune.strip_pruning(pruned)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), pruned.predict(x, verbose=0))


def test_jit_compile():
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), **SCHEDULE)
    _fit(pruned, x, y, jit_compile=True)
    _assert_final_sparsity(pruned, 0.75)


def test_checkpoint_weights_are_exactly_sparse(tmp_path):
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), **SCHEDULE)
    _fit(pruned, x, y)
    # Momentum would move pruned weights without the save-time zeroing; perturb them on purpose.
    for wrapper in tfprune.collect_wrappers(pruned):
        for weight in wrapper.pruned_weights:
            weight.assign(np.asarray(weight) + 0.5)
    path = str(tmp_path / "m.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    for wrapper in tfprune.collect_wrappers(loaded):
        for weight, mask in zip(wrapper.pruned_weights, wrapper.masks):
            assert np.all(np.asarray(weight)[np.asarray(mask) == 0] == 0)


def _state(model):
    out = {}
    for wrapper in tfprune.collect_wrappers(model):
        out[wrapper.name] = (
            [np.asarray(m) for m in wrapper.masks],
            [float(t) for t in wrapper.thresholds],
            int(wrapper.pruning_step),
            int(wrapper.last_update_step),
        )
    return out


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        for m1, m2 in zip(a[key][0], b[key][0]):
            np.testing.assert_array_equal(m1, m2)
        assert a[key][1:] == b[key][1:]


def test_save_load_resume_matches_uninterrupted_run(tmp_path):
    x, y = classification_data()
    schedule = dict(pruning_schedule=tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=14, frequency=3))

    keras.utils.set_random_seed(7)
    straight = tfprune.prune_low_magnitude(small_cnn(), **schedule)
    _fit(straight, x, y, epochs=4)

    keras.utils.set_random_seed(7)
    first = tfprune.prune_low_magnitude(small_cnn(), **schedule)
    _fit(first, x, y, epochs=2)
    path = str(tmp_path / "mid.keras")
    first.save(path)
    resumed = keras.models.load_model(path)  # no custom_objects, no scope
    _assert_same_state(_state(first), _state(resumed))
    resumed.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    _assert_same_state(_state(straight), _state(resumed))


def test_saved_model_loads_in_fresh_process_without_scope(tmp_path):
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), **SCHEDULE)
    _fit(pruned, x, y)
    path = str(tmp_path / "p.keras")
    pruned.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", pruned.predict(x, verbose=0))
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, tfprune
        model = keras.models.load_model({path!r})
        assert len(tfprune.collect_wrappers(model)) == 3
        out = model.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0)
        np.testing.assert_array_equal(out, np.load({str(tmp_path / 'expected.npy')!r}))
        print("LOADED")
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "LOADED" in result.stdout, result.stderr[-2000:]


def test_contrib_hparams_end_to_end():
    x, y = classification_data(n=96)
    hp = (
        "begin_pruning_step=2,end_pruning_step=-1,pruning_frequency=3,initial_sparsity=0.1,target_sparsity=0.6,"
        "sparsity_function_begin_step=0,sparsity_function_end_step=9,sparsity_function_exponent=3,"
        "weight_sparsity_map=[conv1/kernel:0.3]"
    )
    pruned = tfprune.prune_low_magnitude(small_cnn(), pruning_hparams=hp)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(_state(pruned))

    pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(), Record()])
    # Steps 1..12; contrib rule: last starts at 0, update when 2 <= t and last + 3 <= t.
    updates = [3, 6, 9, 12]
    for t, state in enumerate(seen, start=1):
        last = max([u for u in updates if u <= t], default=0)
        for wrapper in tfprune.collect_wrappers(pruned):
            masks, _, step, last_update = state[wrapper.name]
            assert step == t and last_update == last
            for path, mask in zip(wrapper.weight_paths, masks):
                target = 0.3 if path == "conv1/kernel" else 0.6
                p = min(1.0, max(0.0, last / 9))
                sparsity = target + (0.1 - target) * (1 - p) ** 3 if last else 0.0
                assert mask.size - np.count_nonzero(mask) == expected_zeros(mask.size, np.float32(sparsity)), (t, path)


def test_threshold_decay_smooths_thresholds():
    x, y = classification_data(n=32)
    pruned = tfprune.prune_low_magnitude(
        small_cnn(), pruning_hparams="pruning_frequency=1,threshold_decay=0.5,target_sparsity=0.5,"
        "sparsity_function_end_step=4"
    )
    pruned.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapper = tfprune.collect_wrappers(pruned)[-1]
    previous = [0.0]
    checked = []

    class Check(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.weights = np.asarray(wrapper.pruned_weights[0]) * np.asarray(wrapper.masks[0])

        def on_train_batch_end(self, batch, logs=None):
            step = int(wrapper.pruning_step)
            s = float(wrapper.target_sparsities(step)[0])
            flat = np.sort(np.abs(self.weights).ravel())
            k = expected_zeros(flat.size, np.float32(s))
            current = flat[k] if k < flat.size else np.inf
            expected = 0.5 * previous[0] + 0.5 * current
            np.testing.assert_allclose(float(wrapper.thresholds[0]), expected, rtol=1e-5)
            mask = np.asarray(wrapper.masks[0])
            np.testing.assert_array_equal(mask, (np.abs(self.weights) >= np.float32(expected)).astype("float32"))
            previous[0] = float(wrapper.thresholds[0])
            checked.append(step)

    pruned.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep(), Check()])
    assert checked == [1, 2, 3, 4]
