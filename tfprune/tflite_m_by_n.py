"""M-by-N sparsity check of the weight tensors in a TFLite file.

`tflite_m_by_n_report("model.tflite", 2, 4)` lists every kernel of a FULLY_CONNECTED, CONV_2D,
DEPTHWISE_CONV_2D, TRANSPOSE_CONV or CONV_3D op, and whether every group of N consecutive weights
along its input dimension holds at least M zeros (tfmot's meaning of `(M, N)`). TFLite stores these
kernels as `[out, ..., in]`, so groups run along the last axis (CONV_3D keeps TensorFlow's
`[d, h, w, in, out]`: the second-to-last axis). Kernels stored through DEQUANTIZE (float16) or
DENSIFY (sparse encoding, `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`) are followed to the stored
constant and decoded; int8 kernels are checked on their integer values (0 is 0 for symmetric
weight quantization).

Only numpy and the TFLite interpreter (`tfprune.interpreter.make_interpreter`) are used; the model
is never run.

Example:
    >>> rows = tflite_m_by_n_report("model.tflite", 2, 4)
    >>> all(row["ok"] for row in rows)
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfprune.interpreter import make_interpreter

__all__ = ["tflite_m_by_n_report", "m_by_n_violations_along", "parse_m_by_n"]

# op name -> (kernel input index, axis holding the input channels)
KERNEL_OPS = {
    "FULLY_CONNECTED": (1, -1),
    "CONV_2D": (1, -1),
    "DEPTHWISE_CONV_2D": (1, -1),
    "TRANSPOSE_CONV": (1, -1),
    "CONV_3D": (1, -2),
}
_PASS_THROUGH_OPS = ("DEQUANTIZE", "DENSIFY")
_DENSE, _SPARSE_CSR = 0, 1


def parse_m_by_n(text: Any) -> tuple[int, int]:
    """`"2,4"` or `(2, 4)` -> `(2, 4)`; raises `ValueError` unless two integers with 0 < M < N.

    Example:
        >>> parse_m_by_n("2,4")
        (2, 4)
    """
    parts = text.split(",") if isinstance(text, str) else text
    try:
        values = [str(p).strip() for p in parts]
        if len(values) != 2 or not all(v.lstrip("+-").isdigit() for v in values):
            raise TypeError
        m, n = (int(v) for v in values)
    except TypeError:
        raise ValueError(
            f"m_by_n must be two integers M,N (at least M zeros in every N weights); received {text!r}. "
            "Example: 2,4"
        ) from None
    if not 0 < m < n:
        raise ValueError(f"m_by_n must satisfy 0 < M < N; received {text!r}. Example: 2,4")
    return m, n


def m_by_n_violations_along(values: np.ndarray, m: int, n: int, axis: int = -1) -> tuple[int, int]:
    """`(violating, total)` groups of `n` consecutive entries along `axis` with fewer than `m` zeros.

    A partial last group is held to the same `n - m` non-zeros; NaN counts as non-zero.

    Example:
        >>> m_by_n_violations_along(np.array([[1.0, 0.0, 2.0, 0.0]]), 2, 4)
        (0, 1)
    """
    values = np.asarray(values)
    if values.ndim == 0:
        values = values.reshape(1)
    nonzero = np.moveaxis(values != 0, axis, -1)
    length = nonzero.shape[-1]
    groups = -(-length // n)
    padded = np.zeros(nonzero.shape[:-1] + (groups * n,), bool)
    padded[..., :length] = nonzero
    counts = padded.reshape(nonzero.shape[:-1] + (groups, n)).sum(-1)
    return int(np.count_nonzero(counts > n - m)), int(counts.size)


def _decode_sparse(stored: np.ndarray, shape: list[int], params: dict) -> np.ndarray:
    """Dense array of a TFLite tensor stored in its sparse format (traversal order, blocks, CSR dims)."""
    order = [int(v) for v in params["traversal_order"]]
    block_map = [int(v) for v in params.get("block_map", [])]
    meta = params["dim_metadata"]
    rank = len(shape)
    block_sizes = {}
    for level, dim in enumerate(order):
        if dim >= rank:
            block_sizes[dim] = int(meta[level]["dense_size"])
    flat = np.ravel(stored)
    dense = np.zeros(shape, flat.dtype)
    coords = [0] * len(order)

    def walk(level: int, position: int) -> None:
        if level == len(order):
            index = list(coords[:rank])
            for b, original in enumerate(block_map):
                index[original] = coords[original] * block_sizes[rank + b] + coords[rank + b]
            dense[tuple(index)] = flat[position]
            return
        dim_meta = meta[level]
        if int(dim_meta["format"]) == _DENSE:
            size = int(dim_meta["dense_size"])
            for i in range(size):
                coords[order[level]] = i
                walk(level + 1, position * size + i)
        else:
            segments, indices = dim_meta["array_segments"], dim_meta["array_indices"]
            for p in range(int(segments[position]), int(segments[position + 1])):
                coords[order[level]] = int(indices[p])
                walk(level + 1, p)

    walk(0, 0)
    return dense


def _stored_kernel(interpreter: Any, details: dict, producers: dict, index: int) -> tuple[dict, np.ndarray]:
    """The constant behind kernel tensor `index` (through DEQUANTIZE/DENSIFY), decoded to dense."""
    seen = set()
    while index in producers and index not in seen:
        seen.add(index)
        op = producers[index]
        if op["op_name"] not in _PASS_THROUGH_OPS:
            break
        index = int(op["inputs"][0])
    detail = details[index]
    try:
        stored = interpreter.get_tensor(index)
    except ValueError:
        raise ValueError(
            f"tensor '{detail['name']}' is computed at run time, not stored in the file; only constant "
            "kernels can be checked."
        ) from None
    shape = [int(v) for v in detail["shape"]]
    params = detail.get("sparsity_parameters") or {}
    if params:
        return detail, _decode_sparse(stored, shape, params)
    return detail, np.asarray(stored).reshape(shape)


def tflite_m_by_n_report(model_path: str, m: int, n: int) -> list[dict]:
    """Per kernel tensor of a TFLite file: name, op, shape, violating and total groups, and `ok`.

    `(m, n)`: at least `m` zeros in every `n` consecutive weights along the input dimension.
    Raises `ValueError` for a file the interpreter cannot read.

    Example:
        >>> [row["tensor"] for row in tflite_m_by_n_report("model.tflite", 2, 4) if not row["ok"]]
        []
    """
    m, n = parse_m_by_n((m, n))
    try:
        interpreter = make_interpreter(model_path=str(model_path))
        ops = interpreter._get_ops_details()
    except (ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read '{model_path}' as a TFLite model ({first}).") from None
    details = {int(d["index"]): d for d in interpreter.get_tensor_details()}
    producers = {int(out): op for op in ops for out in op["outputs"]}
    rows, done = [], set()
    for op in ops:
        if op["op_name"] not in KERNEL_OPS:
            continue
        input_index, axis = KERNEL_OPS[op["op_name"]]
        if len(op["inputs"]) <= input_index or int(op["inputs"][input_index]) < 0:
            continue
        detail, kernel = _stored_kernel(interpreter, details, producers, int(op["inputs"][input_index]))
        if int(detail["index"]) in done:
            continue
        done.add(int(detail["index"]))
        violations, groups = m_by_n_violations_along(kernel, m, n, axis)
        rows.append({
            "tensor": detail["name"], "op": op["op_name"], "shape": list(kernel.shape),
            "dtype": np.dtype(kernel.dtype).name, "sparse_encoded": bool(detail.get("sparsity_parameters")),
            "violations": violations, "groups": groups, "ok": violations == 0,
        })
    return rows
