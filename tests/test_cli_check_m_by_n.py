"""tfprune-check-m-by-n on real TFLite files: float, int8, sparse-encoded; exit codes and one-line errors."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import masks
from tfprune.cli import check_m_by_n as cli
from tfprune.tflite_m_by_n import m_by_n_violations_along, parse_m_by_n, tflite_m_by_n_report

L = keras.layers


def _model():
    inputs = keras.Input((6, 6, 8))
    x = L.Conv2D(8, 3, name="conv")(inputs)
    x = L.Flatten()(x)
    x = L.Dense(32, name="fc1")(x)
    return keras.Model(inputs, L.Dense(8, name="fc2")(x))


def _convert(model, optimizations=()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = list(optimizations)
        return converter.convert()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    keras.utils.set_random_seed(5)
    root = tmp_path_factory.mktemp("m_by_n_tflite")
    dense = _model()
    pruned = tfprune.prune_low_magnitude(dense, sparsity_m_by_n=(2, 4))
    pruned.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 8)).astype("float32")
    pruned.fit(x, np.zeros((8, 8), "float32"), epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip_pruning(pruned)
    out = {"kernels": {name: stripped.get_layer(name).kernel.numpy() for name in ("conv", "fc1", "fc2")},
           "dense_kernels": {name: dense.get_layer(name).kernel.numpy() for name in ("conv", "fc1", "fc2")}}
    for key, model, opts in [
        ("float", stripped, ()),
        ("int8", stripped, (tf.lite.Optimize.DEFAULT,)),
        ("sparse", stripped, (tf.lite.Optimize.EXPERIMENTAL_SPARSITY,)),
        ("dense", dense, ()),
    ]:
        path = root / f"{key}.tflite"
        path.write_bytes(_convert(model, opts))
        out[key] = str(path)
    (root / "corrupt.tflite").write_bytes(b"not a flatbuffer" * 8)
    out["corrupt"] = str(root / "corrupt.tflite")
    return out


def _main(*args):
    """Runs the command in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
        cli.run(["tfprune-check-m-by-n", *map(str, args)])
    return exit_.value.code, stdout.getvalue(), stderr.getvalue()


def _expected_violations(kernel, m, n):
    """Independent count on the Keras kernel: groups along its input-channel axis."""
    return int(masks.m_by_n_violations(kernel, m, n))


@pytest.mark.parametrize("key", ["float", "int8", "sparse"])
def test_pruned_model_passes(files, key):
    code, out, err = _main(f"--model_tflite={files[key]}", "--m_by_n=2,4")
    assert code == 0, out + err
    rows = out.strip().splitlines()
    assert len(rows) == 4 and rows[-1] == "all 3 kernel tensors follow 2:4 sparsity"
    assert all(r.startswith("ok ") for r in rows[:3])
    report = tflite_m_by_n_report(files[key], 2, 4)
    assert sorted(r["op"] for r in report) == ["CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    if key == "sparse":
        assert any(r["sparse_encoded"] for r in report)
    if key == "int8":
        assert any(r["dtype"] == "int8" for r in report)
    # 2:4 is also 1:4 compliant, but not 3:4.
    assert _main(f"--model_tflite={files[key]}", "--m_by_n=1,4")[0] == 0
    assert _main(f"--model_tflite={files[key]}", "--m_by_n=3,4")[0] == 1


def test_dense_model_fails_with_per_tensor_counts(files):
    code, out, err = _main(f"--model_tflite={files['dense']}", "--m_by_n=2,4", "--json")
    assert code == 1 and not err
    result = json.loads(out)
    assert not result["ok"] and result["m_by_n"] == [2, 4]
    # TFLite kernels [out, ..., in] checked along `in` agree with the Keras kernels along their input axis.
    by_shape = {tuple(r["shape"]): r for r in result["tensors"]}
    for name, kernel in files["dense_kernels"].items():
        tflite_shape = tuple(np.moveaxis(kernel, -1, 0).shape)
        row = by_shape[tflite_shape]
        assert row["violations"] == _expected_violations(kernel, 2, 4) > 0, name
        assert not row["ok"]
    lines = _main(f"--model_tflite={files['dense']}", "--m_by_n=2,4")[1].strip().splitlines()
    assert lines[-1] == "3 of 3 kernel tensors violate 2:4 sparsity" and all(x.startswith("FAIL") for x in lines[:3])


def test_tflite_counts_match_keras_kernels(files):
    report = tflite_m_by_n_report(files["float"], 1, 2)
    for name, kernel in files["kernels"].items():
        row = next(r for r in report if tuple(r["shape"]) == tuple(np.moveaxis(kernel, -1, 0).shape))
        assert row["violations"] == _expected_violations(kernel, 1, 2), name


@pytest.mark.parametrize("args,needle", [
    ([], "--model_tflite is required"),
    (["--model_tflite={float}", "--m_by_n=4,2"], "0 < M < N"),
    (["--model_tflite={float}", "--m_by_n=a,b"], "two integers"),
    (["--model_tflite={float}", "--m_by_n=2,4,8"], "two integers"),
    (["--model_tflite={float}", "--m_by_n=2.5,4"], "two integers"),
    (["--model_tflite=/no/such.tflite"], "is not a file"),
    (["--model_tflite={float}", "--bogus=1"], "bogus"),
])
def test_usage_errors_exit_2_with_one_line(files, args, needle):
    code, out, err = _main(*[a.format(**files) for a in args])
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err
    assert err.startswith("tfprune-check-m-by-n: error:")


def test_unreadable_file_exits_1(files):
    code, out, err = _main(f"--model_tflite={files['corrupt']}")
    assert code == 1 and not out
    assert len(err.strip().splitlines()) == 1 and "cannot read" in err


def test_helpers():
    assert parse_m_by_n("2,4") == (2, 4) and parse_m_by_n(" 1 , 8 ") == (1, 8)
    for bad in ("0,4", "4,4", "-1,4", "", "2"):
        with pytest.raises(ValueError, match="m_by_n"):
            parse_m_by_n(bad)
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 3, 10)) * (rng.random((5, 3, 10)) > 0.5)
    for m, n in [(1, 4), (2, 4), (3, 4), (2, 8)]:
        # numpy count on the last axis equals tfprune.masks on the moved axis (partial last groups too).
        violations, groups = m_by_n_violations_along(w, m, n, axis=-1)
        assert violations == int(masks.m_by_n_violations(w.astype("float32"), m, n, axis=-1))
        assert groups == 5 * 3 * -(-10 // n)
