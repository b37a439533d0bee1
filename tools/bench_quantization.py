"""Benchmark int8 quantization on the bundled MNIST: float, the TFLite converter's post-training
quantization, tfprune's post-training quantization with each calibration method, tfprune QAT and
tfmot QAT (tf_keras, in its own process, from the same float weights, same epochs).

Every accuracy is the TFLite model's, measured with the interpreter on the 2,000 eval images; sizes
are the TFLite flatbuffer raw and zipped; latency is TFLite, 1 thread, batch 1 and 32 (median);
QAT epoch time is relative to float training of the same model in the same framework. Then the
latency of MobileNetV2 (224x224) and ResNet-56 (32x32), float vs full-integer TFLite.

    python tools/bench_quantization.py --seeds 3 [--markdown tools/results/bench_quantization.md]
        [--readme docs/benchmarks.md]
    python tools/bench_quantization.py --seeds 1 --train 512 --eval 256 --epochs 1 --repeats 3 \
        --latency_models resnet8 --no_tfmot          # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from readme_block import publish  # noqa: E402
import tfprune.quantization as tfq  # noqa: E402
from tfprune.datasets import load_mnist  # noqa: E402
from tfprune.structured import recalibrate_batchnorm  # noqa: E402
from tfprune.structured.timing import tflite_latency_ms, tflite_runner  # noqa: E402

L = keras.layers
CALIBRATION_SAMPLES = 256


README_BLOCK = "bench_quantization"  # the marked block of docs/benchmarks.md this tool writes

def mnist_model() -> keras.Model:
    """conv16-BN-ReLU, pool, conv32-BN-ReLU, pool, dense64, dense10 (logits)."""
    inputs = keras.Input((28, 28, 1))
    x = L.Conv2D(16, 3, use_bias=False)(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(32, 3, use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.MaxPooling2D()(x)
    x = L.Dense(64, activation="relu")(L.Flatten()(x))
    return keras.Model(inputs, L.Dense(10)(x), name="mnist_cnn")


def compile_model(model: keras.Model, learning_rate: float) -> keras.Model:
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class EpochTimes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def epoch_time(times: list[float]) -> float:
    """Seconds per epoch, without the first epoch (graph tracing) when there are more."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> float:
    keras.utils.set_random_seed(seed)
    timer = EpochTimes()
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[timer])
    return epoch_time(timer.times)


def float_tflite(model: keras.Model) -> bytes:
    with tempfile.TemporaryDirectory() as work:
        model.export(os.path.join(work, "m"), format="tf_saved_model", verbose=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.TFLiteConverter.from_saved_model(os.path.join(work, "m")).convert()


def converter_ptq(model: keras.Model, x_calibration: np.ndarray) -> bytes:
    """The TFLite converter's own full-integer post-training quantization (representative dataset)."""
    with tempfile.TemporaryDirectory() as work:
        model.export(os.path.join(work, "m"), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(work, "m"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x_calibration[i:i + 1]] for i in range(len(x_calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return converter.convert()


def tflite_accuracy(data: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a TFLite classifier (float or int8 interface) on `x`, in one batch, 1 thread."""
    return float(np.mean(tflite_runner(data, x, threads=1)().argmax(1) == y))


def latencies_ms(data: bytes, x: np.ndarray, repeats: int) -> dict:
    """TFLite latency, 1 thread, median: batch 1 over `repeats` calls, batch 32 over a quarter of them."""
    return dict(b1_ms=tflite_latency_ms(data, x, 1, repeats),
                b32_ms=tflite_latency_ms(data, x, 32, max(3, repeats // 4)))


def zipped_bytes(data: bytes) -> int:
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "m.zip")
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("model.tflite", data)
        return os.path.getsize(path)


def measure(name: str, data: bytes, x_eval: np.ndarray, y_eval: np.ndarray, repeats: int, **extra) -> dict:
    return dict(name=name, accuracy=tflite_accuracy(data, x_eval, y_eval), raw_bytes=len(data),
                zip_bytes=zipped_bytes(data), **latencies_ms(data, x_eval, repeats), **extra)


TFMOT_SCRIPT = r'''
import json, os, sys, time, statistics
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf, tf_keras as K
import tensorflow_model_optimization as tfmot
args = json.loads(sys.argv[1])
data = np.load(args["data"])
x, y = data["x_train"], data["y_train"]
L = K.layers
def build():
    i = K.Input((28, 28, 1))
    h = L.Conv2D(16, 3, use_bias=False)(i); h = L.ReLU()(L.BatchNormalization()(h)); h = L.MaxPooling2D()(h)
    h = L.Conv2D(32, 3, use_bias=False)(h); h = L.ReLU()(L.BatchNormalization()(h)); h = L.MaxPooling2D()(h)
    h = L.Dense(64, activation="relu")(L.Flatten()(h))
    return K.Model(i, L.Dense(10)(h))
class Times(K.callbacks.Callback):
    def __init__(self): super().__init__(); self.t = []
    def on_epoch_begin(self, e, logs=None): self.s = time.perf_counter()
    def on_epoch_end(self, e, logs=None): self.t.append(time.perf_counter() - self.s)
def per_epoch(t): return statistics.median(t[1:] if len(t) > 1 else t)
weights = [data[f"w{i}"] for i in range(int(data["n_weights"]))]
def fit(model, lr, epochs):
    tf.keras.utils.set_random_seed(args["seed"])
    model.compile(K.optimizers.Adam(lr), K.losses.SparseCategoricalCrossentropy(from_logits=True))
    t = Times(); model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[t]); return per_epoch(t.t)
float_model = build(); float_model.set_weights(weights)
float_epoch = fit(float_model, args["lr"], args["epochs"])
base = build(); base.set_weights(weights)
qat = tfmot.quantization.keras.quantize_model(base)
qat_epoch = fit(qat, args["qat_lr"], args["epochs"])
converter = tf.lite.TFLiteConverter.from_keras_model(qat)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.inference_input_type = tf.int8
converter.inference_output_type = tf.int8
open(args["out"], "wb").write(converter.convert())
print(json.dumps({"float_epoch_s": float_epoch, "qat_epoch_s": qat_epoch}))
'''


def tfmot_qat(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int, qat_lr: float, float_lr: float,
              seed: int) -> tuple[bytes, dict]:
    """tfmot's QAT of the same float weights in a tf_keras subprocess; returns (TFLite bytes, epoch times)."""
    with tempfile.TemporaryDirectory() as work:
        weights = model.get_weights()
        data = os.path.join(work, "data.npz")
        np.savez(data, x_train=x, y_train=y, n_weights=len(weights), **{f"w{i}": w for i, w in enumerate(weights)})
        out = os.path.join(work, "tfmot.tflite")
        spec = json.dumps(dict(data=data, out=out, epochs=epochs, qat_lr=qat_lr, lr=float_lr, seed=seed))
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, "-c", TFMOT_SCRIPT, spec], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"tfmot QAT failed: {proc.stderr.strip().splitlines()[-1:]}")
        with open(out, "rb") as handle:
            return handle.read(), json.loads(proc.stdout.strip().splitlines()[-1])


def run_seed(seed: int, args: argparse.Namespace, data: tuple) -> list[dict]:
    x_train, y_train, x_eval, y_eval = data
    keras.utils.set_random_seed(seed)
    model = compile_model(mnist_model(), args.lr)
    float_epoch = fit(model, x_train, y_train, args.epochs, seed)
    recalibrate_batchnorm(model, x_train, steps=None)  # the moving averages lag behind a short training run
    calibration = x_train[:CALIBRATION_SAMPLES]
    rows = [measure("float", float_tflite(model), x_eval, y_eval, args.repeats)]
    rows.append(measure("TFLite converter PTQ", converter_ptq(model, calibration), x_eval, y_eval, args.repeats))
    for method in tfq.CALIBRATION_METHODS:
        ptq = tfq.quantize_post_training(model, calibration, method=method, verbose=0)
        rows.append(measure(f"tfprune PTQ ({method})", tfq.to_tflite(ptq, inference_input_type=tf.int8),
                            x_eval, y_eval, args.repeats))
    qat = compile_model(tfq.quantize_model(model), args.qat_lr)
    qat_epoch = fit(qat, x_train, y_train, args.qat_epochs, seed)
    rows.append(measure("tfprune QAT", tfq.to_tflite(qat, inference_input_type=tf.int8), x_eval, y_eval,
                        args.repeats, epoch_ratio=qat_epoch / float_epoch))
    if args.tfmot:
        data_bytes, times = tfmot_qat(model, x_train, y_train, args.qat_epochs, args.qat_lr, args.lr, seed)
        rows.append(measure("tfmot QAT (tf_keras)", data_bytes, x_eval, y_eval, args.repeats,
                            epoch_ratio=times["qat_epoch_s"] / times["float_epoch_s"]))
    for row in rows:
        row["seed"] = seed
    return rows


LATENCY_MODELS = {
    "mobilenet_v2": lambda: keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None),
    "resnet56": lambda: __import__("tfprune.structured.models", fromlist=["resnet_cifar"]).resnet_cifar(56),
    "resnet8": lambda: __import__("tfprune.structured.models", fromlist=["resnet_cifar"]).resnet_cifar(8),
}


def latency_models(names: list[str], repeats: int) -> list[dict]:
    rows = []
    for name in names:
        model = LATENCY_MODELS[name]()
        shape = tuple(model.inputs[0].shape)[1:]
        x = np.random.default_rng(0).normal(size=(8,) + shape).astype("float32")
        int8 = tfq.to_tflite(tfq.quantize_post_training(model, x, verbose=0), inference_input_type=tf.int8)
        plain = float_tflite(model)
        row = {"model": f"{name} {shape[0]}x{shape[1]}"}
        for label, data in (("float", plain), ("int8", int8)):
            row[f"{label}_b1_ms"] = tflite_latency_ms(data, x, 1, repeats)
        row["speedup"] = row["float_b1_ms"] / row["int8_b1_ms"]
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per method: accuracy mean and spread (max - min) over seeds; times (latency, epoch ratio) median."""
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        acc = [r["accuracy"] for r in group]
        entry = dict(name=name, accuracy=float(np.mean(acc)), spread=float(max(acc) - min(acc)),
                     raw_bytes=group[0]["raw_bytes"], zip_bytes=group[0]["zip_bytes"],
                     b1_ms=float(np.median([r["b1_ms"] for r in group])),
                     b32_ms=float(np.median([r["b32_ms"] for r in group])))
        if "epoch_ratio" in group[0]:
            entry["epoch_ratio"] = float(np.median([r["epoch_ratio"] for r in group]))
        out.append(entry)
    return out


def verdict(target: str, met: bool, detail: str) -> str:
    """A target's line in a benchmark's markdown: `- target: measured -> **met**` (or missed)."""
    return f"- {target}: {detail} -> **{'met' if met else 'missed'}**"


def verdicts(summary: list[dict], latency: list[dict]) -> list[str]:
    """One line per target of the quantization benchmark: the measured margin and met / missed."""
    rows = {r["name"]: r for r in summary}
    lines = []

    def say(target: str, met: bool, detail: str) -> None:
        lines.append(verdict(target, met, detail))

    float_acc = rows.get("float", {}).get("accuracy")
    qat = rows.get("tfprune QAT")
    tfmot = rows.get("tfmot QAT (tf_keras)")
    if qat and float_acc is not None:
        gap = 100 * (qat["accuracy"] - float_acc)
        say("tfprune QAT within 0.2 points of float", gap >= -0.2, f"{gap:+.2f} points")
    if qat and tfmot:
        gap = 100 * (qat["accuracy"] - tfmot["accuracy"])
        spread = 100 * max(qat["spread"], tfmot["spread"])
        say("tfprune QAT at least tfmot's QAT (within the seeds' spread)", gap >= -spread,
            f"{gap:+.2f} points (spread {spread:.2f})")
    ptq = [r for name, r in rows.items() if name.startswith("tfprune PTQ")]
    converter = rows.get("TFLite converter PTQ")
    if ptq and converter:
        best = max(ptq, key=lambda r: r["accuracy"])
        gap = 100 * (best["accuracy"] - converter["accuracy"])
        say("best tfprune PTQ at least the converter's PTQ", gap >= 0, f"{best['name']}: {gap:+.2f} points")
    for r in latency:
        say(f"full integer at least 1.5x faster than float, {r['model']}", r["speedup"] >= 1.5, f"{r['speedup']:.2f}x")
    if qat and "epoch_ratio" in qat:
        say("QAT epoch at most 1.5x float", qat["epoch_ratio"] <= 1.5, f"{qat['epoch_ratio']:.2f}x")
        if tfmot and "epoch_ratio" in tfmot:
            say("QAT epoch ratio no worse than tfmot's", qat["epoch_ratio"] <= tfmot["epoch_ratio"],
                f"{qat['epoch_ratio']:.2f}x vs {tfmot['epoch_ratio']:.2f}x")
    return lines


def markdown(summary: list[dict], latency: list[dict], args: argparse.Namespace, load: tuple) -> str:
    command = (f"`python tools/bench_quantization.py --seeds {args.seeds} --train {args.train} --eval {args.eval} "
               f"--epochs {args.epochs} --qat_epochs {args.qat_epochs}`")
    lines = [f"{command} ({os.cpu_count()} CPU cores; TensorFlow {tf.__version__}, Keras {keras.__version__}; "
             f"accuracy: mean over {args.seeds} seed(s), spread = max - min; times: median over seeds; "
             f"latency: TFLite, 1 thread, median; "
             f"1-minute load average at start / end {load[0]:.2f} / {load[1]:.2f}).", "",
             "| model | TFLite accuracy | spread | raw bytes | zip bytes | b1 ms | b32 ms | QAT epoch / float epoch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary:
        ratio = f"{r['epoch_ratio']:.2f}x" if "epoch_ratio" in r else ""
        lines.append(f"| {r['name']} | {r['accuracy']:.4f} | {r['spread']:.4f} | {r['raw_bytes']:,} | "
                     f"{r['zip_bytes']:,} | {r['b1_ms']:.3f} | {r['b32_ms']:.2f} | {ratio} |")
    if latency:
        lines += ["", "| model | float b1 ms | full-integer b1 ms | speed-up |", "|---|---:|---:|---:|"]
        for r in latency:
            lines.append(f"| {r['model']} | {r['float_b1_ms']:.2f} | {r['int8_b1_ms']:.2f} | {r['speedup']:.2f}x |")
    checks = verdicts(summary, latency)
    if checks:
        lines += ["", "Targets:", ""] + checks
    return "\n".join(lines) + "\n"


def add_common_arguments(parser: argparse.ArgumentParser, seeds: int, block: str) -> None:
    """The arguments of the MNIST int8 benchmarks: seeds, data sizes, float epochs, learning rates,
    latency repeats, and where to write the table (`block`: the tool's name)."""
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--eval", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3, help="float training epochs")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--qat_lr", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--markdown", metavar="PATH", help=f"write the table here (tools/results/{block}.md)")
    parser.add_argument("--readme", metavar="MARKDOWN",
                        help=f"replace the '{block}' block of this markdown file (docs/benchmarks.md)")


def mnist_data(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple:
    """`(x_train, y_train, x_eval, y_eval)`: the first --train and the last --eval bundled MNIST images."""
    if not 0 < args.train < 10000 - args.eval + 1 or args.eval < 1:
        parser.error("--train + --eval must fit in the 10,000 bundled MNIST images")
    (x_train, y_train), (x_eval, y_eval) = load_mnist(train_size=10000 - args.eval)
    return x_train[:args.train], y_train[:args.train], x_eval, y_eval


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, seeds=3, block=README_BLOCK)
    parser.add_argument("--qat_epochs", type=int, default=2,
                        help="QAT epochs (tfprune and tfmot); epoch times skip the first (tracing) epoch")
    parser.add_argument("--latency_models", default="mobilenet_v2,resnet56",
                        help=f"comma-separated, of {', '.join(LATENCY_MODELS)}; empty for none")
    parser.add_argument("--no_tfmot", dest="tfmot", action="store_false", help="skip the tfmot QAT row")
    args = parser.parse_args(argv)
    names = [n for n in args.latency_models.split(",") if n]
    unknown = [n for n in names if n not in LATENCY_MODELS]
    if unknown:
        parser.error(f"unknown --latency_models {unknown}; use some of {', '.join(LATENCY_MODELS)}")
    data = mnist_data(parser, args)
    load_start = os.getloadavg()[0]
    rows = [row for seed in range(args.seeds) for row in run_seed(seed, args, data)]
    latency = latency_models(names, args.repeats)
    load = (load_start, os.getloadavg()[0])
    summary = summarize(rows)
    result = {"rows": rows, "summary": summary, "latency": latency, "load": load}
    return publish(markdown(summary, latency, args, load), result, args.markdown, args.readme, README_BLOCK)

if __name__ == "__main__":
    main()
