"""tfprune-check-m-by-n: check that the kernels of a TFLite file follow M-by-N sparsity.

Example:
    tfprune-check-m-by-n --model_tflite=model.tflite --m_by_n=2,4

`--m_by_n=M,N` means at least M zeros in every N consecutive weights (tfmot's meaning; 2,4 is 2:4
sparsity). Every kernel of a FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV or
CONV_3D op is checked along its input dimension (TFLite stores kernels as [out, ..., in]), also
when stored as float16, int8 or in TFLite's sparse encoding. One line per tensor is printed
(--json: one JSON object).

Exit codes: 0 every tensor follows the pattern, 1 a tensor violates it (or the file cannot be
read), 2 usage error (missing flag, bad --m_by_n, no such file). Errors are one line on stderr.
"""

from __future__ import annotations

import json
import os

from absl import flags

from tfprune.cli.common import Failure, UsageError, run_cli

PROG = "tfprune-check-m-by-n"


def define_flags() -> flags.FlagValues:
    fv = flags.FlagValues()
    flags.DEFINE_string("model_tflite", None, "The .tflite file to check.", flag_values=fv)
    flags.DEFINE_string("m_by_n", "2,4", "M,N: at least M zeros in every N consecutive weights.", flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print one JSON object instead of lines.", flag_values=fv)
    return fv


def format_rows(rows: list[dict], m: int, n: int) -> str:
    """One line per checked tensor and a closing summary line.

    Example:
        >>> print(format_rows([{"tensor": "fc", "op": "FULLY_CONNECTED", "shape": [4, 8], "ok": True,
        ...                     "violations": 0, "groups": 8, "dtype": "float32", "sparse_encoded": False}], 2, 4))
        ok    fc  FULLY_CONNECTED [4, 8] float32: 0 of 8 groups with fewer than 2 zeros in 4
        all 1 kernel tensors follow 2:4 sparsity
    """
    lines = []
    width = max((len(r["tensor"]) for r in rows), default=0)
    for r in rows:
        encoded = ", sparse-encoded" if r["sparse_encoded"] else ""
        lines.append(f"{'ok' if r['ok'] else 'FAIL':<5} {r['tensor']:<{width}}  {r['op']} {r['shape']} "
                     f"{r['dtype']}{encoded}: {r['violations']} of {r['groups']} groups with fewer than "
                     f"{m} zeros in {n}")
    bad = sum(1 for r in rows if not r["ok"])
    if not rows:
        lines.append("no kernel tensors (FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, CONV_3D) found")
    elif bad:
        lines.append(f"{bad} of {len(rows)} kernel tensors violate {m}:{n} sparsity")
    else:
        lines.append(f"all {len(rows)} kernel tensors follow {m}:{n} sparsity")
    return "\n".join(lines)


def main(fv: flags.FlagValues) -> int:
    from tfprune.tflite_m_by_n import parse_m_by_n, tflite_m_by_n_report

    if not fv.model_tflite:
        raise UsageError("--model_tflite is required. Fix: --model_tflite=path/to/model.tflite")
    try:
        m, n = parse_m_by_n(fv.m_by_n)
    except ValueError as err:
        raise UsageError(f"--{err}") from None
    if not os.path.isfile(fv.model_tflite):
        raise UsageError(f"--model_tflite {fv.model_tflite!r} is not a file. Fix: pass an existing .tflite file.")
    try:
        rows = tflite_m_by_n_report(fv.model_tflite, m, n)
    except ValueError as err:
        raise Failure(str(err)) from None
    if fv.json:
        print(json.dumps({"model": fv.model_tflite, "m_by_n": [m, n], "tensors": rows,
                          "ok": all(r["ok"] for r in rows)}))
    else:
        print(format_rows(rows, m, n))
    return 0 if all(r["ok"] for r in rows) else 1


def run(argv: list[str] | None = None) -> None:
    """Console entry point."""
    run_cli(PROG, __doc__, define_flags, main, argv)


if __name__ == "__main__":
    run()
