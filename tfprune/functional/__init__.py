"""Functional in-place pruning of built Keras layers, in the style of `torch.nn.utils.prune`.

Each function masks one weight of a built layer in place, in any model (Sequential, functional,
nested or subclassed): the pruned entries become zero at once and the weight's constraint becomes a
`WeightMask`, which Keras optimizers apply after every update, so the entries stay zero through
`fit` and custom training loops. The mask is saved with the model (`.keras`) and survives cloning;
pruning again composes (the new amount is taken from what is still unpruned); `remove` makes the
zeros permanent and leaves a plain layer.

The mechanism, and what follows from it:

* Pruned entries are re-zeroed after every update, not shielded from gradients (Keras has no
  in-place reparametrization): gradients and optimizer state (Adam's moments) do accumulate at
  pruned entries, but every `optimizer.apply` ends by applying the constraint, so no forward pass
  ever sees a non-zero pruned entry.
* Keras traces the train step once and reads constraints then: masking a weight for the first time
  after a `fit` needs `model.compile(...)` again (re-pruning a masked weight and `remove` do not).
* A loop that assigns variables itself (not through the optimizer) and `use_ema=True` (which writes
  the moving averages at the end of `fit`) bypass constraints: call `identity(layer, name)` afterwards
  to re-apply the mask.
* There is no `weight_orig`: later criteria see the zeros (PyTorch ranks its original values).
* Masks load from `.keras` files once `tfprune.functional` is imported. A subclassed model's inner
  layers are rebuilt by its own `__init__`/`build`: call `identity` on them in `build` (as PyTorch
  needs `prune.identity` before `load_state_dict`) and loading restores the masks.

Example:
    >>> import tfprune.functional as prune
    >>> prune.l1_unstructured(model.get_layer("dense"), "kernel", amount=0.5)
    >>> prune.ln_structured(model.get_layer("conv"), "kernel", amount=0.25, n=2, axis=-1)
    >>> model.compile(...); model.fit(...)          # pruned entries stay exactly zero
    >>> prune.remove(model.get_layer("dense"), "kernel")
"""

from tfprune.functional.api import (
    custom_from_mask,
    get_mask,
    global_unstructured,
    identity,
    is_pruned,
    l1_unstructured,
    ln_structured,
    prune_weight,
    random_structured,
    random_unstructured,
    remove,
    remove_all,
)
from tfprune.functional.api import SerializationError
from tfprune.functional.constraint import WeightMask
from tfprune.functional.methods import (
    CustomFromMask,
    Identity,
    L1Unstructured,
    LnStructured,
    PruningMethod,
    RandomStructured,
    RandomUnstructured,
)
from tfprune.functional.targets import WeightNameError, weight_names

__all__ = [
    "CustomFromMask",
    "Identity",
    "L1Unstructured",
    "LnStructured",
    "PruningMethod",
    "RandomStructured",
    "RandomUnstructured",
    "SerializationError",
    "WeightMask",
    "WeightNameError",
    "custom_from_mask",
    "get_mask",
    "global_unstructured",
    "identity",
    "is_pruned",
    "l1_unstructured",
    "ln_structured",
    "prune_weight",
    "random_structured",
    "random_unstructured",
    "remove",
    "remove_all",
    "weight_names",
]
