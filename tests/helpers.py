"""Small model builders shared by tests."""

import os
import re
import sys

import keras
import numpy as np

L = keras.layers


def small_cnn(name: str = "cnn") -> keras.Model:
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(16, activation="relu", name="dense1")(x)
    outputs = L.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def classification_data(n: int = 64, shape=(12, 12, 1), classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + tuple(shape)).astype("float32")
    y = rng.integers(0, classes, size=(n,))
    return x, y


def expected_zeros(size: int, sparsity: float) -> int:
    return int(np.round(np.float64(size) * np.float64(sparsity)))


def train_custom_loop(model: keras.Model, x: np.ndarray, y: np.ndarray, optimizer, batches: int, batch_size: int = 16):
    """Trains `model` for `batches` steps in a hand-written loop, the documented way for pruning."""
    import tensorflow as tf

    import tfprune

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    step_callback = tfprune.UpdatePruningStep()
    step_callback.set_model(model)
    step_callback.on_train_begin()

    @tf.function
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)

    for batch in range(batches):
        start = (batch * batch_size) % len(x)
        train_step(x[start : start + batch_size], y[start : start + batch_size])
    step_callback.on_epoch_end(0)


def load_tool(name: str):
    """Import `tools/<name>.py` (the benchmark scripts are not a package) and return the module."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_outputs(tmp_path, block: str):
    """`(markdown path, README path)` for a benchmark smoke run: the README has an old `block` to replace."""
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n<!-- {block}:begin -->\nold\n<!-- {block}:end -->\ntail\n")
    return tmp_path / "results" / f"{block}.md", readme


def assert_published(readme, block: str, result: dict, stdout: str) -> None:
    """The README `block` holds the table of `tools/<block>.py` (nothing old, the rest kept) and the last
    printed line is the run's JSON with its summary."""
    import json

    content = readme.read_text()
    assert content.startswith(f"intro\n<!-- {block}:begin -->\n`python tools/{block}.py")
    assert "old" not in content and content.endswith(f"<!-- {block}:end -->\ntail\n")
    assert json.loads(stdout.strip().splitlines()[-1])["summary"] == result["summary"]


INTERPRETER_MODULE = __import__("os").path.join(
    __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))),
    "tfprune", "interpreter.py")

# For subprocess scripts that must not import tfprune: defines `make_interpreter` from
# tfprune/interpreter.py loaded by path (LiteRT where installed, tf.lite otherwise).
LOAD_MAKE_INTERPRETER = f"""
import importlib.util as _ilu
_spec = _ilu.spec_from_file_location("_tfprune_interpreter", {INTERPRETER_MODULE!r})
_mod = _ilu.module_from_spec(_spec); _spec.loader.exec_module(_mod)
make_interpreter = _mod.make_interpreter
"""


def install_fake_runtime(monkeypatch, make_runner) -> None:
    """Route `structured.timing` through a fake `make_runner(runtime, model, x, threads, io)`: single
    runners and the instance lists of whole-model comparisons alike (no conversion, no interpreter)."""
    from tfprune.structured import timing

    monkeypatch.setattr(timing, "make_runner", make_runner)
    monkeypatch.setattr(timing, "prepare", lambda runtime, model: model)
    monkeypatch.setattr(timing, "make_runners", lambda runtime, model, x, threads=None, count=1, io=True:
                        [make_runner(runtime, model, x, threads, io) for _ in range(count)])


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ start-up lines and Python warnings: a console script's output must not contain them
NOISE = re.compile(r"cudart_stub|cpu_feature_guard|oneDNN|cuInit|absl::InitializeLog|port\.cc|"
                   r"Warning:|DeprecationWarning|FutureWarning|^[IWE]\d{4} ", re.M)


def console_env(**extra) -> dict:
    """The environment of a user's shell for a console-script subprocess: no log-level or warning
    settings of the test run, this checkout importable."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS", "TF_USE_LEGACY_KERAS")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def console_command(name: str) -> list:
    """The argv that runs console script `name` as its entry point does."""
    return [sys.executable, "-c", f"import sys; from tfprune_launcher import {name}; sys.exit({name}())"]
