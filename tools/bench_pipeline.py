"""The compression pipeline on the bundled MNIST: what each step (structured pruning, unstructured or 2:4
pruning, int8, low-bit weights and activations) buys, for a network-in-network-style CNN with
BatchNormalization after every convolution.

Every row is exported to TFLite and its accuracy measured with the interpreter on the eval images
(all rows are deployable: low-bit rows export as int8 tensors with few distinct values); MACs and
parameters are the Keras model's (nonzero: the weights that are not exactly 0); sizes are the
flatbuffer raw and zipped; latency is TFLite, 1 thread, batch 1 and 32 (median).

    python tools/bench_pipeline.py --seeds 2 [--markdown tools/results/bench_pipeline.md] [--readme docs/benchmarks.md]
    python tools/bench_pipeline.py --seeds 1 --train 256 --eval 128 --epochs 1 --finetune_epochs 1 \
        --qat_epochs 1 --repeats 2 --rows float,int8_qat            # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench_quantization import (  # noqa: E402
    add_common_arguments,
    compile_model,
    float_tflite,
    latencies_ms,
    mnist_data,
    tflite_accuracy,
    verdict,
    zipped_bytes,
)
from readme_block import publish  # noqa: E402
import tfprune  # noqa: E402
import tfprune.quantization as tfq  # noqa: E402
from tfprune.analysis import count_macs  # noqa: E402
from tfprune.structured import recalibrate_batchnorm  # noqa: E402

L = keras.layers


README_BLOCK = "bench_pipeline"  # the marked block of docs/benchmarks.md this tool writes

def nin_model() -> keras.Model:
    """Network-in-network style: (conv-BN-ReLU, 1x1 conv-BN-ReLU, pool) x 2, 1x1 conv-BN-ReLU, dense logits."""
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for filters, kernel in ((32, 5), (64, 3)):
        x = L.Conv2D(filters, kernel, padding="same", use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Conv2D(filters, 1, use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.MaxPooling2D()(x)
    x = L.Conv2D(32, 1, use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.Flatten()(L.MaxPooling2D()(x))
    return keras.Model(inputs, L.Dense(10)(x), name="nin")


def nonzero_params(model: keras.Model) -> int:
    return int(sum(np.count_nonzero(keras.ops.convert_to_numpy(w)) for w in model.trainable_weights))


class Pipeline:
    """One seed's models, built step by step and cached (structured rows share the pruned model)."""

    def __init__(self, args: argparse.Namespace, data: tuple, seed: int) -> None:
        self.args, self.seed = args, seed
        self.x, self.y, self.x_eval, self.y_eval = data
        self._cache: dict[str, keras.Model] = {}

    def fit(self, model: keras.Model, epochs: int, lr: float, callbacks: list | None = None) -> keras.Model:
        compile_model(model, lr)
        model.fit(self.x, self.y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks or [])
        return model

    def cached(self, key: str, make: Callable[[], keras.Model]) -> keras.Model:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def float_model(self) -> keras.Model:
        def make() -> keras.Model:
            keras.utils.set_random_seed(self.seed)
            model = self.fit(nin_model(), self.args.epochs, self.args.lr)
            recalibrate_batchnorm(model, self.x, steps=None)
            return model
        return self.cached("float", make)

    def structured(self, round_to: int | None = None) -> keras.Model:
        def make() -> keras.Model:
            pruned, _ = tfprune.prune_filters(self.float_model(), pruning_ratio=0.5, round_to=round_to)
            self.fit(pruned, self.args.finetune_epochs, self.args.lr / 3)
            recalibrate_batchnorm(pruned, self.x, steps=None)
            return pruned
        return self.cached(f"structured{round_to}", make)

    def unstructured(self, m_by_n: tuple[int, int] | None = None) -> keras.Model:
        def make() -> keras.Model:
            steps = max(1, self.args.finetune_epochs * (len(self.x) // 64))
            frequency = max(1, min(100, steps // 20))
            end = max(frequency, (steps * 2 // 3) // frequency * frequency)  # the last third at 80%
            kwargs = ({"sparsity_m_by_n": m_by_n} if m_by_n else
                      {"pruning_schedule": tfprune.PolynomialDecay(0.0, 0.8, 0, end, frequency=frequency)})
            pruned = tfprune.prune_low_magnitude(self.float_model(), **kwargs)
            self.fit(pruned, self.args.finetune_epochs, self.args.lr / 3, [tfprune.UpdatePruningStep()])
            return pruned  # still wrapped: quantize_model(preserve_sparsity=True) strips it
        return self.cached(f"unstructured{m_by_n}", make)

    def qat(self, model: keras.Model, **kwargs) -> keras.Model:
        quantized = tfq.quantize_model(model, **kwargs)
        return self.fit(quantized, self.args.qat_epochs, self.args.qat_lr)


def row_specs() -> dict[str, tuple[str, Callable[[Pipeline], tuple[keras.Model, keras.Model, bool]]]]:
    """name -> (label, build(pipeline) -> (float model for MACs/params, model to export, quantized))."""
    def plain(p: Pipeline, model: keras.Model):
        return model, model, False

    def quant(p: Pipeline, base: keras.Model, **kwargs):
        return base, p.qat(base, **kwargs), True

    return {
        "float": ("float", lambda p: plain(p, p.float_model())),
        "structured": ("structured 50% + fine-tune", lambda p: plain(p, p.structured())),
        "structured_round8": ("structured 50%, round_to 8, + fine-tune", lambda p: plain(p, p.structured(8))),
        "int8_qat": ("int8 QAT", lambda p: quant(p, p.float_model())),
        "structured_int8": ("structured 50% + int8 QAT", lambda p: quant(p, p.structured())),
        "sparse80_pqat": ("80% unstructured + int8 PQAT",
                          lambda p: quant(p, p.unstructured(), preserve_sparsity=True)),
        "two_four_pqat": ("2:4 + int8 PQAT", lambda p: quant(p, p.unstructured((2, 4)), preserve_sparsity=True)),
        "w4a8": ("W4A8", lambda p: quant(p, p.float_model(), weight_bits=4, activation_bits=8)),
        "ternary": ("ternary weights / 8-bit activations",
                    lambda p: quant(p, p.float_model(), scheme=tfq.LowBitScheme(weights="ternary"))),
        "binary": ("binary weights / binary activations",
                   lambda p: quant(p, p.float_model(), scheme=tfq.LowBitScheme(weights="binary",
                                                                               activations="binary"))),
        "structured_ternary": ("structured 50% + ternary",
                               lambda p: quant(p, p.structured(), scheme=tfq.LowBitScheme(weights="ternary"))),
    }


def run_row(name: str, pipeline: Pipeline, repeats: int) -> dict:
    label, build = row_specs()[name]
    base, model, quantized = build(pipeline)
    plain = tfprune.strip_pruning(base) if tfprune.collect_wrappers(base) else base
    data = tfq.to_tflite(model, inference_input_type=tf.int8) if quantized else float_tflite(model)
    x_eval, y_eval = pipeline.x_eval, pipeline.y_eval
    keras_accuracy = float(np.mean(model.predict(x_eval, batch_size=256, verbose=0).argmax(1) == y_eval))
    return dict(name=name, label=label, seed=pipeline.seed, accuracy=tflite_accuracy(data, x_eval, y_eval),
                keras_accuracy=keras_accuracy, macs=count_macs(plain), params=int(plain.count_params()),
                nonzero=nonzero_params(plain), raw_bytes=len(data), zip_bytes=zipped_bytes(data),
                **latencies_ms(data, x_eval, repeats))


def summarize(rows: list[dict]) -> list[dict]:
    """Per row name: accuracy mean and spread over seeds, sizes of the first seed, latencies median."""
    out = []
    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        acc = [r["accuracy"] for r in group]
        entry = dict(group[0], accuracy=float(np.mean(acc)), spread=float(max(acc) - min(acc)),
                     keras_accuracy=float(np.mean([r["keras_accuracy"] for r in group])),
                     b1_ms=float(np.median([r["b1_ms"] for r in group])),
                     b32_ms=float(np.median([r["b32_ms"] for r in group])))
        entry.pop("seed")
        out.append(entry)
    return out


# row, label, claim, the float / row ratio of which key, at least, its digits, accuracy points within float
TARGETS = (
    ("sparse80_pqat", "80% sparse + int8 PQAT", "zipped at least 12x smaller than float zipped", "zip_bytes", 12, 1,
     0.5),
    ("structured_int8", "structured 50% + int8", "at least 3x faster than float TFLite at batch 32", "b32_ms", 3, 2,
     1.0),
)


def verdicts(summary: list[dict]) -> list[str]:
    """The pipeline's targets: the measured margins and met / missed."""
    rows = {r["name"]: r for r in summary}
    base = rows.get("float")
    lines = []
    if base is None:
        return lines
    for name, label, claim, key, least, digits, points in TARGETS:
        row = rows.get(name)
        if row is None:
            continue
        ratio = base[key] / row[key]
        gap = 100 * (row["accuracy"] - base["accuracy"])
        lines += [verdict(f"{label} {claim}", ratio >= least, f"{ratio:.{digits}f}x"),
                  verdict(f"{label} within {points:g} point{'' if points == 1 else 's'} of float", gap >= -points,
                          f"{gap:+.2f} points")]
    return lines


def markdown(summary: list[dict], args: argparse.Namespace, load: tuple) -> str:
    command = (f"`python tools/bench_pipeline.py --seeds {args.seeds} --train {args.train} --eval {args.eval} "
               f"--epochs {args.epochs} --finetune_epochs {args.finetune_epochs} --qat_epochs {args.qat_epochs}`")
    lines = [f"{command} ({os.cpu_count()} CPU cores; TensorFlow {tf.__version__}, Keras {keras.__version__}; "
             f"accuracy: TFLite interpreter, mean over {args.seeds} seed(s), spread = max - min; Keras: the "
             f"fake-quant Keras model; latency: TFLite, 1 thread, median; 1-minute load average at start / end "
             f"{load[0]:.2f} / {load[1]:.2f}).", "",
             "| model | TFLite accuracy | spread | Keras accuracy | MACs | params | nonzero | raw bytes | zip bytes "
             "| b1 ms | b32 ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary:
        lines.append(f"| {r['label']} | {r['accuracy']:.4f} | {r['spread']:.4f} | {r['keras_accuracy']:.4f} | "
                     f"{r['macs']:,} | {r['params']:,} | {r['nonzero']:,} | {r['raw_bytes']:,} | {r['zip_bytes']:,} | "
                     f"{r['b1_ms']:.3f} | {r['b32_ms']:.2f} |")
    checks = verdicts(summary)
    if checks:
        lines += ["", "Targets:", ""] + checks
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, seeds=2, block=README_BLOCK)
    parser.add_argument("--finetune_epochs", type=int, default=2, help="fine-tuning epochs after pruning")
    parser.add_argument("--qat_epochs", type=int, default=2)
    parser.add_argument("--rows", default=",".join(row_specs()), help="comma-separated, of " + ", ".join(row_specs()))
    args = parser.parse_args(argv)
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in row_specs()]
    if unknown or not names:
        parser.error(f"unknown --rows {unknown}; use some of {', '.join(row_specs())}")
    data = mnist_data(parser, args)
    load_start = os.getloadavg()[0]
    rows = []
    for seed in range(args.seeds):
        pipeline = Pipeline(args, data, seed)
        for name in names:
            rows.append(run_row(name, pipeline, args.repeats))
            print(json.dumps({k: rows[-1][k] for k in ("name", "seed", "accuracy", "zip_bytes", "b32_ms")}),
                  file=sys.stderr, flush=True)
    load = (load_start, os.getloadavg()[0])
    summary = summarize(rows)
    result = {"rows": rows, "summary": summary, "load": load}
    return publish(markdown(summary, args, load), result, args.markdown, args.readme, README_BLOCK)

if __name__ == "__main__":
    main()
