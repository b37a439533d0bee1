"""tools/bench_auto_structured.py with tiny settings and a fake runtime (1 ns per MAC read by a fake
clock): both parts run, the rows hold every column, the verdicts are computed, and the markdown goes
atomically into the README block."""

import json
import os

import numpy as np
import pytest

from tests.helpers import load_tool, install_fake_runtime
from tfprune import analysis
from tfprune.structured import latency, timing
from tfprune.structured.models import resnet_cifar


@pytest.fixture
def bench(monkeypatch):
    tool = load_tool("bench_auto_structured")
    now = [0.0]

    def make_runner(runtime, model, x, threads=None, io=True):
        macs = analysis.count_macs(model)
        return lambda: now.__setitem__(0, now[0] + 1e-9 * macs * x.shape[0] + 1e-5)

    install_fake_runtime(monkeypatch, make_runner)
    monkeypatch.setattr(latency, "DEFAULT_CLOCK", lambda: now[0])
    monkeypatch.setitem(tool.MODELS, "tiny", ("ResNet-8 16x16", lambda: resnet_cifar(8, input_shape=(16, 16, 3)), 3))
    monkeypatch.setattr(tool, "accuracy_model", lambda shape: resnet_cifar(8, input_shape=shape))
    return tool


@pytest.mark.slow
def test_bench_runs_with_tiny_settings(bench, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench_auto_structured:begin -->\nnot measured yet\n"
                      "<!-- bench_auto_structured:end -->\nrest\n")
    result = bench.main(["--models", "tiny", "--runtimes", "tflite1", "--batches", "1", "--budgets", "0.5,0.01",
                         "--repeats", "2", "--table_repeats", "1", "--seeds", "0", "--train_size", "400", "--eval_size", "200",
                         "--epochs", "1", "--fine_tune_epochs", "1", "--population", "2", "--generations", "2",
                         "--calibration_samples", "2", "--validation_plans", "2", "--compare_seconds", "0.05",
                         "--latency_cache", str(tmp_path / "cache" / "lat.json"), "--readme", str(readme)])
    assert "end-to-end timings of at least 0.05 s" in result["settings"]
    row, impossible = result["latency_rows"]
    assert impossible["unreachable"] and 0.01 < impossible["smallest_fraction"] < 0.5
    assert row["model"] == "ResNet-8 16x16" and row["budget"] == 0.5
    assert abs(row["fraction_aware"] / 0.5 - 1) <= 0.05 and row["aware_met"]
    assert row["planner_fraction"] == pytest.approx(row["fraction_aware"]) and row["attempts"] >= 1
    finals = row["final_comparisons"]  # fresh comparisons after planning (default 2): the result is their mean
    assert len(finals) == 2 and row["fraction_aware"] == pytest.approx(np.mean([f[0] for f in finals]))
    assert row["fraction_uniform"] == pytest.approx(np.mean([f[1] for f in finals]))
    assert abs(row["prediction_error_aware"]) < 1e-6  # the fake runtime is what the table predicts
    assert len(row["validation_measured"]) == 2 and max(map(abs, row["validation_error_calibrated"])) < 1e-6
    assert row["calibration_points"] == 2
    points = row["validation_points"]  # what an offline refit needs; the fake runtime: blocks + fixed cost
    assert [p["fraction"] for p in points] == pytest.approx(row["validation_measured"])
    assert all(0 < p["macs_fraction"] < 1 for p in points)
    fixed_ms = row["original_ms"] - row["original_blocks_ms"]
    assert [(p["blocks_ms"] + fixed_ms) / row["original_ms"] for p in points] == pytest.approx(
        row["validation_measured"], rel=1e-6)
    assert row["macs_fraction_uniform"] <= row["macs_fraction_aware"] + 1e-9
    methods = [r["method"] for r in result["accuracy_rows"]]
    assert methods == ["uniform L1", "uniform L1, any width", "latency-aware (knapsack, L1)",
                       "searched (evolution)"]
    assert all(r["latency_fraction"] <= 0.5 + 1e-6 for r in result["accuracy_rows"])
    assert all(len(r["latency_comparisons"]) == 2 and r["latency_fraction"] == pytest.approx(
        np.mean(r["latency_comparisons"])) for r in result["accuracy_rows"])
    assert all(0 <= r["one_shot_accuracy"] <= 1 and r["loss"] > 0 for r in result["accuracy_rows"])
    assert any("search time" in v for v in result["verdicts"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["latency_rows"][0]["budget"] == 0.5
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "not measured yet" not in text
    assert "| ResNet-8 16x16 | TFLite 1 thr. | 1 | 0.50 |" in text and "searched (evolution)" in text
    assert "held-out pruned models" in text and "| ResNet-8 16x16 | TFLite 1 thr. | 1 | 2 | 1.000 |" in text
    assert "unreachable: smallest" in text and "below the smallest reachable latency" in text
    assert sorted(os.listdir(tmp_path)) == ["README.md", "cache"]
    log = tmp_path / "run.log"
    log.write_text("\n".join(out) + "\n")
    again = tmp_path / "again.md"
    bench.main(["--from_log", str(log), "--markdown", str(again)])
    block = text.split("<!-- bench_auto_structured:begin -->\n")[1].split("<!-- bench_auto_structured:end -->")[0]
    assert again.read_text() == block

    # a --no-accuracy run and a --no-latency run merge into the same rows and verdicts
    latency_only = dict(result, accuracy_rows=[], accuracy_summary=[], searches=[], command="latency run")
    accuracy_only = dict(result, latency_rows=[], command="accuracy run")
    for name, part in (("latency.log", latency_only), ("accuracy.log", accuracy_only)):
        (tmp_path / name).write_text("progress line\n" + json.dumps(part, default=float) + "\n")
    merged = bench.main(["--from_log", f"{tmp_path / 'latency.log'},{tmp_path / 'accuracy.log'}",
                         "--markdown", str(tmp_path / "merged.md")])
    assert merged["latency_rows"] == json.loads(json.dumps(result["latency_rows"], default=float))
    assert merged["accuracy_summary"] == result["accuracy_summary"] and merged["verdicts"] == result["verdicts"]
    assert (tmp_path / "merged.md").read_text().startswith("`latency run` and `accuracy run` (")
    # a later run of one part replaces that part of an earlier full run, and nothing is counted twice
    full = dict(result, command="full run")
    rerun = dict(accuracy_only, accuracy_rows=[dict(r, accuracy=0.5) for r in result["accuracy_rows"]],
                 command="accuracy rerun")
    for name, part in (("full.log", full), ("rerun.log", rerun)):
        (tmp_path / name).write_text(json.dumps(part, default=float) + "\n")
    replaced = bench.main(["--from_log", f"{tmp_path / 'full.log'},{tmp_path / 'rerun.log'}",
                           "--markdown", str(tmp_path / "replaced.md")])
    assert len(replaced["accuracy_rows"]) == len(result["accuracy_rows"])
    assert all(r["accuracy"] == 0.5 for r in replaced["accuracy_rows"])
    assert replaced["latency_rows"] == merged["latency_rows"]
    assert replaced["settings"].startswith("latency part: ") and "; accuracy part: " in replaced["settings"]
    assert (tmp_path / "replaced.md").read_text().startswith("`full run` and `accuracy rerun` (")
    # a later run of a few latency cells replaces those cells only
    cell = dict(result["latency_rows"][0], fraction_aware=0.123)
    (tmp_path / "cells.log").write_text(json.dumps(dict(latency_only, latency_rows=[cell], command="cells rerun"),
                                                   default=float) + "\n")
    cells = bench.main(["--from_log", f"{tmp_path / 'full.log'},{tmp_path / 'cells.log'}",
                        "--markdown", str(tmp_path / "cells.md")])
    assert [r.get("fraction_aware") for r in cells["latency_rows"]] == [0.123] + [
        r.get("fraction_aware") for r in merged["latency_rows"][1:]]
    assert cells["command"] == "full run` and `cells rerun"
    assert cells["accuracy_rows"] == json.loads(json.dumps(result["accuracy_rows"], default=float))
    assert cells["settings"].startswith("latency part 1 and accuracy part: ") and "; latency part 2: " in cells["settings"]


@pytest.mark.parametrize("argv, message", [
    (["--final_comparisons", "0"], "--final_comparisons must be at least 1, received 0"),
    (["--final_comparisons", "3", "--max_final_comparisons", "2"],
     "--max_final_comparisons must be at least --final_comparisons (3), received 2"),
    (["--validation_seed", "0"], "--validation_seed must differ from the calibration plans' seed 0"),
])
def test_bad_settings_are_refused(bench, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_final_comparisons_go_on_while_they_spread(bench):
    """More comparisons only while two standard errors exceed the precision, never past the maximum;
    the mean decides nothing (a far-off but steady series stops at the minimum)."""
    def scripted(values):
        it = iter(values)
        return lambda: next(it)

    steady = bench.final_comparisons(scripted([[0.90, 0.30], [0.90, 0.31]] + [[9, 9]] * 3), 2, 5, 0.0125)
    assert steady == [[0.90, 0.30], [0.90, 0.31]]
    # aware spreads (0.329, 0.302: two standard errors 0.027 > 0.02): a third comparison settles it
    series = [[0.329, 0.35], [0.302, 0.35], [0.305, 0.35], [9, 9]]
    bounds = [2 * np.std(v, ddof=1) / np.sqrt(len(v)) for v in ([0.329, 0.302], [0.329, 0.302, 0.305])]
    assert bounds[0] > 0.02 >= bounds[1]  # numpy's standard error
    assert bench.final_comparisons(scripted(series), 2, 5, 0.02) == series[:3]
    noisy = bench.final_comparisons(scripted([[0.2, 0.5], [0.4, 0.5], [0.2, 0.5], [0.4, 0.5], [0.2, 0.5], [9, 9]]),
                                    2, 5, 0.01)
    assert len(noisy) == 5  # the maximum
    assert bench.final_comparisons(scripted([[0.2], [0.4]]), 1, 1, 0.0) == [[0.2]]
