"""tfprune-strip --output_format tflite_full_int8 from a checkpoint directory of a QAT model, and the
dynamic-range format's new name."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfprune.quantization as tfq
from tfprune.export import formats
from tfprune.interpreter import make_interpreter

L = keras.layers


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "tfprune.cli.strip", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_strip_full_int8_from_qat_checkpoints(tmp_path):
    inputs = keras.Input((10, 10, 1))
    x = L.Conv2D(4, 3, use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Flatten()(L.MaxPooling2D()(x))
    qat = tfq.quantize_model(keras.Model(inputs, L.Dense(3)(x)))
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x_train, y_train = rng.normal(size=(64, 10, 10, 1)).astype("float32"), rng.integers(0, 3, 64)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    qat.fit(x_train, y_train, epochs=2, batch_size=16, verbose=0, callbacks=[
        keras.callbacks.ModelCheckpoint(filepath=str(ckpts / "ckpt-{epoch:02d}.keras"))])
    out = tmp_path / "out"
    proc = run_cli(f"--checkpoint_dir={ckpts}", f"--output_dir={out}", "--filename=m.tflite",
                   "--output_format=tflite_full_int8", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["checkpoint"]["path"].endswith("ckpt-02.keras")
    assert report["output"]["format"] == "tflite_full_int8"
    assert report["verification"]["ok"], report["verification"]
    assert report["warnings"] == []
    data = (out / "m.tflite").read_bytes()
    assert tfq.float_operators(data) == []
    interpreter = make_interpreter(model_content=data)
    assert {op["op_name"] for op in interpreter._get_ops_details()} >= {"CONV_2D", "FULLY_CONNECTED", "QUANTIZE"}
    assert [f for f in os.listdir(out) if f.startswith(".tfprune-tmp")] == []
    # A float (not quantize-aware) checkpoint cannot become full integer: exit 1, nothing written.
    float_dir = tmp_path / "float"
    float_dir.mkdir()
    keras.Sequential([keras.Input((3,)), L.Dense(2)]).save(str(float_dir / "f.keras"))
    proc = run_cli(f"--checkpoint_dir={float_dir}", f"--output_dir={out}", "--filename=f.tflite",
                   "--output_format=tflite_full_int8")
    assert proc.returncode == 1 and "quantize_model" in proc.stderr
    assert not (out / "f.tflite").exists()


def test_dynamic_range_format_names_and_help():
    assert formats.resolve_format("m.tflite", "tflite_dynamic_int8") == ("tflite_dynamic_int8", "m.tflite")
    assert formats.resolve_format("m.tflite", "tflite_int8") == ("tflite_dynamic_int8", "m.tflite")  # old name
    assert formats.resolve_format(None, "tflite_full_int8") == ("tflite_full_int8", "stripped_full_int8.tflite")
    with pytest.raises(formats.ExportUsageError, match="tflite_full_int8"):
        formats.resolve_format("m.keras", "tflite_full_int8")
    from tfprune.cli import strip

    help_text = strip.define_flags()["output_format"].help
    assert "tflite_dynamic_int8 (TFLite with dynamic-range" in help_text and "also tflite_int8" in help_text
    assert "slower than float" in help_text and "tflite_full_int8" in help_text
