"""Benchmark structured filter pruning: size, MACs and measured CPU latency, before and after.

For ResNet-56 (32x32) and MobileNetV2 (224x224) at pruning ratios 0.3 and 0.5 (and each `--round_to`
channel multiple), the original and pruned models are measured side by side in one run (batch 1
and 32; median of repeated calls, calls alternating between the models so that drift hits all of
them alike) in every runtime configuration:
  * TF: a traced `tf.function` (graph mode, oneDNN) with `--threads` intra-op threads (default all
    cores; TensorFlow threads are process-wide, so there is one TF configuration per run); `--xla`
    compiles it with `jit_compile=True` instead;
  * TFLite n threads, for each n of `--tflite_threads` (default "1,<all cores>"): the same models
    converted with `tf.lite.TFLiteConverter`, run by a TFLite interpreter (XNNPACK) with
    `num_threads=n`, one interpreter per thread count. `--no-tflite` drops these columns.
Then the time to analyse and prune ResNet50 (224x224) is measured.

Width probe (`--width_probe`, default on), run before the models: in every runtime configuration
and at batch 1 and 32, six 3x3 Conv2D(c -> c, same padding, ReLU) at 32x32xc for c = 8, 16, 32, 64,
timed alternately; reported as throughput in GMAC/s (`tfprune.analysis.count_macs` x batch / the
median latency), with the throughput ratio of 8- to 16-channel layers. Narrow layers use only part
of the SIMD vector width, so a pruned model's latency falls less than its MACs.

Deployment treatment, always identical for the original and the pruned model of a pair:
  * `--fold_bn` (default on): BatchNormalization is folded into the preceding conv/dense kernel
    (`tfprune.structured.fold.fold_batchnorm`), as any CPU deployment does;
  * `--stat median|min` of the timed calls (default median).
`--round_to 8,16` adds rows pruned with channel counts a multiple of 16 (friendlier to oneDNN and
XNNPACK kernels; prunes less at the same ratio, see the MAC column).
MACs and parameters are always counted on the models as pruned (BatchNormalization included), the
same way with or without folding; folding only changes what is timed.

Targets: measured speed-up >= 0.8 x the MAC reduction, reported per runtime configuration (all rows
at both batches; the rows meeting it; each round_to group); ResNet50 analysed and pruned in < 10 s.

Usage:
    python tools/bench_structured.py [--repeats 40] [--importance l1] [--round_to 8[,16]] \
        [--threads N] [--tflite_threads 1,N] [--no-tflite] [--no-width_probe] [--no-fold_bn] [--xla] \
        [--markdown tools/results/bench_structured.md] [--readme docs/benchmarks.md]
    python tools/bench_structured.py --from_log run.log --markdown out.md   # re-render, no timing

Prints the table, the width probe and the verdicts, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from readme_block import replace_block, write_atomic  # noqa: E402
from tfprune import analysis  # noqa: E402
from tfprune.structured import DependencyGraph, prune_filters  # noqa: E402
from tfprune.structured.fold import fold_batchnorm  # noqa: E402
from tfprune.structured.models import resnet_cifar  # noqa: E402
from tfprune.structured.timing import (  # noqa: E402,F401  (re-exported for tests and tools)
    STATISTICS, example_batch, paired_median_ms, tf_runner, tflite_model, tflite_runner)

BATCHES = (1, 32)


def deploy(model: keras.Model, fold_bn: bool) -> keras.Model:
    """The model as it is timed: with BatchNormalization folded, or unchanged."""
    return fold_batchnorm(model) if fold_bn else model


def paired_latency_ms(models: list, batch: int, repeats: int, runtime: str = "tf",
                      input_shape: tuple | None = None, threads: int | None = None,
                      stat: str = "median") -> list[float]:
    """Median (or `stat`) latency of each model at `batch` with `runtime` 'tf', 'xla' or 'tflite' (for 'tflite',
    models may be flatbuffers from `tflite_model`; then pass `input_shape`, without the batch)."""
    x = example_batch(input_shape or models[0], batch)
    if runtime == "tflite":
        runners = [tflite_runner(m, x, threads) for m in models]
    else:
        runners = [tf_runner(m, x, xla=runtime == "xla") for m in models]
    return paired_median_ms(runners, repeats, stat=stat)


def max_output_difference(model: keras.Model, deployed: keras.Model) -> float:
    x = example_batch(model, 2)
    return float(np.max(np.abs(np.asarray(model(x, training=False)) - np.asarray(deployed(x, training=False)))))


def repeats_for(batch: int, repeats: int) -> int:
    return repeats if batch == 1 else max(5, repeats // 4)


SPEED_TARGET = 0.8  # measured speed-up >= SPEED_TARGET x MAC reduction


def runtime_configs(tf_threads: int | None, tflite_threads: Sequence[int] = (), xla: bool = False) -> list[dict]:
    """The runtime configurations of a run: TF (one per process: its threads are process-wide), then
    TFLite for each thread count. `prefix` starts each one's keys in a result row."""
    tf_name = f"TF{' XLA' if xla else ''}" + (f" ({tf_threads} thr.)" if tf_threads else "")
    configs = [{"prefix": "", "runtime": "xla" if xla else "tf", "threads": tf_threads,
                "header": tf_name, "name": tf_name}]
    for n in tflite_threads:
        configs.append({"prefix": f"tflite{n}_", "runtime": "tflite", "threads": n,
                        "header": f"TFLite {n} thr.", "name": f"TFLite {n} thread{'' if n == 1 else 's'}"})
    return configs


def row_configs(rows: list[dict]) -> list[dict]:
    """The runtime configurations the result rows hold (read from the first row)."""
    if not rows:
        return []
    r = rows[0]
    return runtime_configs(r.get("threads"), r.get("tflite_threads", []), r.get("runtime") == "xla")


def cores(args) -> int:
    return getattr(args, "cpu_count", None) or os.cpu_count() or 1


def tf_threads(args) -> int:
    return args.threads or cores(args)


def default_tflite_threads(n_cores: int) -> list[int]:
    return list(dict.fromkeys([1, n_cores]))


def args_configs(args) -> list[dict]:
    return runtime_configs(tf_threads(args), args.tflite_threads if args.tflite else [], args.xla)


def bench_model(name: str, build: Callable[[], keras.Model], ratios: Sequence[float], args) -> list[dict]:
    model = build()
    base = {"params": analysis.count_params(model), "macs": analysis.count_macs(model)}
    settings = [(ratio, round_to) for round_to in args.round_to for ratio in ratios]
    pruned_models = [prune_filters(model, pruning_ratio=ratio, importance=args.importance, round_to=round_to)
                     for ratio, round_to in settings]
    # identical deployment treatment for the original and every pruned model
    timed = [deploy(m, args.fold_bn) for m in [model] + [p for p, _ in pruned_models]]
    fold_error = max(max_output_difference(m, t) for m, t in zip([model] + [p for p, _ in pruned_models], timed))
    configs = args_configs(args)
    # converted once, timed by one interpreter per thread count
    flatbuffers = [tflite_model(m) for m in timed] if len(configs) > 1 else None
    latency: dict[tuple[str, int], list[float]] = {}
    for config in configs:
        models = flatbuffers if config["runtime"] == "tflite" else timed
        for b in BATCHES:
            latency[config["prefix"], b] = paired_latency_ms(
                models, b, repeats_for(b, args.repeats), config["runtime"], input_shape=tuple(model.input_shape[1:]),
                threads=config["threads"], stat=args.stat)
            print(f"  measured {name} {config['name']} batch {b}", file=sys.stderr, flush=True)
    rows = []
    for i, ((ratio, round_to), (_, report)) in enumerate(zip(settings, pruned_models)):
        mac_reduction = base["macs"] / report.macs_after
        row = {
            "model": name, "ratio": ratio, "round_to": round_to, "fold_bn": args.fold_bn,
            "runtime": configs[0]["runtime"], "threads": configs[0]["threads"],
            "tflite_threads": [c["threads"] for c in configs[1:]],
            "params_before": base["params"], "params_after": report.params_after,
            "macs_before": base["macs"], "macs_after": report.macs_after,
            "mac_reduction": round(mac_reduction, 3), "fold_max_abs_error": fold_error,
        }
        for config in configs:
            prefix = config["prefix"]
            for b in BATCHES:
                before, after = latency[prefix, b][0], latency[prefix, b][i + 1]
                row.update({
                    f"{prefix}ms_b{b}_before": round(before, 2), f"{prefix}ms_b{b}_after": round(after, 2),
                    f"{prefix}speedup_b{b}": round(before / after, 3),
                    f"{prefix}speedup_b{b}_over_mac_reduction": round(before / after / mac_reduction, 3),
                })
        rows.append(row)
    return rows


# Width probe: a stack of WIDTH_PROBE_LAYERS 3x3 convolutions c -> c at WIDTH_PROBE_SIZE x WIDTH_PROBE_SIZE x c
WIDTH_PROBE_CHANNELS = (8, 16, 32, 64)
WIDTH_PROBE_LAYERS = 6
WIDTH_PROBE_SIZE = 32


def conv_stack(channels: int, layers: int, size: int) -> keras.Model:
    """`layers` 3x3 Conv2D(channels -> channels, same padding, ReLU) on a size x size x channels input."""
    inputs = keras.Input((size, size, channels))
    x = inputs
    for i in range(layers):
        x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"conv{i}")(x)
    return keras.Model(inputs, x, name=f"conv_stack_{channels}")


def width_probe(configs: list[dict], repeats: int, stat: str = "median", channels: Sequence[int] | None = None,
                layers: int | None = None, size: int | None = None) -> list[dict]:
    """Throughput (GMAC/s) of conv stacks of each width in `channels`, for every runtime configuration
    and batch; the widths are timed alternately. One entry per configuration and batch."""
    channels = tuple(channels or WIDTH_PROBE_CHANNELS)
    layers, size = layers or WIDTH_PROBE_LAYERS, size or WIDTH_PROBE_SIZE
    models = [conv_stack(c, layers, size) for c in channels]
    macs = [analysis.count_macs(m) for m in models]
    flatbuffers = [tflite_model(m) for m in models] if any(c["runtime"] == "tflite" for c in configs) else None
    out = []
    for config in configs:
        for b in BATCHES:
            xs = [example_batch(m, b) for m in models]
            if config["runtime"] == "tflite":
                runners = [tflite_runner(f, x, config["threads"]) for f, x in zip(flatbuffers, xs)]
            else:
                runners = [tf_runner(m, x, xla=config["runtime"] == "xla") for m, x in zip(models, xs)]
            ms = paired_median_ms(runners, repeats_for(b, repeats), stat=stat)
            out.append({"runtime": config["name"], "prefix": config["prefix"], "threads": config["threads"],
                        "batch": b, "channels": list(channels), "layers": layers, "size": size,
                        "macs_per_sample": macs, "ms": [round(t, 4) for t in ms],
                        "gmac_per_s": [round(m * b / (t / 1000) / 1e9, 3) for m, t in zip(macs, ms)]})
            print(f"  width probe {config['name']} batch {b}", file=sys.stderr, flush=True)
    return out


def probe_table(probe: list[dict]) -> list[tuple[str, ...]]:
    """Header and one row per runtime configuration and batch of the width probe."""
    channels = probe[0]["channels"]
    out = [("runtime", "batch", f"GMAC/s at {' / '.join(str(c) for c in channels)} channels")]
    for e in probe:
        out.append((e["runtime"], str(e["batch"]), " / ".join(f"{v:.1f}" for v in e["gmac_per_s"])))
    return out


def probe_description(probe: list[dict]) -> str:
    e = probe[0]
    return (f"Width probe: {e['layers']} 3x3 convolutions (c -> c channels, same padding, ReLU) at "
            f"{e['size']}x{e['size']}xc; throughput = MACs x batch / latency")


def probe_sentence(probe: list[dict]) -> str:
    """The throughput ratio of the narrowest to the next width (8 to 16 channels by default), read from
    TFLite 1 thread at the largest batch if measured, with its range over every configuration and batch."""
    channels = probe[0]["channels"] if probe else []
    if len(channels) < 2:
        return ""
    narrow, wide = sorted(channels)[:2]
    i, j = channels.index(narrow), channels.index(wide)
    ratios = [e["gmac_per_s"][i] / e["gmac_per_s"][j] for e in probe]
    batch = max(e["batch"] for e in probe)
    reference = next((k for k, e in enumerate(probe) if e["prefix"] == "tflite1_" and e["batch"] == batch),
                     next(k for k, e in enumerate(probe) if e["batch"] == batch))
    e = probe[reference]
    return (f"{narrow}-channel layers run at {ratios[reference]:.2f}x the throughput of {wide}-channel layers "
            f"({e['runtime']}, b{e['batch']}; {min(ratios):.2f}x to {max(ratios):.2f}x over the "
            f"{len(probe)} runtime/batch settings).")


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


def table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    """Header and one row of strings per result (the console and markdown tables share it)."""
    configs = row_configs(rows)
    header = ["model", "ratio", "round_to", "params", "MACs", "MAC red."]
    for c in configs:
        header += [f"{c['header']} b1 ms", f"{c['header']} b32 ms", f"{c['header']} speed-up / MAC red. (b1 / b32)"]
    out = [tuple(header)]
    for r in rows:
        cells = [
            r["model"], f"{r['ratio']:.1f}", str(r["round_to"]),
            f"{human(r['params_before'])} -> {human(r['params_after'])}",
            f"{human(r['macs_before'])} -> {human(r['macs_after'])}", f"{r['mac_reduction']:.2f}x",
        ]
        for c in configs:
            p = c["prefix"]
            cells += [
                f"{r[f'{p}ms_b1_before']:.1f} -> {r[f'{p}ms_b1_after']:.1f}",
                f"{r[f'{p}ms_b32_before']:.0f} -> {r[f'{p}ms_b32_after']:.0f}",
                f"{r[f'{p}speedup_b1_over_mac_reduction']:.2f} / {r[f'{p}speedup_b32_over_mac_reduction']:.2f}",
            ]
        out.append(tuple(cells))
    return out


def resnet50_line(timing: dict) -> str:
    if timing["resnet50_prune_seconds"] is None:
        return "ResNet50 224x224: pruning time not measured (--skip_resnet50)"
    ok = timing["resnet50_prune_seconds"] < 10
    return (f"ResNet50 224x224: dependency graph {timing['resnet50_graph_seconds']:.2f} s, prune_filters(0.5) "
            f"end to end {timing['resnet50_prune_seconds']:.2f} s (target < 10 s: {'met' if ok else 'NOT met'})")


def row_label(r: dict, batch: int | None = None) -> str:
    return f"{r['model']} {r['ratio']} (round_to {r['round_to']})" + (f" b{batch}" if batch else "")


def speed_verdicts(rows: list[dict]) -> list[dict]:
    """Per runtime configuration: is speed-up >= SPEED_TARGET x MAC reduction met by every row at both
    batches, which rows (and batches) meet it, and is it met by every row of each round_to value."""
    out = []
    for c in row_configs(rows):
        def ok(r: dict, b: int, p: str = c["prefix"]) -> bool:
            return r[f"{p}speedup_b{b}_over_mac_reduction"] >= SPEED_TARGET

        out.append({
            "runtime": c["name"], "prefix": c["prefix"], "threads": c["threads"],
            "all_met": all(ok(r, b) for r in rows for b in BATCHES),
            "all_met_b32": all(ok(r, 32) for r in rows),
            "rows_meeting": [row_label(r, b) for r in rows for b in BATCHES if ok(r, b)],
            "by_round_to": [{"round_to": v, "met": all(ok(r, b) for r in rows if r["round_to"] == v for b in BATCHES)}
                            for v in sorted({r["round_to"] for r in rows})],
        })
        met_groups = {g["round_to"] for g in out[-1]["by_round_to"] if g["met"]}
        out[-1]["rows_meeting_outside_met_round_to"] = [
            row_label(r, b) for r in rows for b in BATCHES if ok(r, b) and r["round_to"] not in met_groups]
    return out


def verdict_line(verdict: dict) -> str:
    """One line per runtime configuration: met for every row, or the round_to groups and rows meeting it."""
    name = verdict["runtime"]
    if verdict["all_met"]:
        return f"{name}: met for every row (both batches)"
    groups = [g["round_to"] for g in verdict["by_round_to"] if g["met"]]
    others = verdict["rows_meeting_outside_met_round_to"]
    if groups:
        return (f"{name}: met for every row with round_to {' and '.join(str(v) for v in groups)} (both batches); "
                + (f"rows meeting it otherwise: {', '.join(others)}" if others else "no other row meets it"))
    return f"{name}: not met for every row of any round_to; rows meeting it: {', '.join(others) or 'none'}"


def targets(rows: list[dict], timing: dict) -> dict:
    return {"speed_target": speed_verdicts(rows),
            "time_target_met": None if timing["resnet50_prune_seconds"] is None
            else timing["resnet50_prune_seconds"] < 10}


def command_line(args) -> str:
    """The command that reproduces a run with these settings (non-default flags only)."""
    flags = []
    if args.round_to != [8]:
        flags.append(f"--round_to {','.join(str(v) for v in args.round_to)}")
    defaults = (("ratios", "0.3,0.5"), ("models", ",".join(MODELS)), ("repeats", 40), ("importance", "l1"),
                ("stat", "median"), ("threads", 0))
    for name, default in defaults:
        value = getattr(args, name, default)
        if value not in (default, None) and not (name == "threads" and value == cores(args)):
            flags.append(f"--{name} {value}")
    if args.tflite and list(args.tflite_threads) != default_tflite_threads(cores(args)):
        flags.append(f"--tflite_threads {','.join(str(n) for n in args.tflite_threads)}")
    flags += [flag for flag, on in (("--no-fold_bn", not args.fold_bn), ("--no-tflite", not args.tflite),
                                    ("--no-width_probe", not getattr(args, "width_probe", True)),
                                    ("--xla", args.xla), ("--skip_resnet50", getattr(args, "skip_resnet50", False)))
              if on]
    return " ".join(["python tools/bench_structured.py"] + flags)


def settings_line(args) -> str:
    runtime = "tf.function + XLA" if args.xla else "tf.function (graph mode)"
    tflite = (f"TFLite (XNNPACK) with {' and '.join(str(n) for n in args.tflite_threads)} "
              f"thread{'' if list(args.tflite_threads) == [1] else 's'}" if args.tflite else "no TFLite")
    return (f"{cores(args)} CPU cores; TF {runtime} with {tf_threads(args)} intra-op threads, {tflite}; "
            f"importance {args.importance}, BatchNormalization folded: {'yes' if args.fold_bn else 'no'} "
            f"(both models), {args.stat} of {args.repeats} (b1) / {repeats_for(32, args.repeats)} (b32) "
            f"alternating calls; TensorFlow {tf.__version__}, Keras {keras.__version__}")


def markdown_table(table: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    return lines + ["| " + " | ".join(c.replace(" -> ", " → ") for c in row) + " |" for row in table[1:]]


def markdown(rows: list[dict], timing: dict, args, load: tuple | None = None,
             probe: list[dict] | None = None) -> str:
    verdict = targets(rows, timing)
    text = [f"`{command_line(args)}` ({settings_line(args)}).", "", *markdown_table(table_rows(rows)), ""]
    if probe:
        text += [probe_description(probe) + ":", "", *markdown_table(probe_table(probe)), "",
                 probe_sentence(probe), ""]
    text += [
        resnet50_line(timing) + ".", "",
        *([f"1-minute load average at start / end of the run: {load[0]} / {load[1]}"
           + (f" (above the {cores(args)} cores: other processes were running, timings are noisy;"
              " TFLite at batch 1 the most)." if max(load) > cores(args) else "."), ""]
          if load else []),
        f"Speed-up >= {SPEED_TARGET} x MAC reduction (b1 and b32):", "",
        *[f"- {verdict_line(v)}." for v in verdict["speed_target"]],
    ]
    return "\n".join(text) + "\n"


MODELS = {
    "resnet56": ("ResNet-56 32x32", lambda: resnet_cifar(56)),
    "mobilenet_v2": ("MobileNetV2 224x224", lambda: keras.applications.MobileNetV2(weights=None)),
}


def markdown_from_log(log_path: str, markdown_path: str | None, readme_path: str | None = None) -> dict:
    """Re-render the markdown from the JSON line a previous run printed (no timing)."""
    with open(log_path) as f:
        result = json.loads([line for line in f if line.startswith("{")][-1])
    settings = argparse.Namespace(**{**result["settings"], "round_to": sorted({r["round_to"] for r in result["rows"]})})
    timing = {k: result[k] for k in ("resnet50_graph_seconds", "resnet50_prune_seconds")}
    text = markdown(result["rows"], timing, settings, tuple(result.get("load_average_start_end") or ()) or None,
                    result.get("width_probe"))
    if readme_path:
        replace_block(readme_path, "bench_structured", text)
    if markdown_path:
        write_atomic(markdown_path, text)
    elif not readme_path:
        print(text, end="")
    return result


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _thread_counts(text: str) -> list[int]:
    counts = list(dict.fromkeys(_ints(text)))  # deduplicated, order kept
    if any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("thread counts must be >= 1")
    return counts


def parse_args(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40,
                        help="timed calls per model at batch 1 (b32: 1/4, at least 5); the width probe too")
    parser.add_argument("--importance", default="l1")
    parser.add_argument("--round_to", type=_ints, default=[8],
                        help="channel multiple(s) for prune_filters, comma-separated: rows for each (default 8)")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads of TensorFlow (process-wide; the TF columns), default: all cores")
    parser.add_argument("--tflite_threads", type=_thread_counts, default=None,
                        help="comma-separated TFLite thread counts, TFLite columns and width-probe rows for each "
                             f"(one interpreter per count; default: 1,{os.cpu_count()} i.e. 1 and all cores)")
    parser.add_argument("--ratios", default="0.3,0.5")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    parser.add_argument("--fold_bn", action=argparse.BooleanOptionalAction, default=True,
                        help="fold BatchNormalization in both models before timing (default on)")
    parser.add_argument("--tflite", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the models through the TFLite interpreter (default on)")
    parser.add_argument("--width_probe", action=argparse.BooleanOptionalAction, default=True,
                        help="first measure GMAC/s of 3x3 conv stacks with 8/16/32/64 channels in every runtime "
                             "configuration and batch (default on)")
    parser.add_argument("--stat", choices=sorted(STATISTICS), default="median",
                        help="statistic of the timed calls (min is robust when other processes load the CPU)")
    parser.add_argument("--xla", action="store_true", help="compile the tf.function with XLA (jit_compile)")
    parser.add_argument("--skip_resnet50", action="store_true", help="skip the ResNet50 pruning-time check")
    parser.add_argument("--markdown", metavar="PATH", help="also write the results as markdown (atomically)")
    parser.add_argument("--readme", metavar="README", help="replace the 'bench_structured' block of this markdown file")
    parser.add_argument("--from_log", metavar="LOG",
                        help="measure nothing: write --markdown / --readme from the JSON line of an earlier run's "
                             "stdout (printed if neither is given)")
    args = parser.parse_args(argv)
    if args.tflite_threads is None:
        args.tflite_threads = default_tflite_threads(os.cpu_count() or 1)
    return args


def print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.from_log:
        return markdown_from_log(args.from_log, args.markdown, args.readme)
    if args.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        except RuntimeError:  # TensorFlow already initialised (e.g. imported by a test)
            print("  --threads: TensorFlow already initialised, its thread count is unchanged", file=sys.stderr)
    ratios = tuple(float(r) for r in args.ratios.split(","))
    load_start = os.getloadavg()[0]
    probe = width_probe(args_configs(args), args.repeats, args.stat) if args.width_probe else []
    rows = []
    for key in args.models.split(","):
        name, build = MODELS[key]
        rows += bench_model(name, build, ratios, args)
    timing = {"resnet50_graph_seconds": None, "resnet50_prune_seconds": None} \
        if args.skip_resnet50 else bench_resnet50()

    load = (round(load_start, 2), round(os.getloadavg()[0], 2))
    print(f"1-minute load average at start / end: {load[0]} / {load[1]} (other processes compete for the cores "
          "when it exceeds the thread count)")
    print(settings_line(args))
    print_table(table_rows(rows))
    if probe:
        print(probe_description(probe) + ":")
        print_table(probe_table(probe))
        print(probe_sentence(probe))
    print(resnet50_line(timing))
    verdict = targets(rows, timing)
    print(f"targets: speed-up >= {SPEED_TARGET} x MAC reduction (b1 and b32):")
    for v in verdict["speed_target"]:
        print(f"  {verdict_line(v)}")
    print(f"targets: ResNet50 < 10 s: {verdict['time_target_met']}")
    result = {"rows": rows, "width_probe": probe, **timing, **verdict, "load_average_start_end": load, "settings": {
        "round_to": args.round_to, "importance": args.importance, "fold_bn": args.fold_bn, "xla": args.xla,
        "tflite": args.tflite, "tflite_threads": args.tflite_threads, "width_probe": args.width_probe,
        "repeats": args.repeats, "stat": args.stat, "ratios": args.ratios, "models": args.models,
        "skip_resnet50": args.skip_resnet50, "threads": tf_threads(args), "cpu_count": os.cpu_count()},
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__, "keras": keras.__version__}
    print(json.dumps(result))
    if args.markdown:
        write_atomic(args.markdown, markdown(rows, timing, args, load, probe))
    if args.readme:
        replace_block(args.readme, "bench_structured", markdown(rows, timing, args, load, probe))
    return result


if __name__ == "__main__":
    main()
