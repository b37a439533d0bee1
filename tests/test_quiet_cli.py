"""Console scripts and the demo start without TensorFlow's C++ start-up lines or deprecation notices.

Each command runs as a subprocess exactly as its console script does (`from tfprune_launcher
import <command>`), with `TF_CPP_MIN_LOG_LEVEL` removed from the environment as on a user's shell.
"""

import json
import os
import subprocess
import sys
import time

import keras
import pytest

import tfprune
import tfprune_launcher
from tests.helpers import NOISE, classification_data, console_command, console_env, small_cnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_env, _command = console_env, console_command


def _run(name, *args, **env):
    return subprocess.run(_command(name) + list(args), capture_output=True, text=True, env=_env(**env),
                          timeout=300, cwd=ROOT)


def test_strip_help_is_clean_unless_the_user_asks_for_logs():
    proc = _run("strip", "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("tfprune-strip: export the newest pruned checkpoint")
    assert not NOISE.search(proc.stdout + proc.stderr), proc.stderr
    assert proc.stderr == ""
    # A level the user set is respected: TensorFlow's own lines come back (and the test can see them).
    loud = _run("strip", "--help", TF_CPP_MIN_LOG_LEVEL="0")
    assert loud.returncode == 0 and NOISE.search(loud.stderr), loud.stderr


def test_demo_help_lists_its_flags():
    proc = _run("demo", "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("`make demo`: train a small MNIST CNN")
    for flag in ("--output_dir", "--dense_epochs", "--prune_epochs", "--qat_epochs", "--latency_repeats", "--data"):
        assert flag in proc.stdout, proc.stdout


@pytest.mark.slow
def test_real_strip_run_prints_only_its_report(tmp_path):
    keras.utils.set_random_seed(3)
    model = tfprune.prune_low_magnitude(small_cnn(), pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = classification_data(n=32)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[
        tfprune.UpdatePruningStep(), keras.callbacks.ModelCheckpoint(str(tmp_path / "ck" / "ckpt-{epoch:02d}.keras"))])
    proc = _run("strip", f"--checkpoint_dir={tmp_path / 'ck'}", f"--output_dir={tmp_path / 'out'}",
                "--filename=model.tflite", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "", proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    report = json.loads(line)
    assert os.path.isfile(report["output"]["path"])
    # The checker on the written file is quiet too.
    check = _run("check_m_by_n", f"--model_tflite={report['output']['path']}", "--m_by_n=1,2")
    assert check.returncode in (0, 1) and check.stderr == "" and not NOISE.search(check.stdout)


def test_demo_starts_clean(tmp_path):
    proc = subprocess.Popen(_command("demo") + [f"--output_dir={tmp_path}", "--dense_epochs=1", "--prune_epochs=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT)
    lines = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("== Dense training"):
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    text = "".join(lines)
    assert "MNIST:" in text and "== Dense training" in text, text
    assert not NOISE.search(text), text


def test_importing_tfprune_leaves_the_environment_alone():
    code = "import os, tfprune; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "None"


def test_launcher_helpers():
    assert tfprune_launcher.launched_as_command(["python", "-m", "tfprune.demo", "--x"])
    assert tfprune_launcher.launched_as_command(["python", "-m", "tfprune.cli.strip"])
    assert not tfprune_launcher.launched_as_command(["python", "-m", "pytest", "tests"])
    assert not tfprune_launcher.launched_as_command(["python", "train.py"])
    assert tfprune_launcher.is_startup_log_line(
        "I0000 00:00:1796190770.763221    7065 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n")
    assert tfprune_launcher.is_startup_log_line(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert not tfprune_launcher.is_startup_log_line("E0000 00:00:1.0  1 cuda_executor.cc:1] failed")
    assert not tfprune_launcher.is_startup_log_line("Traceback (most recent call last):")
