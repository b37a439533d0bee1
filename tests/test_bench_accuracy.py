"""tools/bench_accuracy.py runs end to end in --quick mode and reports sensible numbers."""

import importlib.util
import json

import pytest
from tests.helpers import load_tool


pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tf_keras") is None or importlib.util.find_spec("tensorflow_model_optimization") is None,
    reason="needs tf_keras and tensorflow-model-optimization",
)


def _load_tool():
    return load_tool("bench_accuracy")


@pytest.mark.slow
def test_quick_run_reports_every_row(tmp_path, capsys):
    bench = _load_tool()
    markdown = tmp_path / "out" / "table.md"
    summary = bench.main(["--quick", "--markdown", str(markdown)])
    out = capsys.readouterr().out
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(summary))

    sparsities = summary["config"]["sparsities"]
    assert sparsities == [0.5, 0.75, 0.9, 0.95] and summary["config"]["seeds"] == [0]
    rows = summary["rows"]
    keys = [(r["target_sparsity"], r["library"]) for r in rows]
    assert sorted(keys) == sorted((s, lib) for s in [0.0] + sparsities for lib in ("tfprune", "tfmot"))
    for row in rows:
        assert 0.0 <= row["accuracy_min"] <= row["accuracy_mean"] <= row["accuracy_max"] <= 1.0
        assert len(row["accuracies"]) == 1
        assert abs(row["achieved_sparsity_min"] - row["target_sparsity"]) <= 0.02
        assert abs(row["achieved_sparsity_max"] - row["target_sparsity"]) <= 0.02
        assert row["zip_bytes"] > 0 and row["train_s"] > 0
    # The zipped stripped model shrinks as sparsity grows, for both libraries.
    for lib in ("tfprune", "tfmot"):
        sizes = [r["zip_bytes"] for r in rows if r["library"] == lib]
        assert sizes == sorted(sizes, reverse=True)
    assert all(0.0 <= a <= 1.0 for a in summary["dense_accuracy"])
    assert set(summary["targets"]["tfprune_vs_tfmot"]) == {str(s) for s in sparsities}

    text = markdown.read_text()
    assert text.splitlines()[0].startswith("MNIST CNN")
    assert text.count("| tfprune (Keras 3) |") == 5 and text.count("| tfmot 0.8.1 (tf_keras) |") == 5
    assert "| target sparsity |" in out and not list(markdown.parent.glob(".bench_accuracy.*"))


def test_worker_argv_drops_markdown():
    bench = _load_tool()
    assert bench.worker_argv(["--quick", "--markdown", "a.md", "--seeds", "1"]) == ["--quick", "--seeds", "1"]
    assert bench.worker_argv(["--markdown=a.md", "--lr", "1e-4"]) == ["--lr", "1e-4"]
