"""tfprune-prune-filters budgets (--target_macs / --target_params / --target_latency), run in-process:
budgets met, the latency cache written and reused, and bad input refused without partial output."""

import json
import os

import keras
import pytest
from keras import layers

from tfprune import analysis
from tfprune.cli import prune_filters as cli
from tfprune.structured import latency, timing
from tests.helpers import install_fake_runtime


def run(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["tfprune-prune-filters", *map(str, args)])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    x = keras.Input((16, 16, 3))
    y = layers.Conv2D(32, 3, padding="same", name="c0")(x)
    y = layers.BatchNormalization(name="bn")(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(24, 3, padding="same", name="c1", activation="relu")(y)
    y = layers.GlobalAveragePooling2D()(y)
    model = keras.Model(x, layers.Dense(4, name="logits")(y))
    path = tmp_path_factory.mktemp("cli_budget") / "model.keras"
    model.save(path)
    return path


@pytest.fixture
def fake_runtime(monkeypatch):
    now = [0.0]

    def make_runner(runtime, model, x, threads=None, io=True):  # 1 ns per MAC and sample, 10 us per call
        macs = analysis.count_macs(model)
        return lambda: now.__setitem__(0, now[0] + 1e-9 * macs * x.shape[0] + 1e-5)

    install_fake_runtime(monkeypatch, make_runner)
    monkeypatch.setattr(latency, "DEFAULT_CLOCK", lambda: now[0])
    return now


@pytest.mark.parametrize("flag", ["--target_macs", "--target_params"])
def test_mac_and_parameter_budgets(model_path, tmp_path, capsys, flag):
    out = tmp_path / "out.keras"
    code, stdout, stderr = run(capsys, "--model", model_path, "--output", out, flag, "0.5", "--round_to", "8",
                               "--json")
    assert code == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    kind = flag.split("_")[1]
    assert report[f"{kind}_after"] <= 0.5 * report[f"{kind}_before"]
    assert report["budget"]["kind"] == kind and report["budget"]["target"] == 0.5
    assert keras.saving.load_model(out).get_layer("c0").filters % 8 == 0


def test_latency_budget_writes_and_reuses_the_table(model_path, tmp_path, capsys, fake_runtime):
    table = tmp_path / "latency.json"
    args = ["--model", model_path, "--target_latency", "0.5", "--runtime", "tflite", "--latency_table", table,
            "--round_to", "8", "--latency_repeats", "2"]
    code, stdout, stderr = run(capsys, *args, "--output", tmp_path / "a.keras")
    assert code == 0, stderr
    assert "Budget: latency <= 0.500" in stdout and "wrote" in stdout
    assert "measured" in stdout and "tolerance 5%" in stdout
    content = json.loads(table.read_text())
    (first,) = content["tables"].values()
    calibration = [p for m in first["models"].values() for p in m.get("calibration", [])]
    assert calibration  # the measured plans became calibration points of the table
    code, stdout, stderr = run(capsys, *args, "--output", tmp_path / "b.keras", "--json")
    assert code == 0, stderr
    budget = json.loads(stdout.strip().splitlines()[-1])["budget"]
    assert budget["measured_fraction"] <= 0.5 * 1.05 and budget["attempts"] >= 1
    (again,) = json.loads(table.read_text())["tables"].values()
    assert again["points"] == first["points"]  # every block came from the cache


def test_latency_check_predict_and_calibration(model_path, tmp_path, capsys, fake_runtime):
    table = tmp_path / "latency.json"
    code, stdout, stderr = run(capsys, "--model", model_path, "--target_latency", "0.6", "--latency_table", table,
                               "--round_to", "8", "--latency_repeats", "2", "--latency_check", "predict",
                               "--calibration_samples", "3", "--output", tmp_path / "a.keras", "--json")
    assert code == 0, stderr
    budget = json.loads(stdout.strip().splitlines()[-1])["budget"]
    assert "measured_fraction" not in budget and budget["predicted"] <= 0.6 * budget["original"] * (1 + 1e-9)
    (content,) = json.loads(table.read_text())["tables"].values()
    assert sum(len(m.get("calibration", [])) for m in content["models"].values()) == 3


def test_latency_min_seconds_lengthens_the_end_to_end_timings(model_path, tmp_path, capsys, fake_runtime,
                                                              monkeypatch):
    rounds = []
    real = timing.paired_median_ms

    def counting(runners, repeats, *args, **kwargs):
        before = len(rounds)
        counted = [lambda run=run: rounds.append(1) or run() for run in runners]
        result = real(counted, repeats, *args, **kwargs)
        if kwargs.get("min_seconds"):
            whole.append((len(rounds) - before) // len(runners))
        return result

    whole = []
    monkeypatch.setattr(timing, "paired_median_ms", counting)
    code, stdout, stderr = run(capsys, "--model", model_path, "--target_latency", "0.6", "--latency_table",
                               tmp_path / "t.json", "--round_to", "8", "--latency_repeats", "2",
                               "--latency_min_seconds", "0.01", "--output", tmp_path / "a.keras", "--json")
    assert code == 0, stderr
    # the whole-model timings (the original, then each plan against it) went on past 2 rounds until 0.01 s
    # of fake calls (about 1 ms each) had passed, below the cap of 50 x 2 rounds
    assert whole and min(whole) > 2 and max(whole) <= 100


def test_unreachable_budget_exits_nonzero_without_output(model_path, tmp_path, capsys):
    out = tmp_path / "o.keras"
    code, _, stderr = run(capsys, "--model", model_path, "--output", out, "--target_macs", "0.001",
                          "--round_to", "8")
    assert code == 1 and "smallest reachable" in stderr and "Fix" in stderr and "Traceback" not in stderr
    assert not out.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("args, needle", [
    (["--target_macs", "0.5", "--target_params", "0.5"], "pass one budget"),
    (["--target_macs", "1.5"], "--target_macs must be a fraction"),
    (["--target_latency", "0.5"], "needs --latency_table"),
    (["--target_latency", "0.5", "--latency_table", "/nonexistent/dir/t.json"], "does not exist"),
    (["--target_macs", "0.5", "--global_pruning"], "--global_pruning"),
    (["--target_latency", "0.5", "--latency_table", "t.json", "--runtime", "onnx"], "--runtime"),
    (["--target_latency", "0.5", "--latency_table", "t.json", "--latency_tolerance", "0"], "--latency_tolerance"),
    (["--target_latency", "0.5", "--latency_table", "t.json", "--latency_check", "guess"], "--latency_check"),
    (["--target_latency", "0.5", "--latency_table", "t.json", "--calibration_samples", "-1"],
     "--calibration_samples"),
    (["--target_latency", "0.5", "--latency_table", "t.json", "--latency_min_seconds", "-1"],
     "--latency_min_seconds must be a finite number"),
    (["--target_latency", "0.5", "--latency_table", "t.json", "--latency_min_seconds", "nan"],
     "--latency_min_seconds must be a finite number"),
])
def test_budget_usage_errors_exit_2(model_path, tmp_path, capsys, args, needle):
    code, _, stderr = run(capsys, "--model", model_path, "--output", tmp_path / "o.keras", *args)
    assert code == 2 and needle in stderr
    assert not (tmp_path / "o.keras").exists()


def test_corrupt_latency_table_is_an_error(model_path, tmp_path, capsys):
    table = tmp_path / "t.json"
    table.write_text("[1, 2")
    code, _, stderr = run(capsys, "--model", model_path, "--output", tmp_path / "o.keras", "--target_latency", "0.5",
                          "--latency_table", table)
    assert code == 1 and "not a valid latency table" in stderr
    assert not (tmp_path / "o.keras").exists()
