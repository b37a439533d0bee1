"""Importance criteria against numpy references, and how coupled scores combine."""

import keras
import numpy as np
import pytest
from keras import layers

from tfprune.structured import (
    BNScaleImportance,
    DependencyGraph,
    FilterSketchImportance,
    FPGMImportance,
    Importance,
    MagnitudeImportance,
    TaylorImportance,
    get_importance,
    prune_filters,
)
from tfprune.structured.importance import frequent_directions


def two_conv_residual():
    x = keras.Input((6, 6, 3))
    a = layers.Conv2D(4, 3, padding="same", name="a")(x)
    bn = layers.BatchNormalization(name="bn")(a)
    b = layers.Conv2D(4, 1, name="b")(bn)
    y = layers.Add()([bn, b])
    return keras.Model(x, layers.Conv2D(2, 1, name="head")(y))


def filters_of(model, name):
    k = np.asarray(model.get_layer(name).kernel)
    return np.moveaxis(k, -1, 0).reshape(k.shape[-1], -1)


def test_l1_l2_are_filter_norms_combined_by_reduction():
    model = two_conv_residual()
    graph = DependencyGraph(model)
    group = next(g for g in graph.groups if "a" in g.producers)
    fa, fb = filters_of(model, "a"), filters_of(model, "b")
    for p, norm in [(1, lambda f: np.abs(f).sum(1)), (2, lambda f: np.sqrt((f**2).sum(1)))]:
        for reduction, combine in [("mean", lambda u, v: (u + v) / 2), ("sum", np.add), ("max", np.maximum)]:
            scores = MagnitudeImportance(p=p, group_reduction=reduction).group_scores(graph, group)
            # units are sorted by label; a's labels were created first, so unit i is channel i
            np.testing.assert_allclose(scores, combine(norm(fa), norm(fb)), rtol=1e-6)


def test_fpgm_matches_bruteforce_distance_sums():
    f = np.random.default_rng(0).normal(size=(7, 5))
    expected = [sum(np.linalg.norm(f[i] - f[j]) for j in range(7)) for i in range(7)]
    np.testing.assert_allclose(FPGMImportance().score_filters(f), expected, rtol=1e-6)
    # the filter at the geometric median of a symmetric set is the least important
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert np.argmin(FPGMImportance().score_filters(pts)) == 0


def test_frequent_directions_error_bound():
    a = np.random.default_rng(1).normal(size=(200, 20)) @ np.diag(np.linspace(3, 0.1, 20))
    for ell in (4, 8, 16):
        b = frequent_directions(a, ell)
        err = np.linalg.norm(a.T @ a - b.T @ b, 2)
        assert b.shape == (ell, 20)
        assert err <= (a**2).sum() / ell + 1e-6


def test_filter_sketch_prefers_filters_along_the_covariance():
    rng = np.random.default_rng(2)
    main = rng.normal(size=(12, 1)) * np.array([[1.0, 1.0, 0.0, 0.0]])  # dominant direction
    odd = np.array([[0.0, 0.0, 1.2, 0.0], [0.0, 0.0, 0.0, 1.2]])  # large norm, off-axis
    scores = FilterSketchImportance(sketch_ratio=0.25).score_filters(np.vstack([main, odd]))
    strong_main = np.abs(main[:, 0]) > 1.0
    assert scores[:12][strong_main].min() > scores[12:].max()


def test_bn_scale_uses_abs_gamma_and_skips_groups_without_bn():
    model = two_conv_residual()
    gamma = np.array([0.5, -2.0, 0.1, 1.0], dtype="float32")
    bn = model.get_layer("bn")
    bn.set_weights([gamma] + bn.get_weights()[1:])
    graph = DependencyGraph(model)
    group = next(g for g in graph.groups if "a" in g.producers)
    np.testing.assert_allclose(BNScaleImportance().group_scores(graph, group), np.abs(gamma))
    pruned, report = prune_filters(model, pruning_ratio=0.5, importance="bn_scale")
    np.testing.assert_array_equal(report.layer("a").kept_indices, [1, 3])


def test_taylor_uses_weight_times_gradient():
    import tensorflow as tf

    model = two_conv_residual()
    x = np.random.default_rng(3).normal(size=(4, 6, 6, 3)).astype("float32")
    y = np.random.default_rng(4).normal(size=(4, 6, 6, 2)).astype("float32")
    imp = TaylorImportance()
    imp.prepare(model, (x, y))
    kernel = model.get_layer("b").kernel
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(y - model(x)))
    g = np.asarray(tape.gradient(loss, kernel))
    expected = ((np.asarray(kernel) * g) ** 2).reshape(-1, 4).sum(0)
    rec = next(r for r in DependencyGraph(model).records.values() if r.name == "b")
    labels, scores = imp.layer_scores(rec)[0]
    bias_term = (np.asarray(model.get_layer("b").bias) * imp._grads[id(model.get_layer("b").bias)]) ** 2
    np.testing.assert_allclose(scores, expected + bias_term, rtol=1e-5)
    with pytest.raises(ValueError, match="example_inputs"):
        prune_filters(model, importance="taylor")
    pruned, _ = prune_filters(model, importance="taylor", example_inputs=(x, y))
    assert pruned.get_layer("a").filters == 2


def test_random_is_seeded_and_custom_importance_plugs_in():
    model = two_conv_residual()
    _, r1 = prune_filters(model, importance=get_importance("random", seed=7))
    _, r2 = prune_filters(model, importance=get_importance("random", seed=7))
    np.testing.assert_array_equal(r1.layer("a").kept_indices, r2.layer("a").kept_indices)

    class LastChannelsFirst(Importance):
        name = "index"

        def layer_scores(self, rec):
            if not self.is_producer(rec):
                return []
            return [(rec.slots["out"], np.arange(len(rec.slots["out"]), dtype=float))]

    _, report = prune_filters(model, pruning_ratio=0.5, importance=LastChannelsFirst())
    np.testing.assert_array_equal(report.layer("a").kept_indices, [2, 3])
    assert report.importance == "index"


def test_unknown_importance_and_reduction_are_rejected():
    with pytest.raises(ValueError, match="Expected one of"):
        get_importance("magic")
    with pytest.raises(ValueError, match="group_reduction"):
        FPGMImportance(group_reduction="median")
