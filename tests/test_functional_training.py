"""tfprune.functional in use: pruned entries stay zero through `fit` and custom loops (Adam's moments
cannot bring them back), masks survive a `.keras` round trip in a fresh interpreter for Sequential,
functional, nested and subclassed models, `remove` leaves models that load without tfprune, and a
functionally pruned model goes through `prune_low_magnitude`, `strip_pruning` and TFLite export."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
import tfprune.functional as fp
from tfprune.interpreter import make_interpreter

# A subclassed model whose `build` creates the mask slots (as `prune.identity` before
# `load_state_dict` in PyTorch), so that loading restores the saved masks. Run here and in the
# fresh interpreter that loads the files.
SUBCLASS_SOURCE = textwrap.dedent(
    '''
    import keras
    import tfprune.functional

    @keras.saving.register_keras_serializable(package="tfprune_tests")
    class MaskedNet(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.emb = keras.layers.Embedding(20, 4)
            self.lstm = keras.layers.LSTM(3)
            self.head = keras.layers.Dense(2)

        def build(self, input_shape):
            self.emb.build(input_shape)
            self.lstm.build(tuple(input_shape) + (4,))
            self.head.build((None, 3))
            for layer, name in [(self.emb, "embeddings"), (self.lstm, "recurrent_kernel"), (self.head, "kernel")]:
                tfprune.functional.identity(layer, name)

        def call(self, x):
            return self.head(self.lstm(self.emb(x)))

    @keras.saving.register_keras_serializable(package="tfprune_tests")
    class PlainNet(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.head = keras.layers.Dense(2)

        def call(self, x):
            return self.head(x)
    '''
)
exec(SUBCLASS_SOURCE)  # defines MaskedNet and PlainNet here

IMAGE = (6, 6, 2)


def sequential():
    return keras.Sequential(
        [
            keras.Input(IMAGE),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.DepthwiseConv2D(3, name="dw"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="dense"),
        ]
    )


def functional():
    tokens = keras.Input((5,), dtype="int32")
    x = keras.layers.LSTM(3, name="lstm")(keras.layers.Embedding(20, 4, name="emb")(tokens))
    return keras.Model(tokens, keras.layers.Dense(2, name="dense")(x))


def nested():
    block = keras.Sequential([keras.layers.Conv2D(4, 3, name="conv"), keras.layers.GlobalAveragePooling2D()], name="block")
    image = keras.Input(IMAGE)
    return keras.Model(image, keras.layers.Dense(2, name="dense")(block(image)))


def subclassed():
    model = MaskedNet()  # noqa: F821 - defined by SUBCLASS_SOURCE
    model(np.zeros((1, 5), np.int32))
    return model


# kind -> (builder, [(layer path, weight name, how to prune)], input maker)
KINDS = {
    "sequential": (sequential, [(("conv",), "kernel", "ln"), (("dw",), "kernel", "l1"), (("dense",), "kernel", "l1x2")]),
    "functional": (functional, [(("emb",), "embeddings", "ln0"), (("lstm",), "kernel", "l1"),
                                (("lstm",), "recurrent_kernel", "l1x2"), (("dense",), "bias", "l1")]),
    "nested": (nested, [(("block", "conv"), "kernel", "l1x2"), (("dense",), "kernel", "ln")]),
    "subclassed": (subclassed, [(("emb",), "embeddings", "l1"), (("lstm",), "recurrent_kernel", "ln"),
                                (("head",), "kernel", "l1x2")]),
}


def find_layer(model, path):
    layer = model
    for name in path:
        attribute = getattr(layer, name, None)  # subclassed models: attributes; others: layer names
        layer = attribute if isinstance(attribute, keras.layers.Layer) else layer.get_layer(name)
    return layer


def inputs_for(kind, n=16, seed=0):
    rng = np.random.default_rng(seed)
    if kind in ("functional", "subclassed"):
        return rng.integers(0, 20, size=(n, 5)).astype(np.int32), rng.normal(size=(n, 2)).astype(np.float32)
    return rng.normal(size=(n,) + IMAGE).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


def prune_model(kind):
    builder, specs = KINDS[kind]
    model = builder()
    for path, name, how in specs:
        layer = find_layer(model, path)
        if how == "ln":
            fp.ln_structured(layer, name, amount=1, n=2, axis=-1)
        elif how == "ln0":
            fp.ln_structured(layer, name, amount=0.5, n=1, axis=0)
        else:
            fp.l1_unstructured(layer, name, amount=0.5)
            if how == "l1x2":
                fp.l1_unstructured(layer, name, amount=0.5)
    masks = {f"{'/'.join(path)}:{name}": fp.get_mask(find_layer(model, path), name) for path, name, _ in specs}
    return model, masks


def _weight(model, key):
    path, name = key.split(":")
    layer = find_layer(model, tuple(path.split("/")))
    variable = getattr(layer.cell, name) if isinstance(layer, keras.layers.LSTM) else getattr(layer, name)
    return variable


def assert_zeros(model, masks):
    for key, mask in masks.items():
        values = keras.ops.convert_to_numpy(_weight(model, key))
        assert np.all(values[mask == 0] == 0), f"{key}: a pruned entry is non-zero"


class CheckZerosEveryBatch(keras.callbacks.Callback):
    def __init__(self, masks):
        super().__init__()
        self.masks, self.batches = masks, 0

    def on_train_batch_end(self, batch, logs=None):
        assert_zeros(self.model, self.masks)
        self.batches += 1


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fit_keeps_pruned_entries_zero_after_every_update(kind):
    model, masks = prune_model(kind)
    before = {key: keras.ops.convert_to_numpy(_weight(model, key)).copy() for key in masks}
    optimizer = keras.optimizers.Adam(0.05)
    model.compile(optimizer=optimizer, loss="mse")
    check = CheckZerosEveryBatch(masks)
    x, y = inputs_for(kind)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[check])
    assert check.batches == 8
    resurrecting = 0
    for key, mask in masks.items():
        variable = _weight(model, key)
        after = keras.ops.convert_to_numpy(variable)
        assert np.any(after[mask == 1] != before[key][mask == 1])  # the rest trained
        momentum = keras.ops.convert_to_numpy(optimizer._momentums[optimizer._get_variable_index(variable)])
        resurrecting += int(np.count_nonzero(momentum[mask == 0]))
    # Adam's moments at pruned entries are non-zero: without re-zeroing they would move them.
    assert resurrecting > 0


def test_custom_training_loop_keeps_pruned_entries_zero():
    model, masks = prune_model("subclassed")
    optimizer = keras.optimizers.Adam(0.05)
    loss_fn = keras.losses.MeanSquaredError()
    x, y = inputs_for("subclassed")

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for i in range(6):
        step(x[i::6], y[i::6])
        assert_zeros(model, masks)


def test_pruning_again_needs_no_retrace_a_first_mask_needs_a_new_train_step():
    model = sequential()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    x, y = inputs_for("sequential")
    dense = model.get_layer("dense")
    fp.l1_unstructured(dense, "kernel", amount=0.3)
    model.fit(x, y, epochs=1, verbose=0)  # the train step is traced with the mask
    fp.l1_unstructured(dense, "kernel", amount=0.5)  # new mask values, same constraint: no retrace
    model.fit(x, y, epochs=1, verbose=0)
    assert_zeros(model, {"dense:kernel": fp.get_mask(dense, "kernel")})
    # A weight masked for the first time after the step was traced: compile again.
    fp.l1_unstructured(model.get_layer("dw"), "kernel", amount=0.5)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    assert_zeros(model, {"dw:kernel": fp.get_mask(model.get_layer("dw"), "kernel")})


def test_ema_overwrite_at_the_end_of_fit_is_undone_by_identity():
    model = sequential()
    dense = model.get_layer("dense")
    fp.l1_unstructured(dense, "kernel", amount=0.5)
    mask = fp.get_mask(dense, "kernel")
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=True), loss="mse")
    x, y = inputs_for("sequential")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # ends by writing the moving averages
    fp.identity(dense, "kernel")  # re-applies the mask
    assert_zeros(model, {"dense:kernel": mask})


# --------------------------------------------------------------------------
# Saving: a fresh interpreter loads the files
# --------------------------------------------------------------------------

LOADER = textwrap.dedent(
    '''
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import keras

    directory = sys.argv[1]
    out = {}
    # A model whose masks were removed loads with plain Keras.
    removed = keras.models.load_model(os.path.join(directory, "removed.keras"))
    expected = np.load(os.path.join(directory, "removed.npz"))
    out["removed_without_tfprune"] = "tfprune" not in sys.modules and all(
        np.array_equal(keras.ops.convert_to_numpy(v), expected[str(i)]) for i, v in enumerate(removed.weights))

    import tfprune
    import tfprune.functional as fp
    exec(open(os.path.join(directory, "subclass.py")).read())
    spec = json.load(open(os.path.join(directory, "spec.json")))

    def find_layer(model, path):
        layer = model
        for name in path:
            attribute = getattr(layer, name, None)
            layer = attribute if isinstance(attribute, keras.layers.Layer) else layer.get_layer(name)
        return layer

    def variable(model, key):
        path, name = key.split(":")
        layer = find_layer(model, path.split("/"))
        return getattr(layer.cell, name) if isinstance(layer, keras.layers.LSTM) else getattr(layer, name)

    for kind, info in spec.items():
        model = keras.models.load_model(os.path.join(directory, kind + ".keras"))
        saved = np.load(os.path.join(directory, kind + ".npz"))
        masks_equal, weights_equal = True, True
        for key in info["keys"]:
            path, name = key.split(":")
            layer = find_layer(model, path.split("/"))
            masks_equal &= bool(np.array_equal(fp.get_mask(layer, name), saved["mask:" + key]))
            weights_equal &= bool(np.array_equal(keras.ops.convert_to_numpy(variable(model, key)), saved["w:" + key]))
        x, y = saved["x"], saved["y"]
        same_output = bool(np.allclose(keras.ops.convert_to_numpy(model(x)), saved["out"], atol=1e-6))
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        zeros_kept = all(
            bool(np.all(keras.ops.convert_to_numpy(variable(model, key))[saved["mask:" + key] == 0] == 0))
            for key in info["keys"])
        out[kind] = {"masks": masks_equal, "weights": weights_equal, "output": same_output, "trained_zeros": zeros_kept}

    plain = keras.models.load_model(os.path.join(directory, "plain_subclassed.keras"))
    out["plain_subclassed"] = {"is_pruned": fp.is_pruned(plain),
                               "zeros": int(np.sum(keras.ops.convert_to_numpy(plain.head.kernel) == 0))}
    print("RESULT " + json.dumps(out))
    '''
)


@pytest.mark.slow
def test_keras_round_trip_in_a_fresh_interpreter(tmp_path):
    spec = {}
    for kind in KINDS:
        model, masks = prune_model(kind)
        x, y = inputs_for(kind, n=8, seed=1)
        arrays = {"x": x, "y": y, "out": keras.ops.convert_to_numpy(model(x))}
        for key, mask in masks.items():
            arrays["mask:" + key] = mask
            arrays["w:" + key] = keras.ops.convert_to_numpy(_weight(model, key))
        model.save(str(tmp_path / f"{kind}.keras"))
        np.savez(tmp_path / f"{kind}.npz", **arrays)
        spec[kind] = {"keys": sorted(masks)}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "subclass.py").write_text(SUBCLASS_SOURCE)

    removed, _ = prune_model("functional")
    assert fp.is_pruned(removed)
    fp.remove_all(removed)
    removed.save(str(tmp_path / "removed.keras"))
    np.savez(tmp_path / "removed.npz", **{str(i): keras.ops.convert_to_numpy(v) for i, v in enumerate(removed.weights)})

    plain = PlainNet()  # noqa: F821 - no mask slot in build: the mask is not restored, the zeros are
    plain(np.zeros((1, 3), np.float32))
    fp.l1_unstructured(plain.head, "kernel", amount=3)
    plain.save(str(tmp_path / "plain_subclassed.keras"))

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd()] + sys.path))
    run = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, run.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result.pop("removed_without_tfprune") is True
    assert result.pop("plain_subclassed") == {"is_pruned": False, "zeros": 3}
    for kind, checks in result.items():
        assert checks == {"masks": True, "weights": True, "output": True, "trained_zeros": True}, kind


def test_clone_and_config_round_trip_keep_the_mask():
    model, masks = prune_model("nested")
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for key, mask in masks.items():
        path, name = key.split(":")
        np.testing.assert_array_equal(fp.get_mask(find_layer(clone, tuple(path.split("/"))), name), mask)
    dense = model.get_layer("dense")
    copy = keras.layers.Dense.from_config(dense.get_config())
    copy.build((None, 4))
    np.testing.assert_array_equal(fp.get_mask(copy, "kernel"), masks["dense:kernel"])


# --------------------------------------------------------------------------
# Interop with prune_low_magnitude, strip_pruning and TFLite export
# --------------------------------------------------------------------------


@pytest.mark.slow
def test_prune_low_magnitude_starts_from_functional_zeros_then_strip_and_tflite():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name="d1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="d2")(hidden))
    fp.l1_unstructured(model.get_layer("d1"), "kernel", amount=0.5)
    functional_mask = fp.get_mask(model.get_layer("d1"), "kernel")

    pruned = tfprune.prune_low_magnitude(
        model, pruning_schedule=tfprune.ConstantSparsity(0.75, begin_step=0, frequency=1)
    )
    wrapped_d1 = next(w for w in tfprune.collect_wrappers(pruned) if w.layer.name == "d1")
    kernel = lambda: keras.ops.convert_to_numpy(wrapped_d1.layer.kernel)  # noqa: E731
    assert np.all(kernel()[functional_mask == 0] == 0)  # the zeros are the starting point

    class Check(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            assert np.all(kernel()[functional_mask == 0] == 0)

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 8)).astype(np.float32), rng.normal(size=(32, 3)).astype(np.float32)
    pruned.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[tfprune.UpdatePruningStep(), Check()])
    wrapper_mask = keras.ops.convert_to_numpy(wrapped_d1.masks[0])
    assert np.all(wrapper_mask[functional_mask == 0] == 0)  # the wrapper prunes on top of the functional mask
    assert (wrapper_mask == 0).mean() == 0.75

    plain = tfprune.strip_pruning(pruned)
    assert not fp.is_pruned(plain)  # strip_pruning bakes the functional masks in too: plain layers
    assert fp.remove_all(plain) == []
    d1 = keras.ops.convert_to_numpy(plain.get_layer("d1").kernel)
    assert (d1 == 0).mean() == 0.75 and np.all(d1[functional_mask == 0] == 0)

    interpreter = make_interpreter(model_content=tfprune.export.tflite_bytes(plain))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), keras.ops.convert_to_numpy(plain(x)), atol=1e-5)


OTHER_LAYERS = [
    (lambda: keras.layers.Conv2DTranspose(3, 3), (6, 6, 2)),
    (lambda: keras.layers.SeparableConv2D(4, 3), (6, 6, 2)),
    (lambda: keras.layers.GRU(3), (4, 2)),
    (lambda: keras.layers.SimpleRNN(3), (4, 2)),
    (lambda: keras.layers.Bidirectional(keras.layers.LSTM(3)), (4, 2)),
    (lambda: keras.layers.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"), (4,)),
    (lambda: keras.layers.BatchNormalization(), (4,)),
]


def test_other_builtin_layers_keep_masks_through_save_and_load(tmp_path):
    for index, (make, shape) in enumerate(OTHER_LAYERS):
        layer = make()
        inputs = keras.Input(shape)
        model = keras.Model(inputs, layer(inputs))
        names = fp.weight_names(layer)
        assert names, type(layer).__name__
        for name in names:
            fp.l1_unstructured(layer, name, amount=0.5)
        path = str(tmp_path / f"m{index}.keras")
        model.save(path)
        loaded = keras.models.load_model(path).layers[-1]
        for name in names:
            mask = fp.get_mask(loaded, name)
            np.testing.assert_array_equal(mask, fp.get_mask(layer, name))
            assert (mask == 0).sum() == round(mask.size * 0.5), (type(layer).__name__, name)
