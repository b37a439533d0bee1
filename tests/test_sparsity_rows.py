"""One per-weight sparsity row for callbacks, summaries, export and M-by-N reports."""

from __future__ import annotations

import keras
import numpy as np

import tfprune
from tfprune import sparsity
from tfprune.export.strip import weight_rows as export_rows
from tfprune.summary import _model_rows

KEYS = {"layer", "weight", "shape", "size", "zeros", "sparsity", "bytes"}


def _pruned():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="d1"), keras.layers.Dense(2, name="d2")])
    wrapped = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
    for wrapper in tfprune.collect_wrappers(wrapped):
        wrapper.update_masks(1, [0.5])
    return wrapped


def test_rows_share_one_schema_everywhere():
    wrapped = _pruned()
    report = tfprune.sparsity_report(wrapped)
    assert [r["layer"] for r in report] == ["d1", "d2"]
    assert all(KEYS | {"threshold", "target_sparsity", "step"} == set(r) for r in report)
    assert [r["zeros"] for r in report] == [24, 8]
    assert export_rows(wrapped) == report
    assert _model_rows(wrapped) == ("wrapped_model", report)
    plain = tfprune.strip_pruning(wrapped)
    kind, rows = _model_rows(plain)
    assert kind == "model" and all(set(r) == KEYS for r in rows)
    assert [(r["layer"], r["zeros"], r["size"]) for r in rows] == [("d1", 24, 48), ("d2", 8, 16)]
    assert sparsity.totals(rows) == {"size": 64, "zeros": 32, "sparsity": 0.5, "bytes": 256}
    table = tfprune.format_sparsity_table(rows)
    assert "d1/kernel" in table and "50.0%" in table


def test_weight_values_apply_masks_of_wrappers():
    wrapped = _pruned()
    values = {f"{layer}/{label}": value for layer, label, value, _ in sparsity.weight_values(wrapped)}
    wrapper = tfprune.collect_wrappers(wrapped)[0]
    expected = wrapper.pruned_weights[0].numpy() * wrapper.masks[0].numpy()
    np.testing.assert_array_equal(values["d1/kernel"], expected)
