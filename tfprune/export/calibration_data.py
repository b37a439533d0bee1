"""Representative data for post-training calibration at export: a `.npy` file or a directory of them.

Example:
    >>> x = load_representative_data("calib/")        # every calib/*.npy, concatenated on the batch axis
"""

from __future__ import annotations

import glob
import os

import numpy as np

from tfprune.export.errors import ExportUsageError, first_line

__all__ = ["load_representative_data"]


def _load_one(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - numpy raises ValueError, OSError, EOFError...
        raise ExportUsageError(
            f"--representative_data: cannot read {path!r} as a .npy array ({first_line(err)}). Fix: save the "
            "calibration inputs with numpy.save('data.npy', x)."
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub" or array.ndim < 1:
        raise ExportUsageError(
            f"--representative_data: {path!r} holds {getattr(array, 'dtype', type(array).__name__)} data of shape "
            f"{getattr(array, 'shape', None)}, not a numeric batch. Fix: save model inputs (batch, ...) as float32."
        )
    if len(array) == 0:
        raise ExportUsageError(f"--representative_data: {path!r} is empty. Fix: save at least one sample.")
    return array


def load_representative_data(path: str) -> np.ndarray:
    """The calibration inputs in `path`: one `.npy` file, or every `*.npy` of a directory (sorted by name)
    concatenated along the batch axis; `ExportUsageError` naming the problem otherwise.

    Example:
        >>> load_representative_data("calibration.npy").shape
        (512, 28, 28, 1)
    """
    if not os.path.exists(path):
        raise ExportUsageError(
            f"--representative_data {path!r} does not exist. Fix: pass a .npy file or a directory of .npy files."
        )
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(glob.escape(path), "*.npy")))
        if not files:
            raise ExportUsageError(
                f"--representative_data: directory {path!r} has no .npy file. Fix: save batches there with numpy.save."
            )
    else:
        files = [path]
    arrays = [_load_one(f) for f in files]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) > 1:
        raise ExportUsageError(
            f"--representative_data: the .npy files in {path!r} have different sample shapes {sorted(shapes)}. Fix: "
            "keep only inputs of the model's shape there."
        )
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
