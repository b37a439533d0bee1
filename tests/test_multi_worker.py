"""Pruning under tf.distribute.MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1.

Both workers (TF_CONFIG, free local ports) train the same pruned model in a custom loop
(`strategy.run`, `UpdatePruningStep` driving the steps; Keras 3.15's `fit` itself fails under this
strategy before the first step, pruned or not); the global batch of 16 is split between them
(tf.data DATA sharding). A single process trained on the same data,
seed and global batch must end with the same masks, steps and (to float tolerance) weights.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import os, sys, json
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
mode, out_path = sys.argv[1], sys.argv[2]
strategy = tf.distribute.MultiWorkerMirroredStrategy() if mode == "worker" else tf.distribute.get_strategy()
import keras, numpy as np, tfprune

keras.utils.set_random_seed(7)
rng = np.random.default_rng(0)
x = rng.normal(size=(64, 8, 8, 4)).astype("float32")
y = rng.integers(0, 3, size=(64,))
dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
dataset = dataset.with_options(options)

with strategy.scope():
    inputs = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(12, activation="relu", name="dense")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    pruned = tfprune.prune_low_magnitude(
        model, pruning_schedule=tfprune.PolynomialDecay(0.0, 0.7, begin_step=0, end_step=6, frequency=2))
    optimizer = keras.optimizers.SGD(0.05)
    optimizer.build(pruned.trainable_variables)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
step_callback = tfprune.UpdatePruningStep()
step_callback.set_model(pruned)
step_callback.on_train_begin()

@tf.function
def train_step(xb, yb):
    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(loss_fn(yb, pruned(xb, training=True))) / 16.0  # global batch 16
        optimizer.apply(tape.gradient(loss, pruned.trainable_variables), pruned.trainable_variables)
    strategy.run(replica_step, args=(xb, yb))

distributed = strategy.experimental_distribute_dataset(dataset)
for epoch in range(2):
    for xb, yb in distributed:
        train_step(xb, yb)
    step_callback.on_epoch_end(epoch)
out = {"replicas": int(strategy.num_replicas_in_sync)}
arrays = {}
for w in tfprune.collect_wrappers(pruned):
    name = w.layer.name
    out[name] = [int(keras.ops.convert_to_numpy(w.pruning_step)), int(keras.ops.convert_to_numpy(w.last_update_step))]
    for i, (m, v) in enumerate(zip(w.masks, w.pruned_weights)):
        arrays[f"{name}/mask{i}"] = keras.ops.convert_to_numpy(m)
        arrays[f"{name}/weight{i}"] = keras.ops.convert_to_numpy(v)
np.savez(out_path + ".npz", **arrays)
with open(out_path + ".json", "w") as handle:
    json.dump(out, handle)
'''


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    env.pop("TF_CONFIG", None)
    env.pop("TF_USE_LEGACY_KERAS", None)  # set process-wide once any test module imported tfmot
    env.update(extra)
    return env


def _load(path):
    with open(path + ".json") as handle:
        meta = json.load(handle)
    return meta, dict(np.load(path + ".npz"))


@pytest.mark.slow
def test_two_workers_end_with_single_process_masks(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    try:
        for index in range(2):
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            workers.append(subprocess.Popen(
                [sys.executable, "-c", SCRIPT, "worker", str(tmp_path / f"worker{index}")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(TF_CONFIG=config), cwd=ROOT))
        for index, proc in enumerate(workers):
            _, err = proc.communicate(timeout=420)
            assert proc.returncode == 0, f"worker {index}: {err[-3000:]}"
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    local = subprocess.run([sys.executable, "-c", SCRIPT, "local", str(tmp_path / "local")], capture_output=True,
                           text=True, env=_env(), cwd=ROOT, timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]

    one_meta, one = _load(str(tmp_path / "local"))
    assert one_meta["replicas"] == 1
    for index in range(2):
        meta, arrays = _load(str(tmp_path / f"worker{index}"))
        assert meta["replicas"] == 2
        assert sorted(arrays) == sorted(one)
        for layer in ("conv", "dense", "logits"):
            assert meta[layer] == one_meta[layer] and meta[layer][0] == 8, (index, layer, meta[layer], one_meta[layer])
        for key in one:
            if "/mask" in key:
                np.testing.assert_array_equal(arrays[key], one[key], err_msg=f"worker {index}: {key}")
                assert 0.2 < 1.0 - one[key].mean() < 0.8, key  # pruning really happened
            else:
                np.testing.assert_allclose(arrays[key], one[key], rtol=1e-4, atol=1e-5,
                                           err_msg=f"worker {index}: {key}")
