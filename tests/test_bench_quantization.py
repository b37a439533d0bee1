"""tools/bench_quantization.py at tiny settings: every row, TFLite accuracy, the markdown and the README block."""

import numpy as np
import pytest

from tests.helpers import assert_published, bench_outputs, load_tool


@pytest.mark.slow
def test_smoke_run_writes_table_and_readme_block(tmp_path, capsys):
    bench = load_tool("bench_quantization")
    markdown, readme = bench_outputs(tmp_path, "bench_quantization")
    result = bench.main(["--seeds", "1", "--train", "256", "--eval", "128", "--epochs", "1", "--qat_epochs", "1",
                         "--repeats", "2", "--latency_models", "resnet8", "--no_tfmot",
                         "--markdown", str(markdown), "--readme", str(readme)])
    names = [r["name"] for r in result["summary"]]
    assert names == ["float", "TFLite converter PTQ", "tfprune PTQ (minmax)", "tfprune PTQ (percentile)",
                     "tfprune PTQ (entropy)", "tfprune PTQ (mse)", "tfprune QAT"]
    for row in result["summary"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["zip_bytes"] <= row["raw_bytes"] * 1.01
        assert row["b1_ms"] > 0 and row["b32_ms"] > 0
    sizes = {r["name"]: r["raw_bytes"] for r in result["summary"]}
    assert sizes["tfprune QAT"] < 0.4 * sizes["float"]  # int8 weights
    assert result["summary"][-1]["epoch_ratio"] > 0
    assert result["latency"][0]["model"] == "resnet8 32x32"
    text = markdown.read_text()
    assert "| tfprune QAT |" in text and "full-integer b1 ms" in text
    assert_published(readme, "bench_quantization", result, capsys.readouterr().out)


def test_accuracy_of_an_int8_model_counts_its_dequantized_argmax():
    bench = load_tool("bench_quantization")
    import keras
    import tensorflow as tf

    import tfprune.quantization as tfq

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    data = tfq.to_tflite(tfq.quantize_post_training(model, x, verbose=0), inference_input_type=tf.int8)
    labels = model.predict(x, verbose=0).argmax(1)
    assert bench.tflite_accuracy(data, x, labels) >= 0.9
    assert bench.tflite_accuracy(data, x, (labels + 1) % 3) <= 0.1


def test_verdicts_on_hand_made_rows():
    bench = load_tool("bench_quantization")
    summary = [dict(name="float", accuracy=0.980, spread=0.004),
               dict(name="TFLite converter PTQ", accuracy=0.978, spread=0.004),
               dict(name="tfprune PTQ (minmax)", accuracy=0.979, spread=0.004),
               dict(name="tfprune QAT", accuracy=0.9775, spread=0.002, epoch_ratio=1.6),
               dict(name="tfmot QAT (tf_keras)", accuracy=0.9790, spread=0.003, epoch_ratio=1.3)]
    latency = [dict(model="m", float_b1_ms=3.0, int8_b1_ms=2.5, speedup=1.2)]
    lines = bench.verdicts(summary, latency)
    text = "\n".join(lines)
    assert "within 0.2 points of float: -0.25 points -> **missed**" in text
    assert "at least tfmot's QAT (within the seeds' spread): -0.15 points (spread 0.30) -> **met**" in text
    assert "tfprune PTQ (minmax): +0.10 points -> **met**" in text
    assert "faster than float, m: 1.20x -> **missed**" in text
    assert "at most 1.5x float: 1.60x -> **missed**" in text
    assert "1.60x vs 1.30x -> **missed**" in text
