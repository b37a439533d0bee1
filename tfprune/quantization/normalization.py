"""LayerNormalization / RMSNormalization (and structured pruning's `PrunedLayerNormalization` /
`PrunedRMSNormalization`) as int8 TFLite runs them.

TFLite has no int8 layer-normalization kernel: the converter lowers the layer into MEAN, SUB, MUL,
ADD and RSQRT, each of which has an int8 kernel but needs a range for its output. `QuantizeNormalization`
computes the layer as that chain of ops with a learned (moving-average, or calibrated) 8-bit range on
every intermediate tensor, so the converter emits the same chain in int8 and the Keras model computes
what TFLite computes. gamma/beta/scale are quantized per tensor (TFLite's MUL/ADD take one scale per operand).

For a pruned layer with `normalized_size` n larger than the kept channels c, the statistics are those of
the original width (the removed channels as zeros): `mean = mean_c(x) * c / n` and
`var = mean_c((x - mean)^2) * c / n + (n - c) / n * mean^2`.

Example:
    >>> qat = quantize_model(model_with_layer_norm)       # each LayerNormalization becomes a QuantizeNormalization
"""

from __future__ import annotations

from typing import Any

import keras

from tfprune.quantization.quantizers import LastValueQuantizer, MovingAverageQuantizer

_PACKAGE = "tfprune"


def is_normalization(layer: Any) -> bool:
    """True for the normalization layers this module quantizes (last-axis LayerNormalization / RMSNormalization)."""
    classes = [keras.layers.LayerNormalization] + ([keras.layers.RMSNormalization]
                                                   if hasattr(keras.layers, "RMSNormalization") else [])
    if not isinstance(layer, tuple(classes)) or getattr(layer, "rms_scaling", False):
        return False
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    return len(axis) == 1 and (axis[0] == -1 or (layer.built and hasattr(layer, "input")
                                                 and axis[0] == len(layer.input.shape) - 1))


def _kind(layer: Any) -> str:
    return "layer" if isinstance(layer, keras.layers.LayerNormalization) else "rms"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeNormalization(keras.layers.Wrapper):
    """A last-axis LayerNormalization/RMSNormalization computed as TFLite's int8 op chain, with ranges.

    Args:
        layer: the normalization layer (its weights stay its own).
        quantize_output: quantize the result (off when the only reader puts it on its own scale).

    Example:
        >>> QuantizeNormalization(keras.layers.LayerNormalization())
    """

    def __init__(self, layer: keras.layers.Layer, quantize_output: bool = True, **kwargs: Any) -> None:
        if isinstance(layer, dict):
            layer = keras.layers.deserialize(layer)
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_output = bool(quantize_output)
        self.kind = _kind(layer)

    def _ratio(self, channels: Any) -> float:
        size = getattr(self.layer, "normalized_size", None) or channels
        return float(channels) / float(size)

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.tensor_quantizer = MovingAverageQuantizer()
        self.tensor_vars = {name: self.tensor_quantizer.build(None, f"{self.layer.name}_{name}", self)
                            for name in self._tensor_names(self._ratio(input_shape[-1]))}
        self.output_quantizers = [MovingAverageQuantizer()] if self.quantize_output else []
        self.output_vars = [q.build(None, f"{self.layer.name}_output{i}", self)
                            for i, q in enumerate(self.output_quantizers)]
        self.weight_quantizer = LastValueQuantizer(8, per_axis=False, symmetric=True, narrow_range=True)
        self.built = True

    def _tensor_names(self, ratio: float) -> list[str]:
        """The intermediate tensors that get a range, in computation order."""
        layer_norm = self.kind == "layer"
        names = (["mean_kept", "mean", "centered"] if ratio != 1.0 else ["mean", "centered"]) if layer_norm else []
        names.append("square")
        if ratio != 1.0:
            names += ["variance_kept", "variance_scaled"] + (["mean_square", "mean_square_scaled"] if layer_norm else [])
        names += ["variance", "variance_eps", "inverse", "normalized"]
        if layer_norm and getattr(self.layer, "gamma", None) is not None and getattr(self.layer, "beta", None) is not None:
            names.append("scaled")
        return names

    def _q(self, name: str, value: Any, training: bool) -> Any:
        return self.tensor_quantizer(value, training, self.tensor_vars[name])

    def activation_quantizer_pairs(self) -> list[tuple[MovingAverageQuantizer, dict]]:
        """`(quantizer, variables)` of every learned range (for calibration)."""
        pairs = [(self.tensor_quantizer, v) for v in self.tensor_vars.values()]
        return pairs + list(zip(self.output_quantizers, self.output_vars))

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        import tensorflow as tf

        training = bool(training)
        layer = self.layer

        def q(name: str, value: Any) -> Any:
            return self._q(name, value, training)

        x = tf.cast(inputs, "float32")
        ratio = self._ratio(x.shape[-1])
        if self.kind == "layer":
            mean = tf.reduce_mean(x, axis=-1, keepdims=True)
            mean = q("mean", q("mean_kept", mean) * ratio) if ratio != 1.0 else q("mean", mean)
            numerator = q("centered", x - mean)
        else:
            numerator = x
        variance = tf.reduce_mean(q("square", numerator * numerator), axis=-1, keepdims=True)
        if ratio != 1.0:
            variance = q("variance_scaled", q("variance_kept", variance) * ratio)
            if self.kind == "layer":  # the removed channels' (0 - mean)^2
                missing = q("mean_square_scaled", q("mean_square", mean * mean) * (1.0 - ratio))
                variance = variance + missing
        epsilon = getattr(layer, "epsilon", None)
        epsilon = keras.config.epsilon() if epsilon is None else float(epsilon)
        variance = q("variance", variance)
        inverse = q("inverse", tf.math.rsqrt(q("variance_eps", variance + epsilon)))
        outputs = q("normalized", numerator * inverse)
        gamma = getattr(layer, "gamma", None) if self.kind == "layer" else getattr(layer, "scale", None)
        beta = getattr(layer, "beta", None) if self.kind == "layer" else None
        if gamma is not None:
            outputs = outputs * self.weight_quantizer(gamma, training, {})
            if beta is not None:
                outputs = q("scaled", outputs)
        if beta is not None:
            outputs = outputs + self.weight_quantizer(beta, training, {})
        for quantizer, variables in zip(self.output_quantizers, self.output_vars):
            outputs = quantizer(outputs, training, variables)
        return outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        return dict(super().get_config(), quantize_output=self.quantize_output)

    @classmethod
    def from_config(cls, config: dict) -> "QuantizeNormalization":
        config = dict(config)
        config["layer"] = keras.layers.deserialize(config["layer"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeBatchNormalization(keras.layers.Wrapper):
    """A BatchNormalization that cannot fold into a producer (after an activation, after an Add...), as TFLite
    runs it: `x * a` (MUL, a range on its output) then `+ b` (ADD), with `a = gamma / sqrt(var + eps)` and
    `b = beta - mean * a` quantized per tensor. Training normalises with the batch statistics (updating
    the moving ones), inference with the moving statistics.

    Example:
        >>> QuantizeBatchNormalization(keras.layers.BatchNormalization())
    """

    def __init__(self, layer: keras.layers.Layer, quantize_output: bool = True, **kwargs: Any) -> None:
        if isinstance(layer, dict):
            layer = keras.layers.deserialize(layer)
        kwargs.setdefault("name", f"quant_{layer.name}")
        super().__init__(layer, **kwargs)
        self.quantize_output = bool(quantize_output)

    def build(self, input_shape: Any) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        self.tensor_quantizer = MovingAverageQuantizer()
        self.scaled_vars = self.tensor_quantizer.build(None, f"{self.layer.name}_scaled", self)
        self.output_quantizers = [MovingAverageQuantizer()] if self.quantize_output else []
        self.output_vars = [q.build(None, f"{self.layer.name}_output{i}", self)
                            for i, q in enumerate(self.output_quantizers)]
        self.weight_quantizer = LastValueQuantizer(8, per_axis=False, symmetric=True, narrow_range=True)
        self.built = True

    def activation_quantizer_pairs(self) -> list[tuple[MovingAverageQuantizer, dict]]:
        """`(quantizer, variables)` of every learned range (for calibration)."""
        return [(self.tensor_quantizer, self.scaled_vars)] + list(zip(self.output_quantizers, self.output_vars))

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        import tensorflow as tf

        training = bool(training)
        bn = self.layer
        x = tf.cast(inputs, "float32")
        mean, variance = tf.convert_to_tensor(bn.moving_mean), tf.convert_to_tensor(bn.moving_variance)
        if training and bn.trainable:
            mean, variance = tf.nn.moments(x, list(range(len(x.shape) - 1)))
            m = bn.momentum
            bn.moving_mean.assign(m * bn.moving_mean + (1 - m) * mean)
            bn.moving_variance.assign(m * bn.moving_variance + (1 - m) * variance)
        scale = tf.math.rsqrt(variance + bn.epsilon)
        if bn.gamma is not None:
            scale = scale * bn.gamma
        offset = -mean * scale
        if bn.beta is not None:
            offset = offset + bn.beta
        outputs = self.tensor_quantizer(x * self.weight_quantizer(scale, training, {}), training, self.scaled_vars)
        outputs = outputs + self.weight_quantizer(offset, training, {})
        for quantizer, variables in zip(self.output_quantizers, self.output_vars):
            outputs = quantizer(outputs, training, variables)
        return outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        return dict(super().get_config(), quantize_output=self.quantize_output)

    @classmethod
    def from_config(cls, config: dict) -> "QuantizeBatchNormalization":
        config = dict(config)
        config["layer"] = keras.layers.deserialize(config["layer"])
        return cls(**config)


__all__ = ["QuantizeBatchNormalization", "QuantizeNormalization", "is_normalization"]
