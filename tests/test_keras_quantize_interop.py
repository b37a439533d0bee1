"""A pruned, stripped model through Keras 3's own `model.quantize("int8" | "int4")`: the size report and
`tfprune-summary` read the quantized layers' sparsity (zeros of the dequantized weights) and bytes."""

import json

import keras
import numpy as np
import pytest

import tfprune
from tfprune.cli import summary as summary_cli

L = keras.layers


def pruned_stripped():
    tokens = keras.Input((6,), dtype="int32")
    x = L.Embedding(64, 32, name="emb")(tokens)
    x = L.Dense(48, name="dense")(x)
    x = L.EinsumDense("abc,cd->abd", output_shape=(None, 16), name="einsum")(x)
    model = keras.Model(tokens, x)
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.7, 0, frequency=1))
    rng = np.random.default_rng(0)
    pruned.compile("adam", "mse")
    pruned.fit(rng.integers(0, 64, (32, 6)), rng.normal(size=(32, 6, 16)), epochs=1, verbose=0,
               callbacks=[tfprune.UpdatePruningStep()])
    return tfprune.strip_pruning(pruned)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_keras_quantized_layers_report_their_zeros_and_bytes(mode, tmp_path):
    model = pruned_stripped()
    before = {(r["layer"], r["weight"]): r for r in tfprune.sparsity.weight_rows(model)}
    floats = {name: keras.ops.convert_to_numpy(getattr(model.get_layer(name), label)).copy()
              for name, label in before}
    model.quantize(mode)
    rows = {(r["layer"], r["weight"]): r for r in tfprune.sparsity.weight_rows(model)}
    assert set(rows) == set(before) == {("emb", "embeddings"), ("dense", "kernel"), ("einsum", "kernel")}
    for key, row in rows.items():
        old = before[key]
        assert row["quantization"] == mode and row["shape"] == old["shape"]
        # Pruned zeros stay zero; a kept weight may also round to 0 (a few).
        assert old["zeros"] <= row["zeros"] <= old["zeros"] + 0.05 * old["size"], (key, old["zeros"], row["zeros"])
        layer = model.get_layer(key[0])
        stored = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in layer.weights
                     if "bias" not in v.path)
        assert row["bytes"] == stored
        assert row["bytes"] < old["bytes"] / (3.0 if mode == "int8" else 4.0)  # int4: g_idx is stored as float32
    if mode == "int8":  # the zeros are where pruning put them
        for name, label in rows:
            layer = model.get_layer(name)
            codes = keras.ops.convert_to_numpy(getattr(layer, label))
            assert np.all(codes[floats[name] == 0] == 0)
    # tfprune-summary reads the saved quantized model.
    path = str(tmp_path / f"{mode}.keras")
    model.save(path)
    with pytest.raises(SystemExit) as done:
        summary_cli.run(["tfprune-summary", path, "--json"])
    assert done.value.code == 0


def test_summary_cli_prints_quantized_rows(tmp_path, capsys):
    model = pruned_stripped()
    model.quantize("int8")
    path = str(tmp_path / "q.keras")
    model.save(path)
    for args in (["--json"], []):
        with pytest.raises(SystemExit) as done:
            summary_cli.run(["tfprune-summary", path] + args)
        assert done.value.code == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[0])
    assert {r["quantization"] for r in report["rows"]} == {"int8"}
    assert report["totals"]["bytes"] == sum(r["bytes"] for r in report["rows"])
    assert report["totals"]["sparsity"] > 0.6
    assert any("int8" in line and "dense/kernel" in line for line in out[1:])
