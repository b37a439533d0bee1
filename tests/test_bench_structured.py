"""tools/bench_structured.py on a tiny model: runners agree with Keras, the report and markdown are written."""

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


def test_runners_compute_the_model(bench):
    model = randomize_statistics(resnet_cifar(8))
    deployed = bench.deploy(model, fold_bn=True)
    x = bench.example_batch(model, 3)
    expected = np.asarray(model(x, training=False))
    for run in (bench.tf_runner(deployed, x), bench.tflite_runner(deployed, x)):
        np.testing.assert_allclose(run(), expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    assert bench.deploy(model, fold_bn=False) is model
    ms = bench.paired_median_ms([bench.tf_runner(model, x), bench.tf_runner(fold_batchnorm(model), x)], repeats=2)
    assert len(ms) == 2 and all(v > 0 for v in ms)


def test_main_on_a_tiny_model(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(bench.MODELS, "tiny", ("ResNet-8 32x32", lambda: resnet_cifar(8)))
    path = tmp_path / "out" / "bench.md"
    result = bench.main(["--models", "tiny", "--ratios", "0.5", "--repeats", "2", "--no-tflite",
                         "--skip_resnet50", "--markdown", str(path)])
    row = result["rows"][0]
    assert row["fold_bn"] is True and row["macs_after"] < row["macs_before"]
    assert row["fold_max_abs_error"] < 1e-3
    assert {"ms_b1_before", "ms_b32_after", "speedup_b1_over_mac_reduction"} <= set(row)
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["rows"][0]["model"] == "ResNet-8 32x32"
    text = path.read_text()
    assert text.count("| ResNet-8 32x32 |") == 1 and "folded: yes" in text
    assert os.listdir(path.parent) == ["bench.md"]  # no temporary file left behind
    log = tmp_path / "run.log"
    log.write_text("\n".join(out) + "\n")
    again = tmp_path / "again.md"
    bench.main(["--from_log", str(log), "--markdown", str(again)])  # re-rendered without timing
    assert again.read_text() == text
    assert "--ratios 0.5 --models tiny --repeats 2 --no-tflite --skip_resnet50" in text
