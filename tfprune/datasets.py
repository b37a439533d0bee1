"""The MNIST test set shipped with tfprune, for offline demos, notebooks and benchmarks.

Example:
    >>> (x_train, y_train), (x_eval, y_eval) = load_mnist()
"""

from __future__ import annotations

import gzip
import os

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(__file__), "data", "mnist")
IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"


def _read_idx(path: str, header_bytes: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"MNIST file {path} is missing: reinstall tfprune, or use load_mnist(source='keras') with a network."
        ) from None
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes)


def load_mnist(source: str = "bundled", train_size: int = 8000) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """MNIST as float32 images in [0, 1] of shape (n, 28, 28, 1) and int labels.

    Args:
        source: 'bundled' (the 10,000-image test set shipped with tfprune: the first
            `train_size` images train, the rest evaluate) or 'keras'
            (`keras.datasets.mnist.load_data()`, which needs a network).
        train_size: with 'bundled', how many of the 10,000 images go to training.
    """
    if source == "keras":
        import keras

        (x_train, y_train), (x_eval, y_eval) = keras.datasets.mnist.load_data()
    elif source == "bundled":
        images = _read_idx(os.path.join(DATA_DIR, IMAGES), 16).reshape(-1, 28, 28)
        labels = _read_idx(os.path.join(DATA_DIR, LABELS), 8)
        if not 0 < train_size < len(labels):
            raise ValueError(f"`train_size` must be between 1 and {len(labels) - 1}; received {train_size}.")
        x_train, y_train = images[:train_size], labels[:train_size]
        x_eval, y_eval = images[train_size:], labels[train_size:]
    else:
        raise ValueError(f"`source` must be 'bundled' or 'keras'; received {source!r}.")

    def prepare(x: np.ndarray) -> np.ndarray:
        return (x.astype("float32") / 255.0)[..., None]

    return (prepare(x_train), y_train.astype("int64")), (prepare(x_eval), y_eval.astype("int64"))
