"""Small model builders shared by tests."""

import keras
import numpy as np

L = keras.layers


def small_cnn(name: str = "cnn") -> keras.Model:
    inputs = keras.Input((12, 12, 1))
    x = L.Conv2D(6, 3, activation="relu", name="conv1")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(16, activation="relu", name="dense1")(x)
    outputs = L.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def classification_data(n: int = 64, shape=(12, 12, 1), classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + tuple(shape)).astype("float32")
    y = rng.integers(0, classes, size=(n,))
    return x, y


def expected_zeros(size: int, sparsity: float) -> int:
    return int(np.round(np.float64(size) * np.float64(sparsity)))
