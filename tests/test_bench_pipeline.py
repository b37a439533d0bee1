"""tools/bench_pipeline.py at tiny settings: the rows, their sizes and sparsity, the markdown and the README block."""

import pytest

from tests.helpers import assert_published, bench_outputs, load_tool


@pytest.mark.slow
def test_smoke_run_writes_table_and_readme_block(tmp_path, capsys):
    bench = load_tool("bench_pipeline")
    markdown, readme = bench_outputs(tmp_path, "bench_pipeline")
    result = bench.main(["--seeds", "1", "--train", "256", "--eval", "128", "--epochs", "1", "--finetune_epochs", "1",
                         "--qat_epochs", "1", "--repeats", "2",
                         "--rows", "float,structured_int8,sparse80_pqat",
                         "--markdown", str(markdown), "--readme", str(readme)])
    rows = {r["name"]: r for r in result["summary"]}
    assert list(rows) == ["float", "structured_int8", "sparse80_pqat"]
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and row["b1_ms"] > 0 and row["b32_ms"] > 0
        assert row["zip_bytes"] <= row["raw_bytes"] * 1.01
    assert rows["structured_int8"]["macs"] < 0.5 * rows["float"]["macs"]
    assert rows["structured_int8"]["raw_bytes"] < 0.3 * rows["float"]["raw_bytes"]
    assert rows["sparse80_pqat"]["nonzero"] < 0.3 * rows["float"]["nonzero"]  # 80% of the kernels
    assert rows["sparse80_pqat"]["zip_bytes"] < 0.2 * rows["float"]["zip_bytes"]
    text = markdown.read_text()
    assert "| 80% unstructured + int8 PQAT |" in text and "Targets:" in text
    assert_published(readme, "bench_pipeline", result, capsys.readouterr().out)


def test_verdicts_on_hand_made_rows():
    bench = load_tool("bench_pipeline")
    summary = [dict(name="float", accuracy=0.980, zip_bytes=1200, b32_ms=3.0),
               dict(name="sparse80_pqat", accuracy=0.9770, zip_bytes=90, b32_ms=2.0),
               dict(name="structured_int8", accuracy=0.9650, zip_bytes=300, b32_ms=1.2)]
    lines = bench.verdicts(summary)
    assert lines[0].endswith("13.3x -> **met**") and lines[1].endswith("-0.30 points -> **met**")
    assert lines[2].endswith("2.50x -> **missed**") and lines[3].endswith("-1.50 points -> **missed**")
