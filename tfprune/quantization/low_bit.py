"""Low-bit quantizers: 2..8-bit weights and activations, ternary and binary weights, binary
activations, DoReFa. Each is a `Quantizer`, so it plugs into any `QuantizeConfig`.

They train as fake-quant in Keras, and they are written so that the full-integer TFLite export
keeps them exact: a low-bit grid is embedded in the int8 grid.

* Weights: the low-bit values (multiples of a per-channel `unit`, index at most `max_index`) are
  computed first, then fake-quantized at 8 bits with the scale `unit / (127 // max_index)`, on which
  they lie exactly. The converter stores an int8 kernel with at most `2 * max_index + 1` distinct
  values per channel (ternary: {-127, 0, 127}; binary: {-127, 127}; 4-bit: 15 values).
* Activations (k bits, asymmetric): an 8-bit fake-quant whose scale is the k-bit step, then a
  `minimum` at the top of the k-bit range, then the same fake-quant. TFLite runs it as a requantize
  to that scale and an int8 MINIMUM, so the int8 tensor has at most 2^k values, as in Keras.
* Binary activations (sign): the input on a learned 8-bit range, times 1e6, 8-bit fake-quant on
  `[-128/127, 1]` (step 1/127) and a `maximum` at -1: the int8 tensor holds {-127, 0, 127}, i.e.
  {-1, 0, +1}, 0 where the input rounds to 0 on its 8-bit grid (TFLite has no int8 sign; two
  levels alone cannot be an int8 tensor with 0 on its grid). Keras computes the same values.
  Training uses the straight-through estimator: the gradient of `clip(x, -1, 1)`.

Gradients of weight quantizers are straight-through (identity); activation quantizers pass the
gradient inside their range (binary: inside [-1, 1]) and block it outside.

Example:
    >>> TernaryWeightQuantizer()(kernel, training=True, weights={})        # {-a, 0, a} per channel
    >>> config = WeightsQuantizeConfig(["kernel"], KBitWeightQuantizer(4), KBitActivationQuantizer(4))
"""

from __future__ import annotations

from typing import Any

import keras

from tfprune.quantization.quantizers import MovingAverageQuantizer, Quantizer, fake_quant

_PACKAGE = "tfprune"
SIGN_GAIN = 1e6  # binary activations: x * SIGN_GAIN saturates the int8 grid unless x is exactly 0


def _check_bits(num_bits: Any, low: int, high: int, what: str) -> int:
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not low <= num_bits <= high:
        raise ValueError(f"`num_bits` of {what} must be an int in [{low}, {high}]; received {num_bits!r}.")
    return num_bits


def _round(x: Any) -> Any:
    """Round half up, as FakeQuantWithMinMaxVars rounds."""
    import tensorflow as tf

    return tf.floor(x + 0.5)


def straight_through(values: Any, inputs: Any, passes: Any = None) -> Any:
    """`values` forward; backward the gradient of `inputs` where `passes` (everywhere if None), else 0.
    Only for training graphs: the exported (inference) graph keeps the plain fake-quant ops."""
    import tensorflow as tf

    through = inputs - tf.stop_gradient(inputs)  # exactly 0 forward
    if passes is not None:
        through = through * tf.cast(passes, inputs.dtype)
    return tf.stop_gradient(values) + through


def grid_fake_quant(inputs: Any, low: Any, high: Any, num_bits: int, training: bool = False) -> Any:
    """Asymmetric `num_bits` fake-quantization of `[low, high]` (nudged so 0 is on the grid), built from
    8-bit fake-quant ops and a `minimum`, so TFLite runs it in int8 with the same 2^k values. In
    training the gradient passes inside the nudged range, as with TensorFlow's k-bit FakeQuant.

    Example:
        >>> grid_fake_quant(x, 0.0, 1.0, num_bits=2)   # values in {0, 1/3, 2/3, 1}
    """
    import tensorflow as tf

    if num_bits == 8:
        return fake_quant(inputs, low, high, 8, narrow_range=False, per_axis=False)
    levels = float(2 ** num_bits - 1)
    low = tf.minimum(tf.cast(low, inputs.dtype), 0.0)
    high = tf.maximum(tf.cast(high, inputs.dtype), low + 1e-6)
    scale = (high - low) / levels
    zero_point = tf.clip_by_value(_round(-low / scale), 0.0, levels)
    nudged_low = -zero_point * scale
    nudged_high = nudged_low + levels * scale
    wide_high = nudged_low + 255.0 * scale
    out = fake_quant(inputs, nudged_low, wide_high, 8, narrow_range=False, per_axis=False)
    out = tf.minimum(out, nudged_high)
    out = fake_quant(out, nudged_low, wide_high, 8, narrow_range=False, per_axis=False)
    if training:
        out = straight_through(out, inputs, (inputs >= nudged_low) & (inputs <= nudged_high))
    return out


class GridWeightQuantizer(Quantizer):
    """Base of the low-bit weight quantizers: `snap(w) -> (values, unit)` with `values / unit` integers of
    magnitude at most `max_index`; the result is then stored on the int8 grid of step `unit / (127 // max_index)`.

    Args:
        per_axis: one scale per output channel (the trailing `channel_dims` axes), else per tensor.
        channel_dims: trailing axes forming the channel (2 for depthwise kernels).

    Example:
        >>> class Halves(GridWeightQuantizer):
        ...     max_index = 2
        ...     def snap(self, w):
        ...         return tf.clip_by_value(tf.round(w * 2), -2, 2) / 2, tf.constant(0.5)
    """

    max_index = 127

    def __init__(self, per_axis: bool = True, channel_dims: int = 1) -> None:
        self.per_axis = bool(per_axis)
        if channel_dims not in (1, 2):
            raise ValueError(f"`channel_dims` must be 1 or 2; received {channel_dims!r}.")
        self.channel_dims = channel_dims

    def reduce_axes(self, values: Any) -> Any:
        """Axes reduced to one number per channel (None: per tensor)."""
        return list(range(len(values.shape) - 1)) if self.per_axis else None

    def snap(self, values: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def __call__(self, inputs: Any, training: bool, weights: dict, mask: Any = None, **kwargs: Any) -> Any:
        import tensorflow as tf

        values = tf.convert_to_tensor(inputs)
        shape = tf.shape(values)
        flat = values
        if self.per_axis and self.channel_dims == 2:
            flat = tf.reshape(values, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
        flat_mask = None
        if mask is not None:
            flat_mask = tf.reshape(tf.cast(mask, flat.dtype), tf.shape(flat))
            flat = flat * flat_mask
        snapped, unit = self.snap(flat)
        out = flat + tf.stop_gradient(snapped - flat)  # straight-through
        if flat_mask is not None:
            out = out * flat_mask  # a zero stays zero even where the grid has no 0 (binary, DoReFa)
        step = tf.stop_gradient(tf.maximum(unit, 1e-8)) / float(127 // self.max_index)
        bound = 127.0 * step
        stored = fake_quant(out, -bound, bound, 8, narrow_range=True, per_axis=self.per_axis)
        out = straight_through(stored, out) if training else stored  # identity also at the range's ends
        return tf.reshape(out, shape) if flat is not values else out

    def with_channel_dims(self, channel_dims: int) -> "GridWeightQuantizer":
        """The same quantizer for a kernel with `channel_dims` trailing channel axes."""
        return type(self).from_config(dict(self.get_config(), channel_dims=channel_dims))

    def get_config(self) -> dict:
        return {"per_axis": self.per_axis, "channel_dims": self.channel_dims}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class KBitWeightQuantizer(GridWeightQuantizer):
    """Symmetric narrow-range `num_bits` weights: `clip(round(w / s), -L, L) * s`, `L = 2^(b-1) - 1`,
    `s = max|w| / L` per channel (8 bits: the default scheme's weights).

    Example:
        >>> KBitWeightQuantizer(4)   # 15 levels per channel
    """

    def __init__(self, num_bits: int = 4, per_axis: bool = True, channel_dims: int = 1) -> None:
        super().__init__(per_axis, channel_dims)
        self.num_bits = _check_bits(num_bits, 2, 8, "KBitWeightQuantizer")
        self.max_index = 2 ** (self.num_bits - 1) - 1

    def snap(self, values: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        unit = tf.maximum(tf.reduce_max(tf.abs(values), axis=self.reduce_axes(values)), 1e-8) / self.max_index
        levels = tf.clip_by_value(_round(values / unit), -self.max_index, self.max_index)
        return levels * unit, unit

    def get_config(self) -> dict:
        return dict(super().get_config(), num_bits=self.num_bits)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TernaryWeightQuantizer(GridWeightQuantizer):
    """Ternary weight networks (TWN): per channel, `delta = threshold * mean|w|`, weights with `|w| > delta`
    become `sign(w) * alpha` with `alpha` the mean of their `|w|`, the others 0.

    Example:
        >>> TernaryWeightQuantizer(threshold=0.7)
    """

    max_index = 1

    def __init__(self, threshold: float = 0.7, per_axis: bool = True, channel_dims: int = 1) -> None:
        super().__init__(per_axis, channel_dims)
        if not 0.0 < float(threshold) < 10.0:
            raise ValueError(f"`threshold` must be in (0, 10); received {threshold!r}.")
        self.threshold = float(threshold)

    def snap(self, values: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        axes = self.reduce_axes(values)
        magnitude = tf.abs(values)
        delta = self.threshold * tf.reduce_mean(magnitude, axis=axes)
        kept = tf.cast(magnitude > delta, values.dtype)
        alpha = tf.reduce_sum(magnitude * kept, axis=axes) / tf.maximum(tf.reduce_sum(kept, axis=axes), 1.0)
        return tf.sign(values) * kept * alpha, alpha

    def get_config(self) -> dict:
        return dict(super().get_config(), threshold=self.threshold)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryWeightQuantizer(GridWeightQuantizer):
    """XNOR-Net binary weights: `alpha * sign(w)` with `alpha = mean|w|` per channel (`sign(0) = +1`).

    Example:
        >>> BinaryWeightQuantizer()
    """

    max_index = 1

    def snap(self, values: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        alpha = tf.reduce_mean(tf.abs(values), axis=self.reduce_axes(values))
        return (2.0 * tf.cast(values >= 0, values.dtype) - 1.0) * alpha, alpha


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DoReFaWeightQuantizer(GridWeightQuantizer):
    """DoReFa-Net weights: `t = tanh(w) / (2 max|tanh(w)|) + 1/2`, `w_q = 2 round_k(t) - 1` in [-1, 1]
    (`round_k` rounds to multiples of `1 / (2^k - 1)`). 2..7 bits (8 would need 256 odd levels, more than int8 holds).

    Example:
        >>> DoReFaWeightQuantizer(2)   # values in {-1, -1/3, 1/3, 1}
    """

    def __init__(self, num_bits: int = 2, per_axis: bool = False, channel_dims: int = 1) -> None:
        super().__init__(per_axis, channel_dims)
        self.num_bits = _check_bits(num_bits, 2, 7, "DoReFaWeightQuantizer (8 bits: KBitWeightQuantizer)")
        self.max_index = 2 ** self.num_bits - 1

    def snap(self, values: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        levels = float(self.max_index)
        squashed = tf.tanh(values)
        largest = tf.maximum(tf.reduce_max(tf.abs(squashed), axis=self.reduce_axes(values)), 1e-8)
        unit_interval = squashed / (2.0 * largest) + 0.5
        snapped = 2.0 * _round(unit_interval * levels) / levels - 1.0
        unit = tf.ones_like(largest) / levels
        return snapped, unit

    def get_config(self) -> dict:
        return dict(super().get_config(), num_bits=self.num_bits)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class KBitActivationQuantizer(MovingAverageQuantizer):
    """Asymmetric `num_bits` activations with a learned (moving-average, or calibrated) per-tensor range.

    Example:
        >>> KBitActivationQuantizer(4)   # 16 levels between the learned min and max
    """

    def __init__(self, num_bits: int = 4, ema_decay: float = 0.999, narrow_range: bool = False) -> None:
        _check_bits(num_bits, 2, 8, "KBitActivationQuantizer")
        if narrow_range:
            raise ValueError("KBitActivationQuantizer has no narrow range. Fix: drop `narrow_range`.")
        super().__init__(num_bits=num_bits, ema_decay=ema_decay, narrow_range=False)

    def quantize_in_range(self, inputs: Any, low: Any, high: Any, training: bool = False) -> Any:
        return grid_fake_quant(inputs, low, high, self.num_bits, training)

    def get_config(self) -> dict:
        return {"num_bits": self.num_bits, "ema_decay": self.ema_decay}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DoReFaActivationQuantizer(Quantizer):
    """DoReFa-Net activations: `clip(x, 0, 1)` quantized to `num_bits` (multiples of `1 / (2^k - 1)`);
    the gradient passes inside [0, 1].

    Example:
        >>> DoReFaActivationQuantizer(4)
    """

    def __init__(self, num_bits: int = 4) -> None:
        self.num_bits = _check_bits(num_bits, 2, 8, "DoReFaActivationQuantizer")

    def __call__(self, inputs: Any, training: bool, weights: dict, **kwargs: Any) -> Any:
        return grid_fake_quant(inputs, 0.0, 1.0, self.num_bits, bool(training))

    def get_config(self) -> dict:
        return {"num_bits": self.num_bits}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryActivationQuantizer(MovingAverageQuantizer):
    """Binary activations `sign(x)`, trained with the straight-through estimator (the gradient of
    `clip(x, -1, 1)`).

    TFLite needs the input on an int8 grid before the sign, so the input gets a learned 8-bit range
    (moving averages, or calibration) and the sign is taken of the quantized input: an input that
    rounds to 0 on that grid gives 0. Keras computes the same, so the values are {-1, 0, +1}.

    Example:
        >>> BinaryActivationQuantizer()
    """

    def __init__(self, ema_decay: float = 0.999) -> None:
        super().__init__(num_bits=8, ema_decay=ema_decay, narrow_range=False)

    def quantize_in_range(self, inputs: Any, low: Any, high: Any, training: bool = False) -> Any:
        import tensorflow as tf

        quantized = fake_quant(inputs, low, high, 8, narrow_range=False, per_axis=False)
        step = -128.0 / 127.0  # output step 1/127, zero point 0: -1, 0, 1 are the int8 values -127, 0, 127
        signed = fake_quant(quantized * SIGN_GAIN, step, 1.0, 8, narrow_range=False, per_axis=False)
        return fake_quant(tf.maximum(signed, -1.0), step, 1.0, 8, narrow_range=False, per_axis=False)

    def __call__(self, inputs: Any, training: bool, weights: dict, **kwargs: Any) -> Any:
        import tensorflow as tf

        signed = super().__call__(inputs, training, weights)
        if not training:
            return signed
        clipped = tf.clip_by_value(inputs, -1.0, 1.0)
        return clipped + tf.stop_gradient(signed - clipped)

    def get_config(self) -> dict:
        return {"ema_decay": self.ema_decay}


WEIGHT_QUANTIZERS = {"uniform": KBitWeightQuantizer, "ternary": TernaryWeightQuantizer,
                     "binary": BinaryWeightQuantizer, "dorefa": DoReFaWeightQuantizer}
ACTIVATION_QUANTIZERS = {"uniform": KBitActivationQuantizer, "binary": BinaryActivationQuantizer,
                         "dorefa": DoReFaActivationQuantizer}

__all__ = ["ACTIVATION_QUANTIZERS", "BinaryActivationQuantizer", "BinaryWeightQuantizer",
           "DoReFaActivationQuantizer", "DoReFaWeightQuantizer", "GridWeightQuantizer", "KBitActivationQuantizer",
           "KBitWeightQuantizer", "TernaryWeightQuantizer", "WEIGHT_QUANTIZERS", "grid_fake_quant"]
