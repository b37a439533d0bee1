"""tfprune.oneshot.prune on real Keras models: layer views, layer-by-layer order, calibration inputs,
bad input, the input model left alone, and hand-over to prune_low_magnitude / strip_pruning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import oneshot
from tfprune.oneshot import driver, layers as oneshot_layers
from tests.test_oneshot_math import zeros_in_every_group

L = keras.layers


def attention_model():
    tokens = keras.Input((8, 16), name="tokens")
    x = L.MultiHeadAttention(2, 8, name="mha")(tokens, tokens, use_causal_mask=True)
    mlp = keras.Sequential([keras.Input((8, 16)), L.Dense(32, activation="relu", name="up"), L.Dense(16, name="down")],
                           name="mlp")
    x = L.Add()([tokens, mlp(x)])
    x = L.Conv1D(8, 3, padding="causal", dilation_rate=2, name="conv")(x)
    return keras.Model(tokens, L.Dense(4, name="head")(L.Flatten()(x)), name="attention_model")


def conv_model():
    image = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c3")(image)
    x = L.Conv2D(8, 1, name="c1")(x)
    return keras.Model(image, L.Dense(4, name="out")(L.Flatten()(x)))


def kernels_as_matrices(model):
    """Independent of LinearView: every pruned layer's kernel reshaped to (inputs, outputs)."""
    return {
        "mha/query": model.get_layer("mha")._query_dense.kernel.numpy().reshape(16, 16),
        "mha/key": model.get_layer("mha")._key_dense.kernel.numpy().reshape(16, 16),
        "mha/value": model.get_layer("mha")._value_dense.kernel.numpy().reshape(16, 16),
        "mha/output": model.get_layer("mha")._output_dense.kernel.numpy().reshape(16, 16),
        "mlp/up": model.get_layer("mlp").get_layer("up").kernel.numpy(),
        "mlp/down": model.get_layer("mlp").get_layer("down").kernel.numpy(),
        "conv": model.get_layer("conv").kernel.numpy().reshape(-1, 8),
        "head": model.get_layer("head").kernel.numpy(),
    }


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).normal(size=(48, 8, 16)).astype("float32")


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_every_supported_layer_gets_exact_zeros_and_the_input_model_is_unchanged(method, calibration):
    keras.utils.set_random_seed(0)
    model = attention_model()
    before = [w.copy() for w in model.get_weights()]
    reference = model.predict(calibration, verbose=0)
    pruned, report = oneshot.prune_with_report(model, calibration, method=method, sparsity=0.5, batch_size=16,
                                               verbose=False)
    assert [r.path for r in report] == list(kernels_as_matrices(model))
    for path, matrix in kernels_as_matrices(pruned).items():
        assert (matrix == 0).sum(axis=0).tolist() == [matrix.shape[0] // 2] * matrix.shape[1], path
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    np.testing.assert_array_equal(model.predict(calibration, verbose=0), reference)
    assert pruned is not model and type(pruned.get_layer("mha")) is L.MultiHeadAttention
    m_by_n = oneshot.prune(model, calibration, method=method, sparsity_m_by_n=(2, 4), verbose=False)
    for path, matrix in kernels_as_matrices(m_by_n).items():
        assert zeros_in_every_group(matrix, 2, 4), path
        assert (matrix == 0).sum() == matrix.size // 2, path


def test_views_reproduce_the_layer_outputs(calibration):
    keras.utils.set_random_seed(1)
    model, images = conv_model(), np.random.default_rng(1).normal(size=(3, 8, 8, 4)).astype("float32")
    for name, x in (("c3", images), ("c1", keras.Model(model.inputs[0], model.get_layer("c3").output)(images))):
        layer = model.get_layer(name)
        view = oneshot_layers.linear_view(layer)
        linear = view.rows(x) @ view.matrix() + layer.bias.numpy()
        expected = keras.ops.convert_to_numpy(layer.convolution_op(x, layer.kernel)) + layer.bias.numpy()
        np.testing.assert_allclose(linear, expected.reshape(-1, 8), rtol=1e-4, atol=1e-5)
    lm = attention_model()
    conv, mha = lm.get_layer("conv"), lm.get_layer("mha")
    x = calibration[:2]
    view = oneshot_layers.linear_view(conv)
    padded = tf.pad(x, [[0, 0], [4, 0], [0, 0]])
    expected = tf.nn.conv1d(padded, conv.kernel, 1, "VALID", dilations=2).numpy()
    np.testing.assert_allclose(view.rows(x) @ view.matrix(), expected.reshape(-1, 8), rtol=1e-4, atol=1e-5)
    for _, part in oneshot_layers.attention_projections(mha)[:1]:
        view = oneshot_layers.linear_view(part)
        np.testing.assert_allclose((view.rows(x) @ view.matrix()).reshape(part(x).shape) + part.bias.numpy(),
                                   part(x).numpy(), rtol=1e-4, atol=1e-5)
    view.assign(np.zeros((16, 16)))
    assert not np.any(part.kernel.numpy())


def wanda_reference(weights, x, count):
    norms = np.sqrt((x.astype(np.float64) ** 2).sum(axis=0))
    scores = np.abs(weights) * norms[:, None]
    pruned = weights.copy()
    for out in range(weights.shape[1]):
        pruned[np.argsort(scores[:, out], kind="stable")[:count], out] = 0
    return pruned


@pytest.mark.parametrize("sequential", [True, False])
def test_later_layers_see_the_inputs_of_the_pruned_earlier_layers(sequential):
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((10,)), L.Dense(12, activation="relu", name="a"), L.Dense(6, name="b")])
    x = np.random.default_rng(2).normal(size=(40, 10)).astype("float32")
    pruned = oneshot.prune(model, x, method="wanda", sparsity=0.5, batch_size=7, sequential=sequential, verbose=False)
    w_a, b_a = model.get_layer("a").get_weights()
    expected_a = wanda_reference(w_a, x, 5)
    np.testing.assert_array_equal(pruned.get_layer("a").kernel.numpy(), expected_a)
    hidden = np.maximum(x @ (expected_a if sequential else w_a) + b_a, 0)
    np.testing.assert_array_equal(pruned.get_layer("b").kernel.numpy(),
                                  wanda_reference(model.get_layer("b").kernel.numpy(), hidden, 6))


def test_sparsegpt_on_a_model_equals_the_numpy_function_on_the_recorded_inputs():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((16,)), L.Dense(8, activation="tanh", name="a"), L.Dense(4, name="b")])
    x = np.random.default_rng(3).normal(size=(64, 16)).astype("float32") @ np.random.default_rng(4).normal(size=(16, 16))
    x = x.astype("float32")
    pruned, report = oneshot.prune_with_report(model, x, method="sparsegpt", sparsity=0.5, dtype="float64",
                                               block_size=4, verbose=False)
    w_a, b_a = model.get_layer("a").get_weights()
    expected_a = oneshot.sparsegpt_prune(w_a, x.T.astype(np.float64) @ x, sparsity=0.5, block_size=4, dtype="float64")
    np.testing.assert_allclose(pruned.get_layer("a").kernel.numpy(), expected_a, rtol=1e-5, atol=1e-6)
    hidden = np.tanh(x @ pruned.get_layer("a").kernel.numpy() + b_a).astype(np.float64)
    expected_b = oneshot.sparsegpt_prune(model.get_layer("b").kernel.numpy(), hidden.T @ hidden, sparsity=0.5,
                                         block_size=4, dtype="float64")
    np.testing.assert_allclose(pruned.get_layer("b").kernel.numpy(), expected_b, rtol=1e-4, atol=1e-5)
    assert all(0 < r.relative_error < 1 for r in report)


def test_calibration_forms_give_the_same_result():
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu", name="a"), L.Dense(4, name="b")])
    x = np.random.default_rng(5).normal(size=(20, 6)).astype("float32")
    y = np.zeros(20)

    def generator():
        for i in range(0, 20, 8):
            yield x[i:i + 8], y[i:i + 8]

    forms = [x, (x, y), tf.data.Dataset.from_tensor_slices((x, y)).batch(8), generator, generator(),
             tf.constant(x)]
    results = [oneshot.prune(model, data, method="sparsegpt", sparsity=0.5, batch_size=8, verbose=False)
               for data in forms]
    for other in results[1:]:
        for a, b in zip(results[0].get_weights(), other.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_progress_lines_and_silence(capsys, calibration):
    model = attention_model()
    oneshot.prune(model, calibration[:8], method="wanda", sparsity=0.5, layers=["mha"])
    out = capsys.readouterr().out
    assert "[oneshot] calibration pass for mha/query, mha/key, mha/value: 1 batches" in out
    assert "4/4 mha/output (EinsumDense 16x16) wanda: 50.0% zeros" in out
    oneshot.prune(model, calibration[:8], method="wanda", sparsity=0.5, layers=["mha/query"], verbose=False)
    assert capsys.readouterr().out == ""


def test_layers_selects_by_name_and_skips_what_a_pattern_cannot_take(capsys):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, name="a"), L.Dense(4, name="b")])
    x = np.ones((4, 6), "float32")
    only_b = oneshot.prune(model, x, method="magnitude", sparsity=0.5, layers=["b"], verbose=False)
    np.testing.assert_array_equal(only_b.get_layer("a").kernel.numpy(), model.get_layer("a").kernel.numpy())
    assert (only_b.get_layer("b").kernel.numpy() == 0).sum() == 16
    default = oneshot.prune(model, x, method="wanda", sparsity_m_by_n=(2, 4))  # 'a' has 6 inputs: skipped
    assert "skipped a: Layer 'a' has 6 inputs per output" in capsys.readouterr().out
    np.testing.assert_array_equal(default.get_layer("a").kernel.numpy(), model.get_layer("a").kernel.numpy())
    assert zeros_in_every_group(default.get_layer("b").kernel.numpy(), 2, 4)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"calibration_data": np.ones((4, 7))}, ValueError, r"shape \(4, 7\); the model expects \(None, 6\)"),
    ({"calibration_data": {"wrong": np.ones((4, 6))}}, ValueError, "Fix: key the arrays by input name"),
    ({"calibration_data": [np.ones((4, 6))] * 3}, TypeError, r"iter\(list_of_batches\)"),
    ({"layers": ["a", "nope"]}, ValueError, r"names \['nope'\]"),
    ({"layers": "a"}, TypeError, "list of layer names"),
    ({"sparsity": 1.0}, ValueError, r"\[0, 1\)"),
    ({"sparsity": -0.2}, ValueError, r"\[0, 1\)"),
    ({"sparsity": None, "sparsity_m_by_n": (2, 4), "layers": ["a"]}, ValueError, "6 inputs per output"),
    ({"sparsity": None, "sparsity_m_by_n": (4, 2)}, ValueError, "0 < M < N"),
    ({"sparsity": 0.5, "sparsity_m_by_n": (2, 4)}, ValueError, "exactly one"),
    ({"method": "obs"}, ValueError, "`method` must be one of"),
    ({"calibration_data": None}, ValueError, "needs `calibration_data`"),
    ({"calibration_data": iter([])}, ValueError, "yielded no batch"),
    ({"block_size": 0}, ValueError, "block_size"),
])
def test_bad_input_raises_before_anything_changes(kwargs, error, match):
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, name="a"), L.Dense(4, name="b")])
    before = [w.copy() for w in model.get_weights()]
    options = {"calibration_data": np.ones((4, 6), "float32"), "method": "wanda", "sparsity": 0.5, **kwargs}
    with pytest.raises(error, match=match):
        oneshot.prune(model, verbose=False, **options)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_subclassed_models_are_refused_with_the_fix():
    model = Subclassed()
    model(np.ones((1, 3)))
    with pytest.raises(TypeError, match="subclassed.*functionally"):
        oneshot.prune(model, np.ones((2, 3)), method="wanda", sparsity=0.5)


def test_a_failure_half_way_leaves_the_input_model_untouched():
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((6,)), L.Dense(8, name="a"), L.Dense(4, name="b")])
    before = [w.copy() for w in model.get_weights()]
    passes = []

    def data():
        passes.append(1)
        if len(passes) == 3:  # the first pass checks shapes, the second prunes 'a', the third fails
            raise RuntimeError("disk gone")
        yield np.ones((4, 6), "float32")

    with pytest.raises(RuntimeError, match="disk gone"):
        oneshot.prune(model, data, method="sparsegpt", sparsity=0.5, verbose=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert "call" not in vars(model.get_layer("a"))


@pytest.mark.slow
def test_one_shot_zeros_survive_prune_low_magnitude_fine_tuning_and_strip(tmp_path):
    keras.utils.set_random_seed(8)
    model = keras.Sequential([keras.Input((20,)), L.Dense(16, activation="relu", name="a"), L.Dense(4, name="b")])
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(128, 20)).astype("float32"), rng.integers(0, 4, 128)
    one_shot = oneshot.prune(model, x[:64], method="sparsegpt", sparsity=0.5, verbose=False)
    zeros = {name: one_shot.get_layer(name).kernel.numpy() == 0 for name in ("a", "b")}
    wrapped = tfprune.prune_low_magnitude(one_shot, pruning_schedule=tfprune.ConstantSparsity(0.5, 0, frequency=1))
    wrapped.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapped.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    stripped = tfprune.strip_pruning(wrapped)
    for name, mask in zeros.items():
        kernel = stripped.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(kernel == 0, mask)  # the same entries, still zero after training
        assert not np.array_equal(kernel[~mask], one_shot.get_layer(name).kernel.numpy()[~mask])  # it trained
    path = str(tmp_path / "pruned.keras")
    one_shot.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.get_layer("a").kernel.numpy() == 0, zeros["a"])


def test_a_layer_called_twice_per_forward_pass_records_both_calls():
    keras.utils.set_random_seed(9)
    shared = L.Dense(6, name="shared")
    x_in = keras.Input((6,))
    model = keras.Model(x_in, L.Dense(2, name="out")(shared(L.Activation("tanh")(shared(x_in)))))
    x = np.random.default_rng(9).normal(size=(12, 6)).astype("float32")
    pruned = oneshot.prune(model, x, method="wanda", sparsity=0.5, layers=["shared"], batch_size=4, verbose=False)
    w, b = model.get_layer("shared").get_weights()
    second = np.tanh(x @ w + b)
    expected = wanda_reference(w, np.concatenate([x, second]), 3)
    np.testing.assert_array_equal(pruned.get_layer("shared").kernel.numpy(), expected)


def test_layers_that_are_not_a_matrix_product_over_trailing_inputs_are_named_in_the_error():
    x_in = keras.Input((4, 6, 4))
    x = L.Conv2D(4, 1, groups=2, name="grouped")(x_in)
    x = L.DepthwiseConv2D(3, name="depthwise")(x)
    x = L.EinsumDense("abcd,bf->acdf", output_shape=(None, 4, 3), name="middle_axis")(x)
    x = L.Dense(2, name="last")(x)
    model = keras.Model(x_in, x)
    data = np.ones((2, 4, 6, 4), "float32")
    for name, match in (("grouped", "groups=2"), ("depthwise", "not supported"), ("middle_axis", "trailing axes")):
        with pytest.raises(oneshot.UnsupportedOneShotLayer, match=match):
            oneshot.prune(model, data, method="wanda", sparsity=0.5, layers=[name], verbose=False)
    pruned, report = oneshot.prune_with_report(model, data, method="wanda", sparsity=0.5, verbose=False)
    assert [r.path for r in report] == ["last"]
