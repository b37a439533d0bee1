"""Attention heads and EinsumDense in structured pruning: exactness against the zeroed reference,
head importance against numpy, MACs, and configurations that are kept with a reason."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from tfprune import analysis
from tfprune.structured import (
    ActivationImportance,
    DependencyGraph,
    MagnitudeImportance,
    PrunedLayerNormalization,
    TaylorImportance,
    prune_filters,
    verify,
)

D = 16


def _block(x, pre, heads=4, kd=4, vd=3, causal=False, name=""):
    h = layers.LayerNormalization()(x) if pre else x
    a = layers.MultiHeadAttention(heads, kd, value_dim=vd, name=f"mha{name}")(h, h, use_causal_mask=causal)
    x = layers.Add()([x, a])
    if not pre:
        x = layers.LayerNormalization()(x)
    h = layers.LayerNormalization()(x) if pre else x
    h = layers.Dense(2 * D, activation="gelu")(h)
    x = layers.Add()([x, layers.Dense(D)(h)])
    return x if pre else layers.LayerNormalization()(x)


def encoder(pre):
    inp = keras.Input((6, D))
    x = _block(layers.Dense(D)(inp), pre)
    model = keras.Model(inp, layers.Dense(3)(x))
    return verify.randomize_statistics(model)


def decoder_lm(vocab=20, seq=8):
    tokens = keras.Input((seq,), dtype="int32")
    positions = keras.Input((seq,), dtype="int32")
    x = layers.Add()([layers.Embedding(vocab, D)(tokens), layers.Embedding(seq, D)(positions)])
    for i in range(2):
        x = _block(x, pre=True, causal=True, name=str(i))
    x = layers.LayerNormalization()(x)
    return verify.randomize_statistics(keras.Model([tokens, positions], layers.Dense(vocab)(x)))


def lm_inputs(batch=3, vocab=20, seq=8):
    rng = np.random.default_rng(0)
    return [rng.integers(0, vocab, (batch, seq)).astype("int32"), np.tile(np.arange(seq, dtype="int32"), (batch, 1))]


def _x(shape, batch=3, seed=0):
    return np.random.default_rng(seed).normal(size=(batch,) + tuple(shape)).astype("float32")


def _mha(model):
    return [layer for layer in model.layers if isinstance(layer, layers.MultiHeadAttention)]


@pytest.mark.parametrize("pre", [True, False], ids=["pre_norm", "post_norm"])
@pytest.mark.parametrize("mode,expected", [("heads", (2, 4, 3)), ("head_dim", (4, 2, 2))])
def test_encoder_block_is_exact(pre, mode, expected):
    model = encoder(pre)
    x = _x((6, D))
    pruned, report = prune_filters(model, 0.5, attention=mode)
    (mha,) = _mha(pruned)
    assert (mha.num_heads, mha.key_dim, mha.value_dim) == expected
    assert mha.query_dense.kernel.shape[0] == D // 2  # the residual stream is pruned through attention
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    # not vacuous: the pruned model differs from the unpruned one
    assert np.max(np.abs(np.asarray(model(x)) - np.asarray(pruned(x)))) > 1e-3
    assert any(isinstance(layer, PrunedLayerNormalization) for layer in pruned.layers)
    assert report.params_after < report.params_before and report.macs_after < report.macs_before
    assert report.macs_after == analysis.count_macs(pruned)


@pytest.mark.parametrize("mode", ["heads", "head_dim"])
def test_causal_decoder_lm_is_exact_and_saves(mode, tmp_path):
    model = decoder_lm()
    x = lm_inputs()
    pruned, report = prune_filters(model, 0.5, attention=mode, round_to=2)
    heads = [(m.num_heads, m.key_dim, m.value_dim) for m in _mha(pruned)]
    assert heads == [(2, 4, 3)] * 2 if mode == "heads" else [(4, 2, 2)] * 2
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    assert report.params_after < report.params_before
    path = str(tmp_path / "lm.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(pruned(x)), atol=1e-6)


def test_attention_keep_and_round_to_counts_heads():
    inp = keras.Input((5, D))
    y = layers.MultiHeadAttention(8, 2, name="mha")(inp, inp)
    model = keras.Model(inp, layers.Dense(2)(layers.Dense(D)(y)))
    _, report = prune_filters(model, 0.5, attention="keep")
    assert report.layer("mha").slots["qk"][1].size == 16
    pruned, _ = prune_filters(model, 0.5, round_to=3)   # 4 heads kept, rounded up to 6
    assert _mha(pruned)[0].num_heads == 6
    pruned, _ = prune_filters(model, 0.5, pruning_ratio_dict={"mha": 0.75})
    assert _mha(pruned)[0].num_heads == 2
    with pytest.raises(ValueError, match="attention must be one of"):
        prune_filters(model, 0.5, attention="everything")


def test_at_least_one_head_stays_and_scores_output_keep_heads():
    inp = keras.Input((5, D))
    y, scores = layers.MultiHeadAttention(2, 4, name="mha")(inp, inp, return_attention_scores=True)
    model = keras.Model(inp, [layers.Dense(2)(layers.Dense(D)(y)), scores])
    pruned, report = prune_filters(model, 0.8, max_pruning_ratio=1.0)
    assert _mha(pruned)[0].num_heads == 2  # the scores output has a head axis: heads are frozen
    assert any("attention scores" in g.reason for g in report.groups)
    inp = keras.Input((5, D))
    model = keras.Model(inp, layers.Dense(2)(layers.MultiHeadAttention(2, 4)(inp, inp)))
    pruned, report = prune_filters(model, 0.8, max_pruning_ratio=1.0)
    assert _mha(pruned)[0].num_heads == 1
    assert verify.max_abs_difference(model, pruned, report, _x((5, D))) < 1e-5


def test_cross_attention_gate_and_attention_over_two_axes():
    q_in, kv_in = keras.Input((4, 3, D)), keras.Input((4, 5, 8))
    q = layers.Dense(D)(q_in)
    kv = layers.Dense(8)(kv_in)
    mha = layers.MultiHeadAttention(4, 3, value_dim=2, use_gate=True, attention_axes=(2,), name="mha")
    y = layers.Add()([q, mha(q, kv)])
    model = verify.randomize_statistics(keras.Model([q_in, kv_in], layers.Dense(2)(y)))
    x = [_x((4, 3, D)), _x((4, 5, 8), seed=1)]
    for mode in ("heads", "head_dim"):
        pruned, report = prune_filters(model, 0.5, attention=mode)
        assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    # MACs against the formula of the docstring, written out
    t, s, free, h, k, v, dq, dkv = 3, 5, 4, 4, 3, 2, D, 8
    want = (free * t * dq * h * k + free * s * dkv * h * k + free * s * dkv * h * v + free * t * dq * h * v
            + free * h * t * s * (k + v) + free * t * h * v * D)
    assert analysis.layer_macs(mha, None, None) == want


def test_l1_l2_head_scores_match_numpy():
    inp = keras.Input((5, D))
    mha = layers.MultiHeadAttention(3, 4, value_dim=2, name="mha")
    model = keras.Model(inp, layers.Dense(2)(mha(inp, inp)))
    graph = DependencyGraph(model)
    group = next(g for g in graph.groups if g.producers == ["mha"] and len(g.units) == 3)
    w = {n: np.asarray(getattr(mha, f"{n}_dense").kernel, np.float64) for n in ("query", "key", "value", "output")}
    per_head = [np.concatenate([w["query"][:, i].ravel(), w["key"][:, i].ravel(), w["value"][:, i].ravel(),
                                w["output"][i].ravel()]) for i in range(3)]
    np.testing.assert_allclose(MagnitudeImportance(p=1).group_scores(graph, group),
                               [np.abs(p).sum() for p in per_head], rtol=1e-9)
    np.testing.assert_allclose(MagnitudeImportance(p=2).group_scores(graph, group),
                               [np.sqrt((p ** 2).sum()) for p in per_head], rtol=1e-9)
    # Taylor: per head, sum of (w * dL/dw)^2 over the head's weights and biases
    x = _x((5, D))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x)))
    variables = mha.weights
    grads = dict(zip([v.path for v in variables], tape.gradient(loss, variables)))
    want = np.zeros(3)
    for v in variables:
        c = (np.asarray(v, np.float64) * np.asarray(grads[v.path], np.float64)) ** 2
        if "attention_output" in v.path:
            if v.path.endswith("kernel"):
                want += c.reshape(3, -1).sum(1)
        else:
            want += (c if c.ndim == 2 else np.moveaxis(c, 1, 0)).reshape(3, -1).sum(1)
    taylor = TaylorImportance()
    taylor.prepare(model, x)
    np.testing.assert_allclose(taylor.group_scores(graph, group), want, rtol=1e-5)


def test_activation_importance_removes_a_silenced_head():
    model = encoder(pre=True)
    mha = _mha(model)[0]
    weights = mha.value_dense.get_weights()
    weights[0][:, 2] = 0
    weights[1][2] = 0
    mha.value_dense.set_weights(weights)
    x = _x((6, D), batch=8)
    pruned, report = prune_filters(model, 0.25, importance="activation", example_inputs=x)
    kept_heads = np.unique(report.layer(mha.name).slots["qk"][1] // mha.key_dim)
    assert kept_heads.tolist() == [0, 1, 3]
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    with pytest.raises(ValueError, match="calibration data"):
        ActivationImportance().prepare(model, None)


def test_einsum_dense_producer_and_consumer():
    inp = keras.Input((5, 8))
    x = layers.EinsumDense("abc,cd->abd", output_shape=(None, D), bias_axes="d", name="e1")(inp)
    y = layers.EinsumDense("...b,bc->...c", output_shape=D, activation="relu", name="e2")(x)
    y = layers.Add()([x, layers.Dense(D)(y)])
    z = layers.EinsumDense("abc,cd->adb", output_shape=(7, None), name="odd")(y)  # output's last axis is b
    model = verify.randomize_statistics(keras.Model(inp, [layers.Dense(2)(y), z]))
    assert analysis.layer_macs(model.get_layer("e1"), (None, 5, 8), (None, 5, D)) == 5 * 8 * D
    pruned, report = prune_filters(model, 0.5)
    assert pruned.get_layer("e1").kernel.shape == (8, D // 2)
    assert pruned.get_layer("e2").kernel.shape == (D // 2, D // 2)
    assert verify.max_abs_difference(model, pruned, report, _x((5, 8))) < 1e-5
    assert any(name == "odd" and "last axis" in reason for name, reason in report.unsupported)
