"""Per-weight sparsity rows: one schema for callbacks, `tfprune-summary`, export reports and M-by-N checks.

A row describes one prunable weight:

    {"layer", "weight", "shape", "size", "zeros", "sparsity", "bytes"}

(`bytes`: what the model stores for the weight), and, for a layer quantized by Keras' own
`model.quantize("int8" | "int4")`, `"quantization"`: its mode (zeros are the weights whose
dequantized value is 0, bytes include the scales and zero points); for a weight inside a `PruneLowMagnitude` wrapper, also `"threshold"`, `"target_sparsity"` and
`"step"`. Zeros of a wrapped weight are the zeros of its mask (what pruning decided); zeros of a plain
layer's weight (stripped, one-shot or functionally pruned) are the zeros it stores.

Example:
    >>> rows = weight_rows(pruned_model)
    >>> print(format_sparsity_table(rows))
    >>> totals(rows)["sparsity"]
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import keras
import numpy as np

from tfprune.keras_graph import find_layers
from tfprune.layers import is_prunable, prunable_weights
from tfprune.wrapper import PruneLowMagnitude

__all__ = ["weight_values", "weight_rows", "totals", "format_sparsity_table"]


def _numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value))


def weight_values(model: Any) -> Iterator[tuple[str, str, np.ndarray, Any]]:
    """`(layer name, weight label, value, wrapper or None)` for every prunable weight of `model` (a
    model, a layer or a wrapper): masked values inside wrappers, stored values of plain prunable layers.

    Example:
        >>> [(layer, label) for layer, label, _, _ in weight_values(model)]
    """
    for layer, label, value, wrapper in _weight_values(model):
        yield (layer.layer.name if wrapper is not None else layer.name), label, value, wrapper


def _weight_values(model: Any) -> Iterator[tuple[Any, str, np.ndarray, Any]]:
    layers = find_layers(model, keras.layers.Layer)
    wrapped = {id(layer.layer) for layer in layers if isinstance(layer, PruneLowMagnitude)}
    for layer in layers:
        if id(layer) in wrapped or isinstance(layer, keras.Model) or not layer.built:
            continue
        if isinstance(layer, PruneLowMagnitude):
            for label, weight, mask in zip(layer.weight_labels, layer.pruned_weights, layer.masks):
                yield layer, label, _numpy(weight) * _numpy(mask), layer
        elif is_prunable(layer):
            for label, variable in prunable_weights(layer):
                yield layer, label, _numpy(variable), None


def _row(layer: str, label: str, shape: Sequence[int], zeros: int, nbytes: int) -> dict:
    size = int(np.prod(shape, dtype=np.int64))
    return {"layer": layer, "weight": label, "shape": list(shape), "size": size, "zeros": int(zeros),
            "sparsity": int(zeros) / max(size, 1), "bytes": int(nbytes)}


def _plain_row(layer: Any, name: str, label: str, value: np.ndarray) -> dict:
    from tfprune.layers.keras_quantized import quantized_weight

    info = quantized_weight(layer, label) if layer is not None else None
    if info is None:
        return _row(name, label, value.shape, value.size - np.count_nonzero(value), value.nbytes)
    row = _row(name, label, info["shape"], info["zeros"], info["bytes"])
    row["quantization"] = info["quantization"]
    return row


def weight_rows(model: Any, wrapped_only: bool = False) -> list[dict]:
    """One row per prunable weight of `model` (see the module docstring for the schema).

    With `wrapped_only`, only weights inside pruning wrappers are listed.

    Example:
        >>> [r["sparsity"] for r in weight_rows(pruned_model)]
    """
    rows = []
    for layer, label, value, wrapper in _weight_values(model):
        if wrapper is None:
            if not wrapped_only:
                rows.append(_plain_row(layer, layer.name, label, value))
            continue
        index = wrapper.weight_labels.index(label)
        mask = _numpy(wrapper.masks[index])
        row = _row(wrapper.layer.name, label, mask.shape, mask.size - np.count_nonzero(mask), value.nbytes)
        row.update(
            threshold=float(_numpy(wrapper.thresholds[index])),
            target_sparsity=float(_numpy(wrapper.target_sparsities()[index])),
            step=int(_numpy(wrapper.pruning_step)),
        )
        rows.append(row)
    return rows


def totals(rows: Sequence[dict]) -> dict:
    """`{"size", "zeros", "sparsity", "bytes"}` over `rows` (bytes: of the rows that report them).

    Example:
        >>> totals(weight_rows(model))["sparsity"]
    """
    size = sum(r["size"] for r in rows)
    zeros = sum(r["zeros"] for r in rows)
    return {"size": size, "zeros": zeros, "sparsity": zeros / max(size, 1),
            "bytes": sum(r.get("bytes", 0) for r in rows)}


def format_sparsity_table(rows: Sequence[dict]) -> str:
    """A readable per-weight sparsity table with a total line.

    Example:
        >>> print(format_sparsity_table(weight_rows(model)))
    """
    header = (f"{'layer/weight':<40} {'shape':>18} {'params':>10} {'zeros':>10} {'sparsity':>9} {'dtype':>7} "
              f"{'bytes':>10}")
    lines = [header, "-" * len(header)]
    for row in rows:
        name = f"{row['layer']}/{row['weight']}"
        nbytes = row.get("bytes")
        lines.append(
            f"{name:<40} {str(tuple(row['shape'])):>18} {row['size']:>10} {row['zeros']:>10} {row['sparsity']:>8.1%} "
            f"{row.get('quantization', 'float'):>7} {'-' if nbytes is None else nbytes:>10}"
        )
    total = totals(rows)
    lines.append("-" * len(header))
    lines.append(f"{'total (pruned weights)':<40} {'':>18} {total['size']:>10} {total['zeros']:>10} "
                 f"{total['sparsity']:>8.1%} {'':>7} {total['bytes']:>10}")
    return "\n".join(lines)
