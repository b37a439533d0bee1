"""tools/bench_oneshot.py runs end to end (quick mode) and writes its README block."""

import json

import pytest
from tests.helpers import load_tool


@pytest.mark.slow
def test_quick_run_fills_every_row_and_the_readme_block(tmp_path, capsys):
    tool = load_tool("bench_oneshot")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench_oneshot:begin -->\nold\n<!-- bench_oneshot:end -->\nrest\n")
    markdown = tmp_path / "table.md"
    summary = tool.main(["--quick", "--markdown", str(markdown), "--readme", str(readme)])
    rows = summary["lm"]["rows"]
    assert rows[0]["method"] == "dense" and len(rows) == 1 + 2 * 4  # quick: 50% and 2:4
    for row in rows[1:]:
        assert row["perplexity"] > 1 and row["layers"] == 6 and row["seconds"] > 0 and row["forward_passes"] > 0
        assert (row["peak_mib"] is not None) == (row["method"] == "SparseGPT")
        assert (row["mean_relative_error"] is not None) == (row["method"] == "SparseGPT")
    mnist = summary["mnist"]
    assert len(mnist) == 1 + 2 * 3 and all(0.0 <= r["accuracy"] <= 1.0 for r in mnist)  # quick: the MLP
    assert {r["layers"] for r in mnist[1:]} == {3}
    assert "SparseGPT at or below Wanda at 60%" not in summary["targets"]  # not run in quick mode
    assert set(summary["targets"]) and all(isinstance(v, bool) for v in summary["targets"].values())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    text = readme.read_text()
    assert "old" not in text and "| 2:4 | SparseGPT |" in text and text.endswith("rest\n")
    assert markdown.read_text().strip() in text
