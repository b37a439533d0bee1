"""Per-channel activation statistics from calibration data, for activation-based importance.

`record_activations` runs a model eagerly on a batch while the `call` of each probed layer (or
sublayer, e.g. an attention layer's output projection) is wrapped to record the mean absolute value
of its input or output over every axis but the trailing ones kept. The wrappers are removed
afterwards, also when the model raises.

Example:
    >>> stats = record_activations(model, x, {0: [("out", dense, "output", 1)]})
    >>> stats[0]["out"].shape     # (units,)
"""

from __future__ import annotations

from typing import Any, Hashable

import keras
import numpy as np


class _Mean:
    def __init__(self, keep: int) -> None:
        self.keep, self.total, self.count = keep, None, 0

    def add(self, value: Any) -> None:
        array = np.abs(np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64))
        rows = array.reshape((-1,) + array.shape[array.ndim - self.keep:])
        self.total = rows.sum(0) if self.total is None else self.total + rows.sum(0)
        self.count += rows.shape[0]

    def mean(self) -> np.ndarray | None:
        return None if self.total is None else self.total / max(self.count, 1)


def record_activations(model: keras.Model, inputs: Any,
                       probes: dict[Hashable, list[tuple[str, Any, str, int]]]) -> dict[Hashable, dict[str, np.ndarray]]:
    """{key: {probe name: mean |activation|}} for `probes` = {key: [(name, layer, 'input' | 'output',
    trailing axes kept)]}, measured on `inputs` (x, or (x, y) whose y is ignored).

    Example:
        >>> record_activations(model, x, {"d": [("out", model.layers[1], "output", 1)]})["d"]["out"]
    """
    x = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 2 else inputs
    meters: dict[tuple, _Mean] = {}
    by_layer: dict[int, tuple[Any, list[tuple[str, _Mean]]]] = {}
    for probe_list in probes.values():
        for _, layer, where, keep in probe_list:
            if where not in ("input", "output"):
                raise ValueError(f"A probe reads 'input' or 'output', received {where!r}.")
            meter_key = (id(layer), where, keep)
            if meter_key not in meters:
                meters[meter_key] = _Mean(keep)
                by_layer.setdefault(id(layer), (layer, []))[1].append((where, meters[meter_key]))
    patched = []
    try:
        for layer, wanted in by_layer.values():
            original = layer.call

            def wrapped(*args, _original=original, _wanted=wanted, **kwargs):
                out = _original(*args, **kwargs)
                for where, meter in _wanted:
                    value = args[0] if where == "input" else out
                    if isinstance(value, (tuple, list)):
                        value = value[0]
                    meter.add(value)
                return out

            object.__setattr__(layer, "call", wrapped)
            patched.append(layer)
        model(x, training=False)
    finally:
        for layer in patched:
            object.__delattr__(layer, "call")
    out: dict[Hashable, dict[str, np.ndarray]] = {}
    for key, probe_list in probes.items():
        found = {}
        for name, layer, where, keep in probe_list:
            mean = meters[(id(layer), where, keep)].mean()
            if mean is not None:
                found[name] = mean
        out[key] = found
    return out
