"""`sparsity_m_by_n=(M, N)` means what it means in tfmot: at least M zeros in every N weights.

tfmot runs in a subprocess (it needs tf_keras, `TF_USE_LEGACY_KERAS=1`): its own mask function
and its own pruning wrapper give the oracle masks for the same weights.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune import masks

PAIRS = [(1, 4), (2, 4), (3, 4), (1, 2), (2, 8)]
SHAPES = {"dense": (16, 5), "dense_partial": (10, 3), "conv": (3, 3, 8, 4), "conv_partial": (2, 2, 6, 3)}

TFMOT_MASKS = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tf_keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_utils
import tensorflow_model_optimization as tfmot

data = np.load(sys.argv[1])
pairs = json.loads(sys.argv[2])
out = {}
for key in data.files:
    w = tf.constant(data[key])
    for m, n in pairs:
        mask = pruning_utils.m_by_n_sparsity_mask_prepare(
            pruning_utils.generate_m_by_n_mask(pruning_utils.weights_rearrange(w), (m, n)), w.shape)
        out[f"fn/{key}/{m}/{n}"] = mask.numpy()
# The whole tfmot path: a pruned Dense trained one step with a zero learning rate.
w = data["dense"]
for m, n in pairs:
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tfmot.sparsity.keras.prune_low_magnitude(
        tf_keras.layers.Dense(w.shape[1], use_bias=False), sparsity_m_by_n=(m, n), input_shape=(w.shape[0],))])
    model.layers[0].layer.kernel.assign(w)
    model.compile(optimizer=tf_keras.optimizers.SGD(0.0), loss="mse")
    x = np.ones((4, w.shape[0]), np.float32)
    model.fit(x, np.zeros((4, w.shape[1]), np.float32), epochs=1, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    out[f"wrapper/{m}/{n}"] = model.layers[0].pruning_vars[0][1].numpy()
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    out[f"check/{m}/{n}"] = np.array(pruning_utils.is_pruned_m_by_n(stripped.layers[0].kernel, (m, n)))
np.savez(sys.argv[3], **out)
"""


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(7)
    return {key: rng.normal(size=shape).astype(np.float32) for key, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def tfmot_masks(weights, tmp_path_factory):
    pytest.importorskip("tensorflow_model_optimization")
    pytest.importorskip("tf_keras")
    root = tmp_path_factory.mktemp("tfmot_m_by_n")
    np.savez(root / "w.npz", **weights)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", TFMOT_MASKS, str(root / "w.npz"), json.dumps(PAIRS), str(root / "out.npz")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(root / "out.npz"))


@pytest.mark.parametrize("m,n", PAIRS)
def test_mask_equals_tfmot_mask(m, n, weights, tfmot_masks):
    for key, w in weights.items():
        ours = masks.m_by_n_mask(w, m, n).numpy()
        np.testing.assert_array_equal(ours, tfmot_masks[f"fn/{key}/{m}/{n}"], err_msg=f"{key} ({m}, {n})")
        assert bool(masks.check_m_by_n(w * ours, m, n))
        if w.shape[-2] % n == 0:
            assert 1.0 - ours.mean() == pytest.approx(m / n)  # at least (here exactly) m zeros per n


@pytest.mark.parametrize("m,n", PAIRS)
def test_pruned_layer_mask_equals_tfmot_wrapper(m, n, weights, tfmot_masks):
    w = weights["dense"]
    model = keras.Sequential([keras.Input((w.shape[0],)),
                              tfprune.prune_low_magnitude(keras.layers.Dense(w.shape[1], use_bias=False),
                                                          sparsity_m_by_n=(m, n))])
    wrapper = model.layers[0]
    wrapper.layer.kernel.assign(w)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    model.fit(np.ones((4, w.shape[0]), np.float32), np.zeros((4, w.shape[1]), np.float32), epochs=1, verbose=0,
              callbacks=[tfprune.UpdatePruningStep()])
    expected = tfmot_masks[f"wrapper/{m}/{n}"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(wrapper.masks[0]), expected)
    stripped = tfprune.strip_pruning(model)
    assert bool(tfmot_masks[f"check/{m}/{n}"])  # tfmot's own checker accepts its stripped kernel
    assert all(tfprune.check_m_by_n(stripped, m, n).values())
    # tfmot's meaning, not "M kept": a (1, 4) kernel is 25% sparse, not 75%.
    assert float(np.mean(keras.ops.convert_to_numpy(stripped.layers[0].kernel) == 0)) == pytest.approx(m / n)


def test_checker_rejects_too_few_zeros():
    w = np.ones((8, 2), np.float32)
    w[0, :] = 0.0  # one zero in the first group of each column, none in the second
    assert not tfprune.check_m_by_n(w, 1, 4)
    w[4, :] = 0.0
    assert tfprune.check_m_by_n(w, 1, 4) and not tfprune.check_m_by_n(w, 2, 4)
    rows = tfprune.m_by_n_report(keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)]), 1, 4)
    assert rows[0]["violations"] == 4 and not rows[0]["ok"]
