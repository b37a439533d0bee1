"""Accuracy vs sparsity: tfprune (Keras 3) against tfmot 0.8.1 (tf_keras) on the demo MNIST CNN.

Protocol, per seed: the CNN of `tfprune.demo.build_cnn()` is trained dense under Keras 3 (Adam 1e-3,
`--dense_epochs`) on the bundled MNIST images (8,000 train / 2,000 evaluate). Its weights are copied
with get_weights/set_weights into the identical tf_keras architecture, so both libraries start every
run from the very same dense weights. Then, for each target sparsity, a fresh copy is fine-tuned for
`--prune_epochs` (Adam, `--lr`, same batch size) under the same PolynomialDecay schedule
(0 -> target, power 3, begin_step 0, end_step about `--end_fraction` of the fine-tuning steps and a
multiple of `--frequency`), once with tfprune and once with tfmot; the model is then stripped. The 0%
row is the dense model fine-tuned the same `--prune_epochs` at the same learning rate without pruning
(so the pruned rows are compared to a dense model with the same training budget).

Per row (sparsity x library): eval accuracy of the stripped model (mean, std, min-max over seeds),
achieved sparsity (fraction of zeros over the Conv2D/Dense kernels of the stripped model), zip size
of the stripped model (`.keras` for tfprune, `.h5` for tf_keras, deflated with zipfile; bytes) and
the wall time of the fine-tuning `fit` (seconds, mean over seeds, tracing included).

Each library runs in its own process (one per seed, tfprune then tfmot, never concurrently):
importing tfmot sets TF_USE_LEGACY_KERAS=1 in the process environment (tfmot's compat module), which
must not leak into the Keras 3 side.

Targets: tfprune at least as accurate as tfmot at every sparsity within noise (tfprune mean >= tfmot
mean - spread, spread = the larger min-max range over seeds of the two libraries), and tfprune at
most 0.5 points below the dense model at 90% sparsity.

Usage:
    python tools/bench_accuracy.py [--seeds 0 1 2] [--dense_epochs 5] [--prune_epochs 10]
        [--batch_size 32] [--lr 1e-3] [--unpruned_layers conv1] [--markdown tools/results/bench_accuracy.md]
        [--readme docs/benchmarks.md]
    python tools/bench_accuracy.py --quick     # smoke run: 1 seed, 1,024 images, 1+1 epochs

Prints a markdown table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from readme_block import replace_block, write_atomic  # noqa: E402
LIBRARIES = ("tfprune", "tfmot")
LABELS = {"tfprune": "tfprune (Keras 3)", "tfmot": "tfmot 0.8.1 (tf_keras)"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75, 0.9, 0.95])
    parser.add_argument("--dense_epochs", type=int, default=5)
    parser.add_argument("--prune_epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--dense_lr", type=float, default=1e-3, help="Adam learning rate of dense training.")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of fine-tuning (both libraries).")
    parser.add_argument("--frequency", type=int, default=50, help="Mask update frequency in steps.")
    parser.add_argument("--end_fraction", type=float, default=2 / 3,
                        help="Schedule end_step as a fraction of the fine-tuning steps.")
    parser.add_argument("--train_images", type=int, default=8000, help="Use the first N of the 8,000 train images.")
    parser.add_argument("--quick", action="store_true",
                        help="Smoke run: seed 0, 1,024 train images, 1 dense + 1 pruning epoch, batch 64, frequency 4.")
    parser.add_argument("--unpruned_layers", default="conv1",
                        help="Comma-separated layers left dense in both libraries ('' prunes every layer). "
                             "Default: the 144-weight first convolution, as the tfmot guide suggests.")
    parser.add_argument("--markdown", help="Also write the markdown table (with a setup line) to this path.")
    parser.add_argument("--readme", help="Also replace the 'bench_accuracy' block of this markdown file with the table.")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.train_images, args.dense_epochs, args.prune_epochs = [0], 1024, 1, 1
        args.batch_size, args.frequency = 64, 4
    if not all(0.0 < s < 1.0 for s in args.sparsities):
        parser.error("--sparsities must be in (0, 1)")
    if not 0 < args.train_images <= 8000:
        parser.error("--train_images must be in [1, 8000]")
    return args


def schedule_steps(args: argparse.Namespace) -> tuple[int, int]:
    """(total fine-tuning steps, schedule end_step): end_step is a multiple of the frequency."""
    total = args.prune_epochs * -(-args.train_images // args.batch_size)
    end_step = max(1, round(total * args.end_fraction / args.frequency)) * args.frequency
    if end_step > total:
        raise SystemExit(f"end_step {end_step} exceeds the {total} fine-tuning steps: lower --frequency.")
    return total, end_step


# ---------------------------------------------------------------------------------------------
# Worker side: runs in a subprocess, one per library.
# ---------------------------------------------------------------------------------------------


def _cnn_tf_keras(tf_keras):
    """The architecture of `tfprune.demo.build_cnn()`, built with tf_keras (same names, same order)."""
    layers = tf_keras.layers
    inputs = tf_keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense1")(x)
    outputs = layers.Dense(10, name="logits")(x)
    return tf_keras.Model(inputs, outputs, name="mnist_cnn")


def prune_selected(keras, sparsity_api, model, schedule, unpruned: set[str]):
    """The library's prune_low_magnitude on the whole model, or, when some layers stay dense, on every
    other layer with a kernel through clone_model (the same recipe for both libraries)."""
    if not unpruned:
        return sparsity_api.prune_low_magnitude(model, pruning_schedule=schedule)
    missing = unpruned - {layer.name for layer in model.layers}
    if missing:
        raise SystemExit(f"--unpruned_layers names unknown layers {sorted(missing)}; "
                         f"choose among {[layer.name for layer in model.layers]}.")

    def wrap(layer):
        if layer.name in unpruned or not hasattr(layer, "kernel"):
            return layer
        return sparsity_api.prune_low_magnitude(layer, pruning_schedule=schedule)

    return keras.models.clone_model(model, clone_function=wrap)


def kernel_sparsity(model) -> float:
    """Fraction of zeros over the kernels of the model's Conv2D and Dense layers."""
    import numpy as np

    kernels = [np.asarray(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")]
    return float(sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels))


def zipped_size(model, directory: str, suffix: str) -> int:
    """Bytes of the saved model file after zip (ZIP_DEFLATED) compression."""
    path = os.path.join(directory, "model" + suffix)
    model.save(path)
    archive = path + ".zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.write(path, arcname=os.path.basename(path))
    size = os.path.getsize(archive)
    os.remove(path)
    os.remove(archive)
    return size


def worker(args: argparse.Namespace) -> None:
    """Runs every seed and sparsity for one library; writes `<workdir>/<library>.json`."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, ROOT)
    import numpy as np

    from tfprune.datasets import load_mnist

    side = args.worker
    if side == "tfmot":
        import tensorflow_model_optimization as tfmot
        import tf_keras as keras

        sparsity_api = tfmot.sparsity.keras
        build = lambda: _cnn_tf_keras(keras)  # noqa: E731
        suffix = ".h5"
    else:
        import keras

        import tfprune
        from tfprune.demo import build_cnn

        sparsity_api = tfprune
        build = build_cnn
        suffix = ".keras"

    class EpochTimer(keras.callbacks.Callback):
        """Wall time of every epoch of a `fit`."""

        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.times.append(time.perf_counter() - self.start)

    (x_train, y_train), (x_eval, y_eval) = load_mnist()
    x_train, y_train = x_train[: args.train_images], y_train[: args.train_images]
    total_steps, end_step = schedule_steps(args)
    unpruned = {name for name in args.unpruned_layers.split(",") if name}

    def compile_model(model, lr: float) -> None:
        model.compile(optimizer=keras.optimizers.Adam(lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def accuracy(model) -> float:
        logits = model.predict(x_eval, batch_size=500, verbose=0)
        return float(np.mean(np.argmax(logits, axis=-1) == y_eval))

    results: dict = {"library": side, "total_steps": total_steps, "end_step": end_step, "seeds": {}}
    for seed in args.seeds:
        weights_path = os.path.join(args.workdir, f"dense_seed{seed}.npz")
        seed_result: dict = {}
        if side == "tfprune":  # the dense model is trained once, here, and shared with the tfmot side
            keras.utils.set_random_seed(seed)
            dense = build()
            compile_model(dense, args.dense_lr)
            start = time.perf_counter()
            dense.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.dense_epochs, verbose=0)
            seed_result["dense_train_s"] = time.perf_counter() - start
            seed_result["dense_accuracy"] = accuracy(dense)
            np.savez(weights_path, *dense.get_weights())
        with np.load(weights_path) as saved:
            dense_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]

        runs = {}
        for target in [0.0] + list(args.sparsities):
            keras.utils.set_random_seed(seed)  # same shuffling for every run of this seed and library
            model = build()
            model.set_weights(dense_weights)
            callbacks = []
            if target > 0:
                schedule = sparsity_api.PolynomialDecay(
                    initial_sparsity=0.0, final_sparsity=target, begin_step=0, end_step=end_step,
                    frequency=args.frequency)
                model = prune_selected(keras, sparsity_api, model, schedule, unpruned)
                callbacks = [sparsity_api.UpdatePruningStep()]
            compile_model(model, args.lr)
            timer = EpochTimer()
            start = time.perf_counter()
            model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.prune_epochs, verbose=0,
                      callbacks=callbacks + [timer])
            train_s = time.perf_counter() - start
            if target > 0:
                model = sparsity_api.strip_pruning(model)
            with tempfile.TemporaryDirectory() as tmp:
                size = zipped_size(model, tmp, suffix)
            runs[str(target)] = {"accuracy": accuracy(model), "sparsity": kernel_sparsity(model),
                                 "zip_bytes": size, "train_s": train_s, "epoch_s": timer.times}
            print(f"  {side} seed {seed} sparsity {target}: {runs[str(target)]}", file=sys.stderr, flush=True)
        seed_result["runs"] = runs
        results["seeds"][str(seed)] = seed_result
    with open(os.path.join(args.workdir, f"{side}.json"), "w") as handle:
        json.dump(results, handle)


# ---------------------------------------------------------------------------------------------
# Driver side: starts the workers, aggregates, prints.
# ---------------------------------------------------------------------------------------------


def run_worker(side: str, argv: list[str], workdir: str) -> dict:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if side == "tfmot":
        env["TF_USE_LEGACY_KERAS"] = "1"  # tfmot sets it on import anyway; set it before TF loads
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
        env.setdefault("KERAS_BACKEND", "tensorflow")
    command = [sys.executable, os.path.abspath(__file__), *argv, "--worker", side, "--workdir", workdir]
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)  # progress and errors go to stderr
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed with exit code {done.returncode} (see its stderr above)")
    with open(os.path.join(workdir, f"{side}.json")) as handle:
        return json.load(handle)


def aggregate(results: dict[str, dict], args: argparse.Namespace) -> list[dict]:
    """One row per (target sparsity, library) with statistics over the seeds."""
    rows = []
    for target in [0.0] + list(args.sparsities):
        for side in LIBRARIES:
            runs = [results[side]["seeds"][str(seed)]["runs"][str(target)] for seed in args.seeds]
            acc = [r["accuracy"] for r in runs]
            rows.append({
                "target_sparsity": target,
                "library": side,
                "accuracy_mean": round(statistics.fmean(acc), 5),
                "accuracy_std": round(statistics.pstdev(acc), 5),
                "accuracy_min": round(min(acc), 5),
                "accuracy_max": round(max(acc), 5),
                "accuracies": [round(a, 5) for a in acc],
                "achieved_sparsity": round(statistics.fmean(r["sparsity"] for r in runs), 5),
                "achieved_sparsity_min": round(min(r["sparsity"] for r in runs), 5),
                "achieved_sparsity_max": round(max(r["sparsity"] for r in runs), 5),
                "zip_bytes": round(statistics.fmean(r["zip_bytes"] for r in runs)),
                "train_s": round(statistics.fmean(r["train_s"] for r in runs), 2),
                # median epoch time after the first epoch (which includes tracing); None with 1 epoch
                "epoch_s": (round(statistics.fmean(statistics.median(r["epoch_s"][1:]) for r in runs), 3)
                            if len(runs[0]["epoch_s"]) > 1 else None),
            })
    return rows


def check_targets(rows: list[dict], args: argparse.Namespace) -> dict:
    """The two accuracy targets, per sparsity where relevant."""
    by_key = {(r["target_sparsity"], r["library"]): r for r in rows}
    per_sparsity = {}
    for target in args.sparsities:
        ours, theirs = by_key[(target, "tfprune")], by_key[(target, "tfmot")]
        spread = max(ours["accuracy_max"] - ours["accuracy_min"], theirs["accuracy_max"] - theirs["accuracy_min"])
        per_sparsity[str(target)] = {
            "delta": round(ours["accuracy_mean"] - theirs["accuracy_mean"], 5),
            "spread": round(spread, 5),
            "met": ours["accuracy_mean"] >= theirs["accuracy_mean"] - spread - 1e-9,
        }
    targets: dict = {
        "tfprune_vs_tfmot": per_sparsity,
        "tfprune_within_noise_of_tfmot": all(v["met"] for v in per_sparsity.values()),
    }
    if 0.9 in args.sparsities:
        drop = by_key[(0.0, "tfprune")]["accuracy_mean"] - by_key[(0.9, "tfprune")]["accuracy_mean"]
        targets["drop_at_90_points"] = round(100 * drop, 3)
        targets["drop_at_90_within_0.5_points"] = drop <= 0.005 + 1e-9
    return targets


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| target sparsity | library | accuracy % (mean) | min–max % | std % | achieved sparsity | zip bytes | fine-tune s | s/epoch |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        target = "0% (dense)" if r["target_sparsity"] == 0 else f"{r['target_sparsity']:.0%}"
        lines.append(
            f"| {target} | {LABELS[r['library']]} | {100 * r['accuracy_mean']:.2f} | "
            f"{100 * r['accuracy_min']:.2f}–{100 * r['accuracy_max']:.2f} | {100 * r['accuracy_std']:.2f} | "
            f"{r['achieved_sparsity']:.4f} | {r['zip_bytes']:,} | {r['train_s']:.1f} | "
            f"{'–' if r['epoch_s'] is None else format(r['epoch_s'], '.2f')} |")
    return "\n".join(lines)


def setup_line(args: argparse.Namespace, total_steps: int, end_step: int) -> str:
    return (f"MNIST CNN (tfprune.demo.build_cnn), {args.train_images} train / 2000 eval images, seeds "
            f"{', '.join(map(str, args.seeds))}; dense {args.dense_epochs} epochs (Adam {args.dense_lr:g}), "
            f"then {args.prune_epochs} fine-tuning epochs (Adam {args.lr:g}, batch {args.batch_size}) from the "
            f"same dense weights with PolynomialDecay 0 -> target, end_step {end_step} of {total_steps}, "
            f"frequency {args.frequency}; left dense in both: {args.unpruned_layers or 'nothing'}; "
            f"0% = dense fine-tuned the same epochs; zip = deflated .keras "
            f"(tfprune) / .h5 (tfmot) of the stripped model; fine-tune s = wall time of the fine-tuning fit, "
            f"s/epoch = its median epoch after the first.")


def worker_argv(argv: list[str]) -> list[str]:
    """The command line without --markdown/--readme (only the driver writes the table)."""
    passed, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--markdown", "--readme"):
            skip = True
        elif not arg.startswith(("--markdown=", "--readme=")):
            passed.append(arg)
    return passed


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark; prints the table and a JSON line and returns the JSON summary."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    total_steps, end_step = schedule_steps(args)
    passed = worker_argv(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        results: dict[str, dict] = {side: {"seeds": {}} for side in LIBRARIES}
        for seed in args.seeds:  # seeds interleave the libraries, so machine load drift hits both alike
            for side in LIBRARIES:  # tfprune first: it trains the dense model both sides start from
                print(f"running {side}, seed {seed} ...", file=sys.stderr, flush=True)
                done = run_worker(side, passed + ["--seeds", str(seed)], workdir)
                results[side]["seeds"].update(done["seeds"])
    rows = aggregate(results, args)
    targets = check_targets(rows, args)
    dense = [results["tfprune"]["seeds"][str(s)] for s in args.seeds]

    table = markdown_table(rows)
    print(table)
    print()
    print(f"dense model before fine-tuning: accuracy {100 * statistics.fmean(d['dense_accuracy'] for d in dense):.2f}%")
    target_lines = [
        f"{float(target):.0%}: tfprune - tfmot = {100 * check['delta']:+.2f} points (spread "
        f"{100 * check['spread']:.2f}): {'met' if check['met'] else 'MISSED'}"
        for target, check in targets["tfprune_vs_tfmot"].items()
    ]
    target_lines.append(f"Target tfprune >= tfmot - spread at every sparsity: "
                        f"{'met' if targets['tfprune_within_noise_of_tfmot'] else 'MISSED'}")
    if "drop_at_90_points" in targets:
        target_lines.append(
            f"Target tfprune at 90% at most 0.5 points below dense: drop {targets['drop_at_90_points']:.2f} "
            f"points: {'met' if targets['drop_at_90_within_0.5_points'] else 'MISSED'}")
    for line in target_lines:
        print(line)
    summary = {
        "config": {k: getattr(args, k) for k in ("seeds", "sparsities", "dense_epochs", "prune_epochs", "batch_size",
                                                 "dense_lr", "lr", "frequency", "train_images", "quick",
                                                 "unpruned_layers")},
        "total_steps": total_steps,
        "end_step": end_step,
        "dense_accuracy": [round(d["dense_accuracy"], 5) for d in dense],
        "dense_train_s": round(statistics.fmean(d["dense_train_s"] for d in dense), 2),
        "rows": rows,
        "targets": targets,
        "seconds": round(time.perf_counter() - start, 1),
    }
    report = setup_line(args, total_steps, end_step) + "\n\n" + table + "\n\n" + "\n".join(target_lines) + "\n"
    if args.markdown:
        write_atomic(args.markdown, report)
    if args.readme:
        replace_block(args.readme, "bench_accuracy", report)
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
