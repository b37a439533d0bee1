"""tfprune-prune-filters run as a subprocess: outputs, exit codes, one-line errors."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import layers

import tfprune  # noqa: F401  (registers the tfprune layers that pruned models may contain)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "tfprune.cli.prune_filters", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def error_line(stderr):
    lines = [l for l in stderr.splitlines() if l.startswith("tfprune-prune-filters: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    x = keras.Input((16, 16, 3))
    y = layers.Conv2D(32, 3, padding="same", name="c0")(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(24, 3, padding="same", name="c1")(y)
    y = layers.GlobalAveragePooling2D()(y)
    model = keras.Model(x, layers.Dense(4, name="logits")(y))
    path = tmp_path_factory.mktemp("cli") / "model.keras"
    model.save(path)
    return path


def test_prunes_and_writes_a_loadable_model(model_path, tmp_path):
    out = tmp_path / "out.keras"
    code, stdout, stderr = run_cli("--model", model_path, "--output", out, "--pruning_ratio", "0.5",
                                   "--importance", "fpgm", "--round_to", "8")
    assert code == 0, stderr
    assert "params" in stdout and "c0" in stdout and "after" in stdout
    pruned = keras.saving.load_model(out)
    assert pruned.get_layer("c0").filters == 16 and pruned.get_layer("c1").filters == 16
    assert pruned(np.zeros((1, 16, 16, 3), "float32")).shape == (1, 4)
    assert sorted(os.listdir(tmp_path)) == ["out.keras"]  # no temporary file left behind


def test_json_output_and_overwrite(model_path, tmp_path):
    out = tmp_path / "out.keras"
    out.write_bytes(b"old")
    code, _, stderr = run_cli("--model", model_path, "--output", out)
    assert code == 2 and "--overwrite" in error_line(stderr)
    assert out.read_bytes() == b"old"
    code, stdout, stderr = run_cli("--model", model_path, "--output", out, "--overwrite", "--json",
                                   "--global_pruning", "--ignored_layers", "c0")
    assert code == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["params_after"] < report["params_before"]
    channels = {e["name"]: e["channels_after"] for e in report["layers"]}
    assert channels["c0"] == 32 and channels["c1"] < 24


def test_layer_norm_modes(tmp_path):
    x = keras.Input((6, 8))
    y = layers.Dense(16, name="proj")(x)
    y = layers.LayerNormalization(name="ln")(y)
    model = keras.Model(x, layers.Dense(4, name="head")(y))
    path = tmp_path / "ln.keras"
    model.save(path)
    kinds = {}
    for mode in ("exact", "approximate", "keep"):
        out = tmp_path / f"{mode}.keras"
        code, _, stderr = run_cli("--model", path, "--output", out, "--layer_norm", mode)
        assert code == 0, stderr
        ln = keras.saving.load_model(out).get_layer("ln")  # tfprune is imported by this test module
        kinds[mode] = (type(ln).__name__, ln.gamma.shape[0])
    assert kinds == {"exact": ("PrunedLayerNormalization", 8), "approximate": ("LayerNormalization", 8),
                     "keep": ("LayerNormalization", 16)}


@pytest.mark.parametrize("args, needle", [
    ([], "--model is required"),
    (["--model", "/nonexistent/m.keras", "--output", "{tmp}/o.keras"], "does not exist"),
    (["--model", "{model}", "--output", "{tmp}/o.keras", "--pruning_ratio", "1.5"], "--pruning_ratio must be"),
    (["--model", "{model}", "--output", "{tmp}/o.keras", "--pruning_ratio", "half"], "--pruning_ratio"),
    (["--model", "{model}", "--output", "{tmp}/o.keras", "--importance", "magic"], "unknown --importance"),
    (["--model", "{model}", "--output", "{tmp}/o.keras", "--round_to", "0"], "--round_to"),
    (["--model", "{model}", "--output", "{tmp}/missing_dir/o.keras"], "output directory"),
    (["--model", "{model}", "--output", "{tmp}/o.h5"], "must end with .keras"),
    (["--model", "{model}", "--output", "{tmp}/o.keras", "--no_such_flag"], "no_such_flag"),
    (["--model", "{model}", "--output", "{tmp}/o.keras", "--layer_norm", "drop"], "--layer_norm"),
])
def test_usage_errors_exit_2(model_path, tmp_path, args, needle):
    args = [a.format(tmp=tmp_path, model=model_path) for a in args]
    code, stdout, stderr = run_cli(*args)
    assert code == 2
    line = error_line(stderr)
    assert needle in line and "Fix" in line
    assert not os.path.exists(tmp_path / "o.keras")


def test_corrupt_model_and_failed_pruning_exit_1(model_path, tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a zip archive")
    code, _, stderr = run_cli("--model", bad, "--output", tmp_path / "o.keras")
    assert code == 1 and "could not load" in error_line(stderr)
    code, _, stderr = run_cli("--model", model_path, "--output", tmp_path / "o.keras", "--ignored_layers", "nope")
    assert code == 1 and "ignored_layers" in error_line(stderr)
    assert sorted(os.listdir(tmp_path)) == ["bad.keras"]



CRITERION = """
import numpy as np
from tfprune.structured import Importance


class HighIndexFirst(Importance):
    \"\"\"Scores output channel c of every producer as c: the lowest indices are removed.\"\"\"

    def layer_scores(self, rec):
        if not self.is_producer(rec):
            return []
        labels = rec.slots["out"]
        return [(labels, np.arange(len(labels), dtype=np.float64))]
"""


def test_user_criterion_from_module_colon_class(model_path, tmp_path):
    (tmp_path / "my_criteria.py").write_text(CRITERION)
    out = tmp_path / "user.keras"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "tfprune.cli.prune_filters", "--model", str(model_path),
                           "--output", str(out), "--importance", "my_criteria:HighIndexFirst", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    c0 = next(layer for layer in report["layers"] if layer["name"] == "c0")
    assert c0["kept_indices"] == list(range(16, 32))  # the user's criterion decided which stay


@pytest.mark.parametrize("spec, message", [("nowhere_module:X", "cannot import"), ("os:NoSuchThing", "has no"),
                                           ("os:getcwd", "not a tfprune.structured.Importance")])
def test_user_criterion_errors_are_usage_errors(model_path, tmp_path, spec, message):
    code, _, stderr = run_cli("--model", model_path, "--output", tmp_path / "x.keras", "--importance", spec)
    assert code == 2 and message in error_line(stderr)
    assert not (tmp_path / "x.keras").exists()


def test_registered_criterion_is_listed_for_the_cli():
    from tfprune.cli import prune_filters as prune_filters_cli
    from tfprune.structured import importance

    importance.register_importance("l1_copy", lambda **kw: importance.MagnitudeImportance(p=1, **kw))
    try:
        assert "l1_copy" in prune_filters_cli.cli_importances()
        assert "taylor" not in prune_filters_cli.cli_importances()
        assert isinstance(importance.get_importance("l1_copy"), importance.MagnitudeImportance)
    finally:
        importance.IMPORTANCES.pop("l1_copy")
