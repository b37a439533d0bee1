"""Migration: a tfmot-pruned tf_keras .h5 checkpoint is exported to TFLite by tfprune-strip.

tf_keras is used only in subprocesses (Keras 3 is the in-process keras). Skipped when tf_keras or
tensorflow-model-optimization is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import LOAD_MAKE_INTERPRETER

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tf_keras") is None or importlib.util.find_spec("tensorflow_model_optimization") is None,
    reason="needs tf_keras and tensorflow-model-optimization",
)

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")

MAKE_H5 = textwrap.dedent("""
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np, tf_keras, tensorflow_model_optimization as tfmot
    tf_keras.utils.set_random_seed(3)
    L = tf_keras.layers
    m = tf_keras.Sequential([L.InputLayer((12, 12, 1)), L.Conv2D(4, 3, activation="relu", name="conv"),
                             L.Flatten(name="flat"), L.Dense(8, activation="relu", name="d1"), L.Dense(4, name="logits")])
    sparsity = tfmot.sparsity.keras
    p = sparsity.prune_low_magnitude(m, pruning_schedule=sparsity.ConstantSparsity(0.8, 0, frequency=1))
    p.compile("adam", tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(64, 12, 12, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 4, 64)
    p.fit(x, y, epochs=2, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    p.save(sys.argv[1])
    np.save(sys.argv[2], x[:8]); np.save(sys.argv[3], p.predict(x[:8], verbose=0))
""")

RUN_TFLITE = LOAD_MAKE_INTERPRETER + textwrap.dedent("""
    import sys, json, numpy as np, tensorflow as tf
    interpreter = make_interpreter(model_path=sys.argv[1])
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details().keys()
    x = np.load(sys.argv[2])
    out = np.concatenate([list(runner(**{name: x[i:i + 1]}).values())[0] for i in range(len(x))])
    expected = np.load(sys.argv[3])
    print(json.dumps({"diff": float(np.abs(out - expected).max()), "scale": float(np.abs(expected).max()),
                      "tfprune": "tfprune" in sys.modules}))
""")


@pytest.fixture(scope="module")
def h5_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy")
    (root / "ck").mkdir()
    proc = subprocess.run([sys.executable, "-c", MAKE_H5, str(root / "ck" / "ckpt-01.h5"), str(root / "x.npy"),
                           str(root / "expected.npy")], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tfprune.cli.strip", *args], capture_output=True, text=True,
                          env=ENV, timeout=300)


@pytest.mark.parametrize("fmt", ["tflite", "tflite_int8"])
def test_tfmot_h5_to_tflite(h5_dir, tmp_path, fmt):
    proc = cli("--checkpoint_dir", str(h5_dir / "ck"), "--output_dir", str(tmp_path), "--output_format", fmt,
               "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checkpoint"]["kind"] == "h5" and report["verification"]["ok"]
    assert [r["layer"] for r in report["weights"]] == ["conv", "d1", "logits"]
    assert report["totals"]["sparsity"] == pytest.approx(0.8, abs=0.02)
    check = subprocess.run([sys.executable, "-c", RUN_TFLITE, report["output"]["path"], str(h5_dir / "x.npy"),
                            str(h5_dir / "expected.npy")], capture_output=True, text=True, env=ENV, cwd="/")
    result = json.loads(check.stdout.strip().splitlines()[-1])
    assert result["tfprune"] is False
    assert result["diff"] <= (1e-5 if fmt == "tflite" else 0.05 * result["scale"])


def test_tfmot_h5_bad_inputs(h5_dir, tmp_path):
    proc = cli("--checkpoint_dir", str(h5_dir / "ck"), "--output_dir", str(tmp_path), "--filename", "m.keras")
    assert proc.returncode == 2 and "--output_format tflite" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ckpt-01.h5").write_bytes((h5_dir / "ck" / "ckpt-01.h5").read_bytes()[:300])
    proc = cli("--checkpoint_dir", str(tmp_path / "bad"), "--output_dir", str(tmp_path / "out"))
    # a truncated .h5 alone is never picked: a usage error naming it, nothing written
    assert proc.returncode == 2 and "ckpt-01.h5 is temporary or incomplete" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []
