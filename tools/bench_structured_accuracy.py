"""Accuracy of structured pruning methods on MNIST: one table, every method side by side in one run.

A BatchNormalization CNN is trained on the MNIST data shipped with tfprune (8,000 train / 2,000 eval),
then 50% of its channels are removed in several ways:

  dense                   trained from scratch (Adam, cosine decay to zero over `--dense_epochs`)
  L1 one-shot             prune_filters(0.5, 'l1'), no fine-tuning
  L1 + fine-tune          then `--fine_tune_epochs` epochs (fresh Adam via compile_like, cosine decay)
  regular (round_to=8)    L1, channel counts kept multiples of 8, + fine-tune
  FPGM + fine-tune        geometric-median criterion + fine-tune
  slimming                trained from scratch with BNSparsity, bn_scale global pruning of the conv
                          channels (the hidden Dense units by L1), + fine-tune
  soft filter pruning     from the dense weights: `--fine_tune_epochs` epochs of SFP, finalize, fine-tune
  L1 + distillation       L1 pruning, fine-tuned with Distiller (teacher: the dense model)
  scratch                 the L1-pruned architecture, re-initialised, trained (cosine) as long as dense + fine-tune

Columns: eval accuracy (mean over seeds, with the spread), parameters, MACs and CPU latency (batch 1
and 32, medians of alternating calls). Target: 50% of the channels removed with at most 1.0 point
accuracy loss after fine-tuning.

Usage:
    python tools/bench_structured_accuracy.py [--seeds 0 1] [--dense_epochs 8] [--fine_tune_epochs 6]
        [--markdown tools/results/bench_structured_accuracy.md] [--readme docs/benchmarks.md] [--quick]

Prints the table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")

from bench_structured import paired_latency_ms  # noqa: E402
from readme_block import replace_block, write_atomic  # noqa: E402
from tfprune import analysis  # noqa: E402
from tfprune.datasets import load_mnist  # noqa: E402
from tfprune.distill import Distiller  # noqa: E402
from tfprune.structured import BNSparsity, SoftFilterPruning, compile_like, prune_filters  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
RATIO = 0.5
TARGET_DROP = 1.0  # accuracy points
README_BLOCK = "bench_structured_accuracy"


def build_model() -> keras.Model:
    """Four conv-BN-ReLU layers (24, 40, 56, 72 filters), two max-pools, global pooling, Dense 100, logits.

    The widths are not multiples of 8, so that `round_to=8` changes what 50% pruning keeps.
    """
    inputs = keras.Input((28, 28, 1), name="image")
    x = inputs
    for i, filters in enumerate((24, 40, 56, 72), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i % 2 == 0:
            x = keras.layers.MaxPooling2D(name=f"pool{i // 2}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(100, activation="relu", name="dense1")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="mnist_bn_cnn")


def compile_model(model: keras.Model, learning_rate: float, decay_steps: int | None = None) -> keras.Model:
    """Adam; with `decay_steps`, the learning rate follows a cosine decay to zero over those steps."""
    if decay_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(keras.optimizers.Adam(learning_rate), LOSS, metrics=["accuracy"])
    return model


def accuracy(model: keras.Model, data) -> float:
    x, y = data
    logits = model.predict(x, batch_size=500, verbose=0)
    return float((np.argmax(logits, axis=1) == y).mean())


def channels(model: keras.Model) -> int:
    return sum(layer.kernel.shape[-1] for layer in model.layers if layer.name.startswith(("conv", "dense1")))


def run_seed(seed: int, train, evaluate, args) -> dict[str, dict]:
    """Every method for one seed: {row name: {'model', 'accuracy', 'extra_epochs'}}."""
    batch, lr, ft_lr = args.batch_size, args.learning_rate, args.fine_tune_learning_rate
    x, y = train

    steps_per_epoch = -(-len(x) // batch)

    def train_from_scratch(model: keras.Model, epochs: int, callbacks=()) -> keras.Model:
        return fit(compile_model(model, lr, decay_steps=epochs * steps_per_epoch), epochs, callbacks)

    def fit(model: keras.Model, epochs: int, callbacks=()) -> keras.Model:
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=list(callbacks))
        return model

    def fine_tune(pruned: keras.Model, reference: keras.Model) -> keras.Model:
        schedule = keras.optimizers.schedules.CosineDecay(ft_lr, args.fine_tune_epochs * steps_per_epoch)
        compile_like(pruned, reference, learning_rate=schedule)
        return fit(pruned, args.fine_tune_epochs)

    rows: dict[str, dict] = {}

    def add(name: str, build: Callable[[], keras.Model], extra_epochs: int) -> keras.Model:
        start = time.perf_counter()
        model = build()
        seconds = time.perf_counter() - start
        rows[name] = {"model": model, "accuracy": accuracy(model, evaluate), "extra_epochs": extra_epochs,
                      "seconds": seconds}
        print(f"  seed {seed}: {name:34s} acc {rows[name]['accuracy']:.4f} ({seconds:.0f} s)",
              file=sys.stderr, flush=True)
        return model

    def pruned_and_tuned(**prune_kwargs) -> Callable[[], keras.Model]:
        return lambda: fine_tune(prune_filters(dense, RATIO, **prune_kwargs)[0], dense)

    def slimming() -> keras.Model:
        keras.utils.set_random_seed(seed)
        slim = train_from_scratch(build_model(), args.dense_epochs, [BNSparsity(args.slimming_strength)])
        pruned, _ = prune_filters(slim, RATIO, importance="bn_scale", global_pruning=True)
        # |gamma| ranks only channels followed by BatchNormalization; the hidden Dense units go by L1
        pruned, _ = prune_filters(pruned, 0.0, importance="l1", pruning_ratio_dict={"dense1": RATIO})
        return fine_tune(pruned, slim)

    def soft() -> keras.Model:
        model = keras.models.clone_model(dense)
        model.set_weights(dense.get_weights())
        compile_model(model, ft_lr)
        sfp = SoftFilterPruning(RATIO, importance="l2")
        fit(model, args.fine_tune_epochs, [sfp])
        return fine_tune(sfp.finalize()[0], model)

    def distilled() -> keras.Model:
        student, _ = prune_filters(dense, RATIO, importance="l1")
        distiller = Distiller(student, dense, alpha=args.alpha, temperature=args.temperature)
        schedule = keras.optimizers.schedules.CosineDecay(ft_lr, args.fine_tune_epochs * steps_per_epoch)
        distiller.compile(keras.optimizers.Adam(schedule), LOSS, metrics=["accuracy"])
        distiller.fit(x, y, batch_size=batch, epochs=args.fine_tune_epochs, verbose=0)
        return student

    def scratch() -> keras.Model:
        keras.utils.set_random_seed(seed + 1000)
        fresh = keras.models.clone_model(rows["L1 one-shot"]["model"])  # the pruned architecture, new weights
        return train_from_scratch(fresh, args.dense_epochs + args.fine_tune_epochs)

    keras.utils.set_random_seed(seed)
    dense = add("dense", lambda: train_from_scratch(build_model(), args.dense_epochs), 0)
    ft = args.fine_tune_epochs
    add("L1 one-shot", lambda: prune_filters(dense, RATIO, importance="l1")[0], 0)
    add("L1 + fine-tune", pruned_and_tuned(importance="l1"), ft)
    add("regular (round_to=8) + fine-tune", pruned_and_tuned(importance="l1", round_to=8), ft)
    add("FPGM + fine-tune", pruned_and_tuned(importance="fpgm"), ft)
    add("slimming + fine-tune", slimming, ft)
    add("soft filter pruning + fine-tune", soft, 2 * ft)
    add("L1 + distillation", distilled, ft)
    add("scratch (pruned architecture)", scratch, ft)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--dense_epochs", type=int, default=8)
    parser.add_argument("--fine_tune_epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--fine_tune_learning_rate", type=float, default=1e-3)
    parser.add_argument("--slimming_strength", type=float, default=1e-4)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=30, help="latency calls per model and batch size")
    parser.add_argument("--train_images", type=int, default=8000)
    parser.add_argument("--markdown", help="also write the markdown table to this file (atomically)")
    parser.add_argument("--readme", help=f"replace the '{README_BLOCK}' block of this markdown file with the table")
    parser.add_argument("--quick", action="store_true", help="tiny run to check the tool works")
    args = parser.parse_args(argv)
    if args.quick:
        args.dense_epochs, args.fine_tune_epochs, args.repeats, args.train_images = 1, 1, 3, 1000
        args.seeds = args.seeds[:1]
    (x_train, y_train), evaluate = load_mnist()
    train = (x_train[:args.train_images], y_train[:args.train_images])

    per_seed = [run_seed(seed, train, evaluate, args) for seed in args.seeds]
    names = list(per_seed[0])
    first = per_seed[0]
    models = [first[name]["model"] for name in names]
    latency = {b: paired_latency_ms(models, b, args.repeats if b == 1 else max(3, args.repeats // 3)) for b in (1, 32)}
    dense_acc = statistics.mean(rows["dense"]["accuracy"] for rows in per_seed)
    dense_channels = channels(first["dense"]["model"])
    results = []
    for i, name in enumerate(names):
        accs = [rows[name]["accuracy"] for rows in per_seed]
        model = first[name]["model"]
        results.append({
            "method": name, "accuracy": round(statistics.mean(accs), 4),
            "accuracy_min": round(min(accs), 4), "accuracy_max": round(max(accs), 4),
            "drop_points": round(100 * (dense_acc - statistics.mean(accs)), 2),
            "channels_removed": round(1 - channels(model) / dense_channels, 3),
            "params": analysis.count_params(model), "macs": analysis.count_macs(model),
            "ms_b1": round(latency[1][i], 3), "ms_b32": round(latency[32][i], 3),
            "extra_epochs": first[name]["extra_epochs"],
            "train_seconds": round(statistics.mean(rows[name]["seconds"] for rows in per_seed), 1),
        })
    fine_tuned = [r for r in results if r["extra_epochs"] and not r["method"].startswith("scratch")
                  and r["channels_removed"] >= RATIO - 0.02]
    best = max(fine_tuned, key=lambda r: r["accuracy"])
    met = best["drop_points"] <= TARGET_DROP
    table = format_table(results, args, best, met)
    print(table)
    summary = {"benchmark": "structured_accuracy", "seeds": args.seeds, "dense_epochs": args.dense_epochs,
               "fine_tune_epochs": args.fine_tune_epochs, "train_images": args.train_images,
               "rows": results, "target_met": met, "best_method": best["method"]}
    if args.markdown:
        write_atomic(args.markdown, table + "\n")
    if args.readme:
        replace_block(args.readme, README_BLOCK, table)
    print(json.dumps(summary))
    return summary


def format_table(results: list[dict], args, best: dict, met: bool) -> str:
    seeds = len(args.seeds)
    spread = " (min–max over seeds)" if seeds > 1 else ""
    lines = [
        f"`python tools/bench_structured_accuracy.py` ({args.train_images} MNIST training images, "
        f"{args.dense_epochs} dense epochs, {args.fine_tune_epochs} fine-tuning epochs, {seeds} seed(s), "
        f"2 CPU cores; 50% of channels removed):",
        "",
        f"| method | accuracy{spread} | Δ vs dense (points) | channels removed | params | MACs | ms b1 | ms b32 | extra epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        acc = f"{100 * r['accuracy']:.2f}%"
        if seeds > 1:
            acc += f" ({100 * r['accuracy_min']:.2f}–{100 * r['accuracy_max']:.2f})"
        lines.append(
            f"| {r['method']} | {acc} | {(-r['drop_points'] or 0.0):+.2f} | {100 * r['channels_removed']:.0f}% | "
            f"{r['params'] / 1e3:.1f}K | {r['macs'] / 1e6:.2f}M | {r['ms_b1']:.2f} | {r['ms_b32']:.2f} | "
            f"{r['extra_epochs']} |"
        )
    passing = [r["method"] for r in results if r["extra_epochs"] and not r["method"].startswith("scratch")
               and r["channels_removed"] >= RATIO - 0.02 and r["drop_points"] <= TARGET_DROP]
    lines += ["", f"Target (50% of channels removed, at most {TARGET_DROP:.1f} point below dense after fine-tuning): "
              f"{'met' if met else 'not met'} (best: {best['method']}, {-best['drop_points']:+.2f} points; "
              f"within target: {', '.join(passing) or 'none'})."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
