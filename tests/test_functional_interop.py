"""Functional masks meet the rest of tfprune: strip_pruning bakes them in, import tfprune registers them."""

from __future__ import annotations

import keras
import numpy as np

import tfprune
import tfprune.functional as fp


def test_strip_pruning_bakes_functional_masks_into_plain_layers(tmp_path):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(2, name="b")])
    fp.l1_unstructured(model.get_layer("a"), "kernel", amount=0.5)
    wrapped = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.5, 0))
    plain = tfprune.strip_pruning(wrapped)
    assert not fp.is_pruned(plain)
    assert int((plain.get_layer("a").kernel.numpy() == 0).sum()) == 24
    assert plain.get_layer("a").get_config()["kernel_constraint"] is None
    # no wrapper at all: still plain afterwards
    plain2 = tfprune.strip_pruning(model)
    assert not fp.is_pruned(plain2) and fp.is_pruned(model)
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(plain2(x), model(x), atol=1e-6)


def test_functional_is_exported():
    assert tfprune.functional is fp and "functional" in tfprune.__all__


def test_functionally_pruned_model_goes_through_quantization_with_its_zeros():
    import tfprune.quantization as tfq
    from tfprune.interpreter import make_interpreter

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(16, 3, name="conv")(x)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(x, keras.layers.Dense(4, name="head")(h))
    fp.l1_unstructured(model.get_layer("conv"), "kernel", amount=0.5)   # 216 of 432 kernel entries
    qat = tfq.quantize_model(model)
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    qat.compile("sgd", "mse")
    qat.fit(data, np.zeros((16, 4), "float32"), epochs=1, verbose=0)   # the mask constraint keeps the zeros
    content = tfq.to_tflite(qat)
    interpreter = make_interpreter(model_content=content)
    kernels = []
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] == np.int8 and len(detail["shape"]) == 4:
            try:
                kernels.append(interpreter.get_tensor(detail["index"]))
            except ValueError:
                continue
    assert kernels, "no int8 conv kernel in the TFLite model"
    assert max(int((k == 0).sum()) for k in kernels) >= 216
