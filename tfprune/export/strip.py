"""Stripping: fold masks into weights, drop every pruning variable, optionally keep only some outputs.

Example:
    >>> plain, rows, warnings = strip_model(pruned_model, output_node_names=["logits"])
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from tfprune.export.errors import ExportUsageError
from tfprune.sparsity import totals

PRUNING_VARIABLE_SUFFIXES = ("_mask", "_threshold", "pruning_step", "last_update_step")


def weight_rows(model: Any) -> list[dict]:
    """Per pruned weight (`tfprune.sparsity` rows): layer, weight, shape, size, zeros, sparsity."""
    from tfprune.sparsity import weight_rows as rows_of

    return rows_of(model, wrapped_only=True)


def pruning_variables(model: Any) -> list[str]:
    """Paths of the pruning variables (masks, thresholds, steps) still in `model`."""
    return [v.path for v in model.weights if v.path.rsplit("/", 1)[-1].endswith(PRUNING_VARIABLE_SUFFIXES)]


def select_outputs(model: Any, output_node_names: Sequence[str] | None) -> Any:
    """A functional sub-model whose outputs are the named layers' outputs (in the given order)."""
    import keras

    if not output_node_names:
        return model
    if not hasattr(model, "inputs") or not model.inputs:
        raise ExportUsageError(
            "--output_node_names needs a Sequential or functional model; this one is subclassed. "
            "Fix: drop --output_node_names."
        )
    by_name = {layer.name: layer for layer in model.layers}
    outputs = []
    for name in output_node_names:
        layer = (by_name.get(name) or by_name.get("prune_low_magnitude_" + name)
                 or by_name.get(name.replace("prune_low_magnitude_", "", 1)))
        if layer is None:
            raise ExportUsageError(
                f"no layer named {name!r} in the model. Fix: use --output_node_names with some of: "
                f"{', '.join(by_name)}."
            )
        outputs.append(layer.output)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs if len(outputs) > 1 else outputs[0], name=model.name)


def strip_model(model: Any, output_node_names: Sequence[str] | None = None) -> tuple[Any, list[dict], list[str]]:
    """Returns `(stripped_model, weight_rows, warnings)`.

    The stripped model holds plain Keras layers whose pruned weights are `weight * mask`, and no
    mask, threshold or step variable. A model without pruning wrappers is returned as is, with a warning.
    """
    from tfprune.prune import collect_wrappers, strip_pruning

    warnings = []
    wrappers = collect_wrappers(model)
    rows = weight_rows(model)
    if not wrappers:
        warnings.append(
            "the checkpoint has no pruning wrappers: it is exported unchanged and no weight is sparse. "
            "Fix: train a model wrapped with tfprune.prune_low_magnitude."
        )
        stripped = model
    else:
        for wrapper in wrappers:
            if wrapper.built:
                wrapper.apply_masks()
        stripped = strip_pruning(model)
    stripped = select_outputs(stripped, output_node_names)
    left = pruning_variables(stripped)
    if left:
        raise RuntimeError(f"pruning variables left after stripping: {left}")
    return stripped, rows, warnings
