"""PruningSummaries writes the logged values; the demo runs end to end, deployment table included."""

import glob
import json
import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tests.helpers import classification_data, small_cnn
from tests.helpers import NOISE, console_command, console_env
from tests.tflite_int8 import WEIGHT_OPS, int8_kernels
from tfprune.interpreter import make_interpreter


def _read_scalars(log_dir):
    values = {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor) if value.HasField("tensor") else np.array(value.simple_value)
                if array.ndim:  # histograms
                    continue
                values.setdefault(value.tag, []).append((event.step, float(array)))
    return values


@pytest.mark.parametrize("update_freq,expected_steps", [("epoch", [4, 8]), ("batch", list(range(1, 9))), (3, [3, 6])])
def test_summaries_match_model_state(tmp_path, update_freq, expected_steps):
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(
        small_cnn(), pruning_schedule=tfprune.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=6, frequency=2)
    )
    pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log_dir = str(tmp_path / "logs")
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(), tfprune.PruningSummaries(log_dir, update_freq=update_freq)])
    scalars = _read_scalars(log_dir)
    for row in tfprune.sparsity_report(pruned):
        prefix = f"{row['layer']}/{row['weight']}"
        sparsity = scalars[f"{prefix}/sparsity"]
        assert [step for step, _ in sparsity] == expected_steps
        assert sparsity[-1][1] == pytest.approx(row["sparsity"], abs=1e-6)
        assert scalars[f"{prefix}/threshold"][-1][1] == pytest.approx(row["threshold"], rel=1e-6)
        assert scalars[f"{prefix}/target_sparsity"][-1][1] == pytest.approx(0.6, abs=1e-6)
    model_sparsity = scalars["model/sparsity"]
    rows = tfprune.sparsity_report(pruned)
    total = sum(r["size"] for r in rows)
    assert model_sparsity[-1][1] == pytest.approx(sum(r["zeros"] for r in rows) / total, abs=1e-6)
    # Sparsity rises over the run.
    assert model_sparsity[0][1] <= model_sparsity[-1][1]


def test_summaries_bad_arguments():
    with pytest.raises(ValueError, match="log_dir"):
        tfprune.PruningSummaries("")
    with pytest.raises(ValueError, match="update_freq"):
        tfprune.PruningSummaries("logs", update_freq="hourly")
    model = small_cnn()
    model.compile(optimizer="adam", loss="mse")
    x, y = classification_data(n=8)
    with pytest.raises(ValueError, match="no pruning wrappers"):
        model.fit(x, np.zeros((8, 4)), verbose=0, callbacks=[tfprune.PruningSummaries("/tmp/never")])


def _float_kernels(path):
    """`(op name, float kernel)` of every conv / fully-connected op of a float TFLite file, in graph order."""
    interpreter = make_interpreter(model_path=path)
    interpreter.allocate_tensors()
    found = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in WEIGHT_OPS:
            found.append((op["op_name"], interpreter.get_tensor(int(op["inputs"][1])).copy()))
    return found


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    # As `make demo` runs it (the `tfprune-demo` console script), TF_CPP_MIN_LOG_LEVEL unset: quiet to the end.
    result = subprocess.run(
        console_command("demo") + [f"--output_dir={out}", "--dense_epochs=1", "--prune_epochs=2",
                                   "--latency_repeats=20", "--batch_size=64"],
        capture_output=True, text=True, timeout=600, env=console_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == "" and not NOISE.search(result.stdout), (result.stderr + result.stdout)[-3000:]
    assert "dense accuracy" in result.stdout and "polynomial_80" in result.stdout
    for run in ("contrib_hparams_50", "polynomial_80"):  # one per epoch, each written whole, then renamed
        assert sorted(os.listdir(out / "checkpoints" / run)) == ["ckpt-01.keras", "ckpt-02.keras"]
    assert glob.glob(str(out / "logs" / "contrib_hparams_50" / "events.out.tfevents.*"))
    summary = [line for line in result.stdout.splitlines() if line.startswith("{")][-1]
    values = json.loads(summary)
    assert values["dense_accuracy"] > 0.9

    # The closing table: one row per model, after its heading, just before the JSON line.
    lines = result.stdout.splitlines()
    start = lines.index("== Deployment: the TFLite models of the float, 80% pruned and 80% pruned + int8 CNN ==")
    table = lines[start + 1:]
    assert table[0].split()[:2] == ["model", "TFLite"]
    labels = ["float", "pruned 80%", "pruned 80% + int8"]
    for label, line in zip(labels, table[2:5]):
        assert line.startswith(label + " "), line
        assert line[len(label):].split()[0].replace(".", "").isdigit(), line  # the accuracy comes next
    rows = {r["model"]: r for r in json.loads((out / "deployment.json").read_text())["rows"]}
    assert list(rows) == labels and values["deployment"] == {
        k: {f: r[f] for f in ("accuracy", "raw_bytes", "zip_bytes", "latency_ms")} for k, r in rows.items()}
    assert not [p for p in os.listdir(out / "tflite") if p.startswith(".")]  # no temporary files left
    pruned, int8 = rows["pruned 80%"], rows["pruned 80% + int8"]
    assert pruned["accuracy"] > 0.85 and abs(int8["accuracy"] - pruned["accuracy"]) <= 0.02, rows
    assert pruned["raw_bytes"] == rows["float"]["raw_bytes"]  # the zeros are still stored as floats
    assert pruned["zip_bytes"] < rows["float"]["zip_bytes"] / 2 and int8["raw_bytes"] < pruned["raw_bytes"] / 3
    assert all(r["latency_ms"] > 0 for r in rows.values())
    assert float(table[2:5][2].split()[-1]) == pytest.approx(int8["latency_ms"], abs=6e-4)

    # The int8 kernels, read back from the interpreter, are 0 wherever the pruned float kernels are.
    floats, ints = _float_kernels(pruned["path"]), int8_kernels(open(int8["path"], "rb").read())
    assert [op for op, _ in floats] == [op for op, _, _ in ints] == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED",
                                                                    "FULLY_CONNECTED"]
    for (op, kernel), (_, quantized, _) in zip(floats, ints):
        assert kernel.shape == quantized.shape, op
        assert np.mean(kernel == 0) > 0.75, op
        assert np.all(quantized[kernel == 0] == 0), op
        assert np.mean(quantized == 0) - np.mean(kernel == 0) < 0.01, op  # few kept weights round to 0


def test_summaries_are_a_tensorboard_callback_logging_loss_too(tmp_path):
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(small_cnn(), pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=2))
    pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log_dir = str(tmp_path / "logs")
    callback = tfprune.PruningSummaries(log_dir, histogram_freq=1, write_graph=False)
    assert isinstance(callback, keras.callbacks.TensorBoard) and callback.histogram_freq == 1
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, validation_data=(x[:8], y[:8]),
               callbacks=[tfprune.UpdatePruningStep(), callback])
    assert "epoch_loss" in _read_scalars(os.path.join(log_dir, "train"))
    assert "epoch_loss" in _read_scalars(os.path.join(log_dir, "validation"))
    assert "model/sparsity" in _read_scalars(log_dir)


def test_summaries_in_a_custom_loop_are_written_at_epoch_begin(tmp_path):
    pruned = tfprune.prune_low_magnitude(small_cnn(), pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
    x, _ = classification_data(n=8)
    pruned(x[:1])
    step_callback, log_callback = tfprune.UpdatePruningStep(), tfprune.PruningSummaries(str(tmp_path / "cl"))
    for callback in (step_callback, log_callback):
        callback.set_model(pruned)
    step_callback.on_train_begin()
    for epoch in range(2):
        log_callback.on_epoch_begin(epoch=epoch)
        pruned(x, training=True)
        step_callback.on_epoch_end(batch=-1)
    steps = [step for step, _ in _read_scalars(str(tmp_path / "cl"))["model/sparsity"]]
    assert steps == [0, 1]


def _short_fit(schedule):
    keras.utils.set_random_seed(0)
    model = tfprune.prune_low_magnitude(
        keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="first"), keras.layers.Dense(2)]),
        pruning_schedule=schedule)
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).random((64, 8), dtype="float32")
    model.fit(x, x[:, :2], batch_size=8, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    return model


def test_fit_that_ends_before_the_first_mask_update_warns():
    """8 steps with frequency=100: no mask update yet (tfmot behaves the same), so fit says so."""
    with pytest.warns(UserWarning, match=r"before the pruning schedule updated any mask of .*first "
                                         r"\(step 8\).*smaller `frequency`"):
        model = _short_fit(tfprune.ConstantSparsity(0.5, begin_step=0))
    assert all(row["zeros"] == 0 for row in tfprune.sparsity_report(model))


def test_fit_that_pruned_does_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = _short_fit(tfprune.ConstantSparsity(0.5, begin_step=0, frequency=1))
    assert all(row["sparsity"] == 0.5 for row in tfprune.sparsity_report(model))


def test_demo_checkpoints_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from tfprune.demo import _AtomicCheckpoint

    model = small_cnn()
    checkpoint = _AtomicCheckpoint(str(tmp_path))
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0)
    assert os.listdir(tmp_path) == ["ckpt-01.keras"]
    reloaded = keras.models.load_model(tmp_path / "ckpt-01.keras")
    for a, b in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)

    def save_then_fail(self, path, *args, **kwargs):  # the disk fills up half-way through the file
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(keras.Model, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.on_epoch_end(1)
    assert os.listdir(tmp_path) == ["ckpt-01.keras"]  # no ckpt-02.keras, no temporary file
