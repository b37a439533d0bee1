"""Benchmark structured filter pruning: size, MACs and measured CPU latency, before and after.

For ResNet-56 (32x32) and MobileNetV2 (224x224) at pruning ratios 0.3 and 0.5, the original and
pruned models are measured side by side in one run (batch 1 and 32; median of repeated calls,
calls alternating between the models so that drift hits all of them alike). Then the time to
analyse and prune ResNet50 (224x224) is measured.

Deployment treatment, always identical for the original and the pruned model of a pair:
  * `--fold_bn` (default on): BatchNormalization is folded into the preceding conv/dense kernel
    (`tfprune.structured.fold.fold_batchnorm`), as any CPU deployment does;
  * runtime "tf" (default): a traced `tf.function` (graph mode, oneDNN); `--xla` compiles it with
    `jit_compile=True` instead;
  * `--tflite` (default on): extra columns, the same models converted with
    `tf.lite.TFLiteConverter` and run by the TFLite interpreter (XNNPACK, `num_threads` =
    `--threads`, default all cores);
  * `--threads N`: intra-op threads of TensorFlow and TFLite (default: all cores);
  * `--stat median|min` of the timed calls (default median).
`--round_to 8,16` adds rows pruned with channel counts a multiple of 16 (friendlier to oneDNN and
XNNPACK kernels; prunes less at the same ratio, see the MAC column).
MACs and parameters are always counted on the models as pruned (BatchNormalization included), the
same way with or without folding; folding only changes what is timed.

Targets: measured speed-up >= 0.8 x the MAC reduction; ResNet50 analysed and pruned in < 10 s.

Usage:
    python tools/bench_structured.py [--repeats 40] [--importance l1] [--round_to 8[,16]] \
        [--no-fold_bn] [--no-tflite] [--xla] [--threads N] [--markdown tools/results/bench_structured.md] [--readme README.md]

Prints a table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
import warnings
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

BATCHES = (1, 32)


def deploy(model: keras.Model, fold_bn: bool) -> keras.Model:
    """The model as it is timed: with BatchNormalization folded, or unchanged."""
    return fold_batchnorm(model) if fold_bn else model


def tf_runner(model: keras.Model, x: np.ndarray, xla: bool = False) -> Callable[[], np.ndarray]:
    """A call of `model` on the fixed batch `x` through a traced tf.function (XLA-compiled if asked)."""
    fn = tf.function(lambda t: model(t, training=False), jit_compile=xla)
    tensor = tf.constant(x)
    return lambda: fn(tensor).numpy()


def tflite_model(model: keras.Model) -> bytes:
    """`model` converted to a float32 TFLite flatbuffer (weights frozen into constants)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the converter prints
        warnings.simplefilter("ignore")
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def tflite_runner(model: keras.Model | bytes, x: np.ndarray, threads: int | None = None) -> Callable[[], np.ndarray]:
    """A call of `model` (a Keras model or a TFLite flatbuffer) through the TFLite interpreter (default
    XNNPACK delegate, `threads` threads) on the batch `x`."""
    content = model if isinstance(model, bytes) else tflite_model(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=content, num_threads=threads or os.cpu_count())
    detail = interpreter.get_input_details()[0]
    if tuple(detail["shape"]) != x.shape:
        interpreter.resize_tensor_input(detail["index"], x.shape, strict=False)
    interpreter.allocate_tensors()
    input_index = detail["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def run() -> np.ndarray:
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)

    return run


STATISTICS = {"median": statistics.median, "min": min}


def paired_median_ms(runners: Sequence[Callable[[], np.ndarray]], repeats: int, warmup: int = 3,
                     stat: str = "median") -> list[float]:
    """Median (or `stat`) wall time of each runner in ms; calls alternate between the runners so that
    drift and other processes hit all of them alike."""
    for run in runners:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(repeats):
        for run, bucket in zip(runners, times):
            start = time.perf_counter()
            run()
            bucket.append(time.perf_counter() - start)
    return [1000 * STATISTICS[stat](bucket) for bucket in times]


def example_batch(model: keras.Model | tuple, batch: int) -> np.ndarray:
    shape = (batch,) + tuple(model if isinstance(model, tuple) else model.input_shape[1:])
    return np.random.default_rng(0).normal(size=shape).astype("float32")


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


def bench_model(name: str, build: Callable[[], keras.Model], ratios: Sequence[float], args) -> list[dict]:
    model = build()
    base = {"params": analysis.count_params(model), "macs": analysis.count_flops(model)}
    settings = [(ratio, round_to) for round_to in args.round_to for ratio in ratios]
    pruned_models = [prune_filters(model, pruning_ratio=ratio, importance=args.importance, round_to=round_to)
                     for ratio, round_to in settings]
    # identical deployment treatment for the original and every pruned model
    timed = [deploy(m, args.fold_bn) for m in [model] + [p for p, _ in pruned_models]]
    fold_error = max(max_output_difference(m, t) for m, t in zip([model] + [p for p, _ in pruned_models], timed))
    runtimes = ["xla" if args.xla else "tf"] + (["tflite"] if args.tflite else [])
    latency: dict[tuple[str, int], list[float]] = {}
    for runtime in runtimes:
        models = [tflite_model(m) for m in timed] if runtime == "tflite" else timed
        for b in BATCHES:
            latency[runtime, b] = paired_latency_ms(models, b, repeats_for(b, args.repeats), runtime,
                                                    input_shape=tuple(model.input_shape[1:]), threads=args.threads,
                                                    stat=args.stat)
            print(f"  measured {name} {runtime} batch {b}", file=sys.stderr, flush=True)
    rows = []
    for i, ((ratio, round_to), (_, report)) in enumerate(zip(settings, pruned_models)):
        mac_reduction = base["macs"] / report.macs_after
        row = {
            "model": name, "ratio": ratio, "round_to": round_to, "fold_bn": args.fold_bn,
            "runtime": runtimes[0],
            "params_before": base["params"], "params_after": report.params_after,
            "macs_before": base["macs"], "macs_after": report.macs_after,
            "mac_reduction": round(mac_reduction, 3), "fold_max_abs_error": fold_error,
        }
        for runtime in runtimes:
            prefix = "" if runtime == runtimes[0] else f"{runtime}_"
            for b in BATCHES:
                before, after = latency[runtime, b][0], latency[runtime, b][i + 1]
                row.update({
                    f"{prefix}ms_b{b}_before": round(before, 2), f"{prefix}ms_b{b}_after": round(after, 2),
                    f"{prefix}speedup_b{b}": round(before / after, 3),
                    f"{prefix}speedup_b{b}_over_mac_reduction": round(before / after / mac_reduction, 3),
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


def table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    """Header and one row of strings per result (the console and markdown tables share it)."""
    tflite = "tflite_speedup_b1" in rows[0] if rows else False
    header = ["model", "ratio", "round_to", "params", "MACs", "MAC red.", "b1 ms", "b1 speed-up", "b32 ms",
              "b32 speed-up", "b1/b32 speed-up / MAC red."]
    if tflite:
        header += ["TFLite b1 ms", "TFLite b32 ms", "TFLite b1/b32 speed-up / MAC red."]
    out = [tuple(header)]
    for r in rows:
        cells = [
            r["model"], f"{r['ratio']:.1f}", str(r["round_to"]),
            f"{human(r['params_before'])} -> {human(r['params_after'])}",
            f"{human(r['macs_before'])} -> {human(r['macs_after'])}", f"{r['mac_reduction']:.2f}x",
            f"{r['ms_b1_before']:.1f} -> {r['ms_b1_after']:.1f}", f"{r['speedup_b1']:.2f}x",
            f"{r['ms_b32_before']:.0f} -> {r['ms_b32_after']:.0f}", f"{r['speedup_b32']:.2f}x",
            f"{r['speedup_b1_over_mac_reduction']:.2f} / {r['speedup_b32_over_mac_reduction']:.2f}",
        ]
        if tflite:
            cells += [
                f"{r['tflite_ms_b1_before']:.1f} -> {r['tflite_ms_b1_after']:.1f}",
                f"{r['tflite_ms_b32_before']:.0f} -> {r['tflite_ms_b32_after']:.0f}",
                f"{r['tflite_speedup_b1_over_mac_reduction']:.2f} / "
                f"{r['tflite_speedup_b32_over_mac_reduction']:.2f}",
            ]
        out.append(tuple(cells))
    return out


def resnet50_line(timing: dict) -> str:
    if timing["resnet50_prune_seconds"] is None:
        return "ResNet50 224x224: pruning time not measured (--skip_resnet50)"
    ok = timing["resnet50_prune_seconds"] < 10
    return (f"ResNet50 224x224: dependency graph {timing['resnet50_graph_seconds']:.2f} s, prune_filters(0.5) "
            f"end to end {timing['resnet50_prune_seconds']:.2f} s (target < 10 s: {'met' if ok else 'NOT met'})")


def targets(rows: list[dict], timing: dict) -> dict:
    def met(prefix: str, batches=BATCHES) -> bool:
        return all(r[f"{prefix}speedup_b{b}_over_mac_reduction"] >= 0.8 for r in rows for b in batches)

    out = {"speed_target_met": met(""), "speed_target_met_b32": met("", (32,)),
           "time_target_met": None if timing["resnet50_prune_seconds"] is None
           else timing["resnet50_prune_seconds"] < 10,
           "rows_meeting_speed_target": [
               f"{r['model']} {r['ratio']} (round_to {r['round_to']}) b{b}" for r in rows for b in BATCHES
               if r[f"speedup_b{b}_over_mac_reduction"] >= 0.8]}
    if rows and "tflite_speedup_b1" in rows[0]:
        out["tflite_speed_target_met"] = met("tflite_")
        out["rows_meeting_speed_target_tflite"] = [
            f"{r['model']} {r['ratio']} (round_to {r['round_to']}) b{b}" for r in rows for b in BATCHES
            if r[f"tflite_speedup_b{b}_over_mac_reduction"] >= 0.8]
    return out


def command_line(args) -> str:
    """The command that reproduces a run with these settings (non-default flags only)."""
    flags = []
    if args.round_to != [8]:
        flags.append(f"--round_to {','.join(str(v) for v in args.round_to)}")
    defaults = (("ratios", "0.3,0.5"), ("models", ",".join(MODELS)), ("repeats", 40), ("importance", "l1"),
                ("stat", "median"), ("threads", 0))
    for name, default in defaults:
        value = getattr(args, name, default)
        if value not in (default, None) and not (name == "threads" and value == os.cpu_count()):
            flags.append(f"--{name} {value}")
    flags += [flag for flag, on in (("--no-fold_bn", not args.fold_bn), ("--no-tflite", not args.tflite),
                                    ("--xla", args.xla), ("--skip_resnet50", getattr(args, "skip_resnet50", False)))
              if on]
    return " ".join(["python tools/bench_structured.py"] + flags)


def settings_line(args) -> str:
    runtime = "tf.function + XLA" if args.xla else "tf.function (graph mode)"
    threads = args.threads or os.cpu_count()
    return (f"{os.cpu_count()} CPU cores ({threads} threads), importance {args.importance}, "
            f"BatchNormalization folded: {'yes' if args.fold_bn else 'no'} (both models), runtime {runtime}, "
            f"{args.stat} of {args.repeats} (b1) / {repeats_for(32, args.repeats)} (b32) alternating calls; "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}")


def markdown(rows: list[dict], timing: dict, args, load: tuple | None = None) -> str:
    table = table_rows(rows)
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(c.replace(" -> ", " → ") for c in row) + " |" for row in table[1:]]
    verdict = targets(rows, timing)
    text = [
        f"`{command_line(args)}` ({settings_line(args)}).", "",
        *lines, "",
        resnet50_line(timing) + ".", "",
        *([f"1-minute load average at start / end of the run: {load[0]} / {load[1]}"
           + (f" (above the {os.cpu_count()} cores: other processes were running, timings are noisy;"
              " TFLite at batch 1 the most)." if max(load) > (os.cpu_count() or 1) else "."), ""]
          if load else []),
        "Speed-up >= 0.8 x MAC reduction met for: "
        + (", ".join(verdict["rows_meeting_speed_target"]) or "none") + ".",
    ]
    if "rows_meeting_speed_target_tflite" in verdict:
        text.append("With TFLite: " + (", ".join(verdict["rows_meeting_speed_target_tflite"]) or "none") + ".")
    return "\n".join(text) + "\n"


MODELS = {
    "resnet56": ("ResNet-56 32x32", lambda: resnet_cifar(56)),
    "mobilenet_v2": ("MobileNetV2 224x224", lambda: keras.applications.MobileNetV2(weights=None)),
}


def markdown_from_log(log_path: str, markdown_path: str | None, readme_path: str | None = None) -> dict:
    """Re-render the markdown table from the JSON line a previous run printed (no timing)."""
    with open(log_path) as f:
        result = json.loads([line for line in f if line.startswith("{")][-1])
    settings = argparse.Namespace(**{**result["settings"], "round_to": sorted({r["round_to"] for r in result["rows"]})})
    timing = {k: result[k] for k in ("resnet50_graph_seconds", "resnet50_prune_seconds")}
    text = markdown(result["rows"], timing, settings, tuple(result.get("load_average_start_end") or ()) or None)
    if readme_path:
        replace_block(readme_path, "bench_structured", text)
    if markdown_path:
        write_atomic(markdown_path, text)
    elif not readme_path:
        print(text, end="")
    return result


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_args(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per model at batch 1 (b32: 1/4)")
    parser.add_argument("--importance", default="l1")
    parser.add_argument("--round_to", type=_ints, default=[8],
                        help="channel multiple(s) for prune_filters, comma-separated: rows for each (default 8)")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads of TensorFlow and TFLite for both models (default: all cores)")
    parser.add_argument("--ratios", default="0.3,0.5")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    parser.add_argument("--fold_bn", action=argparse.BooleanOptionalAction, default=True,
                        help="fold BatchNormalization in both models before timing (default on)")
    parser.add_argument("--tflite", action=argparse.BooleanOptionalAction, default=True,
                        help="also time both models through the TFLite interpreter (default on)")
    parser.add_argument("--stat", choices=sorted(STATISTICS), default="median",
                        help="statistic of the timed calls (min is robust when other processes load the CPU)")
    parser.add_argument("--xla", action="store_true", help="compile the tf.function with XLA (jit_compile)")
    parser.add_argument("--skip_resnet50", action="store_true", help="skip the ResNet50 pruning-time check")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table as markdown (atomically)")
    parser.add_argument("--readme", metavar="README", help="replace the 'bench_structured' block of this README")
    parser.add_argument("--from_log", metavar="LOG",
                        help="measure nothing: write --markdown from the JSON line of an earlier run's stdout")
    return parser.parse_args(argv)


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
    rows = []
    for key in args.models.split(","):
        name, build = MODELS[key]
        rows += bench_model(name, build, ratios, args)
    timing = {"resnet50_graph_seconds": None, "resnet50_prune_seconds": None} \
        if args.skip_resnet50 else bench_resnet50()

    load = (round(load_start, 2), round(os.getloadavg()[0], 2))
    print(f"1-minute load average at start / end: {load[0]} / {load[1]} (other processes compete for the cores "
          "when it exceeds the thread count)")
    table = table_rows(rows)
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    print(settings_line(args))
    for row in table:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    print(resnet50_line(timing))
    verdict = targets(rows, timing)
    print(f"targets: speed-up >= 0.8 x MAC reduction: {'met' if verdict['speed_target_met'] else 'NOT met'} "
          f"(b32: {'met' if verdict['speed_target_met_b32'] else 'NOT met'}; rows meeting it: "
          f"{', '.join(verdict['rows_meeting_speed_target']) or 'none'}); "
          f"ResNet50 < 10 s: {verdict['time_target_met']}")
    if "tflite_speed_target_met" in verdict:
        print(f"TFLite: speed-up >= 0.8 x MAC reduction for: "
              f"{', '.join(verdict['rows_meeting_speed_target_tflite']) or 'none'}")
    result = {"rows": rows, **timing, **verdict, "load_average_start_end": load, "settings": {
        "round_to": args.round_to, "importance": args.importance, "fold_bn": args.fold_bn, "xla": args.xla,
        "tflite": args.tflite, "repeats": args.repeats, "stat": args.stat, "ratios": args.ratios,
        "models": args.models, "skip_resnet50": args.skip_resnet50, "threads": args.threads or os.cpu_count()},
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__, "keras": keras.__version__}
    print(json.dumps(result))
    if args.markdown:
        write_atomic(args.markdown, markdown(rows, timing, args, load))
    if args.readme:
        replace_block(args.readme, "bench_structured", markdown(rows, timing, args, load))
    return result


if __name__ == "__main__":
    main()
