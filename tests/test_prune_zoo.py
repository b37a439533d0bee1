"""Magnitude pruning of keras.applications architectures (random weights): every prunable kernel reaches
the target after a few training steps, and the stripped model predicts what the wrapped model predicts.

The regular suite runs one architecture of each family that has a layer type of its own (LayerScale,
keras.ops adds, squeeze-and-excitation, separable convolutions, ...). `TFPRUNE_FULL_ZOO=1` runs all of
them.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest

import tfprune

FAMILIES = ["ConvNeXtTiny", "MobileNetV3Small", "EfficientNetV2B0", "NASNetMobile", "ResNet50V2", "DenseNet121"]
ALL = sorted(name for name in dir(keras.applications) if name[0].isupper() and callable(getattr(keras.applications, name)))
NAMES = ALL if os.environ.get("TFPRUNE_FULL_ZOO") else FAMILIES
SIZES = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71, "NASNetMobile": 32, "NASNetLarge": 32}


@pytest.fixture(autouse=True)
def _release_models():
    """Large architectures one after another fill the memory unless Keras lets each one go."""
    yield
    import gc

    keras.backend.clear_session()
    gc.collect()


def _build(name: str) -> keras.Model:
    size = SIZES.get(name, 32)
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_architecture_prunes_and_strips(name):
    keras.utils.set_random_seed(0)
    model = _build(name)
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
    wrappers = tfprune.collect_wrappers(pruned)
    assert wrappers, name
    # eagerly: two steps of a large architecture run ten times faster than tracing its train step (the
    # traced pruning step is tested on small models elsewhere)
    pruned.compile(keras.optimizers.SGD(1e-3), "categorical_crossentropy", run_eagerly=True)
    size = model.input_shape[1]
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[[0, 1]]
    pruned.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    for row in tfprune.sparsity_report(pruned):
        expected = int(np.round(row["size"] * 0.5)) if row["size"] > 1 else 0
        assert row["zeros"] in (expected, min(expected, row["size"] - 1)), row
    stripped = tfprune.strip_pruning(pruned)
    assert not tfprune.collect_wrappers(stripped)
    np.testing.assert_allclose(stripped(x, training=False), pruned(x, training=False), atol=1e-5, rtol=1e-4)
