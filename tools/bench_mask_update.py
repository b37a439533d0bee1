"""Benchmark one magnitude-mask update: tfprune vs tfmot 0.8.1 vs a single abs-and-compare pass.

For each size, the same float32 weights go through
  * tfprune: `tfprune.masks.magnitude_mask` (radix select, exact count),
  * tfmot:   `pruning_impl.Pruning._update_mask` of tensorflow-model-optimization
             (abs, k = max(round(n * (1 - s)), 1), top_k over all n entries,
             threshold = values[k - 1], mask = abs >= threshold),
  * single pass: `abs(w) >= t` with a known threshold, the floor any mask
             update has to pay (it must at least read every weight once),
each wrapped in `tf.function`, warmed up, then timed as the median of several
calls. The sparsity is fed as a run-time tensor, as a schedule would.

Prints a table and, last, one JSON line with the ratios:
  speedup_vs_tfmot       tfmot time / tfprune time, per size
  ratio_to_single_pass   tfprune time / single-pass time, per size
  ns_per_element         tfprune time per weight, per size
  per_element_growth     ns_per_element at the largest size / at the smallest
                         (1.0 means the cost grows exactly linearly)

Usage:
  python tools/bench_mask_update.py            # 1M, 4M, 16.7M, 64M elements
  python tools/bench_mask_update.py --quick    # 1M and 4M, fewer repeats
  python tools/bench_mask_update.py --sizes 1048576 16777216 --repeats 9 --ties
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfprune.masks import magnitude_mask  # noqa: E402

DEFAULT_SIZES = [1 << 20, 1 << 22, 1 << 24, 1 << 26]  # 1M, 4M, 16.7M, 64M
QUICK_SIZES = [1 << 20, 1 << 22]


def _shape(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    if side * side == n:
        return side, side
    if n % 1024 == 0:
        return n // 1024, 1024
    return 1, n


def _label(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _tfmot_update(sparsity: tf.Variable):
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_impl

    pruning = pruning_impl.Pruning(
        training_step_fn=lambda: tf.constant(0, tf.int64),
        pruning_vars=[],
        pruning_schedule=lambda step: (tf.constant(True), sparsity.read_value()),
        block_size=(1, 1),
        block_pooling_type="AVG",
    )

    @tf.function
    def update(w):
        threshold, mask = pruning._update_mask(w)
        return mask, threshold

    return update


def _time(fn, args, repeats: int, warmup: int = 1) -> float:
    """Median wall time in ms; each call is synchronised by reading a scalar result."""
    for _ in range(warmup):
        fn(*args)[1].numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)[1].numpy()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="tensor sizes in elements")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per size (tfprune, single pass)")
    parser.add_argument("--tfmot-repeats", type=int, default=3, help="timed calls per size for tfmot (slow)")
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--quick", action="store_true", help="sizes 1M and 4M, 3 repeats")
    parser.add_argument("--ties", action="store_true", help="also time weights with many ties at the threshold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    repeats = 3 if args.quick else args.repeats
    tfmot_repeats = min(args.tfmot_repeats, repeats)

    sparsity = tf.Variable(args.sparsity, dtype=tf.float32, trainable=False)
    ours = tf.function(lambda w: magnitude_mask(w, sparsity))
    theirs = _tfmot_update(sparsity)
    single = tf.function(lambda w, t: (tf.greater_equal(tf.abs(w), t), t))

    print(
        f"mask update, sparsity {args.sparsity}, float32, tf {tf.__version__}, "
        f"{os.cpu_count()} CPUs, median of {repeats} (tfmot: {tfmot_repeats}) after warm-up"
    )
    header = f"{'elements':>9} {'shape':>11} {'weights':>7} {'tfprune ms':>10} {'tfmot ms':>9} {'1-pass ms':>9} {'tfmot/tfprune':>13} {'tfprune/1-pass':>14} {'ns/elem':>7}"
    print(header)
    print("-" * len(header))

    rows = []
    rng = tf.random.Generator.from_seed(args.seed)
    kinds = ["normal", "ties"] if args.ties else ["normal"]
    for n in sizes:
        for kind in kinds:
            shape = _shape(n)
            w = rng.normal(shape)
            if kind == "ties":  # a 1/64 grid: the threshold value is shared by ~n/200 entries
                w = tf.round(w * 64.0) / 64.0
            mask, threshold = ours(w)
            expected = int(np.round(np.float64(n) * np.float64(np.float32(args.sparsity))))
            pruned = n - int(tf.reduce_sum(tf.cast(mask, tf.int64)))
            if pruned != expected:
                raise AssertionError(f"tfprune pruned {pruned} of {n}, expected {expected}")
            t_ours = _time(ours, (w,), repeats)
            t_single = _time(single, (w, threshold), repeats)
            t_theirs = _time(theirs, (w,), tfmot_repeats)
            row = {
                "elements": n,
                "shape": list(shape),
                "weights": kind,
                "tfprune_ms": round(t_ours, 2),
                "tfmot_ms": round(t_theirs, 2),
                "single_pass_ms": round(t_single, 2),
                "speedup_vs_tfmot": round(t_theirs / t_ours, 1),
                "ratio_to_single_pass": round(t_ours / t_single, 2),
                "ns_per_element": round(1e6 * t_ours / n, 3),
            }
            rows.append(row)
            print(
                f"{_label(n):>9} {'x'.join(map(str, shape)):>11} {kind:>7} {t_ours:10.1f} {t_theirs:9.1f} "
                f"{t_single:9.1f} {row['speedup_vs_tfmot']:12.1f}x {row['ratio_to_single_pass']:13.2f}x "
                f"{row['ns_per_element']:7.2f}",
                flush=True,
            )
            del w, mask

    normal = [r for r in rows if r["weights"] == "normal"]
    result = {
        "sparsity": args.sparsity,
        "sizes": [r["elements"] for r in normal],
        "tfprune_ms": [r["tfprune_ms"] for r in normal],
        "tfmot_ms": [r["tfmot_ms"] for r in normal],
        "single_pass_ms": [r["single_pass_ms"] for r in normal],
        "speedup_vs_tfmot": [r["speedup_vs_tfmot"] for r in normal],
        "ratio_to_single_pass": [r["ratio_to_single_pass"] for r in normal],
        "ns_per_element": [r["ns_per_element"] for r in normal],
        "per_element_growth": round(normal[-1]["ns_per_element"] / normal[0]["ns_per_element"], 2),
    }
    if args.ties:
        result["ties"] = [r for r in rows if r["weights"] == "ties"]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
