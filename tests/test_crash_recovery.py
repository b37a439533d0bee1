"""Crash recovery: a pruning run SIGKILLed mid-epoch (while a checkpoint is being written) and started
again with `keras.callbacks.BackupAndRestore` ends exactly like an uninterrupted run; tfprune-strip
never picks the half-written checkpoint."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tfprune.export.checkpoints import find_latest_checkpoint, is_complete_checkpoint_file, is_temporary_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import os, sys, json
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np, keras, tensorflow as tf
import tfprune
keras.utils.set_random_seed(0)
tf.config.experimental.enable_op_determinism()
work, kill_at = sys.argv[1], sys.argv[2]  # kill_at: "epoch,batch" or "none"

rng = np.random.default_rng(0)
x = rng.normal(size=(64, 10, 10, 1)).astype("float32")
y = rng.integers(0, 4, size=(64,))
inputs = keras.Input((10, 10, 1))
h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
h = keras.layers.Flatten()(h)
h = keras.layers.Dense(16, activation="relu", name="dense")(h)
model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(h))
pruned = tfprune.prune_low_magnitude(
    model, pruning_schedule=tfprune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=12, frequency=2))
pruned.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


class KillWhileSaving(keras.callbacks.Callback):
    """At (epoch, batch): starts writing the next epoch's checkpoint, then the process dies (SIGKILL)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            previous = open(os.path.join(work, "ck", f"ckpt-{self.epoch:02d}.keras"), "rb").read()
            with open(os.path.join(work, "ck", f"ckpt-{self.epoch + 1:02d}.keras"), "wb") as handle:
                handle.write(previous[: len(previous) // 2])  # the save is half done...
                handle.flush()
                os.fsync(handle.fileno())
                os.kill(os.getpid(), 9)  # ...when the machine takes the process away


callbacks = [tfprune.UpdatePruningStep(),
             keras.callbacks.BackupAndRestore(os.path.join(work, "backup")),
             keras.callbacks.ModelCheckpoint(os.path.join(work, "ck", "ckpt-{epoch:02d}.keras"))]
if kill_at != "none":
    callbacks.append(KillWhileSaving(*map(int, kill_at.split(","))))
pruned.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0, callbacks=callbacks)
arrays = {}
for w in tfprune.collect_wrappers(pruned):
    arrays[f"{w.layer.name}/step"] = keras.ops.convert_to_numpy(w.pruning_step)
    arrays[f"{w.layer.name}/last_update"] = keras.ops.convert_to_numpy(w.last_update_step)
    for i, (m, t) in enumerate(zip(w.masks, w.thresholds)):
        arrays[f"{w.layer.name}/mask{i}"] = keras.ops.convert_to_numpy(m)
        arrays[f"{w.layer.name}/threshold{i}"] = keras.ops.convert_to_numpy(t)
for v in pruned.weights:
    arrays["weight:" + v.path] = keras.ops.convert_to_numpy(v)
for v in pruned.optimizer.variables:
    arrays["optimizer:" + v.path] = keras.ops.convert_to_numpy(v)
np.savez(os.path.join(work, "final.npz"), **arrays)
'''


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CUDA_VISIBLE_DEVICES="", TF_DETERMINISTIC_OPS="1")
    env.pop("TF_USE_LEGACY_KERAS", None)  # set process-wide once any test module imported tfmot
    return env


def _train(work, kill_at):
    os.makedirs(os.path.join(work, "ck"), exist_ok=True)
    return subprocess.run([sys.executable, "-c", SCRIPT, str(work), kill_at], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=300)


@pytest.mark.slow
def test_killed_and_restarted_run_equals_uninterrupted_run(tmp_path):
    reference = _train(tmp_path / "reference", "none")
    assert reference.returncode == 0, reference.stderr[-3000:]

    work = tmp_path / "crash"
    killed = _train(work, "2,1")  # epoch index 2 (the third), after its second batch
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (work / "final.npz").exists()
    # The half-written ckpt-03.keras is the newest file, but it is never the one picked.
    ck = work / "ck"
    assert sorted(os.listdir(ck)) == ["ckpt-01.keras", "ckpt-02.keras", "ckpt-03.keras"]
    assert not is_complete_checkpoint_file(str(ck / "ckpt-03.keras"), "keras")
    choice = find_latest_checkpoint(str(ck))
    assert choice.path == str(ck / "ckpt-02.keras") and "ckpt-03.keras" in choice.reason
    strip = subprocess.run([sys.executable, "-m", "tfprune.cli.strip", f"--checkpoint_dir={ck}",
                            f"--output_dir={work / 'export'}", "--filename=model.keras", "--json"],
                           capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert strip.returncode == 0, strip.stderr[-2000:]
    assert json.loads(strip.stdout.strip().splitlines()[-1])["checkpoint"]["path"].endswith("ckpt-02.keras")

    resumed = _train(work, "none")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = dict(np.load(tmp_path / "reference" / "final.npz"))
    got = dict(np.load(work / "final.npz"))
    assert sorted(got) == sorted(expected)
    assert int(got["conv/step"]) == 16  # 4 epochs of 4 batches: the step survived the crash
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    masks = [k for k in expected if "/mask" in k]
    assert masks and all(0.7 < 1.0 - expected[k].mean() < 0.8 for k in masks)


def test_discovery_skips_temporary_and_truncated_files(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    good = tmp_path / "ckpt-01.keras"
    model.save(good)
    data = good.read_bytes()
    (tmp_path / "ckpt-02.keras").write_bytes(data[: len(data) // 3])  # truncated zip
    (tmp_path / ".tfprune-tmp-abc.keras").write_bytes(data)  # a writer's temporary file
    (tmp_path / "ckpt-03.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)  # HDF5 signature, nothing else
    os.utime(good, (1, 1))  # the complete one is the oldest
    choice = find_latest_checkpoint(str(tmp_path))
    assert choice.path == str(good) and choice.candidates == 1
    assert "skipped 3 temporary or incomplete" in choice.reason
    assert is_temporary_name(".tfprune-tmp-abc.keras") and is_temporary_name("x.keras.part")
    assert not is_temporary_name("ckpt-temperature.keras")
    good.unlink()
    from tfprune.export.errors import ExportUsageError

    with pytest.raises(ExportUsageError, match="no complete checkpoint.*interrupted by a crash"):
        find_latest_checkpoint(str(tmp_path))
