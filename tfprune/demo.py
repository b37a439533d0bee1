"""`make demo`: train a small MNIST CNN, prune it with the classic contrib hparams and to 80%, then deploy
the 80% model: pruning-preserving int8 QAT, full-integer TFLite, and a table of float / pruned / pruned + int8
(TFLite accuracy, bytes raw and zipped, latency).

Runs offline on the MNIST test set shipped with tfprune (8,000 images train, 2,000 evaluate).
Writes TensorBoard summaries, `.keras` checkpoints, the three `.tflite` models and `deployment.json`
under `--output_dir`, each file atomically (temporary name, then rename).

    python -m tfprune.demo --output_dir demo_output
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

import tfprune  # noqa: E402
import tfprune.quantization as tfq  # noqa: E402
from tfprune.datasets import load_mnist  # noqa: E402
from tfprune.export import measure, write_model  # noqa: E402
from tfprune.structured.timing import paired_median_ms, tflite_runner  # noqa: E402

CLASSIC_HPARAMS = (
    "begin_pruning_step=0,end_pruning_step=-1,threshold_decay=0.9,pruning_frequency=10,initial_sparsity=0.0,"
    "target_sparsity=0.5,sparsity_function_begin_step=0,sparsity_function_end_step=1000,sparsity_function_exponent=3"
)

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "demo_output", "Where TensorBoard logs and checkpoints go.")
flags.DEFINE_integer("dense_epochs", 4, "Epochs of dense training.")
flags.DEFINE_integer("prune_epochs", 5, "Epochs of pruning (fine-tuning) per run.")
flags.DEFINE_integer("qat_epochs", 1, "Epochs of pruning-preserving quantization-aware training of the 80% model.",
                     lower_bound=1)
flags.DEFINE_integer("latency_repeats", 200, "Timed TFLite calls per model (1 thread, batch 1; median).",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_enum("data", "bundled", ["bundled", "keras"], "MNIST source: bundled copy, or keras.datasets (network).")


def build_cnn() -> keras.Model:
    """The small MNIST CNN used by the demo, benchmarks and notebooks."""
    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def _compile(model: keras.Model, learning_rate: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


class _AtomicCheckpoint(keras.callbacks.Callback):
    """Saves `<directory>/ckpt-{epoch:02d}.keras` at the end of each epoch through a temporary name and a
    rename, so that an interrupted demo never leaves a half-written checkpoint."""

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        write_model(self.model, os.path.join(self.directory, f"ckpt-{epoch + 1:02d}.keras"), "keras")


def prune_run(name: str, dense: keras.Model, data: tuple, **prune_kwargs) -> dict:
    """Prunes a copy of `dense` while fine-tuning; returns accuracy and the sparsity table."""
    (x_train, y_train), (x_eval, y_eval) = data
    pruned = tfprune.prune_low_magnitude(dense, **prune_kwargs)
    _compile(pruned, 5e-4)
    log_dir = os.path.join(FLAGS.output_dir, "logs", name)
    checkpoint_dir = os.path.join(FLAGS.output_dir, "checkpoints", name)
    os.makedirs(checkpoint_dir, exist_ok=True)
    callbacks = [
        tfprune.UpdatePruningStep(),
        tfprune.PruningSummaries(log_dir, update_freq=50),
        _AtomicCheckpoint(checkpoint_dir),
    ]
    print(f"\n== Pruning run '{name}' ({FLAGS.prune_epochs} epochs) ==", flush=True)
    pruned.fit(x_train, y_train, batch_size=FLAGS.batch_size, epochs=FLAGS.prune_epochs, verbose=2,
               callbacks=callbacks)
    rows = tfprune.sparsity_report(pruned)
    accuracy = pruned.evaluate(x_eval, y_eval, verbose=0)[1]
    stripped = tfprune.strip_pruning(pruned)
    _compile(stripped, 1e-3)
    stripped_accuracy = stripped.evaluate(x_eval, y_eval, verbose=0)[1]
    return {"name": name, "accuracy": accuracy, "stripped_accuracy": stripped_accuracy, "rows": rows,
            "log_dir": log_dir, "checkpoint_dir": checkpoint_dir, "stripped": stripped}


def _write_json_atomically(value: dict, path: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tfprune-tmp-", suffix=".json", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(value, handle, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def deploy(dense: keras.Model, run: dict, data: tuple) -> list[dict]:
    """The pipeline's last step for the 80% run: int8 PQAT, full-integer TFLite, and one row per model.

    Writes `<output_dir>/tflite/{float,pruned_80,pruned_80_int8}.tflite`; each row has the label, the
    file, the TFLite interpreter's accuracy on the eval images, raw and zipped bytes, and the median
    time of one `invoke()` in ms (1 thread, batch 1; the three models take turns, `--latency_repeats`
    calls each).

    Example:
        >>> rows = deploy(dense, prune_run("polynomial_80", dense, data, pruning_schedule=schedule), data)
        >>> print(format_deployment_table(rows))
    """
    (x_train, y_train), (x_eval, y_eval) = data
    print(f"\n== Deployment: '{run['name']}' -> int8 pruning-preserving QAT ({FLAGS.qat_epochs} epoch(s)) "
          "-> full-integer TFLite ==", flush=True)
    qat = tfq.quantize_model(run["stripped"], preserve_sparsity=True)  # pruned zeros stay exactly 0
    _compile(qat, 1e-4)
    qat.fit(x_train, y_train, batch_size=FLAGS.batch_size, epochs=FLAGS.qat_epochs, verbose=2)

    tflite_dir = os.path.join(FLAGS.output_dir, "tflite")
    os.makedirs(tflite_dir, exist_ok=True)
    models = [("float", dense, "tflite"), ("pruned 80%", run["stripped"], "tflite"),
              ("pruned 80% + int8", qat, "tflite_full_int8")]
    rows, runners = [], []
    for (label, model, fmt), stem in zip(models, ("float", "pruned_80", "pruned_80_int8")):
        path = os.path.join(tflite_dir, stem + ".tflite")
        write_model(model, path, fmt)
        with open(path, "rb") as handle:
            content = handle.read()
        logits = tflite_runner(content, x_eval)()
        sizes = measure(path)
        rows.append({"model": label, "path": path, "format": fmt,
                     "accuracy": round(float((logits.argmax(-1) == y_eval).mean()), 4),
                     "raw_bytes": sizes["raw_bytes"], "zip_bytes": sizes["zip_bytes"]})
        runners.append(tflite_runner(content, x_eval[:1], threads=1, io=False))  # times invoke() alone
    for row, ms in zip(rows, paired_median_ms(runners, repeats=FLAGS.latency_repeats)):
        row["latency_ms"] = round(ms, 4)
    return rows


def format_deployment_table(rows: list[dict]) -> str:
    """The closing table of the demo: one line per model (see `deploy`).

    Example:
        >>> print(format_deployment_table(deploy(dense, run, data)))
    """
    base = rows[0]["zip_bytes"]
    lines = [f"{'model':<20} {'TFLite accuracy':>15} {'raw bytes':>11} {'zip bytes':>11} {'zip vs float':>12} "
             f"{'latency ms (1 thread, batch 1)':>31}"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r['model']:<20} {r['accuracy']:>15.4f} {r['raw_bytes']:>11,} {r['zip_bytes']:>11,} "
                     f"{base / r['zip_bytes']:>11.1f}x {r['latency_ms']:>31.3f}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    start = time.time()
    if not FLAGS["verbosity"].present:  # SavedModel export (on the way to TFLite) logs INFO lines; -v 0 shows them
        absl_logging.set_verbosity(absl_logging.ERROR)
    keras.utils.set_random_seed(0)
    data = load_mnist(FLAGS.data)
    (x_train, y_train), (x_eval, y_eval) = data
    print(f"MNIST: {len(x_train)} training and {len(x_eval)} evaluation images", flush=True)

    dense = build_cnn()
    _compile(dense, 1e-3)
    print(f"\n== Dense training ({FLAGS.dense_epochs} epochs) ==", flush=True)
    dense.fit(x_train, y_train, batch_size=FLAGS.batch_size, epochs=FLAGS.dense_epochs, verbose=2)
    dense_accuracy = dense.evaluate(x_eval, y_eval, verbose=0)[1]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    write_model(dense, os.path.join(FLAGS.output_dir, "dense.keras"), "keras")

    steps = FLAGS.prune_epochs * -(-len(x_train) // FLAGS.batch_size)
    runs = [
        prune_run("contrib_hparams_50", dense, data, pruning_hparams=CLASSIC_HPARAMS),
        prune_run(
            "polynomial_80",
            dense,
            data,
            pruning_schedule=tfprune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=int(steps * 0.7), frequency=50),
        ),
    ]

    print("\n== Results ==")
    print(f"dense accuracy: {dense_accuracy:.4f}")
    for run in runs:
        total = sum(r["size"] for r in run["rows"])
        zeros = sum(r["zeros"] for r in run["rows"])
        print(f"\n{run['name']}: accuracy {run['accuracy']:.4f} (stripped model: {run['stripped_accuracy']:.4f}), "
              f"{zeros / total:.1%} of prunable weights are zero")
        print(tfprune.format_sparsity_table(run["rows"]))
        print(f"TensorBoard: tensorboard --logdir {run['log_dir']}")
        print(f"Checkpoints: {run['checkpoint_dir']}")

    deployment = deploy(dense, runs[-1], data)
    _write_json_atomically({"rows": deployment}, os.path.join(FLAGS.output_dir, "deployment.json"))
    print("\n== Deployment: the TFLite models of the float, 80% pruned and 80% pruned + int8 CNN ==")
    print(format_deployment_table(deployment))
    print(f"TFLite models: {os.path.dirname(deployment[0]['path'])}")
    summary = {
        "dense_accuracy": round(dense_accuracy, 4),
        **{f"{r['name']}_accuracy": round(r["accuracy"], 4) for r in runs},
        "deployment": {r["model"]: {k: r[k] for k in ("accuracy", "raw_bytes", "zip_bytes", "latency_ms")}
                       for r in deployment},
        "seconds": round(time.time() - start, 1),
    }
    print("\n" + json.dumps(summary))


def run() -> None:
    """`tfprune-demo` / `python -m tfprune.demo`; `--help` lists the demo's flags (`--helpfull`: every flag)."""
    if any(arg in ("-h", "-help", "--help") for arg in sys.argv[1:]):
        # absl's --help lists the flags of the script that started Python, which is not this module
        # when a console script imports it.
        print(__doc__.strip() + "\n\nFlags:\n" + FLAGS.module_help(FLAGS.find_module_defining_flag("output_dir")))
        sys.exit(0)
    app.run(main)


if __name__ == "__main__":
    run()
