"""Migration: export a tfmot-pruned tf_keras `.h5` checkpoint (TensorFlow Model Optimization Toolkit).

Keras 3 is the in-process `keras`, so the `.h5` is loaded in a subprocess with `TF_USE_LEGACY_KERAS=1`,
`tf_keras` and `tensorflow_model_optimization` (under `tfmot.sparsity.keras.prune_scope()`), stripped with
`tfmot.sparsity.keras.strip_pruning`, and written as TFLite (float or dynamic-range int8) or a SavedModel.
The subprocess writes to a temporary path in the output directory; the caller renames it.

Example:
    >>> rows, warnings, verification = export_h5("ckpt.h5", "out/model.tflite", "tflite", [])
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Sequence

from tfprune.export.errors import ExportFailure, ExportUsageError

LEGACY_FORMATS = ("saved_model", "tflite", "tflite_dynamic_int8")
# The subprocess runs TFLite through tfprune.interpreter, loaded from this file (no tfprune import there).
_INTERPRETER_MODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interpreter.py")

_SCRIPT = r'''
import json, os, sys, warnings
warnings.filterwarnings("ignore")
path, target, fmt, names, verify = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5] == "1"
interpreter_module = sys.argv[6]  # tfprune/interpreter.py, loaded by path: this process never imports tfprune

def fail(kind, message):
    print(json.dumps({"error": message, "kind": kind}))
    sys.exit(0)

try:
    import numpy as np
    import tensorflow as tf
    import tf_keras
    import tensorflow_model_optimization as tfmot
except ImportError as err:
    fail("usage", f"a tf_keras .h5 checkpoint needs tf_keras and tensorflow-model-optimization ({err}). "
         "Fix: pip install tf-keras tensorflow-model-optimization.")
try:
    with tfmot.sparsity.keras.prune_scope():
        model = tf_keras.models.load_model(path, compile=False)
except Exception as err:
    first = (str(err).strip().splitlines() or [""])[0]
    fail("failure", f"could not load {path!r} with tf_keras, it may be truncated or corrupt "
         f"({type(err).__name__}: {first}). Fix: delete it so the previous checkpoint is used, or re-run training.")
def walk(m):
    for child in getattr(m, "layers", []):
        yield child
        if type(child).__name__ != "PruneLowMagnitude":
            yield from walk(child)

rows, wrapped = [], 0
for layer in walk(model):
    if type(layer).__name__ != "PruneLowMagnitude":
        continue
    wrapped += 1
    inner = layer.layer
    for weight, mask, _ in layer.pruning_vars:
        value = weight.numpy() * mask.numpy()
        zeros = int(value.size - np.count_nonzero(value))
        label = weight.name.split("/")[-1].split(":")[0]
        rows.append({"layer": inner.name, "weight": label, "shape": list(value.shape),
                     "size": int(value.size), "zeros": zeros, "sparsity": zeros / max(value.size, 1)})
warnings_out = []
if not wrapped:
    warnings_out.append("the checkpoint has no pruning wrappers: it is exported unchanged and no weight is "
                        "sparse. Fix: train a model wrapped with tfmot.sparsity.keras.prune_low_magnitude.")
reference = model
stripped = tfmot.sparsity.keras.strip_pruning(model)
if names:
    def pick(m, n):
        for candidate in (n, "prune_low_magnitude_" + n):
            try:
                return m.get_layer(candidate)
            except ValueError:
                pass
        fail("usage", f"no layer named {n!r} in the model. Fix: use --output_node_names with some of: "
             + ", ".join(l.name for l in m.layers) + ".")
    def sub(m):
        outs = [pick(m, n).output for n in names]
        return tf_keras.Model(m.inputs, outs if len(outs) > 1 else outs[0])
    reference, stripped = sub(model), sub(stripped)
try:
    if fmt == "saved_model":
        tf.saved_model.save(stripped, target)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(stripped)
        if fmt == "tflite_dynamic_int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        with open(target, "wb") as handle:
            handle.write(converter.convert())
except Exception as err:
    first = (str(err).strip().splitlines() or [""])[0]
    fail("failure", f"could not convert {path!r} to {fmt} ({type(err).__name__}: {first}).")
verification = None
shape = tuple(stripped.inputs[0].shape)[1:] if len(stripped.inputs) == 1 else (None,)
if verify and fmt != "saved_model" and None not in shape:
    x = np.random.default_rng(0).normal(size=(4,) + shape).astype("float32")
    expected = np.asarray(reference(x, training=False))
    import importlib.util
    spec = importlib.util.spec_from_file_location("_tfprune_interpreter", interpreter_module)
    interpreter_lib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(interpreter_lib)
    interpreter = interpreter_lib.make_interpreter(model_path=target)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details().keys()
    got = np.concatenate([np.asarray(list(runner(**{name: x[i:i + 1]}).values())[0]) for i in range(len(x))])
    diff = float(np.max(np.abs(expected - got)))
    tol = 1e-5 if fmt == "tflite" else 0.05 * max(float(np.max(np.abs(expected))), 1e-6)
    verification = {"inputs": "random normal, batch 4", "max_abs_diff": diff, "tolerance": tol, "ok": diff <= tol}
print(json.dumps({"rows": rows, "warnings": warnings_out, "verification": verification}))
'''


def export_h5(path: str, output_path: str, output_format: str, output_node_names: Sequence[str],
              verify: bool = True) -> tuple[list[dict], list[str], dict | None]:
    """Exports a tfmot-pruned tf_keras `.h5` to `output_path` atomically; returns `(rows, warnings, verification)`."""
    if output_format not in LEGACY_FORMATS:
        raise ExportUsageError(
            f"a tf_keras .h5 checkpoint can be exported as {', '.join(LEGACY_FORMATS)}, not {output_format}. "
            "Fix: pass --output_format tflite (or tflite_dynamic_int8, saved_model) and a matching --filename."
        )
    directory = os.path.dirname(os.path.abspath(output_path))
    work = tempfile.mkdtemp(prefix=".tfprune-tmp-", dir=directory)
    target = os.path.join(work, "artifact")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, path, target, output_format, json.dumps(list(output_node_names)),
             "1" if verify else "0", _INTERPRETER_MODULE],
            capture_output=True, text=True, env=env, timeout=1800,
        )
        lines = proc.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportFailure(f"the tf_keras export of {path!r} failed ({tail}).") from None
        if "error" in result:
            raise (ExportUsageError if result["kind"] == "usage" else ExportFailure)(result["error"])
        from tfprune.export.formats import _replace

        _replace(target, output_path)
        return result["rows"], result["warnings"], result["verification"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
