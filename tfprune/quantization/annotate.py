"""Annotations: mark which layers `quantize_apply` quantizes, optionally with their own config.

Example:
    >>> annotated = keras.Sequential([
    ...     quantize_annotate_layer(keras.layers.Dense(20, input_shape=(10,))),
    ...     keras.layers.Dense(2),                      # stays float
    ... ])
    >>> quantized = quantize_apply(annotated)
"""

from __future__ import annotations

from typing import Any, Sequence

import keras

from tfprune.quantization.quantize_config import QuantizeConfig

_PACKAGE = "tfprune"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeAnnotate(keras.layers.Wrapper):
    """Marks `layer` for quantization (with `quantize_config`, or the scheme's default); computes as `layer`.

    Example:
        >>> QuantizeAnnotate(keras.layers.Conv2D(8, 3))
    """

    def __init__(self, layer: keras.layers.Layer, quantize_config: QuantizeConfig | dict | None = None,
                 **kwargs: Any) -> None:
        if isinstance(layer, dict):
            layer = keras.layers.deserialize(layer)
        kwargs.setdefault("name", f"quant_annotate_{layer.name}")
        super().__init__(layer, **kwargs)
        if isinstance(quantize_config, dict):
            quantize_config = keras.saving.deserialize_keras_object(quantize_config)
        if quantize_config is not None and not isinstance(quantize_config, QuantizeConfig):
            raise TypeError(
                f"`quantize_config` must be a tfprune.quantization.QuantizeConfig or None; received "
                f"{type(quantize_config).__name__}."
            )
        self.quantize_config = quantize_config

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.built = True

    def call(self, inputs: Any, training: Any = None, **kwargs: Any) -> Any:
        if getattr(self.layer, "_call_has_training_arg", False):
            kwargs["training"] = training
        return self.layer.call(inputs, **kwargs)

    def get_config(self) -> dict:
        config = None if self.quantize_config is None else keras.saving.serialize_keras_object(self.quantize_config)
        return dict(super().get_config(), quantize_config=config)

    @classmethod
    def from_config(cls, config: dict) -> "QuantizeAnnotate":
        config = dict(config)
        config["layer"] = keras.layers.deserialize(config["layer"])
        return cls(**config)


def quantize_annotate_layer(to_annotate: keras.layers.Layer,
                            quantize_config: QuantizeConfig | None = None) -> QuantizeAnnotate:
    """Marks one layer for quantization by `quantize_apply`.

    Args:
        to_annotate: a Keras layer (not yet called, or inside a model you rebuild).
        quantize_config: how to quantize it; None uses the scheme's config for its class.

    Example:
        >>> x = quantize_annotate_layer(keras.layers.Conv2D(8, 3))(inputs)
    """
    if not isinstance(to_annotate, keras.layers.Layer) or isinstance(to_annotate, keras.Model):
        raise TypeError(
            f"`quantize_annotate_layer` takes a keras layer; received {type(to_annotate).__name__}. "
            "Fix: for a whole model use quantize_annotate_model(model)."
        )
    if isinstance(to_annotate, QuantizeAnnotate):
        return to_annotate
    return QuantizeAnnotate(to_annotate, quantize_config)


def quantize_annotate_model(to_annotate: keras.Model, skip: Sequence[str] = ()) -> keras.Model:
    """A copy of a Sequential/functional model with every layer annotated, except those named in `skip`.

    Already annotated layers keep their config; nested models are annotated inside.

    Example:
        >>> annotated = quantize_annotate_model(model, skip=["custom_head"])
        >>> quantized = quantize_apply(annotated)
    """
    from tfprune.quantization import graph

    graph.check_graph_model(to_annotate, "quantize_annotate_model")
    skip = set(skip)
    names = {layer.name for layer in graph.all_layers(to_annotate)}
    unknown = sorted(skip - names)
    if unknown:
        raise ValueError(f"`skip` names no layer of the model: {unknown}. Fix: use some of {sorted(names)}.")

    def transform(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, (QuantizeAnnotate, keras.layers.InputLayer)) or layer.name in skip:
            return graph.copy_layer(layer)
        if isinstance(layer, keras.Model):
            return quantize_annotate_model(layer, skip=[s for s in skip if s in {x.name for x in layer.layers}])
        return QuantizeAnnotate(graph.copy_layer(layer), name=f"quant_annotate_{layer.name}")

    return graph.clone_with(to_annotate, transform)
