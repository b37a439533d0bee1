"""tfprune.functional's masks against a numpy reference: every method, composition, ties, counts,
importance scores, global pruning, custom methods and bad input, on Dense, Conv2D, DepthwiseConv2D,
Embedding and LSTM weights inside functional and subclassed models."""

import json

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfprune.functional as fp

# --------------------------------------------------------------------------
# Models: the same five layers in a functional and a subclassed model
# --------------------------------------------------------------------------


def _layers():
    return {
        "conv": keras.layers.Conv2D(4, 3, name="conv"),
        "dw": keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw"),
        "emb": keras.layers.Embedding(20, 6, name="emb"),
        "lstm": keras.layers.LSTM(3, name="lstm"),
        "dense": keras.layers.Dense(5, name="dense"),
    }


def functional_model():
    layers = _layers()
    image, tokens = keras.Input((7, 7, 2)), keras.Input((4,), dtype="int32")
    x = keras.layers.GlobalAveragePooling2D()(layers["dw"](layers["conv"](image)))
    y = layers["lstm"](layers["emb"](tokens))
    out = layers["dense"](keras.layers.Concatenate()([x, y]))
    return keras.Model([image, tokens], out), layers


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        for key, layer in _layers().items():
            setattr(self, key, layer)
        self.pool = keras.layers.GlobalAveragePooling2D()

    def call(self, inputs):
        image, tokens = inputs
        x = self.pool(self.dw(self.conv(image)))
        y = self.lstm(self.emb(tokens))
        return self.dense(keras.ops.concatenate([x, y], axis=-1))


def subclassed_model():
    model = Subclassed()
    model([np.zeros((1, 7, 7, 2), np.float32), np.zeros((1, 4), np.int32)])
    return model, {key: getattr(model, key) for key in ("conv", "dw", "emb", "lstm", "dense")}


MODELS = {"functional": functional_model, "subclassed": subclassed_model}
WEIGHTS = [
    ("conv", "kernel"),
    ("dw", "kernel"),
    ("emb", "embeddings"),
    ("lstm", "kernel"),
    ("lstm", "recurrent_kernel"),
    ("dense", "kernel"),
]


def _variable(layer, name):
    if isinstance(layer, keras.layers.LSTM):
        return getattr(layer.cell, name)
    return getattr(layer, name)


def _value(layer, name):
    return keras.ops.convert_to_numpy(_variable(layer, name))


def _snapshot(layer):
    return [keras.ops.convert_to_numpy(v).copy() for v in layer.weights], json.dumps(layer.get_config(), default=str)


def _assert_unchanged(layer, snapshot):
    values, config = _snapshot(layer)
    assert config == snapshot[1]
    for before, after in zip(snapshot[0], values):
        np.testing.assert_array_equal(before, after)
    assert not fp.is_pruned(layer)


# --------------------------------------------------------------------------
# numpy reference (written independently of tfprune's implementation)
# --------------------------------------------------------------------------


def ref_count(amount, n):
    return amount if isinstance(amount, int) else int(round(n * amount))  # Python round: half to even


def ref_unstructured(scores, mask, amount):
    """Prune the `amount` smallest |score| among entries with mask 1; ties: lower flat index first."""
    flat_scores = np.abs(np.asarray(scores, np.float64)).astype(np.float32).ravel()
    flat_mask = mask.ravel().copy()
    alive = np.flatnonzero(flat_mask)
    k = ref_count(amount, alive.size)
    ranked = sorted(alive, key=lambda i: (flat_scores[i], i))
    flat_mask[ranked[:k]] = False
    return flat_mask.reshape(mask.shape)


def ref_structured(scores, mask, amount, n, axis):
    """Prune the `amount` slices (along `axis`, among those with an unpruned entry) of smallest norm."""
    axis %= scores.ndim
    alive = [i for i in range(scores.shape[axis]) if np.take(mask, i, axis).any()]
    norms = {i: np.float32(np.linalg.norm(np.take(scores, i, axis).astype(np.float64).ravel(), ord=n)) for i in alive}
    k = ref_count(amount, len(alive))
    new = mask.copy()
    for i in sorted(alive, key=lambda i: (norms[i], i))[:k]:
        index = [slice(None)] * scores.ndim
        index[axis] = i
        new[tuple(index)] = False
    return new


def _check_applied(layer, name, before, expected_mask):
    """The layer's mask equals the reference, pruned entries are zero, the others untouched."""
    np.testing.assert_array_equal(fp.get_mask(layer, name).astype(bool), expected_mask)
    after = _value(layer, name)
    np.testing.assert_array_equal(after[~expected_mask], 0.0)
    np.testing.assert_array_equal(after[expected_mask], before[expected_mask])


# --------------------------------------------------------------------------
# Each method against the reference, in both model kinds
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_l1_unstructured_matches_reference_on_every_layer(kind):
    _, layers = MODELS[kind]()
    for key, name in WEIGHTS:
        layer = layers[key]
        before = _value(layer, name).copy()
        fp.l1_unstructured(layer, name, amount=0.3)
        expected = ref_unstructured(before, np.ones(before.shape, bool), 0.3)
        assert (~expected).sum() == round(before.size * 0.3)
        _check_applied(layer, name, before, expected)
    assert fp.is_pruned(layers["dense"]) and fp.is_pruned(layers["lstm"])


@pytest.mark.parametrize("kind, n", [("functional", 1), ("functional", np.inf), ("functional", "fro"), ("subclassed", 2)])
def test_ln_structured_matches_reference_on_every_layer(kind, n):
    _, layers = MODELS[kind]()
    order = 2 if n == "fro" else n
    axes = {"conv": -1, "dw": 2, "emb": 0, "lstm": -1, "dense": 0}
    for key, name in WEIGHTS:
        layer = layers[key]
        before = _value(layer, name).copy()
        fp.ln_structured(layer, name, amount=0.4, n=n, axis=axes[key])
        expected = ref_structured(before, np.ones(before.shape, bool), 0.4, order, axes[key])
        _check_applied(layer, name, before, expected)


def test_random_methods_exact_counts_and_reproducible_with_seed():
    masks = []
    for seed in (7, 7, 8):
        _, layers = functional_model()
        fp.random_unstructured(layers["emb"], "embeddings", amount=0.45, seed=seed)
        fp.random_structured(layers["conv"], "kernel", amount=2, axis=-1, seed=seed)
        emb, conv = fp.get_mask(layers["emb"], "embeddings"), fp.get_mask(layers["conv"], "kernel")
        assert (emb == 0).sum() == round(120 * 0.45)
        filters_off = [(conv[..., f] == 0).all() for f in range(4)]
        assert sum(filters_off) == 2 and all((conv[..., f] == 1).all() or filters_off[f] for f in range(4))
        np.testing.assert_array_equal(_value(layers["emb"], "embeddings")[emb == 0], 0.0)
        masks.append((emb, conv))
    np.testing.assert_array_equal(masks[0][0], masks[1][0])
    np.testing.assert_array_equal(masks[0][1], masks[1][1])
    assert not np.array_equal(masks[0][0], masks[2][0])


def test_random_unstructured_composes_only_among_unpruned():
    _, layers = functional_model()
    dense = layers["dense"]
    fp.l1_unstructured(dense, "kernel", amount=0.5)
    first = fp.get_mask(dense, "kernel").astype(bool)
    fp.random_unstructured(dense, "kernel", amount=0.5, seed=3)
    second = fp.get_mask(dense, "kernel").astype(bool)
    assert not np.any(second & ~first)  # nothing comes back
    assert second.sum() == first.sum() - round(first.sum() * 0.5)


def test_random_structured_skips_slices_already_pruned():
    _, layers = functional_model()
    conv = layers["conv"]
    fp.ln_structured(conv, "kernel", amount=2, n=1, axis=-1)
    fp.random_structured(conv, "kernel", amount=1, axis=-1, seed=0)
    mask = fp.get_mask(conv, "kernel")
    assert sum((mask[..., f] == 0).all() for f in range(4)) == 3


# --------------------------------------------------------------------------
# Composition (PyTorch's PruningContainer)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_l1_twice_ends_at_75_percent_choosing_among_unpruned(kind):
    _, layers = MODELS[kind]()
    for key in ("conv", "dense"):  # 72 entries: 36 + 18; 55 entries: 28 + round(27 / 2) = 28 + 14
        layer = layers[key]
        original = _value(layer, "kernel").copy()
        fp.l1_unstructured(layer, "kernel", amount=0.5)
        first = ref_unstructured(original, np.ones(original.shape, bool), 0.5)
        fp.l1_unstructured(layer, "kernel", amount=0.5)
        second = ref_unstructured(original * first, first, 0.5)
        _check_applied(layer, "kernel", original, second)
        k1 = round(original.size * 0.5)
        assert (~second).sum() == k1 + round((original.size - k1) * 0.5)
        assert not np.any(second & ~first)
    assert (fp.get_mask(layers["conv"], "kernel") == 0).mean() == 0.75


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_structured_after_unstructured_and_back(kind):
    _, layers = MODELS[kind]()
    for key, name, axis in [("conv", "kernel", -1), ("emb", "embeddings", 0), ("lstm", "recurrent_kernel", -1)]:
        layer = layers[key]
        original = _value(layer, name).copy()
        mask = np.ones(original.shape, bool)
        fp.l1_unstructured(layer, name, amount=0.3)
        mask = ref_unstructured(original, mask, 0.3)
        fp.ln_structured(layer, name, amount=0.5, n=2, axis=axis)
        mask = ref_structured(original * mask, mask, 0.5, 2, axis)
        fp.ln_structured(layer, name, amount=1, n=1, axis=axis)  # one more slice, of those left
        mask = ref_structured(original * mask, mask, 1, 1, axis)
        fp.l1_unstructured(layer, name, amount=0.2)
        mask = ref_unstructured(original * mask, mask, 0.2)
        _check_applied(layer, name, original, mask)


def test_structured_amount_counts_remaining_slices():
    _, layers = functional_model()
    emb = layers["emb"]
    fp.ln_structured(emb, "embeddings", amount=0.5, n=2, axis=0)  # 10 of 20 rows
    fp.ln_structured(emb, "embeddings", amount=0.5, n=2, axis=0)  # 5 of the 10 left
    rows_off = (fp.get_mask(emb, "embeddings") == 0).all(axis=1).sum()
    assert rows_off == 15


# --------------------------------------------------------------------------
# Ties and counts
# --------------------------------------------------------------------------


def test_ties_prune_lower_flat_index_first_and_counts_round_half_to_even():
    dense = keras.layers.Dense(5)
    dense.build((None, 2))
    values = np.array([[1, 2, 1, 3, 1], [2, 1, 3, 2, -1]], np.float32)  # |1| at flat 0, 2, 4, 6, 9
    for amount, expected_count in [(0.25, 2), (0.35, 4), (0.45, 4), (3, 3)]:  # 2.5 -> 2, 3.5 -> 4, 4.5 -> 4
        dense.kernel.assign(values)
        if fp.is_pruned(dense):
            fp.remove(dense, "kernel")
        fp.l1_unstructured(dense, "kernel", amount=amount)
        pruned = np.flatnonzero(fp.get_mask(dense, "kernel").ravel() == 0)
        assert len(pruned) == expected_count
        ones_first = [0, 2, 4, 6, 9, 1, 5, 8]  # magnitude 1 by index, then magnitude 2 by index
        assert list(pruned) == sorted(ones_first[:expected_count])


def test_structured_ties_prune_lower_slice_index_first():
    dense = keras.layers.Dense(4)
    dense.build((None, 3))
    dense.kernel.assign(np.array([[1, 2, 1, 1], [1, 0, 1, 1], [1, 2, 1, 1]], np.float32))  # L1: 3, 4, 3, 3
    fp.ln_structured(dense, "kernel", amount=2, n=1, axis=-1)
    columns_off = [(fp.get_mask(dense, "kernel")[:, j] == 0).all() for j in range(4)]
    assert columns_off == [True, False, True, False]


def test_pruning_a_fully_pruned_weight_again():
    dense = keras.layers.Dense(3)
    dense.build((None, 2))
    fp.l1_unstructured(dense, "kernel", amount=1.0)
    fp.ln_structured(dense, "kernel", amount=0.5, n=2, axis=-1)  # no slice left: nothing to do
    fp.l1_unstructured(dense, "kernel", amount=0.5)
    assert (fp.get_mask(dense, "kernel") == 0).all()
    with pytest.raises(ValueError, match="more slices than the 0"):
        fp.ln_structured(dense, "kernel", amount=1, n=2, axis=-1)


def test_amount_int_versus_float_and_zero():
    dense = keras.layers.Dense(4)
    dense.build((None, 5))
    fp.l1_unstructured(dense, "kernel", amount=1)  # int 1: one entry, not 100%
    assert (fp.get_mask(dense, "kernel") == 0).sum() == 1
    fp.l1_unstructured(dense, "kernel", amount=1.0)  # float 1.0: everything left
    assert (fp.get_mask(dense, "kernel") == 0).all()
    bias = keras.layers.Dense(4)
    bias.build((None, 5))
    fp.l1_unstructured(bias, "bias", amount=0)
    assert fp.is_pruned(bias) and (fp.get_mask(bias, "bias") == 1).all()


# --------------------------------------------------------------------------
# Importance scores, custom masks, identity, global, user methods
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_importance_scores_replace_magnitudes(kind):
    _, layers = MODELS[kind]()
    rng = np.random.default_rng(0)
    dw, emb = layers["dw"], layers["emb"]
    dw_before, emb_before = _value(dw, "kernel").copy(), _value(emb, "embeddings").copy()
    dw_scores, emb_scores = rng.normal(size=dw_before.shape), rng.normal(size=emb_before.shape)
    fp.l1_unstructured(dw, "kernel", amount=0.5, importance_scores=dw_scores)
    _check_applied(dw, "kernel", dw_before, ref_unstructured(dw_scores, np.ones(dw_before.shape, bool), 0.5))
    fp.ln_structured(emb, "embeddings", amount=3, n=2, axis=1, importance_scores=emb_scores)
    _check_applied(emb, "embeddings", emb_before, ref_structured(emb_scores, np.ones(emb_before.shape, bool), 3, 2, 1))


@pytest.mark.parametrize("mask_dtype", [bool, np.int32, np.float32])
def test_custom_from_mask_composes_with_earlier_masks(mask_dtype):
    _, layers = subclassed_model()
    lstm = layers["lstm"]
    original = _value(lstm, "kernel").copy()
    fp.l1_unstructured(lstm, "kernel", amount=0.25)
    first = ref_unstructured(original, np.ones(original.shape, bool), 0.25)
    custom = np.random.default_rng(1).random(original.shape) > 0.5
    fp.custom_from_mask(lstm, "kernel", mask=custom.astype(mask_dtype))
    _check_applied(lstm, "kernel", original, first & custom)


def test_a_weight_can_be_named_by_its_path_in_a_model():
    model, layers = functional_model()
    before = _value(layers["lstm"], "recurrent_kernel").copy()
    fp.l1_unstructured(model, "lstm/lstm_cell/recurrent_kernel", amount=0.5)
    _check_applied(layers["lstm"], "recurrent_kernel", before,
                   ref_unstructured(before, np.ones(before.shape, bool), 0.5))
    assert fp.is_pruned(model) and not fp.is_pruned(layers["dense"])


def test_identity_re_applies_the_mask_after_set_weights():
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    fp.l1_unstructured(dense, "kernel", amount=0.5)
    mask = fp.get_mask(dense, "kernel")
    dense.set_weights([np.ones((4, 3), np.float32), np.zeros(3, np.float32)])  # bypasses the constraint
    fp.identity(dense, "kernel")
    np.testing.assert_array_equal(_value(dense, "kernel"), mask)


def test_identity_changes_nothing_but_marks_pruned():
    _, layers = functional_model()
    conv = layers["conv"]
    before = _value(conv, "kernel").copy()
    fp.identity(conv, "kernel")
    assert fp.is_pruned(conv)
    np.testing.assert_array_equal(_value(conv, "kernel"), before)
    np.testing.assert_array_equal(fp.get_mask(conv, "kernel"), 1.0)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_global_unstructured_one_ranking_across_weights(kind):
    _, layers = MODELS[kind]()
    pairs = [(layers["conv"], "kernel"), (layers["emb"], "embeddings"), (layers["lstm"], "recurrent_kernel")]
    fp.l1_unstructured(layers["emb"], "embeddings", amount=0.5)  # already half pruned
    values = [_value(layer, name).copy() for layer, name in pairs]
    masks = [fp.get_mask(layer, name).astype(bool) for layer, name in pairs]
    scores = {(layers["lstm"], "recurrent_kernel"): np.random.default_rng(2).normal(size=values[2].shape)}
    fp.global_unstructured(pairs, fp.L1Unstructured, amount=0.6, importance_scores=scores)
    # Reference: the still-unpruned entries of all weights concatenated in order, ranked once.
    ranking = [np.abs(values[0]), np.abs(values[1]), np.abs(scores[pairs[2]])]
    flat = np.concatenate([r.astype(np.float32).ravel() for r in ranking])
    alive = np.concatenate([m.ravel() for m in masks])
    expected = ref_unstructured(flat, alive, 0.6)
    start = 0
    for (layer, name), value, mask in zip(pairs, values, masks):
        part = expected[start : start + value.size].reshape(value.shape)
        start += value.size
        _check_applied(layer, name, value, part)
        assert not np.any(part & ~mask)
    assert (~expected).sum() == (~alive).sum() + round(alive.sum() * 0.6)


def test_global_unstructured_random_with_seed_and_int_amount():
    _, layers = functional_model()
    pairs = [(layers["dense"], "kernel"), (layers["conv"], "kernel")]
    fp.global_unstructured(pairs, fp.RandomUnstructured, amount=50, seed=4)
    pruned = sum(int((fp.get_mask(layer, name) == 0).sum()) for layer, name in pairs)
    assert pruned == 50


def test_user_pruning_methods_of_each_type():
    class KeepPositive(fp.PruningMethod):
        pruning_type = "unstructured"

        def compute_mask(self, weight, default_mask):
            self.seen = weight.copy()
            return default_mask * (weight > 0)

    class DropFirstSlice(fp.PruningMethod):
        pruning_type = "structured"
        axis = 0

        def compute_mask(self, weight, default_mask):
            mask = np.array(default_mask)
            mask[0] = 0
            return mask

    class DropEverySecond(fp.PruningMethod):
        pruning_type = "global"

        def compute_mask(self, weight, default_mask):
            return (np.arange(weight.size).reshape(weight.shape) % 2 == 1).astype(np.float32)

    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    original = _value(dense, "kernel").copy()
    fp.custom_from_mask(dense, "kernel", np.arange(12).reshape(4, 3) != 0)  # flat 0 pruned
    keep_positive = KeepPositive()
    fp.prune_weight(dense, "kernel", keep_positive)
    np.testing.assert_array_equal(keep_positive.seen, original.ravel()[1:])  # only unpruned entries, flat order
    mask = (np.arange(12).reshape(4, 3) != 0) & (original > 0)
    np.testing.assert_array_equal(fp.get_mask(dense, "kernel").astype(bool), mask)
    fp.prune_weight(dense, "kernel", DropFirstSlice())
    alive_rows = np.flatnonzero(mask.any(axis=1))
    mask[alive_rows[0]] = False
    fp.prune_weight(dense, "kernel", DropEverySecond())
    mask &= np.arange(12).reshape(4, 3) % 2 == 1
    _check_applied(dense, "kernel", original, mask)


# --------------------------------------------------------------------------
# Keeping earlier constraints; remove
# --------------------------------------------------------------------------


def test_earlier_constraint_is_applied_first_and_restored_by_remove():
    dense = keras.layers.Dense(3, kernel_constraint=keras.constraints.NonNeg())
    dense.build((None, 4))
    fp.l1_unstructured(dense, "kernel", amount=0.5)
    constraint = dense.kernel.constraint
    w = np.full((4, 3), -2.0, np.float32)
    w[0, 0] = 5.0
    out = keras.ops.convert_to_numpy(constraint(keras.ops.convert_to_tensor(w)))
    mask = fp.get_mask(dense, "kernel")
    np.testing.assert_array_equal(out, np.maximum(w, 0) * mask)
    fp.remove(dense, "kernel")
    assert isinstance(dense.kernel_constraint, keras.constraints.NonNeg)
    assert dense.kernel.constraint is dense.kernel_constraint


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_remove_leaves_a_plain_layer(kind):
    model, layers = MODELS[kind]()
    configs = {key: json.dumps(layer.get_config(), default=str) for key, layer in layers.items()}
    n_weights = len(model.weights)
    for key, name in WEIGHTS:
        fp.l1_unstructured(layers[key], name, amount=0.5)
    assert len(model.weights) == n_weights  # masks are not layer variables
    values = {(key, name): _value(layers[key], name).copy() for key, name in WEIGHTS}
    fp.remove(layers["dense"], "kernel")
    assert sorted(fp.remove_all(model)) == sorted(
        _variable(layers[key], name).path for key, name in WEIGHTS if key != "dense"
    )
    assert not fp.is_pruned(model)
    for key, layer in layers.items():
        assert json.dumps(layer.get_config(), default=str) == configs[key]
    for (key, name), value in values.items():
        np.testing.assert_array_equal(_value(layers[key], name), value)
        assert _variable(layers[key], name).constraint is None
    assert len(model.weights) == n_weights


# --------------------------------------------------------------------------
# Bad input: a clear error, the layer unchanged
# --------------------------------------------------------------------------


def _bad_calls(layers):
    dense, conv, lstm = layers["dense"], layers["conv"], layers["lstm"]
    return [
        (lambda: fp.l1_unstructured(dense, "kernal", 0.5), ValueError, r"'kernal' does not exist.*\['kernel', 'bias'\]"),
        (lambda: fp.l1_unstructured(lstm, "weights", 0.5), ValueError, r"\['kernel', 'recurrent_kernel', 'bias'\]"),
        (lambda: fp.l1_unstructured(dense, "kernel", 1.5), ValueError, r"\[0, 1\].*received 1.5"),
        (lambda: fp.l1_unstructured(dense, "kernel", -0.1), ValueError, r"\[0, 1\]"),
        (lambda: fp.l1_unstructured(dense, "kernel", -3), ValueError, r">= 0"),
        (lambda: fp.l1_unstructured(dense, "kernel", 10_000), ValueError, r"10000.*more entries than the 55"),
        (lambda: fp.l1_unstructured(dense, "kernel", True), TypeError, r"int .* or a float"),
        (lambda: fp.l1_unstructured(dense, "kernel", "half"), TypeError, r"amount"),
        (lambda: fp.ln_structured(conv, "kernel", 5, n=2, axis=-1), ValueError, r"more slices than the 4"),
        (lambda: fp.ln_structured(conv, "kernel", 0.5, n=2, axis=4), ValueError, r"axis.*out of range.*rank 4"),
        (lambda: fp.ln_structured(conv, "kernel", 0.5, n=-1), ValueError, r"norm order"),
        (lambda: fp.random_unstructured(conv, "kernel", 0.5, seed=-2), ValueError, r"seed"),
        (lambda: fp.custom_from_mask(dense, "kernel", np.ones((5, 11))), ValueError, r"shape \(5, 11\).*\(11, 5\)"),
        (lambda: fp.custom_from_mask(dense, "kernel", np.full((11, 5), "1")), TypeError, r"dtype <U1"),
        (lambda: fp.custom_from_mask(dense, "kernel", np.full((11, 5), 0.5)), ValueError, r"only 0 and 1"),
        (lambda: fp.l1_unstructured(dense, "kernel", 0.5, importance_scores=np.ones(3)), ValueError, r"importance"),
        (lambda: fp.global_unstructured([(dense, "kernel")], fp.LnStructured, 0.5), TypeError, r"unstructured"),
        (lambda: fp.global_unstructured([(dense, "kernel"), (dense, "kernel")], fp.L1Unstructured, 0.5),
         ValueError, r"twice"),
        (lambda: fp.global_unstructured([(dense, "kernel"), (conv, "kernal")], fp.L1Unstructured, 0.5),
         ValueError, r"'kernal' does not exist"),
        (lambda: fp.remove(dense, "kernel"), ValueError, r"not pruned"),
    ]


def test_bad_input_raises_naming_the_fix_and_changes_nothing():
    _, layers = functional_model()
    snapshots = {key: _snapshot(layer) for key, layer in layers.items()}
    for call, error, pattern in _bad_calls(layers):
        with pytest.raises(error, match=pattern):
            call()
        for key, layer in layers.items():
            _assert_unchanged(layer, snapshots[key])


def test_unbuilt_layer_and_unsavable_weight_are_refused():
    dense = keras.layers.Dense(3)
    with pytest.raises(ValueError, match=r"not built.*layer.build\(input_shape\)"):
        fp.l1_unstructured(dense, "kernel", 0.5)
    with pytest.raises(TypeError, match="Keras layer"):
        fp.l1_unstructured(np.ones(3), "kernel", 0.5)
    mha = keras.layers.MultiHeadAttention(2, 4)
    mha.build((None, 3, 4), (None, 3, 4))
    snapshot = _snapshot(mha)
    with pytest.raises(fp.SerializationError, match=r"does not save the constraint.*get_config"):
        fp.l1_unstructured(mha, "query/kernel", 0.5)
    _assert_unchanged(mha, snapshot)


def test_a_method_returning_a_bad_mask_is_refused():
    class WrongShape(fp.PruningMethod):
        pruning_type = "global"

        def compute_mask(self, weight, default_mask):
            return np.ones(3)

    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    snapshot = _snapshot(dense)
    with pytest.raises(ValueError, match=r"returned by WrongShape.compute_mask has shape \(3,\)"):
        fp.prune_weight(dense, "kernel", WrongShape())
    _assert_unchanged(dense, snapshot)


class ScaleWithConstraint(keras.layers.Layer):
    def __init__(self, scale_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.scale_constraint = keras.constraints.get(scale_constraint)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), name="scale", constraint=self.scale_constraint)

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "scale_constraint": keras.constraints.serialize(self.scale_constraint)}


class ScaleWithoutConstraint(keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), name="scale")

    def call(self, x):
        return x * self.scale


def test_custom_layers_need_a_constraint_argument_in_their_config():
    good = ScaleWithConstraint()
    good.build((None, 6))
    good.scale.assign(np.arange(6, dtype=np.float32) - 2.5)
    fp.l1_unstructured(good, "scale", amount=3)  # |w| = 2.5 1.5 .5 .5 1.5 2.5: of the tied 1.5s, index 1 goes
    np.testing.assert_array_equal(fp.get_mask(good, "scale"), [1, 0, 0, 0, 1, 1])
    copy = ScaleWithConstraint.from_config(good.get_config())
    copy.build((None, 6))
    np.testing.assert_array_equal(fp.get_mask(copy, "scale"), [1, 0, 0, 0, 1, 1])
    bad = ScaleWithoutConstraint()
    bad.build((None, 6))
    snapshot = _snapshot(bad)
    with pytest.raises(fp.SerializationError, match=r"no constraint argument.*scale_constraint|<weight>_constraint"):
        fp.l1_unstructured(bad, "scale", amount=2)
    _assert_unchanged(bad, snapshot)


OPERATION = st.one_of(
    st.tuples(st.just("l1"), st.floats(0, 1), st.integers(0, 1)),
    st.tuples(st.just("l1_count"), st.integers(0, 6), st.integers(0, 1)),
    st.tuples(st.just("ln"), st.floats(0, 1), st.sampled_from([0, 1, -1])),
)


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 5),
    values=st.lists(st.integers(-3, 3), min_size=25, max_size=25),
    operations=st.lists(OPERATION, min_size=1, max_size=3),
)
def test_random_sequences_of_prunings_match_the_reference(rows, cols, values, operations):
    """Small integer weights (many ties), any sequence of unstructured and structured prunings."""
    dense = keras.layers.Dense(cols)
    dense.build((None, rows))
    weight = np.array(values[: rows * cols], np.float32).reshape(rows, cols)
    dense.kernel.assign(weight)
    mask = np.ones(weight.shape, bool)
    for kind, amount, axis in operations:
        alive = int(mask.sum())
        if kind == "l1_count":
            amount = min(amount, alive)
        if kind == "ln":
            fp.ln_structured(dense, "kernel", amount=amount, n=1, axis=axis)
            mask = ref_structured(weight * mask, mask, amount, 1, axis)
        else:
            fp.l1_unstructured(dense, "kernel", amount=amount)
            mask = ref_unstructured(weight * mask, mask, amount)
        _check_applied(dense, "kernel", weight, mask)
