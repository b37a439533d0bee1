"""LayerNormalization / RMSNormalization over pruned channels: exact, approximate and keep modes."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from keras import layers

from tfprune.interpreter import make_interpreter
from tfprune.structured import (
    DependencyGraph,
    PrunedLayerNormalization,
    PrunedRMSNormalization,
    SoftFilterPruning,
    iterative_prune,
    prune_filters,
    verify,
)

pytestmark = pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def inputs_for(model, batch=3, seed=0):
    return np.random.default_rng(seed).normal(size=(batch,) + tuple(model.input_shape[1:])).astype("float32")


def m_dense_ln():
    x = keras.Input((6, 8))
    y = layers.Dense(16)(x)
    y = layers.LayerNormalization(name="ln")(y)
    return keras.Model(x, layers.Dense(4)(y))


def m_conv_ln():
    x = keras.Input((8, 8, 3))
    y = layers.Conv2D(12, 3, padding="same")(x)
    y = layers.LayerNormalization(epsilon=1e-5, name="ln")(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(10, 3, padding="same")(y)
    y = layers.LayerNormalization(center=False, name="ln_no_beta")(y)
    y = layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, layers.Dense(3)(y))


def m_rms():
    x = keras.Input((5, 6))
    y = layers.Dense(16, activation="gelu")(x)
    y = layers.RMSNormalization(name="rms")(y)
    y = layers.Dense(12)(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rms_scaling is deprecated in Keras, still supported here
        y = layers.LayerNormalization(rms_scaling=True, name="ln_rms_scaling")(y)
    return keras.Model(x, layers.Dense(3)(y))


def m_pre_norm_transformer():
    """A residual stream with pre-norm blocks: every LayerNormalization reads the coupled stream."""
    x = keras.Input((7, 5))
    h = layers.Dense(16)(x)
    for i in range(2):
        y = layers.LayerNormalization(name=f"ln{i}")(h)
        y = layers.Dense(32, activation="gelu")(y)
        y = layers.Dense(16)(y)
        h = layers.Add()([h, y])
    h = layers.LayerNormalization(name="ln_final")(h)
    h = layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, layers.Dense(3)(h))


def m_convnext_block():
    """Depthwise conv -> LayerNormalization -> pointwise MLP -> residual add, as in ConvNeXt."""
    x = keras.Input((8, 8, 3))
    h = layers.Conv2D(16, 2, strides=2)(x)
    h = layers.LayerNormalization(epsilon=1e-6, name="stem_ln")(h)
    for i in range(2):
        y = layers.DepthwiseConv2D(3, padding="same")(h)
        y = layers.LayerNormalization(epsilon=1e-6, name=f"block{i}_ln")(y)
        y = layers.Dense(48, activation="gelu")(y)
        y = layers.Dense(16)(y)
        h = layers.Add()([h, y])
    h = layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, layers.Dense(3)(h))


MODELS = {f.__name__[2:]: f for f in [m_dense_ln, m_conv_ln, m_rms, m_pre_norm_transformer, m_convnext_block]}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_exact_mode_equals_the_zeroed_reference(name):
    model = verify.randomize_statistics(MODELS[name](), seed=4)
    x = inputs_for(model)
    pruned, report = prune_filters(model, pruning_ratio=0.5)
    norms = [e for e in report.layers if e.type in ("LayerNormalization", "RMSNormalization")]
    assert norms and all(e.channels_after < e.channels_before for e in norms), report
    assert all(not e.note for e in norms)
    for entry in norms:
        layer = pruned.get_layer(entry.name)
        assert isinstance(layer, (PrunedLayerNormalization, PrunedRMSNormalization))
        assert layer.normalized_size == entry.channels_before
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5


@pytest.mark.parametrize("name", ["dense_ln", "pre_norm_transformer", "convnext_block"])
def test_approximate_mode_differs_from_the_reference_and_says_so(name):
    model = verify.randomize_statistics(MODELS[name](), seed=4)
    pruned, report = prune_filters(model, pruning_ratio=0.5, layer_norm="approximate")
    norms = [e for e in report.layers if e.type == "LayerNormalization" and e.channels_after < e.channels_before]
    assert norms and all("not exact" in e.note for e in norms)
    assert all(type(pruned.get_layer(e.name)) is layers.LayerNormalization for e in norms)
    assert verify.max_abs_difference(model, pruned, report, inputs_for(model)) > 1e-3


def test_keep_mode_leaves_normalised_channels_and_prunes_the_rest():
    model = verify.randomize_statistics(m_pre_norm_transformer(), seed=1)
    pruned, report = prune_filters(model, pruning_ratio=0.5, layer_norm="keep")
    for name in ("ln0", "ln1", "ln_final"):
        entry = report.layer(name)
        assert entry.channels_after == entry.channels_before == 16
        assert type(pruned.get_layer(name)) is layers.LayerNormalization
    hidden = [e for e in report.layers if e.type == "Dense" and e.channels_before == 32]
    assert hidden and all(e.channels_after == 16 for e in hidden)  # the MLP's inner width is free
    assert any("layer_norm='keep'" in g.reason for g in report.groups if g.reason)
    assert verify.max_abs_difference(model, pruned, report, inputs_for(model)) < 1e-5


def test_saved_model_reloads_with_the_same_outputs(tmp_path):
    model = verify.randomize_statistics(m_convnext_block(), seed=2)
    pruned, _ = prune_filters(model, pruning_ratio=0.5)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    x = inputs_for(model)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("block0_ln"), PrunedLayerNormalization)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(pruned(x)), atol=1e-6)
    # a fresh interpreter needs only `import tfprune` to load it
    code = ("import sys, numpy as np, keras, tfprune; m = keras.saving.load_model(sys.argv[1]); "
            "print(type(m.get_layer('block0_ln')).__name__)")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("PrunedLayerNormalization")


def test_pruning_twice_keeps_the_original_statistics_size():
    model = verify.randomize_statistics(m_pre_norm_transformer(), seed=6)
    once, first = prune_filters(model, pruning_ratio=0.25)
    twice, second = prune_filters(once, pruning_ratio=0.3)
    layer = twice.get_layer("ln0")
    assert layer.normalized_size == 16 and layer.gamma.shape[0] < once.get_layer("ln0").gamma.shape[0]
    assert verify.max_abs_difference(once, twice, second, inputs_for(model)) < 1e-5
    final, reports = iterative_prune(model, target_ratio=0.5, steps=2, fine_tune_fn=None)
    assert final.get_layer("ln_final").normalized_size == 16
    assert final.get_layer("ln_final").gamma.shape == (8,)


def test_mixed_precision_output_stays_close():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = m_dense_ln()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    verify.randomize_statistics(model, seed=3)
    pruned, report = prune_filters(model, pruning_ratio=0.5)
    out = pruned(inputs_for(model))
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert pruned.get_layer("ln").compute_dtype == "float16"
    assert verify.max_abs_difference(model, pruned, report, inputs_for(model)) < 2e-2


def test_layer_checks_its_arguments():
    with pytest.raises(ValueError, match="normalized_size"):
        PrunedLayerNormalization(normalized_size=0)
    with pytest.raises(ValueError, match="smaller than the 8 input channels"):
        PrunedLayerNormalization(normalized_size=4)(np.zeros((2, 8), "float32"))
    with pytest.raises(ValueError, match="last"):
        PrunedLayerNormalization(normalized_size=8, axis=1)(np.zeros((2, 8, 3), "float32"))
    with pytest.raises(ValueError, match="layer_norm must be one of"):
        DependencyGraph(m_dense_ln(), layer_norm="drop")
    with pytest.raises(ValueError, match="layer_norm must be one of"):
        prune_filters(m_dense_ln(), layer_norm="Exact")
    with pytest.raises(ValueError, match="layer_norm must be one of"):
        SoftFilterPruning(0.5, layer_norm="none")


def test_unpruned_layer_matches_keras_layer_normalization():
    """With nothing removed, the tfprune layer computes exactly what Keras computes."""
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 16)).astype("float32")
    for kwargs in ({}, {"center": False}, {"epsilon": 1e-6}):
        reference = layers.LayerNormalization(**kwargs)
        reference.build(x.shape)
        reference.set_weights([np.random.default_rng(1).uniform(0.5, 1.5, w.shape).astype("float32")
                               for w in reference.get_weights()])
        ours = PrunedLayerNormalization(normalized_size=16, **kwargs)
        ours.build(x.shape)
        ours.set_weights(reference.get_weights())
        np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(reference(x)), atol=1e-5)
    reference = layers.RMSNormalization()
    ours = PrunedRMSNormalization(normalized_size=16)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(reference(x)), atol=1e-5)


def test_exact_layers_convert_to_tflite():
    import tensorflow as tf

    model = verify.randomize_statistics(m_convnext_block(), seed=7)
    pruned, _ = prune_filters(model, pruning_ratio=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        content = tf.lite.TFLiteConverter.from_keras_model(pruned).convert()
        interpreter = make_interpreter(model_content=content)
    x = inputs_for(model, batch=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, np.asarray(pruned(x)), atol=1e-4)
