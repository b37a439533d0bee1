"""tools/bench_structured.py on a tiny model: runners agree with Keras, TFLite columns per thread count,
the width probe, the verdicts, and the report and markdown (re-rendered identically from the log)."""

import json
import os

import numpy as np
import pytest

from tests.helpers import load_tool
from tfprune.structured.fold import fold_batchnorm
from tfprune.structured.models import resnet_cifar
from tfprune.structured.verify import randomize_statistics


@pytest.fixture(scope="module")
def bench():
    return load_tool("bench_structured")


@pytest.fixture
def small_probe(bench, monkeypatch):
    """A width probe small enough for tests: two 3x3 convolutions at 8x8 with 4 and 8 channels."""
    monkeypatch.setattr(bench, "WIDTH_PROBE_CHANNELS", (4, 8))
    monkeypatch.setattr(bench, "WIDTH_PROBE_LAYERS", 2)
    monkeypatch.setattr(bench, "WIDTH_PROBE_SIZE", 8)


def test_runners_compute_the_model(bench):
    model = randomize_statistics(resnet_cifar(8))
    deployed = bench.deploy(model, fold_bn=True)
    x = bench.example_batch(model, 3)
    expected = np.asarray(model(x, training=False))
    for run in (bench.tf_runner(deployed, x), bench.tflite_runner(deployed, x),
                bench.tflite_runner(deployed, x, threads=1)):
        np.testing.assert_allclose(run(), expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    assert bench.deploy(model, fold_bn=False) is model
    ms = bench.paired_median_ms([bench.tf_runner(model, x), bench.tf_runner(fold_batchnorm(model), x)], repeats=2)
    assert len(ms) == 2 and all(v > 0 for v in ms)


def test_main_on_a_tiny_model(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.MODELS, "tiny", ("ResNet-8 32x32", lambda: resnet_cifar(8)))
    path = tmp_path / "out" / "bench.md"
    result = bench.main(["--models", "tiny", "--ratios", "0.5", "--repeats", "2", "--no-tflite", "--no-width_probe",
                         "--skip_resnet50", "--markdown", str(path)])
    row = result["rows"][0]
    assert row["fold_bn"] is True and row["macs_after"] < row["macs_before"]
    assert row["fold_max_abs_error"] < 1e-3
    assert {"ms_b1_before", "ms_b32_after", "speedup_b1_over_mac_reduction"} <= set(row)
    assert not any(key.startswith("tflite") and key != "tflite_threads" for key in row)
    assert row["tflite_threads"] == [] and result["width_probe"] == []
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["rows"][0]["model"] == "ResNet-8 32x32"
    text = path.read_text()
    assert text.count("| ResNet-8 32x32 |") == 1 and "folded: yes" in text
    assert "TFLite" not in text.split("\n\n")[1] and "GMAC/s" not in text
    assert os.listdir(path.parent) == ["bench.md"]  # no temporary file left behind
    log = tmp_path / "run.log"
    log.write_text("\n".join(out) + "\n")
    again = tmp_path / "again.md"
    bench.main(["--from_log", str(log), "--markdown", str(again)])  # re-rendered without timing
    assert again.read_text() == text
    assert "--ratios 0.5 --models tiny --repeats 2 --no-tflite --no-width_probe --skip_resnet50" in text


def test_tflite_columns_per_thread_count_and_width_probe(bench, tmp_path, capsys, monkeypatch, small_probe):
    monkeypatch.setitem(bench.MODELS, "tiny", ("ResNet-8 32x32", lambda: resnet_cifar(8)))
    path = tmp_path / "bench.md"
    result = bench.main(["--models", "tiny", "--ratios", "0.5", "--repeats", "2", "--tflite_threads", "2,1,2",
                         "--skip_resnet50", "--markdown", str(path)])
    row = result["rows"][0]
    assert row["tflite_threads"] == [2, 1] and result["settings"]["tflite_threads"] == [2, 1]
    for prefix in ("", "tflite1_", "tflite2_"):
        for b in (1, 32):
            assert {f"{prefix}ms_b{b}_before", f"{prefix}ms_b{b}_after", f"{prefix}speedup_b{b}",
                    f"{prefix}speedup_b{b}_over_mac_reduction"} <= set(row)
    assert "tflite_ms_b1_before" not in row
    header = bench.table_rows(result["rows"])[0]
    tf_threads = result["settings"]["threads"]
    assert header[6:9] == (f"TF ({tf_threads} thr.) b1 ms", f"TF ({tf_threads} thr.) b32 ms",
                           f"TF ({tf_threads} thr.) speed-up / MAC red. (b1 / b32)")
    assert header[9:] == ("TFLite 2 thr. b1 ms", "TFLite 2 thr. b32 ms", "TFLite 2 thr. speed-up / MAC red. (b1 / b32)",
                          "TFLite 1 thr. b1 ms", "TFLite 1 thr. b32 ms", "TFLite 1 thr. speed-up / MAC red. (b1 / b32)")
    assert len(bench.table_rows(result["rows"])[1]) == len(header)

    # width probe: every runtime configuration x batch, a positive throughput for each width
    probe = result["width_probe"]
    assert [(e["runtime"], e["batch"]) for e in probe] == [
        (f"TF ({tf_threads} thr.)", 1), (f"TF ({tf_threads} thr.)", 32),
        ("TFLite 2 threads", 1), ("TFLite 2 threads", 32), ("TFLite 1 thread", 1), ("TFLite 1 thread", 32)]
    for e in probe:
        assert e["channels"] == [4, 8] and len(e["gmac_per_s"]) == 2 and all(v > 0 for v in e["gmac_per_s"])
        assert e["macs_per_sample"][1] == 4 * e["macs_per_sample"][0]  # c^2 scaling of a c -> c conv

    verdict_runtimes = [v["runtime"] for v in result["speed_target"]]
    assert verdict_runtimes == [f"TF ({tf_threads} thr.)", "TFLite 2 threads", "TFLite 1 thread"]
    out = capsys.readouterr().out
    assert "GMAC/s at 4 / 8 channels" in out and "4-channel layers run at" in out
    assert "TFLite 1 thread: " in out

    text = path.read_text()
    assert "| TFLite 1 thr. b1 ms |" in text and "| TFLite 2 thr. b32 ms |" in text
    assert "| runtime | batch | GMAC/s at 4 / 8 channels |" in text
    assert text.index("| ResNet-8 32x32 |") < text.index("| runtime | batch |")  # probe after the main table
    assert "4-channel layers run at" in text and "x the throughput of 8-channel layers (TFLite 1 thread, b32" in text
    assert "- TFLite 2 threads: " in text and "--tflite_threads 2,1" in text and "--no-width_probe" not in text
    assert "TFLite (XNNPACK) with 2 and 1 threads" in text

    log = tmp_path / "run.log"
    log.write_text(out)
    again = tmp_path / "again.md"
    bench.main(["--from_log", str(log), "--markdown", str(again)])
    assert again.read_text() == text


def test_width_probe_directly(bench):
    probe = bench.width_probe(bench.runtime_configs(1), repeats=2, channels=(8, 4), layers=1, size=4)
    assert [(e["runtime"], e["batch"], e["channels"]) for e in probe] == [("TF (1 thr.)", 1, [8, 4]),
                                                                         ("TF (1 thr.)", 32, [8, 4])]
    assert all(v > 0 for e in probe for v in e["gmac_per_s"])
    sentence = bench.probe_sentence(probe)
    ratio = probe[1]["gmac_per_s"][1] / probe[1]["gmac_per_s"][0]
    assert sentence.startswith(f"4-channel layers run at {ratio:.2f}x the throughput of 8-channel layers (TF (1 thr.), b32")
    assert bench.probe_table(probe)[0] == ("runtime", "batch", "GMAC/s at 8 / 4 channels")


def _row(model, ratio, round_to, tf, tflite1):
    """A result row by hand: `tf` and `tflite1` are (b1, b32) speed-up / MAC reduction."""
    row = {"model": model, "ratio": ratio, "round_to": round_to, "runtime": "tf", "threads": 2,
           "tflite_threads": [1], "params_before": 1e6, "params_after": 5e5, "macs_before": 4e6,
           "macs_after": 2e6, "mac_reduction": 2.0}
    for prefix, values in (("", tf), ("tflite1_", tflite1)):
        for b, v in zip((1, 32), values):
            row.update({f"{prefix}ms_b{b}_before": 10.0, f"{prefix}ms_b{b}_after": 10.0 / (2 * v),
                        f"{prefix}speedup_b{b}": 2 * v, f"{prefix}speedup_b{b}_over_mac_reduction": v})
    return row


def test_verdicts_on_hand_made_rows(bench):
    rows = [_row("A", 0.3, 8, tf=(0.79, 0.9), tflite1=(0.5, 0.85)),
            _row("A", 0.5, 8, tf=(0.9, 0.9), tflite1=(0.6, 0.7)),
            _row("A", 0.3, 16, tf=(0.95, 0.85), tflite1=(0.8, 0.9)),
            _row("A", 0.5, 16, tf=(1.0, 1.1), tflite1=(0.85, 0.81))]
    verdicts = bench.targets(rows, {"resnet50_prune_seconds": None})["speed_target"]
    tf, tflite1 = verdicts
    assert tf["runtime"] == "TF (2 thr.)" and tflite1["runtime"] == "TFLite 1 thread"
    assert tf["all_met"] is False  # one row below 0.8 at b1
    assert tf["all_met_b32"] is True
    assert tf["by_round_to"] == [{"round_to": 8, "met": False}, {"round_to": 16, "met": True}]
    assert "A 0.3 (round_to 8) b1" not in tf["rows_meeting"] and "A 0.3 (round_to 8) b32" in tf["rows_meeting"]
    assert tflite1["all_met"] is False
    assert tflite1["by_round_to"] == [{"round_to": 8, "met": False}, {"round_to": 16, "met": True}]
    assert tflite1["rows_meeting_outside_met_round_to"] == ["A 0.3 (round_to 8) b32"]
    assert bench.verdict_line(tflite1) == ("TFLite 1 thread: met for every row with round_to 16 (both batches); "
                                           "rows meeting it otherwise: A 0.3 (round_to 8) b32")
    assert bench.verdict_line(tf) == ("TF (2 thr.): met for every row with round_to 16 (both batches); rows meeting "
                                      "it otherwise: A 0.3 (round_to 8) b32, A 0.5 (round_to 8) b1, "
                                      "A 0.5 (round_to 8) b32")

    all_met = bench.speed_verdicts([_row("B", 0.5, 8, tf=(0.8, 0.9), tflite1=(1.0, 1.0))])
    assert all(v["all_met"] for v in all_met)
    assert bench.verdict_line(all_met[1]) == "TFLite 1 thread: met for every row (both batches)"
    none_met = bench.speed_verdicts([_row("B", 0.5, 8, tf=(0.1, 0.2), tflite1=(0.3, 0.9))])
    assert bench.verdict_line(none_met[0]) == "TF (2 thr.): not met for every row of any round_to; rows meeting it: none"
    assert bench.verdict_line(none_met[1]).endswith("rows meeting it: B 0.5 (round_to 8) b32")

    table = bench.table_rows(rows)
    assert table[0][6] == "TF (2 thr.) b1 ms" and table[0][-1] == "TFLite 1 thr. speed-up / MAC red. (b1 / b32)"
    assert table[1][8] == "0.79 / 0.90" and table[1][-1] == "0.50 / 0.85"


def test_command_line_reproduces_the_settings(bench):
    args = bench.parse_args([])
    assert args.tflite_threads == list(dict.fromkeys([1, os.cpu_count()]))
    assert bench.command_line(args) == "python tools/bench_structured.py"
    args = bench.parse_args(["--tflite_threads", "4,1,4", "--no-width_probe", "--round_to", "8,16"])
    assert args.tflite_threads == [4, 1]
    assert bench.command_line(args) == ("python tools/bench_structured.py --round_to 8,16 --tflite_threads 4,1 "
                                        "--no-width_probe")
    assert "--tflite_threads" not in bench.command_line(bench.parse_args(["--tflite_threads", "4", "--no-tflite"]))
    assert bench.parse_args(["--tflite_threads", "1,2"]).tflite_threads == [1, 2]
    with pytest.raises(SystemExit):
        bench.parse_args(["--tflite_threads", "0"])
