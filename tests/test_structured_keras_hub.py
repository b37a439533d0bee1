"""keras_hub backbones in structured pruning: GPT-2 and BERT with small configs and random weights.

Heads, head positions, feed-forward widths and (when the hidden stream is not a model output) hidden
widths are removed; every pruned model is checked against the zeroed reference of the original.
"""

import keras
import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub", reason="keras-hub is not installed (it is in the `test` extra)")

from test_imports import _modules, import_graph  # noqa: E402
from tfprune import analysis  # noqa: E402
from tfprune.layers.deferred import DeferredClass  # noqa: E402
from tfprune.layers.pruned_transformer import PrunedTransformerDecoder  # noqa: E402
from tfprune.layers import PrunedLayerNormalization, get_handler  # noqa: E402
from tfprune.structured import DependencyGraph, MagnitudeImportance, prune_filters, verify  # noqa: E402

SMALL = dict(vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=32, intermediate_dim=64,
             max_sequence_length=16, dropout=0.0)
ENCODER_NAME = "tfprune>PrunedTransformerEncoder"
BACKBONES = {"gpt2": keras_hub.models.GPT2Backbone, "bert": keras_hub.models.BertBackbone}


def backbone(kind):
    return verify.randomize_statistics(BACKBONES[kind](**SMALL))


def token_inputs(kind, batch=3, seq=12, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), "int32")
    mask[0, -4:] = 0  # padding: the masks reach the attention
    x = {"token_ids": rng.integers(0, 100, (batch, seq)).astype("int32"), "padding_mask": mask}
    if kind == "bert":
        x["segment_ids"] = rng.integers(0, 2, (batch, seq)).astype("int32")
    return x


def blocks(model):
    found = []
    for layer in model.layers:
        found += blocks(layer) if isinstance(layer, keras.Model) else [layer]
    return [layer for layer in found if isinstance(layer, (keras_hub.layers.TransformerEncoder,
                                                           keras_hub.layers.TransformerDecoder))]


def _largest_change(a, b, x):
    return max(np.max(np.abs(np.asarray(p) - np.asarray(q)))
               for p, q in zip(keras.tree.flatten(a(x)), keras.tree.flatten(b(x))))


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
@pytest.mark.parametrize("mode,expected", [("heads", (2, 8, 8)), ("head_dim", (4, 4, 4))])
def test_backbone_attention_and_feed_forward_are_exact(kind, mode, expected):
    model = backbone(kind)
    x = token_inputs(kind)
    pruned, report = prune_filters(model, 0.5, attention=mode)
    assert not report.unsupported
    for block in blocks(pruned):
        attention = block._self_attention_layer
        assert (attention.num_heads, attention.key_dim, attention.value_dim) == expected
        assert attention.query_dense.kernel.shape == (32,) + expected[:2]
        assert attention.output_dense.kernel.shape == (expected[0], expected[2], 32)
        assert block._feedforward_intermediate_dense.kernel.shape == (32, 32)
    # the hidden stream is the backbone's output: its width stays
    assert report.layer("token_embedding").channels_after == 32
    assert "model output" in report.layer("token_embedding").note
    assert report.layer("transformer_layer_0").note.startswith(
        f"heads 4->{expected[0]}, key_dim 8->{expected[1]}, value_dim 8->{expected[2]}, intermediate_dim 64->32")
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    assert _largest_change(model, pruned, x) > 1e-3  # not vacuous
    assert report.params_after < report.params_before


def test_bert_under_a_head_prunes_hidden_width_and_loads_by_registered_name(tmp_path):
    bert = backbone("bert")
    inputs = {k: keras.Input((None,), dtype="int32", name=k) for k in ("token_ids", "segment_ids", "padding_mask")}
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(bert(inputs)["pooled_output"]))
    verify.randomize_statistics(model)
    x = token_inputs("bert")
    pruned, report = prune_filters(model, 0.5)
    assert report.layer("token_embedding").channels_after == 16
    (inner,) = [layer for layer in pruned.layers if isinstance(layer, keras.Model)]
    assert inner.get_layer("embeddings_layer_norm").__class__ is PrunedLayerNormalization
    for block in blocks(pruned):  # post-norm blocks: statistics over the original 32 channels
        assert type(block).__name__ == "PrunedTransformerEncoder"
        assert block._self_attention_layer_norm.normalized_size == 32
        assert block._self_attention_layer.query_dense.kernel.shape == (16, 2, 8)
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    assert _largest_change(model, pruned, x) > 1e-3
    # a fresh process knows the pruned class only by name until it loads: a stand-in imports it then
    path = str(tmp_path / "bert.keras")
    pruned.save(path)
    objects = keras.saving.get_custom_objects()
    real = objects[ENCODER_NAME]
    objects[ENCODER_NAME] = DeferredClass("tfprune.layers.pruned_transformer", "PrunedTransformerEncoder")
    try:
        loaded = keras.saving.load_model(path)
    finally:
        objects[ENCODER_NAME] = real
    assert [type(b) for b in blocks(loaded)] == [real] * 2
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(pruned(x)), atol=1e-6)


def test_keras_hub_is_imported_only_by_the_modules_for_its_layers():
    graph = import_graph()
    hub_modules = {"tfprune.layers.keras_hub_handlers", "tfprune.layers.pruned_transformer"}
    importers = {name for name, path in _modules().items() if "import keras_hub" in path.read_text()}
    assert importers == hub_modules
    reachable, stack = set(), ["tfprune"]
    while stack:  # everything `import tfprune` imports
        name = stack.pop()
        if name not in reachable:
            reachable.add(name)
            stack.extend(graph.get(name, ()))
    assert not reachable & hub_modules


def test_gpt2_causal_lm_prunes_the_shared_reversible_embedding():
    lm = verify.randomize_statistics(keras_hub.models.GPT2CausalLM(backbone=keras_hub.models.GPT2Backbone(**SMALL),
                                                                    preprocessor=None))
    x = token_inputs("gpt2")
    pruned, report = prune_filters(lm, 0.5, attention="head_dim")
    assert not report.unsupported
    outer = [layer for layer in pruned.layers if isinstance(layer, keras.layers.ReversibleEmbedding)]
    (inner,) = [layer for layer in pruned.layers if isinstance(layer, keras.Model)]
    assert outer == [inner.get_layer("token_embedding")]  # still one table for both directions
    assert outer[0].embeddings.shape == (100, 16)
    assert np.asarray(pruned(x)).shape == (3, 12, 100)
    assert verify.max_abs_difference(lm, pruned, report, x) < 1e-5
    assert _largest_change(lm, pruned, x) > 1e-3


def _encoder_lm(seq=8, normalize_first=False):
    tokens = keras.Input((seq,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(50, seq, 24, tie_weights=False, name="embed")(tokens)
    x = keras_hub.layers.TransformerEncoder(48, 3, activation="gelu", normalize_first=normalize_first,
                                            name="block")(x)
    return verify.randomize_statistics(keras.Model(tokens, keras.layers.Dense(5, name="head")(x)))


def test_token_and_position_embedding_macs_and_importance():
    model = _encoder_lm()
    x = np.random.default_rng(1).integers(0, 50, (4, 8)).astype("int32")
    for importance in ("l2", "taylor", "activation"):
        pruned, report = prune_filters(model, 0.5, importance=importance, example_inputs=(x, np.zeros((4, 8, 5))))
        assert pruned.get_layer("embed").embedding_dim == 12
        assert verify.max_abs_difference(model, pruned, report, x) < 1e-5, importance
    block = model.get_layer("block")
    t, h, heads, k, i = 8, 24, 3, 8, 48
    attention = 3 * t * h * heads * k + heads * t * t * 2 * k + t * heads * k * h
    assert analysis.layer_macs(block, (None, t, h), (None, t, h)) == attention + 2 * t * h + 2 * t * h * i
    assert report.macs_after == analysis.count_macs(pruned) < report.macs_before
    # l1 of a head: the same norm as for a plain MultiHeadAttention (query, key, value, output rows)
    graph = DependencyGraph(model)
    group = next(g for g in graph.groups if g.producers == ["block"] and len(g.units) == heads)
    mha = block._self_attention_layer
    w = {n: np.asarray(getattr(mha, f"{n}_dense").kernel, np.float64) for n in ("query", "key", "value", "output")}
    want = [sum(np.abs(w[n][:, j]).sum() for n in ("query", "key", "value")) + np.abs(w["output"][j]).sum()
            for j in range(heads)]
    np.testing.assert_allclose(MagnitudeImportance(p=1).group_scores(graph, group), want, rtol=1e-9)


def test_pruned_block_builds_with_fewer_hidden_channels_than_heads():
    block = PrunedTransformerDecoder(16, 4, key_dim=2, value_dim=3, normalized_size=32, normalize_first=True)
    assert block(keras.ops.zeros((1, 5, 3))).shape == (1, 5, 3)
    attention = block._self_attention_layer
    assert (attention.num_heads, attention.key_dim, attention.value_dim) == (4, 2, 3)
    assert attention.output_dense.kernel.shape == (4, 3, 3) and len(block.weights) == 16
    assert block._feedforward_layer_norm.normalized_size == 32
    clone = PrunedTransformerDecoder.from_config(block.get_config())  # built from its config alone
    assert [w.shape for w in clone.weights] == [w.shape for w in block.weights]


def test_what_the_graph_cannot_prune_is_kept_with_a_reason():
    encoder_in, decoder_in = keras.Input((6, 16)), keras.Input((5, 16))
    encoded = keras.layers.Dense(16)(encoder_in)
    decoded = keras_hub.layers.TransformerDecoder(32, 2, name="cross")(keras.layers.Dense(16)(decoder_in), encoded)

    class MyEncoder(keras_hub.layers.TransformerEncoder):
        pass

    y = MyEncoder(32, 2, name="mine")(decoded)
    model = verify.randomize_statistics(keras.Model([encoder_in, decoder_in], keras.layers.Dense(2)(y)))
    x = [np.ones((2, 6, 16), "float32"), np.ones((2, 5, 16), "float32")]
    pruned, report = prune_filters(model, 0.5)
    reasons = dict(report.unsupported)
    assert "cross-attention" in reasons["cross"] and "subclasses" in reasons["mine"]
    assert pruned.get_layer("mine")._self_attention_layer.num_heads == 2
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5
    # attention='keep' and layer_norm='keep' on a backbone: only the feed-forward width goes, and the
    # blocks stay keras_hub classes
    model = backbone("bert")
    pruned, report = prune_filters(model, 0.5, attention="keep", layer_norm="keep")
    assert [type(b) for b in blocks(pruned)] == [keras_hub.layers.TransformerEncoder] * 2
    assert [b.intermediate_dim for b in blocks(pruned)] == [32, 32]
    assert verify.max_abs_difference(model, pruned, report, token_inputs("bert")) < 1e-5
    assert get_handler(blocks(model)[0]).__class__.__name__ == "TransformerBlockHandler"
