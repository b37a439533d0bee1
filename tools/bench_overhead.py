"""Training-time overhead of pruning: pruned vs dense epoch time, tfprune (Keras 3) and tfmot (tf_keras).

Each side runs in its own process (tfmot needs legacy tf_keras), alternating dense and pruned
epochs so that machine noise hits both equally. Prints a table and a final JSON line.

    python tools/bench_overhead.py [--epochs 4] [--images 8000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def _model(keras):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def worker(side: str, epochs: int, images: int, batch_size: int) -> dict:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if side == "tfmot":
        os.environ["TF_USE_LEGACY_KERAS"] = "1"
        import tf_keras as keras
        import tensorflow_model_optimization as tfmot

        sparsity = tfmot.sparsity.keras

        def prune(model, end_step):
            schedule = sparsity.PolynomialDecay(0.0, 0.8, 0, end_step, frequency=100)
            return sparsity.prune_low_magnitude(model, pruning_schedule=schedule), [sparsity.UpdatePruningStep()]
    else:
        import keras

        import tfprune

        def prune(model, end_step):
            schedule = tfprune.PolynomialDecay(0.0, 0.8, 0, end_step, frequency=100)
            return tfprune.prune_low_magnitude(model, pruning_schedule=schedule), [tfprune.UpdatePruningStep()]

    from tfprune.datasets import load_mnist

    (x, y), _ = load_mnist(train_size=images)
    keras.utils.set_random_seed(0)
    dense = _model(keras)
    end_step = epochs * (len(x) // batch_size)
    pruned, callbacks = prune(_model(keras), end_step)
    for model in (dense, pruned):
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    dense_timer, pruned_timer = Timer(), Timer()
    for epoch in range(epochs + 1):  # the first epoch of each (tracing) is discarded
        dense.fit(x, y, batch_size=batch_size, epochs=epoch + 1, initial_epoch=epoch, verbose=0, callbacks=[dense_timer])
        pruned.fit(x, y, batch_size=batch_size, epochs=epoch + 1, initial_epoch=epoch, verbose=0,
                   callbacks=callbacks + [pruned_timer])
    dense_s = statistics.median(dense_timer.times[1:])
    pruned_s = statistics.median(pruned_timer.times[1:])
    return {"side": side, "dense_s": dense_s, "pruned_s": pruned_s, "ratio": pruned_s / dense_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--worker", choices=["tfprune", "tfmot"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs, args.images, args.batch_size)))
        return
    results = {}
    for side in ("tfprune", "tfmot"):
        command = [sys.executable, __file__, "--worker", side, f"--epochs={args.epochs}",
                   f"--images={args.images}", f"--batch_size={args.batch_size}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{side} worker failed:\n{done.stderr[-3000:]}")
        results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'library':<22} {'dense s/epoch':>14} {'pruned s/epoch':>15} {'ratio':>7}")
    labels = {"tfprune": "tfprune (Keras 3)", "tfmot": "tfmot 0.8.1 (tf_keras)"}
    for side, row in results.items():
        print(f"{labels[side]:<22} {row['dense_s']:>14.3f} {row['pruned_s']:>15.3f} {row['ratio']:>7.3f}")
    summary = {
        "tfprune_ratio": round(results["tfprune"]["ratio"], 3),
        "tfmot_ratio": round(results["tfmot"]["ratio"], 3),
        "target_ratio_met": results["tfprune"]["ratio"] <= 1.10,
        "no_worse_than_tfmot": results["tfprune"]["ratio"] <= results["tfmot"]["ratio"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
