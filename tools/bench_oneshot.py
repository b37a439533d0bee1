"""One-shot pruning without retraining: dense vs magnitude vs Wanda vs SparseGPT, in one run.

Language model: a character-level decoder-only transformer (pre-norm; `--layers` blocks of causal
MultiHeadAttention and a 4x-wide GELU MLP, width `--width`, `--heads` heads, learned position embeddings,
128-symbol ASCII vocabulary, context `--context`), trained here with AdamW on the Python standard library's
own source (`sysconfig.get_paths()["stdlib"]`): every top-level `*.py` file except the held-out ones
(`HELD_OUT`) trains; perplexity is measured on the held-out files (the first `--eval_chars` characters of
their concatenation, in non-overlapping windows, every character predicted). Calibration: `--calibration`
random training windows. The attention projections and MLP layers are pruned; the embeddings and the
output head stay dense (as in the SparseGPT and Wanda papers).

MNIST: an MLP (784-300-100-10) and a CNN (two 3x3 convolutions, a 1x1 convolution, Dense 128, logits)
trained on the MNIST data bundled with tfprune (8,000 train / 2,000 eval); every supported layer is pruned
(with 2:4, layers whose input width is not a multiple of 4, the first convolution, stay dense);
calibration: `--mnist_calibration` training images.

Sparsities: 50%, 60% and 2:4 (at least 2 zeros in every 4 consecutive inputs), per output. Columns: the
metric, the LM's mean time per pruned layer (calibration passes + the method), the total, the peak of
Python/numpy memory allocated while pruning (tracemalloc: statistics and pruning math; TensorFlow's own
buffers are not counted; SparseGPT only), and for the LM the pruning time in dense forward passes over the calibration data.

Usage:
    python tools/bench_oneshot.py [--layers 2] [--width 128] [--steps 500] [--model_cache DIR]
        [--markdown tools/results/bench_oneshot.md] [--readme docs/benchmarks.md] [--quick]

Prints the table, then one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import sysconfig
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(TOOLS))
sys.path.insert(0, TOOLS)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")

from readme_block import replace_block, write_atomic  # noqa: E402
from tfprune import oneshot  # noqa: E402
from tfprune.datasets import load_mnist  # noqa: E402

README_BLOCK = "bench_oneshot"
HELD_OUT = ("argparse.py", "fractions.py", "shlex.py", "textwrap.py")
VOCAB = 128
SETTINGS = (("50%", {"sparsity": 0.5}), ("60%", {"sparsity": 0.6}), ("2:4", {"sparsity_m_by_n": (2, 4)}))
METHODS = (("magnitude", {"method": "magnitude"}), ("Wanda", {"method": "wanda"}),
           ("Wanda, one pass", {"method": "wanda", "sequential": False}), ("SparseGPT", {"method": "sparsegpt"}))


@keras.saving.register_keras_serializable(package="bench_oneshot")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a `(batch, length, width)` input."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape):
        self.table = self.add_weight(shape=(self.length, input_shape[-1]), initializer=keras.initializers.RandomNormal(stddev=0.02), name="table")

    def call(self, x):
        return x + self.table[: keras.ops.shape(x)[1]]

    def get_config(self):
        return {**super().get_config(), "length": self.length}


def stdlib_text() -> tuple[str, str, list[str]]:
    """(training text, held-out text, training file names) from the standard library's top-level sources."""
    root = sysconfig.get_paths()["stdlib"]
    names = sorted(f for f in os.listdir(root) if f.endswith(".py"))
    missing = [f for f in HELD_OUT if f not in names]
    if missing:
        raise SystemExit(f"{root} lacks the held-out files {missing}.")

    def read(files):
        parts = []
        for name in files:
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as handle:
                parts.append(handle.read())
        return "\n".join(parts)

    train_files = [f for f in names if f not in HELD_OUT]
    return read(train_files), read(HELD_OUT), train_files


def encode(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("ascii", errors="replace"), np.uint8).astype(np.int32)
    return np.minimum(codes, VOCAB - 1)


def build_lm(layers: int, width: int, heads: int, context: int) -> keras.Model:
    tokens = keras.Input((context,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, width, name="embed")(tokens)
    x = PositionEmbedding(context, name="positions")(x)
    for i in range(layers):
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"ln_attn{i}")(x)
        h = keras.layers.MultiHeadAttention(heads, width // heads, name=f"attn{i}")(h, h, use_causal_mask=True)
        x = keras.layers.Add(name=f"res_attn{i}")([x, h])
        h = keras.layers.LayerNormalization(epsilon=1e-5, name=f"ln_mlp{i}")(x)
        h = keras.layers.Dense(4 * width, activation="gelu", name=f"mlp_up{i}")(h)
        h = keras.layers.Dense(width, name=f"mlp_down{i}")(h)
        x = keras.layers.Add(name=f"res_mlp{i}")([x, h])
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="ln_final")(x)
    return keras.Model(tokens, keras.layers.Dense(VOCAB, name="head")(x), name="char_lm")


def windows(codes: np.ndarray, count: int, length: int, rng: np.random.Generator) -> np.ndarray:
    starts = rng.integers(0, len(codes) - length - 1, size=count)
    return np.stack([codes[s:s + length + 1] for s in starts])


def train_lm(args, train_codes: np.ndarray) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = build_lm(args.layers, args.width, args.heads, args.context)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, args.steps, alpha=0.05, warmup_target=args.learning_rate,
                                                      warmup_steps=max(1, args.steps // 20))
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=0.01, clipnorm=1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(1)

    def batches():
        while True:
            w = windows(train_codes, args.batch_size, args.context, rng)
            yield w[:, :-1], w[:, 1:]

    spec = (tf.TensorSpec((args.batch_size, args.context), tf.int32),) * 2
    data = tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)
    chunk = max(1, args.steps // 25)
    start = time.perf_counter()
    for done in range(0, args.steps, chunk):
        steps = min(chunk, args.steps - done)
        history = model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        print(f"  LM step {done + steps}/{args.steps}: loss {history.history['loss'][-1]:.3f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    return model


def load_or_train_lm(args, train_codes: np.ndarray) -> tuple[keras.Model, float]:
    """The trained LM; with `--model_cache`, trained weights are reused when the configuration matches."""
    tag = f"lm_l{args.layers}_w{args.width}_h{args.heads}_c{args.context}_s{args.steps}_b{args.batch_size}.weights.h5"
    path = os.path.join(args.model_cache, tag) if args.model_cache else None
    if path and os.path.exists(path):
        model = build_lm(args.layers, args.width, args.heads, args.context)
        model.load_weights(path)
        seconds = math.nan
        if os.path.exists(path + ".json"):
            with open(path + ".json") as handle:
                seconds = json.load(handle)["train_seconds"]
        return model, seconds
    start = time.perf_counter()
    model = train_lm(args, train_codes)
    seconds = time.perf_counter() - start
    if path:
        os.makedirs(args.model_cache, exist_ok=True)
        model.save_weights(path + ".tmp.weights.h5")
        os.replace(path + ".tmp.weights.h5", path)
        write_atomic(path + ".json", json.dumps({"train_seconds": seconds}))
    return model, seconds


def perplexity(model: keras.Model, eval_windows: np.ndarray) -> float:
    logits = model.predict(eval_windows[:, :-1], batch_size=64, verbose=0).astype(np.float64)
    targets = eval_windows[:, 1:]
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1).mean()
    return float(math.exp(nll))


def forward_seconds(model: keras.Model, calibration: np.ndarray, batch_size: int) -> float:
    """One eager pass over the calibration batches, as the pruning passes run it (best of 2)."""
    best = math.inf
    for _ in range(2):
        start = time.perf_counter()
        for i in range(0, len(calibration), batch_size):
            model(calibration[i:i + batch_size], training=False)
        best = min(best, time.perf_counter() - start)
    return best


def timed_prune(model, calibration, layers, kwargs, batch_size):
    """(pruned model, reports, seconds)."""
    start = time.perf_counter()
    pruned, reports = oneshot.prune_with_report(model, calibration, layers=layers, batch_size=batch_size,
                                                verbose=False, **kwargs)
    return pruned, reports, time.perf_counter() - start


def peak_prune_mib(model, calibration, layers, kwargs, batch_size) -> float:
    """Peak MiB of Python/numpy allocations during a second, separate pruning run (tracemalloc slows it)."""
    tracemalloc.start()
    try:
        oneshot.prune_with_report(model, calibration, layers=layers, batch_size=batch_size, verbose=False, **kwargs)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def check_zeros(reports, setting: dict) -> None:
    """Every pruned layer has the requested zeros (the benchmark refuses to report otherwise)."""
    for r in reports:
        if "sparsity" in setting:
            expected = oneshot.selection.zeros_per_output(r.inputs, setting["sparsity"]) * r.outputs
            assert r.zeros >= expected, (r, expected)
        else:
            assert r.zeros >= r.inputs * r.outputs // 2, r


def run_lm(args) -> dict:
    train_text, held_text, train_files = stdlib_text()
    train_codes, held_codes = encode(train_text), encode(held_text[: args.eval_chars])
    model, train_seconds = load_or_train_lm(args, train_codes)
    count = (len(held_codes) - 1) // args.context
    eval_windows = np.stack([held_codes[i * args.context: i * args.context + args.context + 1] for i in range(count)])
    calibration = windows(train_codes, args.calibration, args.context, np.random.default_rng(2))[:, :-1]
    layers = [f"attn{i}" for i in range(args.layers)] + [f"mlp_{p}{i}" for i in range(args.layers) for p in ("up", "down")]
    dense_ppl = perplexity(model, eval_windows)
    forward = forward_seconds(model, calibration, args.prune_batch)
    print(f"  LM dense perplexity {dense_ppl:.3f}; one calibration pass {forward:.2f} s", file=sys.stderr, flush=True)
    rows = [{"setting": "dense", "method": "dense", "perplexity": round(dense_ppl, 4)}]
    for setting, setting_kwargs in settings(args):
        for method, method_kwargs in METHODS:
            kwargs = {**setting_kwargs, **method_kwargs}
            pruned, reports, seconds = timed_prune(model, calibration, layers, kwargs, args.prune_batch)
            peak = peak_prune_mib(model, calibration, layers, kwargs, args.prune_batch) if method == "SparseGPT" else None
            check_zeros(reports, setting_kwargs)
            ppl = perplexity(pruned, eval_windows)
            errors = [r.relative_error for r in reports if r.relative_error is not None]
            rows.append({
                "setting": setting, "method": method, "perplexity": round(ppl, 4),
                "layers": len(reports), "seconds": round(seconds, 2),
                "seconds_per_layer": round(sum(r.capture_seconds + r.prune_seconds for r in reports) / len(reports), 3),
                "method_seconds_per_layer": round(sum(r.prune_seconds for r in reports) / len(reports), 4),
                "forward_passes": round(seconds / forward, 1), "peak_mib": None if peak is None else round(peak, 1),
                "mean_relative_error": round(float(np.mean(errors)), 4) if errors else None,
            })
            print(f"  LM {setting} {method}: perplexity {ppl:.3f} ({seconds:.1f} s)", file=sys.stderr, flush=True)
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    return {"rows": rows, "dense_perplexity": dense_ppl, "train_seconds": round(train_seconds, 1), "params": params,
            "forward_seconds": round(forward, 3), "train_files": len(train_files), "train_chars": len(train_codes),
            "eval_chars": int(count * args.context), "calibration_tokens": int(calibration.size)}


def build_mlp() -> keras.Model:
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(300, activation="relu", name="fc1"),
                             keras.layers.Dense(100, activation="relu", name="fc2"),
                             keras.layers.Dense(10, name="logits")], name="mnist_mlp")


def build_cnn() -> keras.Model:
    return keras.Sequential([keras.Input((28, 28, 1)),
                             keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
                             keras.layers.MaxPooling2D(name="pool1"),
                             keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
                             keras.layers.MaxPooling2D(name="pool2"),
                             keras.layers.Conv2D(32, 1, activation="relu", name="conv3_1x1"),
                             keras.layers.Flatten(),
                             keras.layers.Dense(128, activation="relu", name="fc"),
                             keras.layers.Dense(10, name="logits")], name="mnist_cnn")


def run_mnist(args) -> list[dict]:
    (x_train, y_train), (x_eval, y_eval) = load_mnist()
    x_train, y_train = x_train[: args.mnist_train], y_train[: args.mnist_train]
    calibration = x_train[: args.mnist_calibration]
    rows = []
    for name, build in mnist_models(args):
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x_train, y_train, batch_size=64, epochs=args.mnist_epochs, verbose=0)

        def acc(m):
            return float((np.argmax(m.predict(x_eval, batch_size=500, verbose=0), axis=1) == y_eval).mean())

        rows.append({"model": name, "setting": "dense", "method": "dense", "accuracy": round(acc(model), 4)})
        for setting, setting_kwargs in settings(args):
            for method, method_kwargs in METHODS:
                if method_kwargs.get("sequential") is False:
                    continue
                pruned, reports, seconds = timed_prune(model, calibration, None,
                                                       {**setting_kwargs, **method_kwargs}, 128)
                check_zeros(reports, setting_kwargs)
                rows.append({"model": name, "setting": setting, "method": method, "accuracy": round(acc(pruned), 4),
                             "layers": len(reports), "seconds": round(seconds, 2)})
                print(f"  MNIST {name} {setting} {method}: {rows[-1]['accuracy']:.4f}", file=sys.stderr, flush=True)
    return rows


def settings(args) -> tuple:
    """All sparsities; `--quick` runs 50% and 2:4 only."""
    return SETTINGS[::2] if args.quick else SETTINGS


def mnist_models(args) -> tuple:
    """Both MNIST models; `--quick` runs the MLP only."""
    models = (("MLP", build_mlp), ("CNN", build_cnn))
    return models[:1] if args.quick else models


def targets(lm_rows: list[dict], dense: float) -> dict:
    """The specification's targets, each True/False; those whose rows were not run are left out."""
    ppl = {(r["setting"], r["method"]): r["perplexity"] for r in lm_rows}
    if ("60%", "magnitude") not in ppl:
        ppl.update({("60%", m): math.nan for m in ("magnitude", "Wanda", "SparseGPT")})
    far = 0.5  # "far below": at most half of magnitude's increase over dense
    increase = {k: v - dense for k, v in ppl.items()}
    checks = {}
    for setting in ("2:4", "60%"):
        checks[f"SparseGPT and Wanda far below magnitude at {setting}"] = all(
            increase[(setting, m)] <= far * increase[(setting, "magnitude")] for m in ("SparseGPT", "Wanda"))
    checks["SparseGPT at or below Wanda at 60%"] = ppl[("60%", "SparseGPT")] <= ppl[("60%", "Wanda")]
    checks["SparseGPT's increase at 50% at most half of magnitude's"] = (
        increase[("50%", "SparseGPT")] <= 0.5 * increase[("50%", "magnitude")])
    passes = {r["method"]: r["forward_passes"] for r in lm_rows if r["setting"] == "50%"}
    checks["Wanda (one pass) costs at most about two forward passes"] = passes["Wanda, one pass"] <= 2.5
    checks["Wanda (sequential) costs at most about two forward passes"] = passes["Wanda"] <= 2.5
    return {name: bool(ok) for name, ok in checks.items()
            if not any(math.isnan(ppl[k]) for k in ppl if k[0] in name)}


def format_table(summary: dict, args) -> str:
    lm = summary["lm"]
    dense = lm["dense_perplexity"]
    lines = [
        f"`python tools/bench_oneshot.py` (2 CPU cores, shared: the time columns were measured under load). "
        f"Character-level LM: {args.layers} pre-norm blocks, width {args.width}, {args.heads} heads, MLP "
        f"{4 * args.width}, context {args.context}, {lm['params'] / 1e6:.2f}M parameters, {args.steps} AdamW steps "
        f"of {args.batch_size}x{args.context} characters ({lm['train_seconds'] / 60:.0f} min under load) on {lm['train_files']} top-level standard-library modules "
        f"({lm['train_chars'] / 1e6:.2f}M characters; all `*.py` in `sysconfig.get_paths()['stdlib']` except "
        f"{', '.join(HELD_OUT)}); perplexity on the first {lm['eval_chars']:,} characters of the held-out "
        f"{', '.join(HELD_OUT)}. Calibration: {args.calibration} random training windows ({lm['calibration_tokens']:,} "
        f"characters). Pruned: the {4 * args.layers} attention projections and {2 * args.layers} MLP layers; no "
        f"retraining. One calibration pass of the dense model: {lm['forward_seconds']:.2f} s.",
        "",
        "| sparsity | method | perplexity | Δ vs dense | s / layer | total s | in forward passes | peak MiB | layer error |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| 0% | dense | {dense:.3f} | | | | | | |",
    ]
    for r in lm["rows"][1:]:
        error = "" if r["mean_relative_error"] is None else f"{r['mean_relative_error']:.4f}"
        peak = "" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        lines.append(f"| {r['setting']} | {r['method']} | {r['perplexity']:.3f} | {r['perplexity'] - dense:+.3f} | "
                     f"{r['seconds_per_layer']:.2f} | {r['seconds']:.1f} | {r['forward_passes']:.1f} | "
                     f"{peak} | {error} |")
    lines += ["", "Layer error: SparseGPT's mean relative reconstruction error `||X(W-W')||²/||XW||²` over the pruned "
              "layers. Peak MiB: SparseGPT's peak Python/numpy allocations while pruning (tracemalloc, in a second run "
              "so that it does not slow the timed one; TensorFlow's buffers excluded). "
              "Wanda prunes layer by layer from the pruned model's inputs (one calibration pass per layer, query/key/"
              "value together); 'one pass' (`sequential=False`) takes every layer's statistics from one pass of the "
              "dense model.", ""]
    mnist = summary["mnist"]
    methods = [m for m, kw in METHODS if kw.get("sequential") is not False]
    lines += [f"MNIST ({args.mnist_train} training images, {args.mnist_epochs} epochs, 2,000 eval images, "
              f"{args.mnist_calibration} calibration images), accuracy without retraining:", "",
              "| model | dense | " + " | ".join(f"{s} {m}" for s, _ in settings(args) for m in methods) + " |",
              "|---|---|" + "---|" * (len(settings(args)) * len(methods))]
    for model, _ in mnist_models(args):
        acc = {(r["setting"], r["method"]): r["accuracy"] for r in mnist if r["model"] == model}
        cells = [f"{100 * acc[(s, m)]:.2f}%" for s, _ in settings(args) for m in methods]
        lines.append(f"| {model} | {100 * acc[('dense', 'dense')]:.2f}% | " + " | ".join(cells) + " |")
    lines += ["", "Targets: " + "; ".join(f"{name}: {'met' if ok else 'not met'}" for name, ok in summary["targets"].items()) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--calibration", type=int, default=64, help="calibration windows")
    parser.add_argument("--prune_batch", type=int, default=32, help="calibration batch size")
    parser.add_argument("--eval_chars", type=int, default=32768)
    parser.add_argument("--mnist_train", type=int, default=8000)
    parser.add_argument("--mnist_epochs", type=int, default=3)
    parser.add_argument("--mnist_calibration", type=int, default=512, help="MNIST calibration images")
    parser.add_argument("--model_cache", help="directory to keep/reuse the trained LM weights")
    parser.add_argument("--markdown", help="also write the markdown table to this file (atomically)")
    parser.add_argument("--readme", help=f"replace the '{README_BLOCK}' block of this markdown file with the table")
    parser.add_argument("--quick", action="store_true", help="tiny run to check the tool works")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.width, args.heads, args.context, args.steps = 1, 32, 2, 32, 8
        args.calibration, args.eval_chars, args.mnist_train, args.mnist_epochs = 16, 1024, 500, 1
        args.mnist_calibration = 64
    lm = run_lm(args)
    summary = {"benchmark": "oneshot", "lm": lm, "mnist": run_mnist(args)}
    summary["targets"] = targets(lm["rows"], lm["dense_perplexity"])
    summary["config"] = {k: v for k, v in vars(args).items() if k not in ("markdown", "readme", "model_cache")}
    table = format_table(summary, args)
    print(table)
    if args.markdown:
        write_atomic(args.markdown, table + "\n")
    if args.readme:
        replace_block(args.readme, README_BLOCK, table)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
