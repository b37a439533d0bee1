"""tfmot's official pruning guides, cell by cell, with only `tfmot.sparsity.keras` replaced by `tfprune`.

Guides: "Pruning in Keras example", "Pruning comprehensive guide", "Sparse weights using structural
pruning" (2:4) and "Pruning for on-device inference with XNNPACK". The code is the guides' own
(`tf.keras` is spelled `keras`: Keras 3), on a small slice of the bundled MNIST set so the module stays fast.
"""

import os
import tempfile
import warnings

import keras  # the guides' `tf.keras`; Keras 3 by name, whatever TF_USE_LEGACY_KERAS another test module set
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune.datasets import load_mnist
from tfprune.interpreter import make_interpreter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist():
    (x, y), (x_test, y_test) = load_mnist(train_size=512)
    return (x[..., 0], y), (x_test[:256, ..., 0], y_test[:256])


def _convert(model, optimizations=()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = list(optimizations)
        return converter.convert()


def _tflite_accuracy(content, images, labels):
    interpreter = make_interpreter(model_content=content)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    hits = 0
    for image, label in zip(images, labels):
        interpreter.set_tensor(input_index, np.expand_dims(image, 0).astype(np.float32))
        interpreter.invoke()
        hits += int(np.argmax(interpreter.get_tensor(output_index)[0]) == label)
    return hits / len(labels)


def _zero_fraction(weights):
    return float(np.mean(np.asarray(weights) == 0))


# --------------------------------------------------------------------------------------------
# Pruning in Keras example
# --------------------------------------------------------------------------------------------


def test_pruning_in_keras_example(mnist, tmp_path):
    (train_images, train_labels), (test_images, test_labels) = mnist
    # "Train a model for MNIST without pruning"
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, epochs=2, validation_split=0.1, verbose=0)
    _, baseline_model_accuracy = model.evaluate(test_images, test_labels, verbose=0)

    # "Fine-tune pre-trained model with pruning"
    prune_low_magnitude = tfprune.prune_low_magnitude
    batch_size = 128
    epochs = 2
    validation_split = 0.1
    num_images = train_images.shape[0] * (1 - validation_split)
    end_step = np.ceil(num_images / batch_size).astype(np.int32) * epochs
    pruning_params = {
        "pruning_schedule": tfprune.PolynomialDecay(initial_sparsity=0.50, final_sparsity=0.80, begin_step=0,
                                                    end_step=end_step)
    }
    model_for_pruning = prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              metrics=["accuracy"])
    model_for_pruning.summary(print_fn=lambda *a, **k: None)
    logdir = tempfile.mkdtemp(dir=tmp_path)
    callbacks = [tfprune.UpdatePruningStep(), tfprune.PruningSummaries(log_dir=logdir)]
    model_for_pruning.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs,
                          validation_split=validation_split, callbacks=callbacks, verbose=0)
    _, model_for_pruning_accuracy = model_for_pruning.evaluate(test_images, test_labels, verbose=0)
    assert model_for_pruning_accuracy > 0.5 and baseline_model_accuracy > 0.5

    # "Create 3x smaller models from pruning"
    model_for_export = tfprune.strip_pruning(model_for_pruning)
    pruned_keras_file = str(tmp_path / "pruned.keras")
    keras.models.save_model(model_for_export, pruned_keras_file)
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    pruned_tflite_model = converter.convert()
    # frequency=100 > the 8 steps of this small data set: as in tfmot 0.8.1, no mask update has happened yet.
    wrapper = tfprune.collect_wrappers(model_for_pruning)[-1]
    assert _zero_fraction(model_for_export.layers[-1].kernel) == _zero_fraction(wrapper.masks[0])

    # "Create a 10x smaller model from combining pruning and quantization"
    quantized_and_pruned_tflite_model = _convert(model_for_export, [tf.lite.Optimize.DEFAULT])
    assert len(quantized_and_pruned_tflite_model) < len(pruned_tflite_model)
    # "See persistence of accuracy from TF to TFLite"
    accuracy = _tflite_accuracy(quantized_and_pruned_tflite_model, test_images, test_labels)
    assert abs(accuracy - model_for_pruning_accuracy) < 0.05
    assert os.listdir(logdir)


# --------------------------------------------------------------------------------------------
# Pruning comprehensive guide
# --------------------------------------------------------------------------------------------

input_shape = [20]
x_train = np.random.randn(1, 20).astype(np.float32)
y_train = keras.utils.to_categorical(np.random.randn(1), num_classes=20)


def setup_model():
    model = keras.Sequential([
        keras.layers.Dense(20, input_shape=input_shape),
        keras.layers.Flatten(),
    ])
    return model


def setup_pretrained_weights(tmp_path):
    model = setup_model()
    model.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"])
    model.fit(x_train, y_train, verbose=0)
    path = str(tmp_path / "pretrained.weights.h5")
    model.save_weights(path)
    return path


def test_comprehensive_prune_whole_model(tmp_path):
    base_model = setup_model()
    base_model.load_weights(setup_pretrained_weights(tmp_path))
    model_for_pruning = tfprune.prune_low_magnitude(base_model)
    model_for_pruning.summary(print_fn=lambda *a, **k: None)
    assert isinstance(model_for_pruning.layers[0], tfprune.wrapper.PruneLowMagnitude)


def test_comprehensive_prune_some_layers_with_clone_model(tmp_path):
    base_model = setup_model()
    base_model.load_weights(setup_pretrained_weights(tmp_path))

    def apply_pruning_to_dense(layer):
        if isinstance(layer, keras.layers.Dense):
            return tfprune.prune_low_magnitude(layer)
        return layer

    model_for_pruning = keras.models.clone_model(base_model, clone_function=apply_pruning_to_dense)
    model_for_pruning.summary(print_fn=lambda *a, **k: None)
    assert isinstance(model_for_pruning.layers[0], tfprune.wrapper.PruneLowMagnitude)
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"])
    model_for_pruning.fit(x_train, y_train, callbacks=[tfprune.UpdatePruningStep()], verbose=0)


def test_comprehensive_functional_and_sequential_examples():
    # Functional example
    i = keras.Input(shape=(20,))
    x = tfprune.prune_low_magnitude(keras.layers.Dense(10))(i)
    o = keras.layers.Flatten()(x)
    model_for_pruning = keras.Model(inputs=i, outputs=o)
    model_for_pruning.summary(print_fn=lambda *a, **k: None)
    # Sequential example
    model_for_pruning = keras.Sequential([
        keras.Input(shape=(20,)),
        tfprune.prune_low_magnitude(keras.layers.Dense(20)),
        keras.layers.Flatten(),
    ])
    model_for_pruning.summary(print_fn=lambda *a, **k: None)
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"])
    model_for_pruning.fit(x_train, y_train, callbacks=[tfprune.UpdatePruningStep()], verbose=0)


def test_comprehensive_fit_with_callbacks_and_tensorboard(tmp_path):
    base_model = setup_model()
    base_model.load_weights(setup_pretrained_weights(tmp_path))
    model_for_pruning = tfprune.prune_low_magnitude(base_model)
    log_dir = tempfile.mkdtemp(dir=tmp_path)
    callbacks = [
        tfprune.UpdatePruningStep(),
        # Log sparsity and other metrics in Tensorboard.
        tfprune.PruningSummaries(log_dir=log_dir),
    ]
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"])
    model_for_pruning.fit(x_train, y_train, callbacks=callbacks, epochs=2, verbose=0)
    assert os.listdir(log_dir)


def test_comprehensive_checkpoint_and_deserialize(tmp_path):
    base_model = setup_model()
    model_for_pruning = tfprune.prune_low_magnitude(base_model)
    _, keras_model_file = tempfile.mkstemp(".keras", dir=tmp_path)
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"])
    model_for_pruning.fit(x_train, y_train, callbacks=[tfprune.UpdatePruningStep()], verbose=0)
    keras.models.save_model(model_for_pruning, keras_model_file, include_optimizer=True)
    # Deserialize model.
    with tfprune.prune_scope():
        loaded_model = keras.models.load_model(keras_model_file)
    loaded_model.summary(print_fn=lambda *a, **k: None)
    np.testing.assert_array_equal(loaded_model.predict(x_train, verbose=0), model_for_pruning.predict(x_train, verbose=0))


def test_comprehensive_deploy_pruned_model(tmp_path):
    base_model = setup_model()
    model_for_pruning = tfprune.prune_low_magnitude(base_model)
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"])
    model_for_pruning.fit(x_train, y_train, callbacks=[tfprune.UpdatePruningStep()], verbose=0)
    model_for_export = tfprune.strip_pruning(model_for_pruning)
    print("final model")
    model_for_export.summary(print_fn=lambda *a, **k: None)
    assert len(model_for_pruning.weights) > len(model_for_export.weights)
    wrapper = tfprune.collect_wrappers(model_for_pruning)[0]
    np.testing.assert_array_equal(model_for_export.layers[0].kernel.numpy(),
                                  keras.ops.convert_to_numpy(wrapper.layer.kernel * wrapper.masks[0]))


# --------------------------------------------------------------------------------------------
# Sparse weights using structural pruning (2:4)
# --------------------------------------------------------------------------------------------


def test_structural_pruning_2_by_4(mnist, tmp_path):
    (train_images, train_labels), (test_images, test_labels) = mnist
    train_images = train_images[..., None]
    test_images = test_images[..., None]
    prune_low_magnitude = tfprune.prune_low_magnitude
    pruning_params_2_by_4 = {"sparsity_m_by_n": (2, 4)}
    pruning_params_sparsity_0_5 = {
        "pruning_schedule": tfprune.ConstantSparsity(target_sparsity=0.5, begin_step=0, frequency=100)
    }
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        prune_low_magnitude(keras.layers.Conv2D(32, 5, padding="same", activation="relu",
                                                name="pruning_sparsity_0_5"), **pruning_params_sparsity_0_5),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        prune_low_magnitude(keras.layers.Conv2D(64, 5, padding="same", name="structural_pruning"),
                            **pruning_params_2_by_4),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D((2, 2), (2, 2), padding="same"),
        keras.layers.Flatten(),
        prune_low_magnitude(keras.layers.Dense(1024, activation="relu", name="structural_pruning_dense"),
                            **pruning_params_2_by_4),
        keras.layers.Dropout(0.4),
        keras.layers.Dense(10),
    ])
    model.summary(print_fn=lambda *a, **k: None)
    batch_size = 128
    epochs = 1
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="adam",
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, batch_size=batch_size, epochs=epochs, validation_split=0.1,
              callbacks=[tfprune.UpdatePruningStep()], verbose=0)
    model.evaluate(test_images, test_labels, verbose=0)
    model = tfprune.strip_pruning(model)
    tflite_file = str(tmp_path / "pruned_model.tflite")
    with open(tflite_file, "wb") as handle:
        handle.write(_convert(model))
    # The guide inspects the TFLite tensors: the structurally pruned kernels are 2:4 sparse along `in`.
    from tfprune.tflite_m_by_n import tflite_m_by_n_report

    report = tflite_m_by_n_report(tflite_file, 2, 4)
    assert len(report) == 4
    kernels = {tuple(r["shape"]): r["ok"] for r in report}
    assert kernels[(64, 5, 5, 32)] and kernels[(1024, 7 * 7 * 64)]  # the two 2:4 layers
    assert not kernels[(10, 1024)]  # the unpruned classifier


# --------------------------------------------------------------------------------------------
# Pruning for on-device inference with XNNPACK
# --------------------------------------------------------------------------------------------


def test_on_device_inference_sparse_tflite(mnist, tmp_path):
    (train_images, train_labels), (test_images, test_labels) = mnist
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(28, 28)),
        keras.layers.Reshape(target_shape=(28, 28, 1)),
        keras.layers.Conv2D(filters=12, kernel_size=(3, 3), activation="relu"),
        keras.layers.MaxPooling2D(pool_size=(2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train_images, train_labels, epochs=1, verbose=0)
    pruning_params = {"pruning_schedule": tfprune.ConstantSparsity(0.75, begin_step=0, frequency=1)}
    model_for_pruning = tfprune.prune_low_magnitude(model, **pruning_params)
    model_for_pruning.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                              metrics=["accuracy"])
    model_for_pruning.fit(train_images, train_labels, epochs=1, callbacks=[tfprune.UpdatePruningStep()], verbose=0)
    model_for_export = tfprune.strip_pruning(model_for_pruning)
    converter = tf.lite.TFLiteConverter.from_keras_model(model_for_export)
    converter.optimizations = {tf.lite.Optimize.EXPERIMENTAL_SPARSITY}
    pruned_tflite_model = converter.convert()
    dense_tflite_model = _convert(model_for_export)
    assert len(pruned_tflite_model) < len(dense_tflite_model)
    accuracy = _tflite_accuracy(pruned_tflite_model, test_images, test_labels)
    assert accuracy == pytest.approx(_tflite_accuracy(dense_tflite_model, test_images, test_labels), abs=0.01)


def test_comprehensive_sequential_with_input_shape_on_the_wrapped_first_layer():
    # the guide's own spelling: the input shape on the first (wrapped) layer
    model_for_pruning = keras.Sequential([
        tfprune.prune_low_magnitude(keras.layers.Dense(20, input_shape=input_shape)),
        keras.layers.Flatten(),
    ])
    assert model_for_pruning.built
    model_for_pruning.summary(print_fn=lambda *a, **k: None)
    model_for_pruning.compile(loss=keras.losses.categorical_crossentropy, optimizer="adam", metrics=["accuracy"])
    model_for_pruning.fit(x_train, y_train, callbacks=[tfprune.UpdatePruningStep()], verbose=0)


def test_comprehensive_custom_training_loop():
    base_model = setup_model()
    model_for_pruning = tfprune.prune_low_magnitude(base_model)
    loss = keras.losses.categorical_crossentropy
    optimizer = keras.optimizers.Adam()
    log_dir = tempfile.mkdtemp()
    unused_arg = -1
    epochs = 2
    batches = 1
    model_for_pruning.optimizer = optimizer
    step_callback = tfprune.UpdatePruningStep()
    step_callback.set_model(model_for_pruning)
    log_callback = tfprune.PruningSummaries(log_dir=log_dir)
    log_callback.set_model(model_for_pruning)
    step_callback.on_train_begin()
    for _ in range(epochs):
        log_callback.on_epoch_begin(epoch=unused_arg)
        for _ in range(batches):
            step_callback.on_train_batch_begin(batch=unused_arg)
            with tf.GradientTape() as tape:
                logits = model_for_pruning(x_train, training=True)
                loss_value = loss(y_train, logits)
                grads = tape.gradient(loss_value, model_for_pruning.trainable_variables)
                optimizer.apply_gradients(zip(grads, model_for_pruning.trainable_variables))
        step_callback.on_epoch_end(batch=unused_arg)
    wrapper = tfprune.collect_wrappers(model_for_pruning)[0]
    assert int(wrapper.pruning_step.numpy()) == 2
    assert wrapper.layer.get_prunable_weights()[0] is wrapper.pruned_weights[0]
