"""tools/bench_structured_accuracy.py runs end to end (quick mode) and writes its README block."""

import json

import pytest
from tests.helpers import load_tool



def _load_tool():
    return load_tool("bench_structured_accuracy")


@pytest.mark.slow
def test_quick_run_fills_every_row_and_the_readme_block(tmp_path, capsys):
    tool = _load_tool()
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench_structured_accuracy:begin -->\nold\n<!-- bench_structured_accuracy:end -->\nrest\n")
    markdown = tmp_path / "table.md"
    summary = tool.main(["--quick", "--markdown", str(markdown), "--readme", str(readme)])
    methods = [row["method"] for row in summary["rows"]]
    assert methods[0] == "dense" and len(methods) == 9
    dense = summary["rows"][0]
    for row in summary["rows"][1:]:
        if row["method"].startswith("regular"):  # round_to=8 keeps 16/24/32/40/56 of 24/40/56/72/100
            assert 0.4 <= row["channels_removed"] < 0.47, row
        else:
            assert 0.45 <= row["channels_removed"] <= 0.55, row
        assert row["params"] < dense["params"] and row["macs"] < dense["macs"]
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["ms_b1"] > 0 and row["ms_b32"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    text = readme.read_text()
    assert "old" not in text and "| L1 + distillation |" in text and text.endswith("rest\n")
    assert markdown.read_text().strip() in text


def test_readme_block_requires_markers(tmp_path):
    replace_block = load_tool("readme_block").replace_block

    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="marker"):
        replace_block(str(readme), "bench_x", "table")
    assert readme.read_text() == "no markers here\n"
