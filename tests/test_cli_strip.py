"""End-to-end tests of tfprune-strip: real pruning training, checkpoints, the CLI as a subprocess,
and loading the outputs in a subprocess that never imports tfprune."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tfprune
from tests.helpers import LOAD_MAKE_INTERPRETER, classification_data, small_cnn

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")


def run_cli(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "tfprune.cli.strip", *args], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    keras.utils.set_random_seed(11)
    root = tmp_path_factory.mktemp("cli")
    model = tfprune.prune_low_magnitude(
        small_cnn(), pruning_schedule=tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=6, frequency=1)
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = classification_data()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[
        tfprune.UpdatePruningStep(),
        keras.callbacks.ModelCheckpoint(str(root / "ck" / "ckpt-{epoch:02d}.keras")),
    ])
    dense = small_cnn()
    dense.save(str(root / "dense.keras"))
    np.save(root / "x.npy", x)
    np.save(root / "expected.npy", model.predict(x, verbose=0))
    return root


PLAIN_LOADER = LOAD_MAKE_INTERPRETER + textwrap.dedent("""
    import sys, json, numpy as np
    import keras, tensorflow as tf
    path, fmt, root = sys.argv[1:4]
    x = np.load(root + "/x.npy")
    if fmt == "keras":
        model = keras.saving.load_model(path, compile=False)
        out = model.predict(x, verbose=0)
        names = [v.path for v in model.weights]
    else:
        interpreter = make_interpreter(model_path=path)
        runner = interpreter.get_signature_runner()
        (name,) = runner.get_input_details().keys()
        out = np.concatenate([list(runner(**{name: x[i:i + 1]}).values())[0] for i in range(len(x))])
        names = [d["name"] for d in interpreter.get_tensor_details()]
    diff = float(np.max(np.abs(out - np.load(root + "/expected.npy"))))
    print(json.dumps({"tfprune_imported": "tfprune" in sys.modules, "diff": diff, "names": names,
                      "scale": float(np.max(np.abs(out)))}))
""")


def load_without_tfprune(path, fmt, root):
    proc = subprocess.run([sys.executable, "-c", PLAIN_LOADER, str(path), fmt, str(root)], capture_output=True,
                          text=True, env=ENV, cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fmt,filename", [("keras", "m.keras"), ("tflite", "m.tflite"),
                                          ("tflite_int8", "m_int8.tflite")])
def test_cli_export_loads_without_tfprune(trained, tmp_path, fmt, filename):
    args = ["--checkpoint_dir", str(trained / "ck"), "--output_dir", str(tmp_path), "--filename", filename,
            "--baseline", str(trained / "dense.keras"), "--json"]
    if fmt == "tflite_int8":
        args += ["--output_format", "tflite_int8"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checkpoint"]["path"].endswith("ckpt-03.keras")
    expected_format = "tflite_dynamic_int8" if fmt == "tflite_int8" else fmt  # the earlier name is an alias
    assert report["output"]["format"] == expected_format and report["verification"]["ok"]
    assert report["totals"]["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert report["baseline"]["times_smaller"] > 1
    result = load_without_tfprune(tmp_path / filename, "keras" if fmt == "keras" else "tflite", trained)
    assert result["tfprune_imported"] is False
    assert not any("mask" in n or "threshold" in n or "pruning_step" in n for n in result["names"])
    if fmt == "keras":
        assert result["diff"] == 0.0
    elif fmt == "tflite":
        assert result["diff"] <= 1e-5
    else:  # documented tolerance of dynamic-range quantization: 5% of the largest output
        assert result["diff"] <= 0.05 * result["scale"]


def test_cli_saved_model_and_table(trained, tmp_path):
    proc = run_cli("--checkpoint_dir", str(trained / "ck"), "--output_dir", str(tmp_path),
                   "--filename", "served", "--output_node_names", "dense1")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ckpt-03.keras (keras; newest by modification time of 3 checkpoints)" in out
    assert "outputs kept: dense1" in out and "dense1/kernel" in out and "compression ratio" in out
    assert os.path.isfile(tmp_path / "served" / "saved_model.pb")


@pytest.mark.parametrize("case,code,needle", [
    ("missing", 2, "does not exist"),
    ("empty", 2, "is empty"),
    ("no_checkpoint", 2, "no checkpoint"),
    ("corrupt", 2, "no complete checkpoint"),  # a truncated .keras is never picked
    ("bad_config", 1, "truncated or corrupt"),  # a complete archive whose content does not load
    ("unknown_format", 2, "unknown --output_format"),
    ("unwritable", 2, "output directory"),
    ("exists", 2, "--overwrite"),
    ("no_flag", 2, "--checkpoint_dir is required"),
])
def test_cli_bad_input(trained, tmp_path, case, code, needle):
    ck = tmp_path / "ck"
    out = tmp_path / "out"
    args = ["--output_dir", str(out)]
    if case != "missing":
        ck.mkdir()
    if case == "no_checkpoint":
        (ck / "readme.txt").write_text("x")
    if case in ("corrupt", "unknown_format", "unwritable", "exists"):
        data = (trained / "ck" / "ckpt-03.keras").read_bytes()
        (ck / "ckpt-01.keras").write_bytes(data if case != "corrupt" else data[:500])
    if case == "bad_config":
        import zipfile

        with zipfile.ZipFile(ck / "ckpt-01.keras", "w") as archive:
            archive.writestr("config.json", "{not json")
            archive.writestr("metadata.json", "{}")
    if case == "unknown_format":
        args += ["--output_format", "onnx"]
    if case == "unwritable":
        (tmp_path / "blocker").write_text("x")
        args = ["--output_dir", str(tmp_path / "blocker" / "out")]
    if case == "exists":
        out.mkdir()
        (out / "stripped.keras").write_bytes(b"keep me")
    if case != "no_flag":
        args = ["--checkpoint_dir", str(ck)] + args
    proc = run_cli(*args)
    assert proc.returncode == code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tfprune-strip:")]
    assert len(errors) == 1 and needle in errors[0] and "Fix" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    if case == "exists":
        assert (out / "stripped.keras").read_bytes() == b"keep me"
    elif out.exists():
        assert os.listdir(out) == []
