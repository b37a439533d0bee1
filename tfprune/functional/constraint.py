"""`WeightMask`: the Keras constraint that keeps a functionally pruned weight's pruned entries at zero.

A pruned weight keeps its own variable; its `constraint` becomes a `WeightMask` holding the 0/1 mask
in a non-trainable variable. Keras optimizers apply a variable's constraint right after every update
(`optimizer.apply`, used by `fit`, `apply_gradients` and custom loops), so pruned entries are re-zeroed
after each step, whatever the gradient or the optimizer state (Adam moments) proposed.

The mask travels two ways:

* in the constraint's config (zlib-compressed packed bits, base64): the layer's config carries it
  (e.g. `kernel_constraint`), so `.keras` files, `clone_model`, `from_config(get_config())` and
  tfprune's wrapper and strip functions, which rebuild layers from their configs, all keep it;
* in the weights file, at `<layer path>/<constraint attribute>`: a layer whose constraint slot
  exists before loading (e.g. a subclassed model that calls `tfprune.functional.identity` in its
  `build`) gets its mask from there.

A constraint the weight had before pruning (e.g. `keras.constraints.NonNeg()`) is kept as `inner`
and applied first; `tfprune.functional.remove` puts it back.

Example:
    >>> constraint = WeightMask(np.array([[1, 0], [0, 1]], np.float32))
    >>> constraint(keras.ops.ones((2, 2))).numpy()
    array([[1., 0.],
           [0., 1.]], dtype=float32)
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import keras
import numpy as np

try:  # Keras' marker for objects with state in the weights file; internal since Keras 3.0.
    from keras.src.saving.keras_saveable import KerasSaveable
except ImportError:  # pragma: no cover - masks then travel in the config only
    KerasSaveable = object  # type: ignore[assignment,misc]

__all__ = ["WeightMask", "encode_mask", "decode_mask"]


def encode_mask(mask: np.ndarray) -> str:
    """A 0/1 array as text: packed bits, zlib-compressed, base64 (ASCII)."""
    bits = np.packbits(np.asarray(mask, bool).ravel())
    return base64.b64encode(zlib.compress(bits.tobytes(), 9)).decode("ascii")


def decode_mask(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `encode_mask`: a bool array of `shape`."""
    size = int(np.prod(shape, dtype=np.int64))
    bits = np.frombuffer(zlib.decompress(base64.b64decode(text)), np.uint8)
    flat = np.unpackbits(bits, count=size).astype(bool)
    if flat.size != size:
        raise ValueError(f"The stored mask holds {flat.size} entries but shape {tuple(shape)} needs {size}.")
    return flat.reshape(shape)


@keras.saving.register_keras_serializable(package="tfprune")
class WeightMask(keras.constraints.Constraint, KerasSaveable):
    """Constraint `w -> inner(w) * mask` that holds a pruning mask in a non-trainable variable.

    Created by `tfprune.functional`'s pruning functions; read `mask` for the current 0/1 mask.

    Args:
        mask: 0/1 array, the weight's shape (1 keeps, 0 prunes).
        inner: the constraint the weight had before pruning, applied first; or None.
        dtype: dtype of the mask variable (the weight's dtype).

    Example:
        >>> WeightMask(np.ones((3, 2)), inner=keras.constraints.NonNeg()).mask.shape
        (3, 2)
    """

    def __init__(self, mask: Any, inner: Any = None, dtype: str = "float32"):
        values = np.asarray(mask)
        self.inner = keras.constraints.get(inner)
        self.mask = keras.Variable(
            values.astype(dtype), trainable=False, dtype=dtype, autocast=False, name="weight_mask"
        )

    def __call__(self, w: Any) -> Any:
        if self.inner is not None:
            w = self.inner(w)
        return keras.ops.multiply(w, keras.ops.cast(self.mask, w.dtype))

    def mask_array(self) -> np.ndarray:
        """The mask as a numpy bool array."""
        return keras.ops.convert_to_numpy(self.mask).astype(bool)

    def get_config(self) -> dict:
        return {
            "shape": list(self.mask.shape),
            "dtype": str(self.mask.dtype),
            "mask": encode_mask(self.mask_array()),
            "inner": None if self.inner is None else keras.constraints.serialize(self.inner),
        }

    @classmethod
    def from_config(cls, config: dict) -> "WeightMask":
        shape = tuple(int(d) for d in config["shape"])
        inner = config.get("inner")
        return cls(
            decode_mask(config["mask"], shape),
            inner=None if inner is None else keras.constraints.deserialize(inner),
            dtype=config.get("dtype", "float32"),
        )

    # State in the weights file (Keras' saving walks layer attributes that are KerasSaveable).
    def _obj_type(self) -> str:
        # Only selects which attributes Keras' saving skips; it accepts a fixed list of kinds.
        return "Operation"

    def save_own_variables(self, store: Any) -> None:
        store["0"] = keras.ops.convert_to_numpy(self.mask)

    def load_own_variables(self, store: Any) -> None:
        if len(store.keys()) != 1:
            raise ValueError(f"A WeightMask stores one variable; the weights file lists {len(store.keys())}.")
        value = np.asarray(store["0"])
        if tuple(value.shape) != tuple(self.mask.shape):
            raise ValueError(
                f"The saved mask has shape {tuple(value.shape)} but this weight's mask has shape "
                f"{tuple(self.mask.shape)}; load into a model of the same architecture."
            )
        self.mask.assign(value.astype(self.mask.dtype))

    # Copies go through the config (KerasSaveable would otherwise pickle through model saving).
    def __reduce__(self) -> tuple:
        return (_from_config, (self.get_config(),))

    def __deepcopy__(self, memo: dict) -> "WeightMask":
        return WeightMask.from_config(self.get_config())


def _from_config(config: dict) -> WeightMask:
    return WeightMask.from_config(config)
