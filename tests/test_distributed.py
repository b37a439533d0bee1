"""Mask updates under tf.distribute.MirroredStrategy (two logical CPUs) match one device.

Logical devices must be configured before TensorFlow initializes its devices, so the
comparison runs in a fresh Python process.
"""

import os
import subprocess
import sys

import pytest

SCRIPT = r'''
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np, tfprune

MODE = sys.argv[1] if len(sys.argv) > 1 else "local"

def build():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(12, activation="relu", name="dense")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))

def run(strategy, **prune_kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 4)).astype("float32")
    y = rng.integers(0, 3, size=(64,))
    with strategy.scope():
        model = tfprune.prune_low_magnitude(build(), **prune_kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    out = {}
    for w in tfprune.collect_wrappers(model):
        if strategy.num_replicas_in_sync == 2:
            for variable in list(w.masks) + list(w.pruned_weights) + [w.pruning_step, w.last_update_step]:
                parts = [np.asarray(p) for p in strategy.experimental_local_results(variable.value)]
                assert len(parts) == 2, variable.path
                np.testing.assert_array_equal(parts[0], parts[1], err_msg=f"replicas differ: {variable.path}")
        out[w.layer.name] = (
            [keras.ops.convert_to_numpy(m) for m in w.masks],
            [keras.ops.convert_to_numpy(v) for v in w.pruned_weights],
            int(keras.ops.convert_to_numpy(w.pruning_step)),
            int(keras.ops.convert_to_numpy(w.last_update_step)),
        )
    return out

configs = {
    "magnitude": dict(pruning_schedule=tfprune.PolynomialDecay(0.0, 0.7, begin_step=0, end_step=6, frequency=2)),
    "block": dict(pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=2), block_size=(2, 2)),
    "m_by_n": dict(sparsity_m_by_n=(2, 4)),
    "global": dict(pruning_schedule=tfprune.ConstantSparsity(0.8, 0, frequency=3), global_pruning=True,
                   max_layer_sparsity=0.9),
}
names = sys.argv[2:] or list(configs)
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
for name in names:
    one = run(tf.distribute.get_strategy(), **configs[name])
    two = run(mirrored, **configs[name])
    assert one.keys() == two.keys()
    for layer in one:
        m1, w1, s1, u1 = one[layer]
        m2, w2, s2, u2 = two[layer]
        assert (s1, u1) == (s2, u2) == (8, u1), (name, layer, s1, u1, s2, u2)
        for a, b in zip(m1, m2):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}/{layer}")
            assert 0 < a.mean() < 1, (name, layer, a.mean())
        for a, b in zip(w1, w2):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=f"{name}/{layer}")
    print("OK", name)
'''


@pytest.mark.parametrize("config", ["magnitude", "block", "m_by_n", "global"])
def test_mirrored_masks_match_single_device(config, tmp_path):
    path = os.path.join(tmp_path, "mirrored.py")
    with open(path, "w") as handle:
        handle.write(SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, path, "compare", config], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert f"OK {config}" in result.stdout


TENSOR_TRAINING_SCRIPT = r'''
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np, tfprune
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
keras.utils.set_random_seed(3)
with strategy.scope():
    inputs = keras.Input((6,))
    model = tfprune.prune_low_magnitude(keras.Model(inputs, keras.layers.Dense(8, name="d")(inputs)),
                                        pruning_schedule=tfprune.ConstantSparsity(0.5, 1, frequency=100))
cb = tfprune.UpdatePruningStep(); cb.set_model(model); cb.on_train_begin()
@tf.function
def step(x, flag):
    def fn(x):
        return model(x, training=flag)
    return strategy.run(fn, args=(x,))
x = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
step(tf.constant(x), tf.constant(True))
step(tf.constant(x), tf.constant(False))
w = tfprune.collect_wrappers(model)[0]
print("step", int(w.pruning_step.numpy()), "zeros", int((w.masks[0].numpy() == 0).sum()))
assert int(w.pruning_step.numpy()) == 1 and int((w.masks[0].numpy() == 0).sum()) == 24
print("OK")
'''


def test_mirrored_custom_loop_with_tensor_training_flag(tmp_path):
    path = os.path.join(tmp_path, "tensor_training.py")
    with open(path, "w") as handle:
        handle.write(TENSOR_TRAINING_SCRIPT)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, path], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "OK" in result.stdout
