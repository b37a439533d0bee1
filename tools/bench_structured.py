"""Benchmark structured filter pruning: size, MACs and measured CPU latency, before and after.

For ResNet-56 (32x32) and MobileNetV2 (224x224) at pruning ratios 0.3 and 0.5, the original and
pruned models are measured side by side in one run (batch 1 and 32; median of repeated calls of a
traced tf.function, calls alternating between the models). Then the time to analyse and prune
ResNet50 (224x224) is measured.

Targets: measured speed-up >= 0.8 x the MAC reduction; ResNet50 analysed and pruned in < 10 s.

Usage:
    python tools/bench_structured.py [--repeats 20] [--importance l1] [--round_to 8]

Prints a table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfprune import analysis  # noqa: E402
from tfprune.structured import DependencyGraph, prune_filters  # noqa: E402
from tfprune.structured.models import resnet_cifar  # noqa: E402


def paired_latency_ms(models: list[keras.Model], batch: int, repeats: int) -> list[float]:
    """Median latency of each model; calls alternate between the models so drift hits all alike."""
    shape = (batch,) + tuple(models[0].input_shape[1:])
    x = tf.constant(np.random.default_rng(0).normal(size=shape).astype("float32"))
    fns = [tf.function(lambda t, m=m: m(t, training=False)) for m in models]
    for fn in fns:
        for _ in range(3):
            fn(x).numpy()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn(x).numpy()
            bucket.append(time.perf_counter() - start)
    return [1000 * statistics.median(bucket) for bucket in times]


def bench_model(name, build, ratios, args) -> list[dict]:
    model = build()
    base = {"params": analysis.count_params(model), "macs": analysis.count_flops(model)}
    pruned_models = []
    for ratio in ratios:
        pruned_models.append(prune_filters(model, pruning_ratio=ratio, importance=args.importance,
                                           round_to=args.round_to))
    latency = {}
    for b in (1, 32):
        repeats = args.repeats if b == 1 else max(3, args.repeats // 4)
        latency[b] = paired_latency_ms([model] + [p for p, _ in pruned_models], b, repeats)
        print(f"  measured {name} batch {b}", file=sys.stderr, flush=True)
    rows = []
    for i, (ratio, (_, report)) in enumerate(zip(ratios, pruned_models)):
        mac_reduction = base["macs"] / report.macs_after
        row = {
            "model": name, "ratio": ratio,
            "params_before": base["params"], "params_after": report.params_after,
            "macs_before": base["macs"], "macs_after": report.macs_after,
            "mac_reduction": round(mac_reduction, 3),
        }
        for b in (1, 32):
            before, after = latency[b][0], latency[b][i + 1]
            row.update({
                f"ms_b{b}_before": round(before, 2), f"ms_b{b}_after": round(after, 2),
                f"speedup_b{b}": round(before / after, 3),
                f"speedup_b{b}_over_mac_reduction": round(before / after / mac_reduction, 3),
            })
        rows.append(row)
    return rows


def bench_resnet50() -> dict:
    model = keras.applications.ResNet50(weights=None)
    start = time.perf_counter()
    DependencyGraph(model)
    analyse = time.perf_counter() - start
    start = time.perf_counter()
    prune_filters(model, pruning_ratio=0.5)
    total = time.perf_counter() - start
    return {"resnet50_graph_seconds": round(analyse, 2), "resnet50_prune_seconds": round(total, 2)}


def human(n: float) -> str:
    return f"{n / 1e6:.2f}M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--importance", default="l1")
    parser.add_argument("--round_to", type=int, default=8)
    args = parser.parse_args()

    rows = bench_model("ResNet-56 32x32", lambda: resnet_cifar(56), (0.3, 0.5), args)
    rows += bench_model("MobileNetV2 224x224", lambda: keras.applications.MobileNetV2(weights=None),
                        (0.3, 0.5), args)
    timing = bench_resnet50()

    header = ("model", "ratio", "params", "MACs", "MAC red.", "b1 ms", "b1 speed-up", "b32 ms",
              "b32 speed-up", "b1/b32 speed-up / MAC red.")
    table = [header]
    for r in rows:
        table.append((
            r["model"], f"{r['ratio']:.1f}", f"{human(r['params_before'])} -> {human(r['params_after'])}",
            f"{human(r['macs_before'])} -> {human(r['macs_after'])}", f"{r['mac_reduction']:.2f}x",
            f"{r['ms_b1_before']:.1f} -> {r['ms_b1_after']:.1f}", f"{r['speedup_b1']:.2f}x",
            f"{r['ms_b32_before']:.0f} -> {r['ms_b32_after']:.0f}", f"{r['speedup_b32']:.2f}x",
            f"{r['speedup_b1_over_mac_reduction']:.2f} / {r['speedup_b32_over_mac_reduction']:.2f}",
        ))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print(f"ResNet50 224x224: dependency graph {timing['resnet50_graph_seconds']:.2f} s, "
          f"prune_filters(0.5) end to end {timing['resnet50_prune_seconds']:.2f} s")
    speed_ok = all(r[f"speedup_b{b}_over_mac_reduction"] >= 0.8 for r in rows for b in (1, 32))
    time_ok = timing["resnet50_prune_seconds"] < 10
    print(f"targets: speed-up >= 0.8 x MAC reduction: {'met' if speed_ok else 'NOT met'} "
          f"(b32: {'met' if all(r['speedup_b32_over_mac_reduction'] >= 0.8 for r in rows) else 'NOT met'}); "
          f"ResNet50 < 10 s: {'met' if time_ok else 'NOT met'}")
    print(json.dumps({"rows": rows, **timing, "speed_target_met": speed_ok, "time_target_met": time_ok,
                      "cpu_count": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__}))


if __name__ == "__main__":
    main()
