"""tfprune-summary: per-layer sparsity from saved models and TensorBoard log directories."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tests.helpers import classification_data, small_cnn
from tfprune.cli import summary as summary_cli
from tfprune.summary import SummaryFailure, SummaryUsageError, format_summary, summarize


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    """A small CNN pruned to 60% over a few real training steps, saved wrapped and stripped, with its logs."""
    keras.utils.set_random_seed(7)
    root = tmp_path_factory.mktemp("summary")
    x, y = classification_data()
    pruned = tfprune.prune_low_magnitude(
        small_cnn(), pruning_schedule=tfprune.PolynomialDecay(0.0, 0.6, begin_step=0, end_step=6, frequency=2)
    )
    pruned.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    log_dir = root / "logs" / "poly60"
    pruned.fit(x, y, batch_size=16, epochs=2, verbose=0,
               callbacks=[tfprune.UpdatePruningStep(), tfprune.PruningSummaries(str(log_dir), update_freq=4)])
    wrapped_path = root / "wrapped.keras"
    pruned.save(wrapped_path)
    stripped_path = root / "stripped.keras"
    tfprune.strip_pruning(pruned).save(stripped_path)
    dense_path = root / "dense.keras"
    small_cnn().save(dense_path)
    return {"root": root, "rows": tfprune.sparsity_report(pruned), "log_dir": log_dir, "wrapped": wrapped_path,
            "stripped": stripped_path, "dense": dense_path}


def _by_name(rows):
    return {f"{r['layer']}/{r['weight']}": r for r in rows}


def _run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        summary_cli.run(["tfprune-summary", *argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_wrapped_model_matches_sparsity_report(pruned_run):
    expected = pruned_run["rows"]
    assert expected and all(0.5 < r["sparsity"] <= 0.6 for r in expected)
    summary = summarize(str(pruned_run["wrapped"]))
    assert summary["kind"] == "wrapped_model"
    assert summary["rows"] == expected  # loaded masks and thresholds: identical numbers
    assert summary["totals"]["zeros"] == sum(r["zeros"] for r in expected)


def test_stripped_model_counts_zeros_of_prunable_weights(pruned_run):
    summary = summarize(str(pruned_run["stripped"]))
    assert summary["kind"] == "model"
    got, expected = _by_name(summary["rows"]), _by_name(pruned_run["rows"])
    assert sorted(got) == sorted(expected) == ["conv1/kernel", "dense1/kernel", "logits/kernel"]  # no BN
    for name, row in expected.items():
        assert got[name]["zeros"] == row["zeros"]
        assert got[name]["size"] == row["size"]
        assert got[name]["shape"] == row["shape"]
        assert got[name]["sparsity"] == pytest.approx(row["sparsity"])


def test_plain_dense_model_has_no_zeros(pruned_run):
    summary = summarize(str(pruned_run["dense"]))
    assert summary["kind"] == "model"
    assert [r["zeros"] for r in summary["rows"]] == [0, 0, 0]
    assert summary["totals"]["sparsity"] == 0.0


def test_logdir_last_values_match_sparsity_report(pruned_run):
    for path in (pruned_run["log_dir"], pruned_run["log_dir"].parent):  # the run itself, or its parent
        summary = summarize(str(path))
        assert summary["kind"] == "logdir"
        assert len(summary["runs"]) == 1
        run = summary["runs"][0]
        assert run["run"] == ("." if path == pruned_run["log_dir"] else "poly60")
        got = _by_name(run["rows"])
        expected = _by_name(pruned_run["rows"])
        assert sorted(got) == sorted(expected)
        for name, row in expected.items():
            assert got[name]["sparsity"] == pytest.approx(row["sparsity"], abs=1e-6)
            assert got[name]["threshold"] == pytest.approx(row["threshold"], rel=1e-6)
            assert got[name]["target_sparsity"] == pytest.approx(0.6, abs=1e-6)
            assert got[name]["step"] == row["step"] == 8
        total = sum(r["size"] for r in pruned_run["rows"])
        zeros = sum(r["zeros"] for r in pruned_run["rows"])
        assert run["model"]["sparsity"] == pytest.approx(zeros / total, abs=1e-6)
        assert run["step"] == 8


def test_logdir_with_several_runs_and_newest_value_wins(tmp_path):
    for run, values in (("a", [(1, 0.1), (5, 0.5), (3, 0.3)]), ("b", [(2, 0.2)])):
        writer = tf.summary.create_file_writer(str(tmp_path / run))
        with writer.as_default():
            for step, value in values:
                tf.summary.scalar("dense/kernel/sparsity", value, step=step)
                tf.summary.scalar("model/sparsity", value, step=step)
        writer.flush()
    summary = summarize(str(tmp_path))
    assert [r["run"] for r in summary["runs"]] == ["a", "b"]
    assert summary["runs"][0]["rows"][0]["sparsity"] == pytest.approx(0.5)
    assert summary["runs"][0]["step"] == 5
    assert summary["runs"][1]["model"]["sparsity"] == pytest.approx(0.2)
    text = format_summary(summary)
    assert "50.0%" in text and "20.0%" in text


def test_cli_text_and_json(pruned_run, capsys):
    code, out, err = _run_cli([str(pruned_run["wrapped"])], capsys)
    assert code == 0, err
    assert out.strip() == format_summary(summarize(str(pruned_run["wrapped"])))
    assert tfprune.format_sparsity_table(pruned_run["rows"]) in out

    code, out, err = _run_cli([str(pruned_run["log_dir"]), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    got = _by_name(data["runs"][0]["rows"])
    for name, row in _by_name(pruned_run["rows"]).items():
        assert got[name]["sparsity"] == pytest.approx(row["sparsity"], abs=1e-6)
        # The text table prints the same numbers.
    code, out, _ = _run_cli([str(pruned_run["log_dir"])], capsys)
    for row in pruned_run["rows"]:
        assert f"{row['sparsity']:.1%}" in out


def test_cli_as_module_subprocess(pruned_run):
    result = subprocess.run(
        [sys.executable, "-m", "tfprune.cli.summary", str(pruned_run["stripped"]), "--json"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout.strip().splitlines()[-1])
    got = _by_name(data["rows"])
    for name, row in _by_name(pruned_run["rows"]).items():
        assert got[name]["zeros"] == row["zeros"]


def _corrupt_copy(src, dst_dir):
    dst_dir.mkdir()
    data = open(src, "rb").read()
    target = dst_dir / os.path.basename(src)
    target.write_bytes(data[:60] + b"\x00garbage" * 20)
    return target


@pytest.mark.parametrize(
    "case,code,needle",
    [
        ("missing", 2, "does not exist"),
        ("not_keras", 2, "is not a .keras model"),
        ("corrupt_keras", 1, "not a .keras archive"),
        ("empty_dir", 2, "no TensorBoard event files"),
        ("corrupt_events", 1, "cannot read event file"),
        ("no_pruning_tags", 2, "no pruning summaries"),
        ("no_path", 2, "expected one MODEL_OR_LOGDIR"),
        ("two_paths", 2, "expected one MODEL_OR_LOGDIR"),
        ("bad_flag", 2, "Fix: see --help"),
    ],
)
def test_cli_errors_are_one_line(pruned_run, tmp_path, capsys, case, code, needle):
    if case == "missing":
        argv = [str(tmp_path / "nope.keras")]
    elif case == "not_keras":
        path = tmp_path / "model.txt"
        path.write_text("hello")
        argv = [str(path)]
    elif case == "corrupt_keras":
        path = tmp_path / "broken.keras"
        path.write_bytes(open(pruned_run["wrapped"], "rb").read()[:300])
        argv = [str(path)]
    elif case == "empty_dir":
        (tmp_path / "logs").mkdir()
        argv = [str(tmp_path / "logs")]
    elif case == "corrupt_events":
        (event_file,) = [f for f in os.listdir(pruned_run["log_dir"]) if f.startswith("events.out.tfevents")]
        _corrupt_copy(str(pruned_run["log_dir"] / event_file), tmp_path / "bad")
        argv = [str(tmp_path / "bad")]
    elif case == "no_pruning_tags":
        writer = tf.summary.create_file_writer(str(tmp_path / "loss"))
        with writer.as_default():
            tf.summary.scalar("epoch_loss", 1.0, step=1)
        writer.flush()
        argv = [str(tmp_path / "loss")]
    elif case == "no_path":
        argv = []
    elif case == "two_paths":
        argv = [str(pruned_run["wrapped"]), str(pruned_run["stripped"])]
    else:
        argv = [str(pruned_run["wrapped"]), "--colour"]
    exit_code, out, err = _run_cli(argv, capsys)
    assert exit_code == code
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfprune-summary: error:"), err
    assert needle in lines[0]
    assert "Traceback" not in err


def test_library_errors_have_types(tmp_path):
    with pytest.raises(SummaryUsageError, match="does not exist"):
        summarize(str(tmp_path / "missing"))
    bad = tmp_path / "x.keras"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(SummaryFailure, match="Fix:"):
        summarize(str(bad))
    assert np.isclose(SummaryUsageError.exit_code, 2) and SummaryFailure.exit_code == 1
