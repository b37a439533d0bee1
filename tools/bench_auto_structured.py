"""Benchmark latency-aware and automatic structured pruning, in one run.

Latency part: ResNet-56 (32x32) and MobileNetV2 (224x224), random weights, at latency budgets 0.5 and
0.3 of the original, in each runtime configuration (TFLite 1 thread, TensorFlow with all cores) at
batch 1 and 32. For each cell a `LatencyTable` is measured (cached in `--latency_cache`), then:
  * latency-aware: `prune_filters(model, target_latency=budget, latency_table=table, round_to=8)`; where
    channels alone cannot reach the budget (TensorFlow's fixed cost per operator), again with
    `remove_blocks=True` (whole residual branches may go);
  * uniform L1 at the ratio whose MACs match the latency-aware plan's (bisection on the ratio);
and the original and both pruned models are timed end to end (BatchNormalization folded, medians of
alternating calls, each timing at least `--compare_seconds` long; the mean of `--final_comparisons`
comparisons, each on fresh instances, or more, up to `--max_final_comparisons`, while two standard
errors of their mean exceed half the tolerance). Columns: measured latency / original
against the budget, the table's prediction against the measurement (validation: within 10%), MACs.

Accuracy part: a residual CNN (`resnet_cifar(14)` on 28x28x1) trained on the bundled MNIST (7,000
train, 1,000 held out for the search / 2,000 eval) per seed, pruned to the same latency budget (0.5 of TFLite 1 thread, batch 1):
  * uniform L1 at the smallest ratio whose predicted latency fits the budget, with round_to 8 and with
    any width (round_to None: nearer the budget on this narrow network);
  * latency-aware (the knapsack plan on L1 importance);
  * searched (`search_ratios`, evolution, latency budget, candidates scored after BatchNormalization
    re-estimation on 1,024 training images, on 1,000 held-out training images; the best candidates
    measured until one is within 5% of the budget, `latency_tolerance=0.05`);
each with BN re-estimation, then evaluated one-shot and after the same `--fine_tune_epochs` (the dense
and the fine-tuned models' BatchNormalization statistics re-estimated on the same 1,024 images too).
Their measured latency is timed like the latency part's results (the mean of `--final_comparisons`
to `--max_final_comparisons` comparisons, each at least `--compare_seconds` long).

Targets: latency-aware measured latency within 5% of the budget in every runtime/batch cell; the
searched plan's one-shot accuracy clearly above uniform's (margin reported); after fine-tuning at
least uniform's within noise; the search under 10 minutes on 2 cores.

Usage:
    python tools/bench_auto_structured.py [--latency_cache tools/results/latency_tables.json] \\
        [--markdown tools/results/bench_auto_structured.md] [--readme docs/benchmarks.md]
    python tools/bench_auto_structured.py --from_log run.log --readme docs/benchmarks.md   # re-render, no timing
    python tools/bench_auto_structured.py --from_log latency.log,accuracy.log --readme docs/benchmarks.md  # merge

Prints the tables and verdicts, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from readme_block import replace_block, write_atomic  # noqa: E402
from tfprune import analysis  # noqa: E402
from tfprune.datasets import load_mnist  # noqa: E402
from tfprune.structured import (BudgetError, LatencyTable, compile_like, prune_filters,  # noqa: E402
                                recalibrate_batchnorm, search_ratios)
from tfprune.structured import latency as latency_lib  # noqa: E402
from tfprune.structured.confirmation import spread_bound  # noqa: E402
from tfprune.structured.graph import DependencyGraph  # noqa: E402
from tfprune.structured.importance import get_importance  # noqa: E402
from tfprune.structured.latency_calibration import sample_plans  # noqa: E402
from tfprune.structured.models import resnet_cifar  # noqa: E402
from tfprune.structured.planner import kept_options, score_groups  # noqa: E402

MODELS = {
    "resnet56": ("ResNet-56 32x32", lambda: resnet_cifar(56), None),
    "mobilenet_v2": ("MobileNetV2 224x224", lambda: keras.applications.MobileNetV2(weights=None), 4),
}  # key: (name, builder, max widths per axis in the latency table: None = every multiple of round_to)
RUNTIMES = {"tflite1": ("tflite", 1, "TFLite 1 thr."), "tf": ("tf", 0, "TF")}
LATENCY_TOLERANCE = 0.05  # measured latency within 5% of the budget
PREDICTION_TOLERANCE = 0.10


def final_comparisons(compare: Callable[[], list[float]], minimum: int, maximum: int,
                      precision: float) -> list[list[float]]:
    """Fresh comparisons of pruned models against the original (`compare()` returns one fraction per
    pruned model): `minimum` of them, then more, up to `maximum`, while two standard errors of any
    model's comparisons exceed `precision` (a fraction of the original latency). Only the spread
    decides when to stop, never where the mean lies, so the mean is not steered toward the budget.

    Example:
        >>> final_comparisons(lambda: table.compare(model, [aware, uniform], record=False), 2, 5, 0.0125)
    """
    finals = []
    while len(finals) < maximum:
        finals.append([float(f) for f in compare()])
        if len(finals) >= minimum and all(spread_bound(list(m)) <= precision for m in zip(*finals)):
            break
    return finals


def accuracy_model(input_shape=(28, 28, 1)) -> keras.Model:
    """The residual CNN of the accuracy part."""
    return resnet_cifar(14, num_classes=10, input_shape=input_shape)


UNIFORM_ANY = "uniform L1, any width"


def ratio_matching(model: keras.Model, value: Callable[[keras.Model, object], float], target: float,
                   steps: int = 8, round_to: int | None = 8) -> tuple[float, keras.Model, object]:
    """The smallest uniform ratio (at most 0.9) with value(pruned, report) <= target, by bisection (value
    falls as the ratio grows)."""
    lo, hi = 0.0, 0.9
    best = (hi, *prune_filters(model, pruning_ratio=hi, round_to=round_to))
    for _ in range(steps):
        mid = (lo + hi) / 2
        pruned, report = prune_filters(model, pruning_ratio=mid, round_to=round_to)
        if value(pruned, report) <= target:
            hi, best = mid, (mid, pruned, report)
        else:
            lo = mid
    return best


def held_out_plans(model: keras.Model, samples: int, seed: int) -> list[keras.Model]:
    """Pruned versions of `model` (uniform and random per-group widths, round_to 8) that the
    calibration never sees: the validation set of the table's predictions."""
    graph = DependencyGraph(model)
    criterion = get_importance("l1")
    criterion.prepare(model, None)
    scores, _ = score_groups(graph, criterion)
    ids = sorted(scores)
    options = [kept_options(graph.groups[g], 0.9, 8) for g in ids]
    plans = []
    for genes in sample_plans(options, samples, np.random.default_rng(seed)):
        kept = {g: int(o[j]) for g, o, j in zip(ids, options, genes)}
        plans.append(prune_filters(model, plan={graph.groups[g].producers[0]: k for g, k in kept.items()},
                                   round_to=8)[0])
    return plans


def latency_part(args) -> list[dict]:
    rows = []
    for key in args.models:
        name, build, max_widths = MODELS[key]
        model = build()
        macs = analysis.count_macs(model)
        for runtime_key in args.runtimes:
            runtime, threads, label = RUNTIMES[runtime_key]
            for batch in args.batches:
                start = time.perf_counter()
                repeats = args.repeats if batch == 1 else max(5, args.repeats // 4)
                table = LatencyTable(runtime, threads=threads or os.cpu_count(), batch_size=batch, round_to=8,
                                     cache=args.latency_cache, repeats=args.table_repeats, max_widths=max_widths,
                                     min_seconds=args.compare_seconds, verbose=1)
                table.measure(model)
                table.repeats = repeats  # whole-model comparisons (blocks are cached)
                validation = held_out_plans(model, args.validation_plans, seed=args.validation_seed)
                entry = table.models[latency_lib.structure_key(model)]
                validation_blocks = [table.blocks_ms(p) for p in validation]
                blocks_only = [(entry["overhead_ms"] + b) / entry["measured_ms"] for b in validation_blocks]
                calibration = table.calibrate(model, samples=args.calibration_samples, seed=0)
                calibrated = [table.predict(p) / table.predict(model) for p in validation]
                fit = table.fit(model)
                work_ms = fit.ms_per_mac * macs + fit.ms_per_sqrt_mac * latency_lib.sqrt_macs(model)
                measured = table.compare(model, validation, record=False)
                table_seconds = time.perf_counter() - start
                common = {"model": name, "runtime": label, "batch": batch,
                          "table_seconds": round(table_seconds, 1), "table_measurements": table.measured,
                          "calibration_points": calibration["points"], "fit_scale": calibration["scale"],
                          "fit_intercept": calibration["intercept"], "fit_ms_per_mac": calibration["ms_per_mac"],
                          "fit_ms_per_sqrt_mac": calibration["ms_per_sqrt_mac"],
                          "fit_work_share": work_ms / table.predict(model),
                          "validation_measured": measured,
                          "validation_error_blocks": [p / m - 1 for p, m in zip(blocks_only, measured)],
                          "validation_error_calibrated": [p / m - 1 for p, m in zip(calibrated, measured)],
                          # what a fit sees of each held-out plan, so that other fits can be checked offline
                          # against these measurements (with the cache's calibration points)
                          "validation_points": [
                              {"blocks_ms": b, "macs_fraction": analysis.count_macs(p) / macs,
                               "sqrt_macs_fraction": latency_lib.sqrt_macs(p) / latency_lib.sqrt_macs(model),
                               "fraction": m}
                              for b, p, m in zip(validation_blocks, validation, measured)],
                          "original_blocks_ms": entry["blocks_ms"], "original_ms": entry["measured_ms"]}
                for budget in args.budgets:
                    plan_start = time.perf_counter()
                    channel_floor = None
                    try:
                        aware, aware_report = prune_filters(model, target_latency=budget, latency_table=table,
                                                            round_to=8, latency_tolerance=LATENCY_TOLERANCE)
                    except BudgetError as err:
                        channel_floor = err.smallest / err.original
                        print(f"  {name} {label} b{batch} budget {budget}: channels alone reach "
                              f"{channel_floor:.3f}; with residual blocks removed:", file=sys.stderr, flush=True)
                    if channel_floor is not None:
                        try:  # below what channels reach: residual blocks may go too
                            aware, aware_report = prune_filters(model, target_latency=budget, latency_table=table,
                                                                round_to=8, latency_tolerance=LATENCY_TOLERANCE,
                                                                remove_blocks=True)
                        except BudgetError as err:  # below the smallest reachable latency: say so, go on
                            rows.append({**common, "budget": budget, "unreachable": True,
                                         "smallest_fraction": err.smallest / err.original, "reason": str(err),
                                         "channel_floor": channel_floor, "aware_met": False, "uniform_met": False})
                            print(f"  {name} {label} b{batch} budget {budget}: unreachable "
                                  f"(smallest {err.smallest / err.original:.3f})", file=sys.stderr, flush=True)
                            continue
                    plan_seconds = time.perf_counter() - plan_start
                    ratio, uniform, uniform_report = ratio_matching(
                        model, lambda p, r: r.macs_after, aware_report.macs_after)
                    predicted = [table.predict(m) / table.predict(model) if m is uniform or not
                                 aware_report.removed_blocks  # another architecture: the planner's estimate
                                 else aware_report.budget["predicted"] / aware_report.budget["original"]
                                 for m in (aware, uniform)]
                    # fresh measurements, independent of the planner's: each comparison takes new instances
                    # of all three models; their mean is the result (one comparison can be off by a few
                    # percent on a noisy host)
                    final = LatencyTable(runtime, threads=threads or os.cpu_count(), batch_size=batch,
                                         repeats=repeats, round_to=8, min_seconds=args.compare_seconds)
                    finals = final_comparisons(lambda: final.compare(model, [aware, uniform], record=False),
                                               args.final_comparisons, args.max_final_comparisons,
                                               budget * LATENCY_TOLERANCE / 2)
                    fraction_aware, fraction_uniform = (float(np.mean(f)) for f in zip(*finals))
                    row = {**common, "budget": budget, "ms_original": entry["measured_ms"],
                           "fraction_aware": fraction_aware, "fraction_uniform": fraction_uniform,
                           "final_comparisons": finals,
                           "planner_fraction": aware_report.budget["measured_fraction"],
                           "planner_comparisons": aware_report.budget["measured_fractions"],
                           "attempts": aware_report.budget["attempts"], "plan_seconds": round(plan_seconds, 1),
                           "predicted_aware": predicted[0], "predicted_uniform": predicted[1],
                           "prediction_error_aware": predicted[0] / fraction_aware - 1,
                           "prediction_error_uniform": predicted[1] / fraction_uniform - 1,
                           "macs_fraction_aware": aware_report.macs_after / macs,
                           "macs_fraction_uniform": uniform_report.macs_after / macs, "uniform_ratio": ratio,
                           "blocks_removed": len(aware_report.removed_blocks), "channel_floor": channel_floor}
                    row["aware_met"] = abs(fraction_aware / budget - 1) <= LATENCY_TOLERANCE
                    row["uniform_met"] = abs(fraction_uniform / budget - 1) <= LATENCY_TOLERANCE
                    rows.append(row)
                    print(f"  {name} {label} b{batch} budget {budget}: aware {fraction_aware:.3f} "
                          f"(planner {row['planner_fraction']:.3f}, {row['attempts']} plans), "
                          f"uniform {fraction_uniform:.3f}", file=sys.stderr, flush=True)
    return rows


def evaluate(model: keras.Model, data) -> tuple[float, float]:
    x, y = data
    logits = model.predict(x, batch_size=500, verbose=0)
    loss = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits))
    return float((np.argmax(logits, axis=1) == y).mean()), loss


def accuracy_part(args) -> tuple[list[dict], list[dict]]:
    (x_train, y_train), (x_eval, y_eval) = load_mnist(train_size=args.train_size)
    test = (x_eval[:args.eval_size], y_eval[:args.eval_size])
    held = min(1000, len(x_train) // 4)  # the search scores on held-out training images, never on `test`
    calib, held_out = x_train[:1024], (x_train[-held:], y_train[-held:])
    x_train, y_train = x_train[:-held], y_train[:-held]
    rows, searches = [], []
    for seed in args.seeds:
        keras.utils.set_random_seed(seed)
        model = accuracy_model(x_train.shape[1:])
        model.compile(keras.optimizers.Adam(1e-3),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
        # after a few fast epochs the moving statistics lag the weights: every trained model is evaluated
        # with BatchNormalization statistics re-estimated on the same calibration images
        recalibrate_batchnorm(model, calib, steps=None, batch_size=256)
        table = LatencyTable("tflite", threads=1, batch_size=1, round_to=8, cache=args.latency_cache,
                             repeats=args.table_repeats, min_seconds=args.compare_seconds, verbose=1)
        table.calibrate(model, samples=args.calibration_samples, seed=seed)
        table.repeats = args.repeats  # whole-model comparisons (planner, search), as the final ones
        full = table.predict(model)
        target = args.accuracy_budget * full
        _, uniform, _ = ratio_matching(model, lambda p, r: table.predict(p), target)
        # with round_to 8 a uniform ratio jumps over the budget on this narrow network (16 -> 8 channels
        # at once): uniform pruning to any width gets nearer it
        _, uniform_any, _ = ratio_matching(model, lambda p, r: table.predict(p), target, round_to=None)
        aware, _ = prune_filters(model, target_latency=args.accuracy_budget, latency_table=table, round_to=8)
        start = time.perf_counter()
        plan, history = search_ratios(
            model, lambda m: evaluate(m, held_out)[0], args.accuracy_budget, method="evolution",
            population=args.population, generations=args.generations, recalibrate_bn=calib, seed=seed,
            budget_kind="latency", latency_table=table, round_to=8, calibration_steps=4, batch_size=256,
            latency_tolerance=LATENCY_TOLERANCE)
        search_seconds = time.perf_counter() - start
        searched, _ = prune_filters(model, plan=plan, round_to=8)
        searches.append({"seed": seed, "seconds": round(search_seconds, 1), "candidates": len(history),
                         "plan": plan.kept, "search_measured": plan.measured,
                         "search_comparisons": plan.measurements})
        dense_accuracy, dense_loss = evaluate(model, test)
        candidates = {"uniform L1": uniform, UNIFORM_ANY: uniform_any, "latency-aware (knapsack, L1)": aware,
                      "searched (evolution)": searched}
        # timed as the latency part's results are: each comparison at least --compare_seconds long, the
        # mean of --final_comparisons of them (more while they spread, up to --max_final_comparisons)
        final = LatencyTable("tflite", threads=1, batch_size=1, round_to=8, repeats=args.repeats,
                             min_seconds=args.compare_seconds)
        comparisons = final_comparisons(lambda: final.compare(model, list(candidates.values()), record=False),
                                        args.final_comparisons, args.max_final_comparisons,
                                        args.accuracy_budget * LATENCY_TOLERANCE / 2)
        for (name, pruned), measured in zip(candidates.items(), zip(*comparisons)):
            fraction = float(np.mean(measured))
            recalibrate_batchnorm(pruned, calib, steps=4, batch_size=256)
            one_shot, one_shot_loss = evaluate(pruned, test)
            tuned = compile_like(pruned, model)
            tuned.fit(x_train, y_train, epochs=args.fine_tune_epochs, batch_size=64, verbose=0)
            recalibrate_batchnorm(tuned, calib, steps=None, batch_size=256)
            accuracy, loss = evaluate(tuned, test)
            rows.append({"seed": seed, "method": name, "dense_accuracy": dense_accuracy, "dense_loss": dense_loss,
                         "latency_fraction": fraction, "latency_comparisons": list(measured),
                         "predicted_fraction": table.predict(pruned) / full,
                         "one_shot_accuracy": one_shot, "one_shot_loss": one_shot_loss,
                         "accuracy": accuracy, "loss": loss})
        print(f"  MNIST seed {seed}: search {search_seconds:.0f}s", file=sys.stderr, flush=True)
    return rows, searches


def latency_table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    out = [("model", "runtime", "batch", "budget", "original ms", "latency-aware: measured (MACs)", "plans timed",
            "uniform L1 same MACs: measured", "predicted / measured - 1 (aware, uniform)",
            f"within {LATENCY_TOLERANCE:.0%} (aware / uniform)")]
    for r in rows:
        if r.get("unreachable"):
            why = (f"no measured plan within {LATENCY_TOLERANCE:.0%}: fastest {r['smallest_fraction']:.3f}"
                   if measured_miss(r) else f"unreachable: smallest {r['smallest_fraction']:.3f}"
                   if r["smallest_fraction"] > r["budget"] else "no plan fits after re-planning")
            out.append((r["model"], r["runtime"], str(r["batch"]), f"{r['budget']:.2f}", "-", why, "-", "-", "-",
                        "NO / no"))
            continue
        removed = f"; {r['blocks_removed']} blocks removed" if r.get("blocks_removed") else ""
        out.append((r["model"], r["runtime"], str(r["batch"]), f"{r['budget']:.2f}", f"{r['ms_original']:.2f}",
                    f"{r['fraction_aware']:.3f} ({r['macs_fraction_aware']:.3f}{removed})", str(r["attempts"]),
                    f"{r['fraction_uniform']:.3f}",
                    f"{r['prediction_error_aware']:+.1%}, {r['prediction_error_uniform']:+.1%}",
                    f"{'yes' if r['aware_met'] else 'NO'} / {'yes' if r['uniform_met'] else 'no'}"))
    return out


def validation_cells(rows: list[dict]) -> list[dict]:
    """One row per model/runtime/batch cell (the validation is per cell, not per budget)."""
    cells = {}
    for r in rows:
        cells.setdefault((r["model"], r["runtime"], r["batch"]), r)
    return [r for r in cells.values() if "validation_measured" in r]


def work_term(row: dict) -> str:
    """The fit's work term: MACs or per-layer square roots of MACs, and its share of the original's
    predicted latency ('none' for the blocks alone)."""
    if "fit_work_share" not in row:  # logs of earlier versions: ms per GMAC
        return (f"MACs, {row['fit_ms_per_mac'] * 1e9:.3g} ms/GMAC" if row.get("fit_ms_per_mac") else "none")
    if not row["fit_ms_per_mac"] and not row["fit_ms_per_sqrt_mac"]:
        return "none"
    name = "MACs" if row["fit_ms_per_mac"] and not row["fit_ms_per_sqrt_mac"] else \
        "per-layer sqrt(MACs)" if row["fit_ms_per_sqrt_mac"] and not row["fit_ms_per_mac"] else "both"
    return f"{name}, {row['fit_work_share']:.0%}"


def validation_table_rows(rows: list[dict]) -> list[tuple[str, ...]]:
    out = [("model", "runtime", "batch", "calibration plans", "fitted scale", "work term (of the original's ms)",
            "held-out plans measured",
            "error, blocks only", "error, calibrated", f"within {PREDICTION_TOLERANCE:.0%} (calibrated)")]
    for r in validation_cells(rows):
        blocks, calibrated = r["validation_error_blocks"], r["validation_error_calibrated"]
        out.append((r["model"], r["runtime"], str(r["batch"]), str(r["calibration_points"]), f"{r['fit_scale']:.3f}",
                    work_term(r),
                    ", ".join(f"{m:.3f}" for m in r["validation_measured"]),
                    ", ".join(f"{e:+.0%}" for e in blocks), ", ".join(f"{e:+.0%}" for e in calibrated),
                    f"{sum(abs(e) <= PREDICTION_TOLERANCE for e in calibrated)} of {len(calibrated)}"))
    return out


def accuracy_summary(rows: list[dict]) -> list[dict]:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]

        def mean(key):
            return statistics.mean(r[key] for r in mine)

        def spread(key):
            values = [r[key] for r in mine]
            return (max(values) - min(values)) / 2

        out.append({"method": method, **{k: mean(k) for k in ("latency_fraction", "predicted_fraction",
                                                                "one_shot_accuracy", "one_shot_loss",
                                                                "accuracy", "loss", "dense_accuracy")},
                    "accuracy_spread": spread("accuracy"), "one_shot_spread": spread("one_shot_accuracy")})
    return out


def accuracy_table_rows(summary: list[dict]) -> list[tuple[str, ...]]:
    out = [("method", "measured latency (predicted)", "one-shot accuracy", "one-shot loss",
            "fine-tuned accuracy", "eval loss")]
    for s in summary:
        out.append((s["method"], f"{s['latency_fraction']:.3f} ({s['predicted_fraction']:.3f})",
                    f"{100 * s['one_shot_accuracy']:.2f}% ± {100 * s['one_shot_spread']:.2f}",
                    f"{s['one_shot_loss']:.3f}", f"{100 * s['accuracy']:.2f}% ± {100 * s['accuracy_spread']:.2f}",
                    f"{s['loss']:.3f}"))
    return out


def measured_miss(row: dict) -> bool:
    """An unreachable row whose plans were measured, all above the tolerance (not a budget below the
    smallest plan the table predicts)."""
    return "measured plans" in row.get("reason", "")


def verdicts(latency_rows: list[dict], summary: list[dict], searches: list[dict]) -> list[str]:
    lines = []
    if latency_rows:
        measured = [r for r in latency_rows if not r.get("unreachable")]
        missed = [r for r in measured if not r["aware_met"]]
        lines.append(f"latency-aware within {LATENCY_TOLERANCE:.0%} of the budget: "
                     + ("met in every measured cell" if not missed else "NOT met in " + ", ".join(
                         f"{r['model']} {r['runtime']} b{r['batch']} {r['budget']} ({r['fraction_aware']:.3f})"
                         for r in missed)))
        for r in latency_rows:
            if r.get("unreachable") and measured_miss(r):
                lines.append(f"{r['model']} {r['runtime']} b{r['batch']}: budget {r['budget']}: every plan the "
                             f"planner measured ran above {1 + LATENCY_TOLERANCE:.2f} x the budget (the fastest at "
                             f"{r['smallest_fraction']:.3f}; the goal corrections found no faster plan within the "
                             "planner's measured plans), not met")
            elif r.get("unreachable") and r["smallest_fraction"] <= r["budget"]:
                lines.append(f"{r['model']} {r['runtime']} b{r['batch']}: budget {r['budget']}: the rebuilt models "
                             "stayed above the budget after every re-planning (the latency table underestimates "
                             "them), not met")
            elif r.get("unreachable"):
                lines.append(f"{r['model']} {r['runtime']} b{r['batch']}: budget {r['budget']} is below the smallest "
                             f"reachable latency ({r['smallest_fraction']:.3f} of the original with round_to=8 and "
                             "max_pruning_ratio=0.9: narrow layers do not get proportionally faster), not met")
        for r in latency_rows:
            if r.get("blocks_removed"):
                lines.append(f"{r['model']} {r['runtime']} b{r['batch']}: budget {r['budget']} is below what channels "
                             f"alone reach ({r['channel_floor']:.3f}); with {r['blocks_removed']} residual blocks "
                             f"removed (remove_blocks=True) the plan measures {r['fraction_aware']:.3f}")
        uniform_met = sum(r["uniform_met"] for r in measured)
        lines.append(f"latency-aware within {LATENCY_TOLERANCE:.0%} in {len(measured) - len(missed)} of "
                     f"{len(latency_rows)} cells; uniform L1 at the same MACs in {uniform_met} of {len(measured)}")
        cells = validation_cells(latency_rows)
        for kind, label in (("calibrated", "calibrated table"), ("blocks", "blocks alone (uncalibrated)")):
            errors = [abs(e) for r in cells for e in r[f"validation_error_{kind}"]]
            if errors:
                lines.append(f"{label}: prediction within {PREDICTION_TOLERANCE:.0%} of the measurement on "
                             f"{sum(e <= PREDICTION_TOLERANCE for e in errors)} of {len(errors)} held-out pruned "
                             f"models (largest error {max(errors):.1%})")
        errors = [abs(r[f"prediction_error_{k}"]) for r in measured for k in ("aware", "uniform")]
        if errors:
            lines.append(f"calibrated table on the latency-aware and uniform plans: within {PREDICTION_TOLERANCE:.0%} "
                         f"in {sum(e <= PREDICTION_TOLERANCE for e in errors)} of {len(errors)} "
                         f"(largest error {max(errors):.1%})")
    if summary:
        by = {s["method"]: s for s in summary}
        searched = by.get("searched (evolution)")
        for name in ("uniform L1", UNIFORM_ANY):
            uniform = by.get(name)
            if not (uniform and searched):
                continue
            margin = 100 * (searched["one_shot_accuracy"] - uniform["one_shot_accuracy"])
            tuned = 100 * (searched["accuracy"] - uniform["accuracy"])
            noise = 100 * max(uniform["accuracy_spread"], searched["accuracy_spread"], 0.001)
            at = f"(measured latency {searched['latency_fraction']:.3f} vs {uniform['latency_fraction']:.3f})"
            lines.append(f"searched vs {name} one-shot accuracy: {margin:+.2f} points {at}")
            lines.append(f"searched vs {name} after fine-tuning: {tuned:+.2f} points "
                         f"({'at least uniform within noise' if tuned >= -noise else 'BELOW uniform'}; "
                         f"noise ±{noise:.2f})")
        worst = max(s["seconds"] for s in searches)
        lines.append(f"search time: {worst:.0f} s per seed (target < 600 s: {'met' if worst < 600 else 'NOT met'})")
        checked = [s["search_measured"] for s in searches if s.get("search_measured") is not None]
        if checked:
            lines.append("searched plan checked by measurement in the search (latency_tolerance): "
                         + ", ".join(f"{m:.3f}" for m in checked) + " of the original latency")
    return lines


def markdown_table(table: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    return lines + ["| " + " | ".join(row) + " |" for row in table[1:]]


def command_line(argv: Sequence[str] | None) -> str:
    return " ".join(["python tools/bench_auto_structured.py"] + [a for a in (argv or [])
                                                                  if not a.startswith("--readme")])


def markdown(result: dict) -> str:
    text = [f"`{result['command']}` ({result['settings']}).", ""]
    if result["latency_rows"]:
        text += ["Latency budgets (measured latency / original, fresh measurements after planning; the "
                 "latency-aware plan's MACs in brackets; plans timed: how many plans the planner measured):", "",
                 *markdown_table(latency_table_rows(result["latency_rows"])), ""]
        if validation_cells(result["latency_rows"]):
            text += ["Latency-table predictions on held-out pruned models (uniform and random per-group widths, not "
                     "used for calibration): measured latency / original, and the prediction's error from the "
                     "blocks alone and after calibration on whole pruned models:", "",
                     *markdown_table(validation_table_rows(result["latency_rows"])), ""]
    if result["accuracy_summary"]:
        text += [f"MNIST residual CNN at latency budget {result['accuracy_budget']} (TFLite 1 thread, batch 1), "
                 f"mean over seeds {result['seeds']} (± half the spread); dense accuracy "
                 f"{100 * result['accuracy_summary'][0]['dense_accuracy']:.2f}%:", "",
                 *markdown_table(accuracy_table_rows(result["accuracy_summary"])), ""]
    text += [f"- {line}." for line in result["verdicts"]]
    return "\n".join(text) + "\n"


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_args(argv: Sequence[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=list(MODELS))
    parser.add_argument("--runtimes", type=lambda t: t.split(","), default=list(RUNTIMES))
    parser.add_argument("--batches", type=_ints, default=[1, 32])
    parser.add_argument("--budgets", type=_floats, default=[0.5, 0.3])
    parser.add_argument("--repeats", type=int, default=40, help="end-to-end timed calls at batch 1 (b32: 1/4)")
    parser.add_argument("--compare_seconds", type=float, default=10.0,
                        help="each end-to-end timing (a plan against the original) goes on past "
                        "--repeats until its timed calls add up to this many seconds (LatencyTable min_seconds)")
    parser.add_argument("--final_comparisons", type=int, default=2,
                        help="fresh comparisons of the pruned models against the original after planning (both "
                        "parts); the result is their mean")
    parser.add_argument("--max_final_comparisons", type=int, default=5,
                        help="more fresh comparisons, up to this many, while two standard errors of a pruned "
                        "model's comparisons exceed half the 5%% tolerance of the budget")
    parser.add_argument("--table_repeats", type=int, default=20, help="timed calls per latency-table entry")
    parser.add_argument("--calibration_samples", type=int, default=12,
                        help="pruned versions timed end to end to fit each latency table (LatencyTable.calibrate)")
    parser.add_argument("--validation_plans", type=int, default=4,
                        help="held-out pruned versions per cell on which the table's predictions are checked")
    parser.add_argument("--validation_seed", type=int, default=2000,
                        help="seed of the held-out plans (never that of the calibration plans, 0)")
    parser.add_argument("--latency_cache", default=os.path.join(TOOLS, "results", "latency_tables.json"))
    parser.add_argument("--seeds", type=_ints, default=[0, 1])
    parser.add_argument("--train_size", type=int, default=8000)
    parser.add_argument("--eval_size", type=int, default=2000, help="evaluation images (after the training ones)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fine_tune_epochs", type=int, default=2)
    parser.add_argument("--population", type=int, default=12)
    parser.add_argument("--generations", type=int, default=6)
    parser.add_argument("--accuracy_budget", type=float, default=0.5)
    parser.add_argument("--no-latency", dest="latency", action="store_false", help="skip the latency part")
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false", help="skip the accuracy part")
    parser.add_argument("--markdown", metavar="PATH")
    parser.add_argument("--readme", metavar="MARKDOWN",
                        help="replace the 'bench_auto_structured' block of this markdown file")
    parser.add_argument("--from_log", metavar="LOG[,LOG]", type=lambda t: t.split(","),
                        help="measure nothing: write --markdown / --readme from the JSON line of an earlier run's "
                        "stdout; several comma-separated logs merge (each part from the last log that has it)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS] + [r for r in args.runtimes if r not in RUNTIMES]
    if unknown:
        parser.error(f"unknown models/runtimes {unknown}; known: {list(MODELS)}, {list(RUNTIMES)}")
    if args.validation_seed == 0:
        parser.error("--validation_seed must differ from the calibration plans' seed 0, received 0")
    if args.final_comparisons < 1:
        parser.error(f"--final_comparisons must be at least 1, received {args.final_comparisons}")
    if args.max_final_comparisons < args.final_comparisons:
        parser.error(f"--max_final_comparisons must be at least --final_comparisons ({args.final_comparisons}), "
                     f"received {args.max_final_comparisons}")
    return args


def read_logs(paths: Sequence[str]) -> dict:
    """The result of one run, from the JSON line that each run printed last.

    Several logs merge into one result: a latency row of a later log replaces the row of the same
    model, runtime, batch and budget of an earlier one (a run of a few cells, e.g. `--models resnet56
    --runtimes tf --batches 1`, updates those cells), and the accuracy part comes from the last log
    that has one (a `--no-accuracy` and a `--no-latency` run give the whole table; a later run of one
    part replaces that part of an earlier full run).
    """
    parts = []
    for path in paths:
        with open(path) as f:
            lines = [line for line in f if line.startswith("{")]
        if not lines:
            raise SystemExit(f"{path}: no JSON result line. Fix: pass the stdout of a finished benchmark run.")
        parts.append(json.loads(lines[-1]))
    if len(parts) == 1:
        return parts[0]
    rows: dict[tuple, tuple[int, dict]] = {}  # cell -> (index of the log it comes from, row)
    for n, part in enumerate(parts):
        for row in part["latency_rows"]:
            rows[(row["model"], row["runtime"], row["batch"], row["budget"])] = (n, row)
    latency = sorted({n for n, _ in rows.values()})
    accuracy = next((n for n in reversed(range(len(parts))) if parts[n]["accuracy_rows"]), None)
    labels: dict[int, list[str]] = {}  # each log used once, with the parts it gave
    for k, n in enumerate(latency):
        labels.setdefault(n, []).append("latency part" if len(latency) == 1 else f"latency part {k + 1}")
    if accuracy is not None:
        labels.setdefault(accuracy, []).append("accuracy part")
    names = {n: " and ".join(parts_given) for n, parts_given in sorted(labels.items())}
    if len(names) == 1 and list(names.values()) == ["latency part and accuracy part"]:
        names = {n: "both parts" for n in names}
    accuracy = None if accuracy is None else parts[accuracy]
    result = {"command": "` and `".join(parts[n]["command"] for n in names),
              "settings": "; ".join(f"{name}: {parts[n]['settings']}" for n, name in names.items()),
              "latency_rows": [row for _, row in rows.values()],
              "accuracy_rows": accuracy["accuracy_rows"] if accuracy else [],
              "searches": accuracy["searches"] if accuracy else [],
              "seeds": (accuracy or parts[0])["seeds"],
              "accuracy_budget": (accuracy or parts[0])["accuracy_budget"]}
    result["accuracy_summary"] = accuracy_summary(result["accuracy_rows"]) if result["accuracy_rows"] else []
    result["verdicts"] = verdicts(result["latency_rows"], result["accuracy_summary"], result["searches"])
    return result


def from_log(args) -> dict:
    """Re-render the markdown from the JSON line(s) of earlier runs (no timing)."""
    result = read_logs(args.from_log)
    text = markdown(result)
    if args.markdown:
        write_atomic(args.markdown, text)
    if args.readme:
        replace_block(args.readme, "bench_auto_structured", text)
    if not args.markdown and not args.readme:
        print(text, end="")
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.from_log:
        return from_log(args)
    if args.latency_cache:
        os.makedirs(os.path.dirname(os.path.abspath(args.latency_cache)), exist_ok=True)
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    latency_rows = latency_part(args) if args.latency else []
    accuracy_rows, searches = accuracy_part(args) if args.accuracy else ([], [])
    summary = accuracy_summary(accuracy_rows) if accuracy_rows else []
    timed = f"end-to-end timings of at least {args.compare_seconds:g} s; " if args.compare_seconds else ""
    timed += (f"budgets checked on the mean of {args.final_comparisons} fresh comparisons (up to "
              f"{args.max_final_comparisons} while two standard errors exceed half the tolerance); ")
    if args.latency:
        timed += f"held-out plans of seed {args.validation_seed}; "
    settings = (f"{latency_lib.cpu_model()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}, {latency_lib.runtime_version('tflite')}; "
                f"round_to 8, L1 importance, BatchNormalization folded for timing; latency tables of "
                f"{args.table_repeats} calls per entry; {timed}{time.perf_counter() - start:.0f} s in all; "
                f"1-minute load {load_start:.2f} -> {os.getloadavg()[0]:.2f}")
    result = {"command": command_line(argv if argv is not None else sys.argv[1:]), "settings": settings,
              "latency_rows": latency_rows, "accuracy_rows": accuracy_rows, "accuracy_summary": summary,
              "searches": searches, "seeds": args.seeds, "accuracy_budget": args.accuracy_budget,
              "verdicts": verdicts(latency_rows, summary, searches)}
    for table in ([latency_table_rows(latency_rows), validation_table_rows(latency_rows)] if latency_rows else []) + \
            ([accuracy_table_rows(summary)] if summary else []):
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
        print()
    for line in result["verdicts"]:
        print(line)
    print(json.dumps(result, default=float))
    if args.markdown:
        write_atomic(args.markdown, markdown(result))
    if args.readme:
        replace_block(args.readme, "bench_auto_structured", markdown(result))
    return result


if __name__ == "__main__":
    main()
