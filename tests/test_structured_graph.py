"""DependencyGraph: which channels are coupled, and what is reported as not understood."""

import keras
import numpy as np
import pytest
from keras import layers

from tfprune.structured import DependencyGraph, PassThrough, prune_filters, register_handler, verify
from tfprune.layers.registry import _REGISTRY, get_handler
from tfprune.structured.models import network_in_network


def group_of(graph, producer):
    return next(g for g in graph.groups if producer in g.producers)


def test_residual_add_couples_both_branches():
    x = keras.Input((8, 8, 3))
    a = layers.Conv2D(8, 3, padding="same", name="a")(x)
    b = layers.Conv2D(8, 3, padding="same", name="b")(a)
    c = layers.Conv2D(8, 1, name="c")(layers.Add()([a, b]))
    graph = DependencyGraph(keras.Model(x, layers.Dense(2)(layers.Flatten()(c))))
    assert sorted(group_of(graph, "a").producers) == ["a", "b"]
    assert len(group_of(graph, "a").units) == 8
    assert group_of(graph, "c").producers == ["c"]


def test_concatenate_keeps_offsets_and_couples_nothing_else():
    x = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 3, name="a")(x)
    b = layers.Conv2D(6, 3, name="b")(x)
    c = layers.Conv2D(5, 1, name="c")(layers.Concatenate()([a, b]))
    graph = DependencyGraph(keras.Model(x, layers.GlobalAveragePooling2D()(c)))
    assert group_of(graph, "a").producers == ["a"]
    assert group_of(graph, "b").producers == ["b"]
    consumer = next(r for r in graph.records.values() if r.name == "c").slots["in"]
    assert len(consumer) == 10
    assert set(graph.root_of[consumer[:4]]) == set(group_of(graph, "a").units)
    assert set(graph.root_of[consumer[4:]]) == set(group_of(graph, "b").units)


def test_flatten_expands_index_map_into_dense():
    x = keras.Input((3, 3, 2))
    a = layers.Conv2D(4, 1, name="a")(x)
    model = keras.Model(x, layers.Dense(2)(layers.Dense(5, name="d")(layers.Flatten()(a))))
    pruned, report = prune_filters(model, pruning_ratio=0.5, pruning_ratio_dict={"d": 0.0})
    kept = report.layer("a").kept_indices
    assert len(kept) == 2
    assert pruned.get_layer("d").kernel.shape == (3 * 3 * 2, 5)
    # rows of the Dense kernel are the kept channels at each of the 9 positions (channels fastest)
    expected_rows = (np.arange(9)[:, None] * 4 + kept[None, :]).ravel()
    np.testing.assert_array_equal(np.asarray(pruned.get_layer("d").kernel),
                                  np.asarray(model.get_layer("d").kernel)[expected_rows])


def test_grouped_conv_keeps_group_count_and_equal_groups():
    x = keras.Input((6, 6, 8))
    a = layers.Conv2D(12, 1, name="a")(x)
    g = layers.Conv2D(16, 3, groups=4, name="g")(a)
    model = keras.Model(x, layers.Conv2D(3, 1)(g))
    graph = DependencyGraph(model)
    assert len(group_of(graph, "a").units) == 3  # 12 channels, positions coupled across 4 groups
    assert len(group_of(graph, "g").units) == 4
    pruned, _ = prune_filters(model, pruning_ratio=0.5)
    assert pruned.get_layer("g").groups == 4
    assert pruned.get_layer("g").kernel.shape == (3, 3, 12 // 4 - 1, 8)


def test_squeeze_excitation_multiply_couples_gate_and_features():
    x = keras.Input((8, 8, 3))
    f = layers.Conv2D(8, 3, name="f")(x)
    s = layers.Reshape((1, 1, 8))(layers.GlobalAveragePooling2D()(f))
    s = layers.Conv2D(2, 1, activation="relu", name="reduce")(s)
    s = layers.Conv2D(8, 1, activation="sigmoid", name="expand")(s)
    y = layers.Multiply()([f, s])
    graph = DependencyGraph(keras.Model(x, layers.Conv2D(4, 1)(y)))
    assert sorted(group_of(graph, "f").producers) == ["expand", "f"]
    assert group_of(graph, "reduce").producers == ["reduce"]


def test_channel_shuffle_is_reported_and_model_stays_correct():
    model = verify.randomize_statistics(network_in_network(grouped=4), seed=1)
    graph = DependencyGraph(model)
    reported = {name for name, _ in graph.unsupported}
    assert "b1c2_shuffle_split" in reported and "b1c2_shuffle_permute" in reported
    stuck = group_of(graph, "b1c2_conv")
    assert not stuck.prunable and any("shuffle" in r for r in stuck.reasons)
    assert group_of(graph, "b1c1_conv").prunable
    pruned, report = prune_filters(model, pruning_ratio=0.5)
    assert report.layer("b1c2_conv").channels_after == 160
    assert report.layer("b1c1_conv").channels_after == 96
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5


def test_unknown_layer_freezes_its_groups_without_crashing():
    x = keras.Input((8, 8, 3))
    a = layers.Conv2D(6, 3, name="a")(x)
    b = layers.Conv2D(6, 3, name="b")(x)
    a = layers.Lambda(lambda t: t * 2.0, name="lam")(a)
    y = layers.Concatenate()([a, b])
    model = keras.Model(x, layers.Conv2D(2, 1)(y))
    graph = DependencyGraph(model)
    assert [name for name, _ in graph.unsupported] == ["lam"]
    assert not group_of(graph, "a").prunable
    assert group_of(graph, "b").prunable
    pruned, report = prune_filters(model, pruning_ratio=0.5)
    assert pruned.get_layer("a").filters == 6 and pruned.get_layer("b").filters == 3
    assert "lam" in str(report)


def test_softmax_over_channels_and_channels_first_are_not_pruned():
    x = keras.Input((8, 8, 3))
    a = layers.Conv2D(6, 3, name="a")(x)
    s = layers.Softmax(name="sm")(a)
    b = layers.Conv2D(4, 3, name="b", activation="softmax")(s)
    graph = DependencyGraph(keras.Model(x, layers.Conv2D(2, 1)(b)))
    assert not group_of(graph, "a").prunable
    assert not group_of(graph, "b").prunable


def test_model_output_and_inputs_are_frozen():
    x = keras.Input((8, 8, 3))
    a = layers.Conv2D(6, 3, name="a")(x)
    graph = DependencyGraph(keras.Model(x, layers.ReLU()(a)))
    assert not group_of(graph, "a").prunable
    assert "model output" in group_of(graph, "a").reasons


def test_nested_models_are_followed():
    inner = keras.Sequential([keras.Input((6, 6, 4)), layers.Conv2D(5, 3, name="inner_conv")], name="seq")
    x = keras.Input((6, 6, 3))
    y = inner(layers.Conv2D(4, 1, name="outer_conv")(x))
    graph = DependencyGraph(keras.Model(x, layers.Dense(2)(layers.Flatten()(y))))
    assert group_of(graph, "outer_conv").prunable
    consumer = next(r for r in graph.records.values() if r.name == "inner_conv")
    assert set(graph.root_of[consumer.slots["in"]]) == set(group_of(graph, "outer_conv").units)


def test_layer_shared_by_a_nested_model_and_the_outer_model_stays_one_layer():
    shared = layers.Dense(8, name="shared")
    inner_in = keras.Input((4, 6))
    inner = keras.Model(inner_in, shared(layers.Dense(8, activation="relu", name="first")(inner_in)), name="inner")
    x = keras.Input((4, 6))
    y = layers.Dense(8, activation="relu", name="mid")(inner(x))
    model = verify.randomize_statistics(keras.Model(x, layers.Dense(2)(layers.Add()([y, shared(y)]))))
    pruned, report = prune_filters(model, 0.5)
    outer = pruned.get_layer("shared")
    assert outer is pruned.get_layer("inner").get_layer("shared") and outer.kernel.shape == (4, 4)
    data = np.random.default_rng(0).normal(size=(3, 4, 6)).astype("float32")
    assert verify.max_abs_difference(model, pruned, report, data) < 1e-5


@pytest.mark.parametrize("key,keeps", [
    ((slice(None), 0, slice(None)), True), ((slice(None), 0), True), ((Ellipsis, slice(None)), True),
    ((slice(None), None, slice(1, None)), True), ((Ellipsis, 0), False), ((Ellipsis, slice(0, 4)), False),
    ((slice(None), slice(None), slice(None), None), False), (([0, 1],), False),
])
def test_indexing_keeps_the_channel_axis_only_when_it_stays_whole_and_last(key, keeps):
    from tfprune.layers.reshape import keeps_last_axis

    assert keeps_last_axis(key, 3) is keeps


def test_indexing_passes_channels_through_and_other_keys_are_kept():
    x = keras.Input((5, 6))
    h = layers.Dense(8, activation="relu", name="a")(x)
    y = layers.Dense(3, name="head")(h[:, 0, :])
    z = layers.Dense(3, name="tail")(layers.Dense(8, name="b")(x)[..., :4])
    model = verify.randomize_statistics(keras.Model(x, [y, z]))
    pruned, report = prune_filters(model, 0.5)
    assert pruned.get_layer("a").kernel.shape == (6, 4) and pruned.get_layer("b").kernel.shape == (6, 8)
    assert any("does not keep the channel axis" in reason for _, reason in report.unsupported)
    data = np.random.default_rng(0).normal(size=(2, 5, 6)).astype("float32")
    assert verify.max_abs_difference(model, pruned, report, data) < 1e-5


def test_shared_layer_couples_its_inputs():
    x = keras.Input((6, 6, 3))
    shared = layers.Conv2D(4, 1, name="shared")
    a, b = layers.Conv2D(5, 1, name="a")(x), layers.Conv2D(5, 1, name="b")(x)
    y = layers.Add()([shared(a), shared(b)])
    graph = DependencyGraph(keras.Model(x, layers.Conv2D(2, 1)(y)))
    assert sorted(group_of(graph, "a").producers) == ["a", "b"]


def test_ignored_layers_are_frozen_and_unknown_names_rejected():
    x = keras.Input((6, 6, 3))
    a = layers.Conv2D(8, 1, name="a")(x)
    model = keras.Model(x, layers.Conv2D(2, 1)(layers.Conv2D(8, 1, name="b")(a)))
    graph = DependencyGraph(model, ignored_layers=["a"])
    assert not group_of(graph, "a").prunable
    assert "a is in ignored_layers" in group_of(graph, "a").reasons
    assert group_of(graph, "b").prunable  # its input channels belong to 'a'; its output is free
    graph = DependencyGraph(model, ignored_layers=["b"])
    assert group_of(graph, "a").prunable  # an ignored layer's inputs still shrink
    assert not group_of(graph, "b").prunable
    with pytest.raises(ValueError, match="not layers of model"):
        DependencyGraph(model, ignored_layers=["nope"])


def test_subclassed_model_is_rejected_with_a_fix():
    class Tiny(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional API"):
        DependencyGraph(Tiny())


def test_register_handler_adds_a_layer_type():
    class Scale(layers.Layer):
        def call(self, x):
            return x * 3.0

    x = keras.Input((6, 6, 3))
    a = Scale(name="scale")(layers.Conv2D(6, 1, name="a")(x))
    model = keras.Model(x, layers.Conv2D(2, 1)(a))
    assert not group_of(DependencyGraph(model), "a").prunable
    register_handler(Scale, PassThrough())
    try:
        assert group_of(DependencyGraph(model), "a").prunable
    finally:
        _REGISTRY.pop(Scale)
    assert type(get_handler(Scale())).__name__ == "Unknown"


def test_supported_layer_classes_lists_layers_and_ops():
    from tfprune.structured import supported_layer_classes

    names = supported_layer_classes()
    assert {"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense", "Concatenate", "ops.Add"} <= set(names)
    assert "Lambda" not in names and "Permute" not in names


def test_ops_with_constant_arrays_are_not_understood():
    x = keras.Input((6, 6, 3))
    a = layers.Conv2D(3, 1, name="a")(x)
    b = layers.Conv2D(3, 1, name="b")(x)
    y = keras.ops.add(a * np.array([1.0, 2.0, 3.0], "float32"), b)
    graph = DependencyGraph(keras.Model(x, layers.Conv2D(2, 1)(y)))
    assert len(graph.unsupported) == 1 and "constant" in graph.unsupported[0][1]
    assert not group_of(graph, "a").prunable and not group_of(graph, "b").prunable


def test_sequence_layers_are_kept_and_the_rest_still_prunes():
    x = keras.Input((12,), dtype="int32")
    h = layers.Embedding(100, 16, name="embedding")(x)
    h = layers.Conv1D(32, 3, padding="same", activation="relu", name="conv")(h)
    h = layers.LSTM(24, return_sequences=True, name="lstm")(h)
    h = layers.MultiHeadAttention(2, 8, name="multi_head_attention")(h, h)
    h = layers.Dense(16, activation="relu", name="d")(h)
    model = keras.Model(x, layers.Dense(3)(layers.GlobalMaxPooling1D()(h)))
    pruned, report = prune_filters(model, pruning_ratio=0.5)
    assert "lstm" in {n for n, _ in report.unsupported}
    # attention is understood: it reads the kept LSTM channels and loses a head and half its width
    assert "multi_head_attention" not in {n for n, _ in report.unsupported}
    assert pruned.get_layer("multi_head_attention").num_heads == 1
    assert report.layer("multi_head_attention").channels_after == 12
    assert "embedding" not in {n for n, _ in report.unsupported}
    assert report.layer("embedding").channels_after == 8  # the Embedding is a producer: its width shrinks
    assert report.layer("conv").channels_after == 32
    assert report.layer("d").channels_after == 8
    xs = np.random.default_rng(0).integers(0, 100, size=(2, 12))
    assert pruned(xs).shape == (2, 3)
