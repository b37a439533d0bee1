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

from tfprune.quantization.layers import QuantizeWrapperBase
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


class _QuantizeOpChain(QuantizeWrapperBase):
    """A layer TFLite runs as a chain of per-tensor int8 ops: a learned range on each intermediate tensor
    the subclass names (`_build_ranges`, `_range_variables`), per-tensor 8-bit weights, one output range.
    """

    def build(self, input_shape: Any) -> None:
        self._build_layer(input_shape)
        self.tensor_quantizer = MovingAverageQuantizer()
        self._build_ranges(input_shape)
        self._build_output_quantizers([MovingAverageQuantizer()])
        self.weight_quantizer = LastValueQuantizer(8, per_axis=False, symmetric=True, narrow_range=True)
        self.built = True

    def _build_ranges(self, input_shape: Any) -> None:
        raise NotImplementedError

    def _range_variables(self) -> list[dict]:
        raise NotImplementedError

    def activation_quantizer_pairs(self) -> list[tuple[MovingAverageQuantizer, dict]]:
        """`(quantizer, variables)` of every learned range (for calibration)."""
        pairs = [(self.tensor_quantizer, v) for v in self._range_variables()]
        return pairs + list(zip(self.output_quantizers, self.output_vars))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeNormalization(_QuantizeOpChain):
    """A last-axis LayerNormalization/RMSNormalization computed as TFLite's int8 op chain, with ranges.

    Args:
        layer: the normalization layer (its weights stay its own).
        quantize_output: quantize the result (off when the only reader puts it on its own scale).

    Example:
        >>> QuantizeNormalization(keras.layers.LayerNormalization())
    """

    def __init__(self, layer: keras.layers.Layer, quantize_output: bool = True, **kwargs: Any) -> None:
        super().__init__(layer, quantize_output, **kwargs)
        self.kind = _kind(self.layer)

    def _ratio(self, channels: Any) -> float:
        size = getattr(self.layer, "normalized_size", None) or channels
        return float(channels) / float(size)

    def _build_ranges(self, input_shape: Any) -> None:
        self.tensor_vars = {name: self.tensor_quantizer.build(None, f"{self.layer.name}_{name}", self)
                            for name in self._tensor_names(self._ratio(input_shape[-1]))}

    def _range_variables(self) -> list[dict]:
        return list(self.tensor_vars.values())

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
        return self._quantize_outputs(outputs, training)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantizeBatchNormalization(_QuantizeOpChain):
    """A BatchNormalization that cannot fold into a producer (after an activation, after an Add...), as TFLite
    runs it: `x * a` (MUL, a range on its output) then `+ b` (ADD), with `a = gamma / sqrt(var + eps)` and
    `b = beta - mean * a` quantized per tensor. Training normalises with the batch statistics (updating
    the moving ones), inference with the moving statistics.

    Example:
        >>> QuantizeBatchNormalization(keras.layers.BatchNormalization())
    """

    def _build_ranges(self, input_shape: Any) -> None:
        self.scaled_vars = self.tensor_quantizer.build(None, f"{self.layer.name}_scaled", self)

    def _range_variables(self) -> list[dict]:
        return [self.scaled_vars]

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
        return self._quantize_outputs(outputs, training)


__all__ = ["QuantizeBatchNormalization", "QuantizeNormalization", "is_normalization"]
