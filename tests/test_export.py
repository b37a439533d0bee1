"""In-process tests of tfprune.export: discovery, stripping, formats, sizes, errors."""

import os

import keras
import numpy as np
import pytest

import tfprune
from tfprune import export
from tfprune.export import ExportFailure, ExportUsageError, TFCheckpointWriter, find_latest_checkpoint
from tests.helpers import classification_data, small_cnn


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small CNN pruned to 80% while training, checkpointed as .keras and as TF checkpoints."""
    keras.utils.set_random_seed(7)
    root = tmp_path_factory.mktemp("export")
    model = tfprune.prune_low_magnitude(
        small_cnn(), pruning_schedule=tfprune.ConstantSparsity(0.8, begin_step=0, frequency=1)
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = classification_data()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[
        tfprune.UpdatePruningStep(),
        keras.callbacks.ModelCheckpoint(str(root / "keras_ckpt" / "ckpt-{epoch:02d}.keras")),
        TFCheckpointWriter(str(root / "tf_ckpt")),
    ])
    return root, model, x


def _complete_archive(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:  # what discovery checks: a closed zip with config.json
        archive.writestr("config.json", "{}")


def test_discovery_picks_newest_keras(tmp_path):
    for i, name in enumerate(["ckpt-01.keras", "ckpt-03.keras", "ckpt-02.keras"]):
        _complete_archive(tmp_path / name)
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    choice = find_latest_checkpoint(str(tmp_path))
    assert os.path.basename(choice.path) == "ckpt-02.keras"
    assert "newest by modification time of 3" in choice.reason
    os.utime(tmp_path / "ckpt-03.keras", (1002, 1002))
    choice = find_latest_checkpoint(str(tmp_path))
    assert os.path.basename(choice.path) == "ckpt-03.keras" and "largest name wins" in choice.reason


def test_discovery_tf_checkpoint(trained):
    root, _, _ = trained
    choice = find_latest_checkpoint(str(root / "tf_ckpt"))
    assert choice.kind == "tf_checkpoint" and choice.path.endswith("ckpt-2")
    assert any(f.endswith("model.json") for f in choice.files) and choice.bytes > 0


def test_tf_checkpoint_restores_masks_and_thresholds_from_a_relative_directory(trained, monkeypatch):
    """Masks, thresholds and steps come back from a TensorFlow checkpoint exactly, and a directory given
    relative to the working directory is found (TensorFlow joins it to the index's paths itself)."""
    from tfprune.export.checkpoints import load_checkpoint

    root, model, _ = trained
    monkeypatch.chdir(root)
    choice = find_latest_checkpoint("tf_ckpt")
    assert choice.kind == "tf_checkpoint" and os.path.isfile(choice.path + ".index")
    restored = load_checkpoint(choice)
    names = [w.path for w in model.weights]
    assert any(n.endswith("_mask") for n in names) and any(n.endswith("_threshold") for n in names)
    for original, loaded in zip(model.weights, restored.weights):
        assert original.path.split("/")[-1] == loaded.path.split("/")[-1]
        np.testing.assert_array_equal(loaded.numpy(), original.numpy(), err_msg=original.path)
    assert any(row["threshold"] > 0 and row["sparsity"] > 0.7 for row in tfprune.sparsity_report(restored))


@pytest.mark.parametrize("case", ["missing", "empty", "no_checkpoint", "a_file", "tf_without_json"])
def test_discovery_errors(tmp_path, trained, case):
    target = tmp_path / "ckpts"
    if case != "missing":
        target.mkdir()
    if case == "no_checkpoint":
        (target / "notes.txt").write_text("hello")
    if case == "a_file":
        target = tmp_path / "file.keras"
        target.write_bytes(b"x")
    if case == "tf_without_json":
        root = trained[0] / "tf_ckpt"
        for name in os.listdir(root):
            if name != "model.json":
                (target / name).write_bytes((root / name).read_bytes())
    with pytest.raises(ExportUsageError, match="Fix:"):
        find_latest_checkpoint(str(target))


@pytest.mark.parametrize("filename,fmt,expected", [
    ("m.keras", None, ("keras", "m.keras")),
    ("m.tflite", None, ("tflite", "m.tflite")),
    ("m.tflite", "tflite_int8", ("tflite_dynamic_int8", "m.tflite")),
    ("served", None, ("saved_model", "served")),
    (None, None, ("keras", "stripped.keras")),
    (None, "tflite_int8", ("tflite_dynamic_int8", "stripped_int8.tflite")),
])
def test_resolve_format(filename, fmt, expected):
    assert export.resolve_format(filename, fmt) == expected


@pytest.mark.parametrize("filename,fmt", [("m.h5", None), ("m.keras", "onnx"), ("m.keras", "tflite"),
                                          ("sub/m.keras", None)])
def test_resolve_format_errors(filename, fmt):
    with pytest.raises(ExportUsageError, match="Fix:"):
        export.resolve_format(filename, fmt)


def test_strip_keras_exact_and_clean(trained, tmp_path):
    root, model, x = trained
    report = export.strip_checkpoint(str(root / "keras_ckpt"), output_dir=str(tmp_path), filename="m.keras")
    assert report["checkpoint"]["path"].endswith("ckpt-02.keras")
    assert report["verification"]["ok"] and report["verification"]["max_abs_diff"] == 0.0
    loaded = keras.saving.load_model(str(tmp_path / "m.keras"), compile=False)
    assert not tfprune.collect_wrappers(loaded) and not export.pruning_variables(loaded)
    assert all("mask" not in v.path and "pruning_step" not in v.path for v in loaded.weights)
    reloaded = keras.saving.load_model(report["checkpoint"]["path"], compile=False)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    rows = {(r["layer"], r["weight"]): r for r in report["weights"]}
    assert set(rows) == {("conv1", "kernel"), ("dense1", "kernel"), ("logits", "kernel")}
    dense = rows[("dense1", "kernel")]
    assert dense["shape"] == [150, 16] and dense["size"] == 2400 and dense["zeros"] == 1920
    assert np.count_nonzero(loaded.get_layer("dense1").kernel.numpy() == 0) == 1920
    assert report["totals"]["sparsity"] == pytest.approx(0.8, abs=0.01)
    out = report["output"]
    assert out["raw_bytes"] == os.path.getsize(tmp_path / "m.keras") and 0 < out["zip_bytes"] < out["raw_bytes"]
    assert report["compression_ratio"] == pytest.approx(out["raw_bytes"] / out["zip_bytes"])
    text = export.format_report(report)
    assert "dense1/kernel" in text and "80.0%" in text and "ckpt-02.keras" in text
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tfprune")] == []


def test_strip_tf_checkpoint_with_outputs_and_baseline(trained, tmp_path):
    root, model, x = trained
    baseline = str(root / "keras_ckpt" / "ckpt-01.keras")
    report = export.strip_checkpoint(str(root / "tf_ckpt"), output_dir=str(tmp_path), filename="feat.keras",
                                     output_node_names="dense1", baseline=baseline)
    loaded = keras.saving.load_model(str(tmp_path / "feat.keras"), compile=False)
    assert loaded.output.shape[-1] == 16
    feats = keras.Model(model.inputs, model.get_layer("prune_low_magnitude_dense1").output)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), feats.predict(x, verbose=0))
    base = report["baseline"]
    assert base["times_smaller"] == pytest.approx(base["zip_bytes"] / report["output"]["zip_bytes"])


@pytest.mark.parametrize("fmt", ["saved_model", "tflite"])
def test_strip_other_formats(trained, tmp_path, fmt):
    root, _, x = trained
    report = export.strip_checkpoint(str(root / "keras_ckpt"), output_dir=str(tmp_path), output_format=fmt)
    assert report["verification"]["ok"] and report["verification"]["max_abs_diff"] <= 1e-5
    path = report["output"]["path"]
    assert os.path.isdir(path) == (fmt == "saved_model")
    assert report["output"]["raw_bytes"] == export.raw_bytes(path)


def test_unknown_layer_in_output_node_names(trained, tmp_path):
    with pytest.raises(ExportUsageError, match="dense1"):
        export.strip_checkpoint(str(trained[0] / "keras_ckpt"), output_dir=str(tmp_path), output_node_names="nope")


def test_no_wrappers_warns(tmp_path):
    (tmp_path / "ck").mkdir()
    model = small_cnn()
    model.save(str(tmp_path / "ck" / "plain.keras"))
    report = export.strip_checkpoint(str(tmp_path / "ck"), output_dir=str(tmp_path / "out"))
    assert report["weights"] == [] and "no pruning wrappers" in report["warnings"][0]
    assert report["verification"]["ok"]


def test_corrupt_checkpoint_fails_cleanly(trained, tmp_path):
    (tmp_path / "ck").mkdir()
    data = (trained[0] / "keras_ckpt" / "ckpt-02.keras").read_bytes()
    (tmp_path / "ck" / "ckpt-03.keras").write_bytes(data[: len(data) // 2])
    # a truncated archive alone: a usage error naming it, nothing written
    with pytest.raises(ExportUsageError, match="ckpt-03.keras is temporary or incomplete"):
        export.strip_checkpoint(str(tmp_path / "ck"), output_dir=str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []
    # a complete archive whose content does not load: a failure, nothing written
    (tmp_path / "ck" / "ckpt-03.keras").unlink()
    _complete_archive(tmp_path / "ck" / "ckpt-04.keras")
    with pytest.raises(ExportFailure):
        export.strip_checkpoint(str(tmp_path / "ck"), output_dir=str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out") or os.listdir(tmp_path / "out") == []


def test_output_checks(trained, tmp_path):
    ck = str(trained[0] / "keras_ckpt")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportUsageError, match="output directory"):
        export.strip_checkpoint(ck, output_dir=str(blocker / "sub"))
    export.strip_checkpoint(ck, output_dir=str(tmp_path / "o"), filename="m.keras")
    before = (tmp_path / "o" / "m.keras").read_bytes()
    with pytest.raises(ExportUsageError, match="--overwrite"):
        export.strip_checkpoint(ck, output_dir=str(tmp_path / "o"), filename="m.keras")
    assert (tmp_path / "o" / "m.keras").read_bytes() == before
    export.strip_checkpoint(ck, output_dir=str(tmp_path / "o"), filename="m.keras", overwrite=True)
    with pytest.raises(ExportUsageError, match="baseline"):
        export.strip_checkpoint(ck, output_dir=str(tmp_path / "o"), baseline=str(tmp_path / "none.keras"))


def test_sizes(tmp_path):
    data = bytes(1000) + os.urandom(1000)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.bin").write_bytes(data)
    (tmp_path / "d" / "b.bin").write_bytes(data)
    sizes = export.measure(str(tmp_path / "d"))
    assert sizes["raw_bytes"] == 4000
    assert 2000 < sizes["zip_bytes"] < 4000  # each file compressed on its own
    assert 1000 < sizes["gzip_bytes"] < 2000  # one stream: the second copy is a back-reference
    assert export.zip_bytes(str(tmp_path / "d" / "a.bin")) < 2000
