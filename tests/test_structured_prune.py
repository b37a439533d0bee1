"""prune_filters: ratios, round_to, global ranking, report, saving."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from tfprune.structured import prune_filters, verify
from tfprune.structured.models import resnet_cifar


def plain_cnn(widths=(16, 24, 32)):
    x = keras.Input((12, 12, 3))
    y = x
    for i, w in enumerate(widths):
        y = layers.Conv2D(w, 3, padding="same", name=f"c{i}")(y)
        y = layers.BatchNormalization(name=f"bn{i}")(y)
        y = layers.ReLU()(y)
    y = layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, layers.Dense(5, name="logits")(y), name="plain")


def channels(report):
    return {e.name: e.channels_after for e in report.layers}


def test_local_ratio_round_to_and_output_untouched():
    model = plain_cnn((16, 24, 30))
    _, report = prune_filters(model, pruning_ratio=0.3)
    assert [channels(report)[f"c{i}"] for i in range(3)] == [12, 17, 21]
    _, report = prune_filters(model, pruning_ratio=0.3, round_to=8)
    assert [channels(report)[f"c{i}"] for i in range(3)] == [16, 24, 24]
    assert channels(report)["logits"] == 5
    assert report.layer("c0").achieved_ratio == 0.0 and report.layer("c2").achieved_ratio == 0.2


def test_ratio_dict_and_max_ratio():
    model = plain_cnn()
    _, report = prune_filters(model, pruning_ratio=0.25, pruning_ratio_dict={"c1": 0.75},
                              max_pruning_ratio=0.5)
    assert [channels(report)[f"c{i}"] for i in range(3)] == [12, 12, 24]
    assert report.layer("c1").requested_ratio == 0.75
    _, report = prune_filters(model, pruning_ratio=0.0)
    assert report.params_after == report.params_before


def test_global_pruning_follows_scores_across_layers():
    model = plain_cnn()
    # half of c1's filters are tiny: global ranking (scores normalised by each group's mean)
    # removes all of them, local pruning only 30 %
    k = model.get_layer("c1").kernel
    k.assign(np.asarray(k) * np.where(np.arange(24) < 12, 1e-3, 1.0).astype("float32"))
    _, local = prune_filters(model, pruning_ratio=0.3)
    _, glob = prune_filters(model, pruning_ratio=0.3, global_pruning=True)
    total_before = 16 + 24 + 32
    removed = total_before - sum(channels(glob)[f"c{i}"] for i in range(3))
    assert removed == int(0.3 * total_before)
    assert channels(local)["c1"] == 17
    np.testing.assert_array_equal(glob.layer("c1").kept_indices, np.arange(12, 24))
    assert report_groups_pruned(glob) == 3


def report_groups_pruned(report):
    return sum(g.status == "pruned" for g in report.groups)


def test_saves_and_loads_with_plain_keras(tmp_path):
    model = verify.randomize_statistics(resnet_cifar(20), seed=0)
    pruned, report = prune_filters(model, pruning_ratio=0.5, importance="fpgm", round_to=4)
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(pruned(x)), atol=1e-6)
    assert [t.shape for t in loaded.inputs] == [t.shape for t in model.inputs]
    assert loaded.outputs[0].shape == model.outputs[0].shape
    assert loaded.count_params() == report.params_after < report.params_before / 3
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5


def test_report_table_and_dict():
    model = plain_cnn()
    _, report = prune_filters(model, pruning_ratio=0.5)
    text = str(report)
    assert "c1" in text and "requested" in text and "model output" in text
    d = json.loads(json.dumps(report.to_dict()))
    entry = next(e for e in d["layers"] if e["name"] == "c1")
    assert entry["channels_before"] == 24 and entry["channels_after"] == 12
    assert len(entry["kept_indices"]) == 12
    assert any(g["status"] == "skipped" and "model output" in g["reason"] for g in d["groups"])
    assert d["macs_after"] < d["macs_before"]


def test_original_model_is_not_modified():
    model = plain_cnn()
    before = [w.copy() for w in model.get_weights()]
    prune_filters(model, pruning_ratio=0.5)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    ({"pruning_ratio": 1.0}, "pruning_ratio must be"),
    ({"pruning_ratio": -0.1}, "pruning_ratio must be"),
    ({"max_pruning_ratio": 0}, "max_pruning_ratio must be"),
    ({"round_to": 0}, "round_to must be"),
    ({"pruning_ratio_dict": {"c0": 2}}, "pruning_ratio_dict"),
    ({"pruning_ratio_dict": {"bn0": 0.5}}, "produce channels"),
    ({"importance": "nope"}, "Unknown importance"),
])
def test_bad_arguments_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prune_filters(plain_cnn(), **kwargs)


def test_every_layer_of_a_coupled_group_keeps_a_channel():
    """Two concatenated branches added to a wider stream form one group; pruning the weakest half
    must not remove all of one branch's filters (that would build a Conv2D with 0 filters), and
    round_to / max_pruning_ratio hold for each branch."""
    x = keras.Input((8, 8, 3))
    weak = keras.layers.Conv2D(4, 1, name="weak_branch")(x)
    strong = keras.layers.Conv2D(12, 1, name="strong_branch")(x)
    stream = keras.layers.Concatenate()([weak, strong])
    side = keras.layers.Conv2D(16, 3, padding="same", name="side")(x)
    y = keras.layers.Add()([stream, side])
    y = keras.layers.Conv2D(6, 1, name="head")(keras.layers.ReLU()(y))
    model = keras.Model(x, y)
    kernel = model.get_layer("weak_branch").kernel
    kernel.assign(kernel.numpy() * 1e-3)  # the weak branch scores lowest on every channel
    model.get_layer("side").kernel.assign(model.get_layer("side").kernel.numpy() * 1e-3)
    x_in = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    for round_to, weak, strong in [(None, 2, 6), (4, 4, 8)]:
        pruned, report = prune_filters(model, pruning_ratio=0.5, round_to=round_to)
        # each branch is pruned at the group's ratio (and rounded on its own), not emptied
        assert pruned.get_layer("weak_branch").filters == weak
        assert pruned.get_layer("strong_branch").filters == strong
        assert pruned.get_layer("side").filters == weak + strong
        kept = report.layer("weak_branch").kept_indices
        assert len(kept) == weak
        assert verify.max_abs_difference(model, pruned, report, x_in) < 1e-5
    pruned, _ = prune_filters(model, pruning_ratio=0.8, max_pruning_ratio=0.5)
    assert pruned.get_layer("weak_branch").filters == 2 and pruned.get_layer("strong_branch").filters == 6


def _token_model():
    tokens = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(60, 32, name="embed")(tokens)
    h = keras.layers.LayerNormalization(name="embed_ln")(h)
    h = keras.layers.Conv1D(24, 3, padding="same", activation="relu", name="conv")(h)
    h = keras.layers.GlobalMaxPooling1D()(h)
    return keras.Model(tokens, keras.layers.Dense(3, name="logits")(h))


def test_embedding_width_is_pruned_exactly(tmp_path):
    model = verify.randomize_statistics(_token_model(), seed=2)
    ids = np.random.default_rng(0).integers(0, 60, size=(4, 12)).astype("int32")
    pruned, report = prune_filters(model, pruning_ratio=0.5, importance="l2")
    embed = pruned.get_layer("embed")
    assert embed.output_dim == 16 and tuple(embed.embeddings.shape) == (60, 16)
    kept = report.layer("embed").kept_indices
    expected = np.argsort(-np.linalg.norm(model.get_layer("embed").embeddings.numpy(), axis=0), kind="stable")[:16]
    assert sorted(kept.tolist()) == sorted(expected.tolist())  # the 16 columns with the largest L2 norm
    np.testing.assert_array_equal(embed.embeddings.numpy(), model.get_layer("embed").embeddings.numpy()[:, kept])
    assert verify.max_abs_difference(model, pruned, report, ids) < 1e-5
    path = tmp_path / "tokens.keras"
    pruned.save(path)
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(path)(ids)), np.asarray(pruned(ids)), atol=1e-6)


def test_soft_filter_pruning_zeroes_embedding_columns():
    from tfprune.structured import SoftFilterPruning

    model = _token_model()
    callback = SoftFilterPruning(0.5, importance="l2")
    callback.set_model(model)
    callback.apply()
    columns = np.abs(model.get_layer("embed").embeddings.numpy()).sum(axis=0)
    assert int((columns == 0).sum()) == 16
