"""tfprune-strip --representative_data / --calibration: a pruned float checkpoint calibrated into full-integer
TFLite (the CLI's main in-process), and every bad input: one-line error, exit code 2, nothing written."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
import tfprune.quantization as tfq
from tests.helpers import classification_data, small_cnn
from tests.tflite_int8 import int8_kernels
from tfprune.cli import strip


def run(capsys, *args):
    with pytest.raises(SystemExit) as done:
        strip.run(["tfprune-strip", *args])
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


@pytest.fixture(scope="module")
def pruned_checkpoints(tmp_path_factory):
    keras.utils.set_random_seed(3)
    root = tmp_path_factory.mktemp("calib")
    model = tfprune.prune_low_magnitude(
        small_cnn(), pruning_schedule=tfprune.ConstantSparsity(0.75, 0, frequency=1))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = classification_data()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
        tfprune.UpdatePruningStep(), keras.callbacks.ModelCheckpoint(str(root / "ck" / "ckpt-{epoch:02d}.keras"))])
    np.save(root / "x.npy", x)
    (root / "parts").mkdir()
    np.save(root / "parts" / "a.npy", x[:20])
    np.save(root / "parts" / "b.npy", x[20:])
    zeros = [int(np.sum(keras.ops.convert_to_numpy(w.pruned_weights[0] * w.masks[0]) == 0))
             for w in tfprune.collect_wrappers(model)]
    return root, x, zeros


def test_pruned_float_checkpoint_calibrated_to_full_integer(pruned_checkpoints, capsys):
    root, x, zeros = pruned_checkpoints
    out = root / "out"
    code, stdout, err = run(capsys, f"--checkpoint_dir={root / 'ck'}", f"--output_dir={out}", "--filename=m.tflite",
                            "--output_format=tflite_full_int8", f"--representative_data={root / 'x.npy'}",
                            "--calibration=entropy", "--json")
    assert code == 0, err
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["checkpoint"]["path"].endswith("ckpt-02.keras")
    assert report["verification"]["ok"], report["verification"]
    data = (out / "m.tflite").read_bytes()
    assert tfq.float_operators(data) == []
    # The same calibration in-process gives the same ranges: the same int8 model.
    stripped = tfprune.strip_pruning(keras.models.load_model(str(root / "ck" / "ckpt-02.keras")))
    ptq = tfq.quantize_post_training(stripped, x, method="entropy", verbose=0)
    expected = int8_kernels(tfq.to_tflite(ptq))
    got = int8_kernels(data)
    assert all(np.array_equal(a, b) for (_, a, _), (_, b, _) in zip(got, expected))
    assert [int(np.sum(k == 0)) for _, k, _ in got][:1] >= zeros[:1]  # pruned zeros are int8 zeros
    assert sum(int(np.sum(k == 0)) for _, k, _ in got) >= sum(zeros)
    # A directory of .npy files, another method.
    code, _, err = run(capsys, f"--checkpoint_dir={root / 'ck'}", f"--output_dir={out}", "--filename=p.tflite",
                       "--output_format=tflite_full_int8", f"--representative_data={root / 'parts'}",
                       "--calibration=percentile")
    assert code == 0, err
    assert tfq.float_operators((out / "p.tflite").read_bytes()) == []


def test_bad_calibration_inputs_exit_2_and_write_nothing(pruned_checkpoints, capsys, tmp_path):
    root, x, _ = pruned_checkpoints
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY not really")
    np.save(tmp_path / "wrong.npy", x[:, :10])
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    (tmp_path / "empty_dir").mkdir()
    out = tmp_path / "out"
    base = [f"--checkpoint_dir={root / 'ck'}", f"--output_dir={out}", "--filename=m.tflite"]
    full = base + ["--output_format=tflite_full_int8"]
    cases = [
        (full + [f"--representative_data={tmp_path / 'missing.npy'}"], "does not exist"),
        (full + [f"--representative_data={tmp_path / 'corrupt.npy'}"], "cannot read"),
        (full + [f"--representative_data={tmp_path / 'text.npy'}"], "not a numeric batch"),
        (full + [f"--representative_data={tmp_path / 'empty_dir'}"], "has no .npy file"),
        (full + [f"--representative_data={tmp_path / 'wrong.npy'}"], r"shape \(64, 10, 12, 1\)"),
        (full + [f"--representative_data={root / 'x.npy'}", "--calibration=kl"], "unknown --calibration 'kl'"),
        (base + ["--output_format=tflite", f"--representative_data={root / 'x.npy'}"], "tflite_full_int8"),
        (full + ["--calibration=entropy"], "needs --representative_data"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, *args)
        assert code == 2, (args, err)
        assert message in err or __import__("re").search(message, err), (message, err)
        assert len(err.strip().splitlines()) == 1 and "Fix:" in err
        assert not os.path.exists(out / "m.tflite") and not [
            f for f in (os.listdir(out) if out.exists() else []) if f.startswith(".tfprune-tmp")]
