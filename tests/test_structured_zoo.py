"""Structured pruning of real architectures (random weights): exact, smaller, loadable."""

import keras
import numpy as np
import pytest
from keras import layers

from tfprune.structured import DependencyGraph, prune_filters, verify
from tfprune.structured.models import network_in_network, resnet_cifar
from tfprune.keras_graph import iter_layers

A = keras.applications


def vgg16_with_flatten_head():
    base = A.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    x = keras.Input((32, 32, 3))
    y = layers.Flatten()(base(x))  # nested model, then Flatten -> Dense
    y = layers.Dense(64, activation="relu")(y)
    return keras.Model(x, layers.Dense(10)(y), name="vgg16_head")


ZOO = {
    "vgg16": (vgg16_with_flatten_head, "l2"),
    "resnet50": (lambda: A.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10,
                                    classifier_activation=None), "bn_scale"),
    "mobilenetv2": (lambda: A.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=10,
                                          classifier_activation=None), "fpgm"),
    "densenet121": (lambda: A.DenseNet121(weights=None, input_shape=(64, 64, 3), classes=10,
                                          classifier_activation=None), "l1"),
    "efficientnetb0": (lambda: A.EfficientNetB0(weights=None, input_shape=(64, 64, 3), classes=10,
                                                classifier_activation=None), "filter_sketch"),
    "xception": (lambda: A.Xception(weights=None, input_shape=(71, 71, 3), classes=10,
                                    classifier_activation=None), "l1"),
    # BatchNormalization(scale=False) throughout
    "inceptionv3": (lambda: A.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=10,
                                          classifier_activation=None), "l2"),
    # concatenated branches feed the residual stream; CustomScaleLayer residuals
    "inceptionresnetv2": (lambda: A.InceptionResNetV2(weights=None, input_shape=(75, 75, 3), classes=10,
                                                      classifier_activation=None), "l1"),
    "resnet56": (lambda: resnet_cifar(56), "fpgm"),
    "nin": (network_in_network, "l1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_prunes_exactly(name):
    build, importance = ZOO[name]
    model = verify.randomize_statistics(build(), seed=0)
    x = np.random.default_rng(0).normal(size=(2,) + tuple(model.input_shape[1:])).astype("float32")
    pruned, report = prune_filters(model, pruning_ratio=0.5, importance=importance, round_to=4)
    assert not report.unsupported, report.unsupported
    pruned_groups = [g for g in report.groups if g.status == "pruned"]
    assert len(pruned_groups) >= len(report.groups) - 2, str(report)  # all but the output (and stem)
    assert report.params_after < 0.45 * report.params_before
    assert report.macs_after < 0.45 * report.macs_before
    for entry in report.layers:
        if entry.channels_after != entry.channels_before and entry.type in ("Conv2D", "Dense", "SeparableConv2D"):
            assert entry.channels_after % 4 == 0, entry
    scale = max(1.0, float(np.max(np.abs(np.asarray(model(x))))))
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5 * scale


@pytest.mark.slow
def test_grouped_network_in_network_with_channel_shuffle():
    model = verify.randomize_statistics(network_in_network(grouped=4), seed=0)
    graph = DependencyGraph(model)
    shuffled = {"b1c2_conv", "b2c2_conv"}
    for group in graph.groups:
        if shuffled & set(group.producers):
            assert not group.prunable
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    pruned, report = prune_filters(model, pruning_ratio=0.5)
    assert report.params_after < report.params_before
    assert pruned.get_layer("b1c3_conv").groups == 4
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5


@pytest.mark.slow
def test_pruned_mobilenetv2_round_trips_through_keras_file(tmp_path):
    model = A.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=10, alpha=0.5)
    pruned, _ = prune_filters(model, pruning_ratio=0.3, global_pruning=True, round_to=8)
    path = tmp_path / "mnv2.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(pruned(x)), atol=1e-6)


@pytest.mark.slow
def test_convnext_prunes_exactly_through_layer_normalization_and_layer_scale():
    model = A.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    verify.randomize_statistics(model, seed=0)
    rng = np.random.default_rng(1)
    for layer in model.layers:  # LayerScale starts at 1e-6: make the residual branches count
        if type(layer).__name__ == "LayerScale":
            layer.set_weights([rng.uniform(0.5, 1.5, layer.gamma.shape).astype("float32")])
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    pruned, report = prune_filters(model, pruning_ratio=0.5, round_to=8)
    assert not report.unsupported, report.unsupported
    norms = [e for e in report.layers if e.type == "LayerNormalization"]
    assert norms and all(e.channels_after == e.channels_before // 2 for e in norms), report
    kinds = {layer.name: type(layer).__name__ for layer in iter_layers(pruned)}  # stem/downsampling are nested
    assert all(kinds[e.name] == "PrunedLayerNormalization" for e in norms)
    assert report.params_after < 0.3 * report.params_before
    scale = max(1.0, float(np.max(np.abs(np.asarray(model(x))))))
    assert verify.max_abs_difference(model, pruned, report, x) < 1e-5 * scale
