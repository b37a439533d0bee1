"""`make demo`: train a small MNIST CNN, prune it with the classic contrib hparams, report.

Runs offline on the MNIST test set shipped with tfprune (8,000 images train, 2,000 evaluate).
Writes TensorBoard summaries and `.keras` checkpoints under `--output_dir`.

    python -m tfprune.demo --output_dir demo_output
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags  # noqa: E402

import tfprune  # noqa: E402
from tfprune.datasets import load_mnist  # noqa: E402

CLASSIC_HPARAMS = (
    "begin_pruning_step=0,end_pruning_step=-1,threshold_decay=0.9,pruning_frequency=10,initial_sparsity=0.0,"
    "target_sparsity=0.5,sparsity_function_begin_step=0,sparsity_function_end_step=1000,sparsity_function_exponent=3"
)

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "demo_output", "Where TensorBoard logs and checkpoints go.")
flags.DEFINE_integer("dense_epochs", 4, "Epochs of dense training.")
flags.DEFINE_integer("prune_epochs", 5, "Epochs of pruning (fine-tuning) per run.")
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
        keras.callbacks.ModelCheckpoint(os.path.join(checkpoint_dir, "ckpt-{epoch:02d}.keras")),
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
            "log_dir": log_dir, "checkpoint_dir": checkpoint_dir}


def main(argv: list[str]) -> None:
    del argv
    start = time.time()
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
    dense.save(os.path.join(FLAGS.output_dir, "dense.keras"))

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
    summary = {
        "dense_accuracy": round(dense_accuracy, 4),
        **{f"{r['name']}_accuracy": round(r["accuracy"], 4) for r in runs},
        "seconds": round(time.time() - start, 1),
    }
    print("\n" + json.dumps(summary))


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
