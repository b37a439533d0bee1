"""Quantize-aware layers: an input quantizer, a wrapper around any layer, and Conv/Dense with
BatchNormalization folded in.

* `QuantizeLayer` fake-quantizes a float tensor (a model input, or the input of a quantized layer
  fed by a float one).
* `QuantizeWrapper(layer, quantize_config)` quantizes the weights the config names before the
  layer's `call`, and its outputs after it (so a fused `activation=` is quantized after the activation).
* `QuantizeFoldedBatchNorm(layer, batchnorm)` computes `layer` followed by `batchnorm` the way TFLite
  will run it: one kernel `W * gamma / sqrt(var + eps)`, quantized per channel, and one bias. In
  training (before `freeze_bn_delay` steps) it folds with the batch statistics and updates the moving
  ones; afterwards, and in inference, with the moving statistics.

Example:
    >>> wrapped = QuantizeWrapper(keras.layers.Dense(10), quantize_config_for(keras.layers.Dense(10)))
"""

from __future__ import annotations

from typing import Any

import keras

from tfprune.quantization.configs import FoldSpec, _attribute_for_setting
from tfprune.quantization.quantize_config import QuantizeConfig
from tfprune.quantization.quantizers import SPARSITY_MASK, MovingAverageQuantizer, Quantizer, deserialize_quantizer

_PACKAGE = "tfprune"


def _serialize(obj: Any) -> Any:
    return None if obj is None else keras.saving.serialize_keras_object(obj)


def _deserialize(obj: Any) -> Any:
    return obj if obj is None or not isinstance(obj, dict) else keras.saving.deserialize_keras_object(obj)


def _call_layer(layer: keras.layers.Layer, inputs: Any, training: Any, kwargs: dict) -> Any:
    if getattr(layer, "_call_has_training_arg", False):
        kwargs = dict(kwargs, training=training)
    return layer.call(inputs, **kwargs)


def _apply_output_quantizers(outputs: Any, quantizers: list, variables: list, training: Any) -> Any:
    if not quantizers:
        return outputs
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(q(o, training, v) for o, q, v in zip(outputs, quantizers, variables))
    return quantizers[0](outputs, training, variables[0])


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeLayer(keras.layers.Layer):
    """Fake-quantizes its input with `quantizer` (default: moving-average 8-bit range).

    Example:
        >>> x = QuantizeLayer()(keras.Input((28, 28, 1)))
    """

    def __init__(self, quantizer: Quantizer | dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(quantizer, dict):
            quantizer = deserialize_quantizer(quantizer)
        self.quantizer = quantizer or MovingAverageQuantizer()

    def build(self, input_shape: Any) -> None:
        self.quantizer_vars = self.quantizer.build(input_shape, "input", self)
        self.built = True

    def call(self, inputs: Any, training: Any = None) -> Any:
        return self.quantizer(inputs, bool(training), self.quantizer_vars)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        return dict(super().get_config(), quantizer=_serialize(self.quantizer))


class _QuantizedActivation:
    """An activation function and its quantizer, swapped into the layer during `call`: the quantizer runs
    after the activation, or before it when the config says `quantizes_activation_inputs`."""

    def __init__(self, activation: Any, quantizer: Quantizer, variables: dict, training: Any,
                 before: bool = False) -> None:
        self.activation, self.quantizer, self.variables, self.training = activation, quantizer, variables, training
        self.before = before

    def __call__(self, x: Any) -> Any:
        if self.before:
            return self.activation(self.quantizer(x, self.training, self.variables))
        return self.quantizer(self.activation(x), self.training, self.variables)


class QuantizeWrapperBase(keras.layers.Wrapper):
    """What the quantize-aware wrappers share: `layer` (or its config), the name `quant_<layer>`,
    `quantize_output`, the output quantizers and their variables, and the (de)serialization of `layer`.

    A subclass builds `layer` with `_build_layer`, its output ranges with `_build_output_quantizers`
    and applies them with `_quantize_outputs`.

    Example:
        >>> class QuantizeScale(QuantizeWrapperBase):
        ...     def build(self, input_shape):
        ...         self._build_layer(input_shape)
        ...         self._build_output_quantizers([MovingAverageQuantizer()])
        ...     def call(self, inputs, training=None):
        ...         return self._quantize_outputs(self.layer(inputs) * 2.0, bool(training))
    """

    def __init__(self, layer: keras.layers.Layer | dict, quantize_output: bool = True, **kwargs: Any) -> None:
        if isinstance(layer, dict):
            layer = keras.layers.deserialize(layer)
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_output = bool(quantize_output)

    def _build_layer(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)

    def _build_output_quantizers(self, quantizers: list) -> None:
        """Keeps `quantizers` (none without `quantize_output`) and builds a variable set for each."""
        self.output_quantizers = quantizers if self.quantize_output else []
        self.output_vars = [q.build(None, f"{self.layer.name}_output{i}", self)
                            for i, q in enumerate(self.output_quantizers)]

    def _quantize_outputs(self, outputs: Any, training: bool) -> Any:
        return _apply_output_quantizers(outputs, self.output_quantizers, self.output_vars, training)

    def get_config(self) -> dict:
        return dict(super().get_config(), quantize_output=self.quantize_output)

    @classmethod
    def from_config(cls, config: dict) -> "QuantizeWrapperBase":
        config = dict(config)
        config["layer"] = keras.layers.deserialize(config["layer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeWrapper(QuantizeWrapperBase):
    """Runs `layer` with the weights, activations and outputs `quantize_config` quantizes.

    Args:
        layer: the layer to quantize (its weights stay its own).
        quantize_config: a `QuantizeConfig`.
        quantize_output: apply the config's output quantizers; off when the only reader of the
            output is an op TFLite fuses with this one (a ReLU) or puts on its own scale (Concatenate).

    Example:
        >>> conv = keras.layers.Conv2D(8, 3, activation="relu")
        >>> wrapped = QuantizeWrapper(conv, quantize_config_for(conv))
    """

    def __init__(self, layer: keras.layers.Layer, quantize_config: QuantizeConfig | dict,
                 quantize_output: bool = True, **kwargs: Any) -> None:
        super().__init__(layer, quantize_output, **kwargs)
        quantize_config = _deserialize(quantize_config)
        if not isinstance(quantize_config, QuantizeConfig):
            raise TypeError(f"`quantize_config` must be a QuantizeConfig; received {type(quantize_config).__name__}.")
        self.quantize_config = quantize_config

    def build(self, input_shape: Any) -> None:
        self._build_layer(input_shape)
        config = self.quantize_config
        self.weight_vars = [q.build(w.shape, f"{self.layer.name}_weight{i}", self)
                            for i, (w, q) in enumerate(config.get_weights_and_quantizers(self.layer))]
        self.activation_vars = [q.build(None, f"{self.layer.name}_activation{i}", self)
                                for i, (_, q) in enumerate(config.get_activations_and_quantizers(self.layer))]
        self._build_output_quantizers(config.get_output_quantizers(self.layer))
        self.built = True

    def call(self, inputs: Any, training: Any = None, **kwargs: Any) -> Any:
        training = bool(training)
        config = self.quantize_config
        pairs = config.get_weights_and_quantizers(self.layer)
        originals = [w for w, _ in pairs]
        activations = config.get_activations_and_quantizers(self.layer)
        original_activations = [a for a, _ in activations]
        config.set_quantize_weights(self.layer, [q(w, training, v) for (w, q), v in zip(pairs, self.weight_vars)])
        before = bool(getattr(config, "quantizes_activation_inputs", False))
        config.set_quantize_activations(self.layer, [_QuantizedActivation(a, q, v, training, before)
                                                     for (a, q), v in zip(activations, self.activation_vars)])
        try:
            outputs = _call_layer(self.layer, inputs, training, kwargs)
        finally:
            config.set_quantize_weights(self.layer, originals)
            config.set_quantize_activations(self.layer, original_activations)
        return self._quantize_outputs(outputs, training)

    def get_config(self) -> dict:
        return dict(super().get_config(), quantize_config=_serialize(self.quantize_config))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeFoldedBatchNorm(QuantizeWrapperBase):
    """`layer` (Conv/DepthwiseConv/Dense, linear activation) followed by `batchnorm`, folded as TFLite folds them.

    Args:
        layer: the convolution or dense layer.
        batchnorm: the BatchNormalization that reads only `layer`'s output (channel axis last).
        quantize_config: the layer's config (its first weight quantizer quantizes the folded kernel).
        fold: which kernel attribute and how many trailing channel axes (see `FoldSpec`).
        freeze_bn_delay: after this many training steps, stop updating the moving statistics and
            fold with them (None: batch statistics throughout training).
        quantize_output: apply the config's output quantizer.

    Example:
        >>> folded = QuantizeFoldedBatchNorm(conv, bn, quantize_config_for(conv), freeze_bn_delay=1000)
    """

    def __init__(self, layer: keras.layers.Layer, batchnorm: keras.layers.Layer, quantize_config: Any,
                 fold: FoldSpec | dict | None = None, freeze_bn_delay: int | None = None,
                 quantize_output: bool = True, **kwargs: Any) -> None:
        if isinstance(batchnorm, dict):
            batchnorm = keras.layers.deserialize(batchnorm)
        super().__init__(layer, quantize_output, **kwargs)
        self.batchnorm = batchnorm
        self.quantize_config = _deserialize(quantize_config)
        self.fold = FoldSpec(**fold) if isinstance(fold, dict) else (fold or FoldSpec())
        if freeze_bn_delay is not None and (isinstance(freeze_bn_delay, bool) or int(freeze_bn_delay) < 0):
            raise ValueError(f"`freeze_bn_delay` must be None or an int >= 0; received {freeze_bn_delay!r}.")
        self.freeze_bn_delay = None if freeze_bn_delay is None else int(freeze_bn_delay)

    def build(self, input_shape: Any) -> None:
        self._build_layer(input_shape)
        if not self.batchnorm.built:
            self.batchnorm.build(self.layer.compute_output_shape(input_shape))
        (kernel, quantizer), = self.quantize_config.get_weights_and_quantizers(self.layer)[:1]
        self.kernel_quantizer = quantizer
        self.kernel_vars = quantizer.build(kernel.shape, f"{self.layer.name}_weight0", self)
        self._build_output_quantizers(self.quantize_config.get_output_quantizers(self.layer))
        self.bn_step = self.add_weight(name="bn_step", shape=(), dtype="int64", trainable=False,
                                       initializer="zeros")
        self.built = True

    def _linear(self, inputs: Any, kernel: Any) -> Any:
        """`layer` without bias and activation, with `kernel` in place of its own."""
        layer = self.layer
        name = _attribute_for_setting(layer, self.fold.kernel)
        original_kernel, original_bias = getattr(layer, name), getattr(layer, "bias", None)
        setattr(layer, name, kernel)
        if original_bias is not None:
            layer.bias = keras.ops.zeros_like(original_bias)
        try:
            return layer.call(inputs)
        finally:
            setattr(layer, name, original_kernel)
            if original_bias is not None:
                layer.bias = original_bias

    def folded_kernel_and_bias(self, mean: Any, variance: Any) -> tuple[Any, Any]:
        """The kernel and bias of the folded layer for the given BN statistics."""
        import tensorflow as tf

        bn = self.batchnorm
        kernel = tf.convert_to_tensor(getattr(self.layer, self.fold.kernel))
        inv = tf.math.rsqrt(variance + bn.epsilon)
        if bn.gamma is not None:
            inv = inv * bn.gamma
        bias = -mean * inv
        if getattr(self.layer, "bias", None) is not None:
            bias = bias + self.layer.bias * inv
        if bn.beta is not None:
            bias = bias + bn.beta
        channel_shape = kernel.shape[-self.fold.channel_dims:]
        return kernel * tf.reshape(inv, channel_shape), bias

    def call(self, inputs: Any, training: Any = None) -> Any:
        import tensorflow as tf

        training = bool(training)
        bn = self.batchnorm
        mean, variance = tf.convert_to_tensor(bn.moving_mean), tf.convert_to_tensor(bn.moving_variance)
        if training:
            mean, variance = self._training_statistics(inputs, mean, variance)
        kernel, bias = self.folded_kernel_and_bias(mean, variance)
        outputs = self._linear(inputs, self.kernel_quantizer(kernel, training, self.kernel_vars)) + bias
        if self.layer.activation is not None:
            outputs = self.layer.activation(outputs)
        return self._quantize_outputs(outputs, training)

    def _training_statistics(self, inputs: Any, moving_mean: Any, moving_variance: Any) -> tuple[Any, Any]:
        """Batch statistics of the unfolded layer (updating the moving ones) until `freeze_bn_delay`
        steps, then the moving statistics, without running the unfolded layer any more."""
        import tensorflow as tf

        bn = self.batchnorm

        def batch_statistics():
            kernel = tf.convert_to_tensor(getattr(self.layer, self.fold.kernel))
            if SPARSITY_MASK in self.kernel_vars:  # no gradient to a pruned weight through the statistics either
                kernel = kernel * tf.cast(self.kernel_vars[SPARSITY_MASK], kernel.dtype)
            raw = self._linear(inputs, kernel)
            if getattr(self.layer, "bias", None) is not None:
                raw = raw + self.layer.bias
            batch_mean, batch_variance = tf.nn.moments(raw, list(range(len(raw.shape) - 1)))
            m = bn.momentum
            bn.moving_mean.assign(m * bn.moving_mean + (1 - m) * batch_mean)
            bn.moving_variance.assign(m * bn.moving_variance + (1 - m) * batch_variance)
            return batch_mean, batch_variance

        if self.freeze_bn_delay is None:
            statistics = batch_statistics()
        else:
            statistics = tf.cond(self.bn_step < self.freeze_bn_delay, batch_statistics,
                                 lambda: (tf.identity(moving_mean), tf.identity(moving_variance)))
        self.bn_step.assign_add(1)
        return statistics

    def get_config(self) -> dict:
        import dataclasses

        return dict(super().get_config(), batchnorm=keras.layers.serialize(self.batchnorm),
                    quantize_config=_serialize(self.quantize_config), fold=dataclasses.asdict(self.fold),
                    freeze_bn_delay=self.freeze_bn_delay)

    @classmethod
    def from_config(cls, config: dict) -> "QuantizeFoldedBatchNorm":
        config = dict(config)
        config["batchnorm"] = keras.layers.deserialize(config["batchnorm"])
        return super().from_config(config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeSeparableConv(QuantizeWrapperBase):
    """SeparableConv1D/2D as TFLite runs it: a depthwise convolution, a quantized tensor, a 1x1 convolution.

    The depthwise kernel is quantized per (input x multiplier) channel, the pointwise kernel per
    output channel, the tensor between them and the output per tensor with learned ranges.

    Example:
        >>> sep = keras.layers.SeparableConv2D(16, 3)
        >>> wrapped = QuantizeSeparableConv(sep, quantize_config_for(sep))
    """

    def __init__(self, layer: keras.layers.Layer, quantize_config: Any, quantize_output: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(layer, quantize_output, **kwargs)
        self.quantize_config = _deserialize(quantize_config)

    def build(self, input_shape: Any) -> None:
        from tfprune.quantization.quantizers import LastValueQuantizer

        self._build_layer(input_shape)
        depthwise = self.quantize_config.weight_quantizer
        self.depthwise_quantizer = depthwise
        if hasattr(depthwise, "with_channel_dims"):
            self.pointwise_quantizer = depthwise.with_channel_dims(1)
        else:
            self.pointwise_quantizer = LastValueQuantizer(num_bits=depthwise.num_bits, per_axis=depthwise.per_axis,
                                                          symmetric=depthwise.symmetric,
                                                          narrow_range=depthwise.narrow_range, channel_dims=1)
        self.depthwise_vars = depthwise.build(self.layer.depthwise_kernel.shape, f"{self.layer.name}_weight0", self)
        self.pointwise_vars = self.pointwise_quantizer.build(self.layer.pointwise_kernel.shape,
                                                             f"{self.layer.name}_weight1", self)
        self.middle_quantizer = MovingAverageQuantizer()
        self.middle_vars = self.middle_quantizer.build(None, f"{self.layer.name}_depthwise_output", self)
        before = getattr(self.quantize_config, "activation_input_quantizer", None)
        self.activation_input_vars = (None if before is None
                                      else before.build(None, f"{self.layer.name}_activation0", self))
        self._build_output_quantizers(self.quantize_config.get_output_quantizers(self.layer))
        self.built = True

    def call(self, inputs: Any, training: Any = None) -> Any:
        from keras import ops

        training = bool(training)
        layer = self.layer
        depthwise_kernel = self.depthwise_quantizer(layer.depthwise_kernel, training, self.depthwise_vars)
        pointwise_kernel = self.pointwise_quantizer(layer.pointwise_kernel, training, self.pointwise_vars)
        middle = ops.depthwise_conv(inputs, depthwise_kernel, strides=layer.strides, padding=layer.padding,
                                    dilation_rate=layer.dilation_rate, data_format=layer.data_format)
        middle = self.middle_quantizer(middle, training, self.middle_vars)
        outputs = ops.conv(middle, pointwise_kernel, strides=1, padding="valid", data_format=layer.data_format)
        if layer.use_bias:
            outputs = outputs + layer.bias
        if self.activation_input_vars is not None:
            outputs = self.quantize_config.activation_input_quantizer(outputs, training, self.activation_input_vars)
        if layer.activation is not None:
            outputs = layer.activation(outputs)
        return self._quantize_outputs(outputs, training)

    def get_config(self) -> dict:
        return dict(super().get_config(), quantize_config=_serialize(self.quantize_config))


def weight_quantizer_slots(layer: Any) -> list[tuple[Any, Quantizer, dict]]:
    """`(weight variable, quantizer, quantizer variables)` of each quantized weight of a quantize-aware layer
    (empty for other layers); a folded layer's slot holds its unfolded kernel.

    Example:
        >>> [w.path for w, _, _ in weight_quantizer_slots(qat_model.layers[1])]
    """
    if isinstance(layer, QuantizeWrapper) and layer.built:
        pairs = layer.quantize_config.get_weights_and_quantizers(layer.layer)
        return [(w, q, v) for (w, q), v in zip(pairs, layer.weight_vars)]
    if isinstance(layer, QuantizeFoldedBatchNorm) and layer.built:
        return [(getattr(layer.layer, layer.fold.kernel), layer.kernel_quantizer, layer.kernel_vars)]
    if isinstance(layer, QuantizeSeparableConv) and layer.built:
        return [(layer.layer.depthwise_kernel, layer.depthwise_quantizer, layer.depthwise_vars),
                (layer.layer.pointwise_kernel, layer.pointwise_quantizer, layer.pointwise_vars)]
    return []
