"""Full-integer TFLite export: parity with the quantize-aware Keras model on the bundled MNIST
eval images (TFLite interpreter), integer-only check, and the export errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune.quantization as tfq
from tfprune.datasets import load_mnist
from tfprune.interpreter import make_interpreter
from tests.tflite_int8 import run_int8

L = keras.layers


@pytest.fixture(scope="module")
def mnist():
    (x_train, y_train), (x_eval, y_eval) = load_mnist(train_size=8000)
    return x_train[:3000], y_train[:3000], x_eval, y_eval


def mnist_cnn():
    inputs = keras.Input((28, 28, 1))
    x = L.Conv2D(8, 3, activation="relu")(inputs)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(16, 3, activation="relu")(x)
    x = L.MaxPooling2D()(x)
    x = L.Flatten()(x)
    x = L.Dense(32, activation="relu")(x)
    return keras.Model(inputs, L.Dense(10)(x), name="mnist_cnn")


def small_resnet():
    inputs = keras.Input((28, 28, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = L.BatchNormalization(momentum=0.9)(y)
    y = L.ReLU(6.0)(y)
    y = L.Conv2D(16, 1, use_bias=False)(y)
    y = L.BatchNormalization(momentum=0.9)(y)
    x = L.ReLU()(L.Add()([x, y]))
    a = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    b = L.MaxPooling2D()(x)
    x = L.Concatenate()([a, b])
    x = L.Conv2D(32, 3, padding="same")(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    x = L.ReLU()(x)
    x = L.Flatten()(x)  # GlobalAveragePooling learns too slowly for a one-epoch test
    return keras.Model(inputs, L.Dense(10)(x), name="small_resnet")


def _compile(model, learning_rate=1e-3):
    model.compile(keras.optimizers.Adam(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("build", [mnist_cnn, small_resnet])
def test_parity_of_qat_model_and_full_integer_tflite(build, mnist):
    x_train, y_train, x_eval, y_eval = mnist
    model = _compile(build(), 3e-3)
    model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    qat = _compile(tfq.quantize_model(model), 5e-4)
    qat.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    data = tfq.to_tflite(qat, inference_input_type=tf.int8)
    assert tfq.float_operators(data) == []
    tflite_out, step = run_int8(data, x_eval)
    keras_out = qat.predict(x_eval, batch_size=500, verbose=0)
    same_class = np.mean(tflite_out.argmax(1) == keras_out.argmax(1))
    within_one_step = np.mean(np.abs(tflite_out - keras_out) <= step * 1.001)
    assert same_class >= 0.995, same_class
    assert within_one_step >= 0.99, within_one_step
    accuracy = np.mean(tflite_out.argmax(1) == y_eval)
    assert accuracy > 0.8, accuracy  # it learned something: the parity is not between two constant models


def test_ptq_model_exports_with_its_calibrated_ranges_and_float_interface(mnist):
    x_train, _, x_eval, _ = mnist
    model = mnist_cnn()
    ptq = tfq.quantize_post_training(model, x_train[:256], method="percentile", verbose=0)
    data = tfq.to_tflite(ptq)  # float input and output, integer inside
    interpreter = make_interpreter(model_content=data)
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"QUANTIZE", "DEQUANTIZE", "CONV_2D", "FULLY_CONNECTED"} <= ops
    assert tfq.float_operators(data) == []
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details().keys()
    got = list(runner(**{name: x_eval[:200]}).values())[0]
    expected = ptq.predict(x_eval[:200], verbose=0)
    assert np.mean(got.argmax(1) == expected.argmax(1)) >= 0.99
    # The interface scale is the calibrated input range (bundled MNIST: [0, 1]).
    int8 = tfq.to_tflite(ptq, inference_input_type=tf.int8)
    scale, zero_point = tfq.quantization_parameters(int8, "input")
    assert scale == pytest.approx(1 / 255, rel=1e-3) and zero_point == -128


def test_float_layer_fails_export_with_the_op_named():
    inputs = keras.Input((8,))
    x = tfq.quantize_annotate_layer(L.Dense(8, activation="relu"))(inputs)
    model = keras.Model(inputs, L.Dense(3, name="float_head")(x))
    partly = tfq.quantize_apply(model)
    with pytest.raises(tfq.FullIntegerExportError, match="FULLY_CONNECTED"):
        tfq.to_tflite(partly)


def test_bad_inference_type():
    model = tfq.quantize_model(keras.Sequential([keras.Input((3,)), L.Dense(2)]))
    with pytest.raises(ValueError, match="inference_input_type"):
        tfq.to_tflite(model, inference_input_type=tf.float16)


def test_separable_conv_runs_as_depthwise_then_pointwise_with_parity(tmp_path):
    inputs = keras.Input((12, 12, 3))
    x = L.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep1")(inputs)
    x = L.ReLU()(L.BatchNormalization()(x))
    x = L.SeparableConv2D(8, 3, activation="relu", name="sep2")(x)
    model = keras.Model(inputs, L.Dense(4)(L.Flatten()(x)))
    x = np.random.default_rng(0).normal(size=(64, 12, 12, 3)).astype("float32")
    ptq = tfq.quantize_post_training(model, x, verbose=0)
    assert isinstance(ptq.get_layer("quant_sep1"), tfq.QuantizeSeparableConv)
    data = tfq.to_tflite(ptq, inference_input_type=tf.int8)
    ops = [op["op_name"] for op in make_interpreter(model_content=data)._get_ops_details()]
    assert ops.count("DEPTHWISE_CONV_2D") == 2 and ops.count("CONV_2D") == 2
    tflite_out, step = run_int8(data, x)
    keras_out = ptq.predict(x, verbose=0)
    assert np.mean(np.abs(tflite_out - keras_out) <= step * 1.001) >= 0.99
    path = str(tmp_path / "sep.keras")
    ptq.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path).predict(x, verbose=0), keras_out)


def test_fused_softmax_gets_an_input_range_and_tflite_fixed_output_range():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, activation="sigmoid", name="conv")(inputs)
    model = keras.Model(inputs, L.Dense(5, activation="softmax", name="probs")(L.Flatten()(x)))
    x = np.random.default_rng(1).normal(size=(32, 6, 6, 2)).astype("float32")
    ptq = tfq.quantize_post_training(model, x, verbose=0)
    data = tfq.to_tflite(ptq, inference_input_type=tf.int8)
    assert tfq.float_operators(data) == []
    scale, zero_point = tfq.quantization_parameters(data, "output")
    assert scale == pytest.approx(1 / 256) and zero_point == -128  # TFLite's int8 softmax output
    tflite_out, step = run_int8(data, x)
    assert np.mean(np.abs(tflite_out - ptq.predict(x, verbose=0)) <= step * 1.001) >= 0.99
