"""Fake-quantizers: small objects that create their range variables and quantize a tensor.

Every quantizer computes `fake_quant(x) = dequantize(quantize(x))` with TensorFlow's
`FakeQuantWithMinMaxVars` family, which has straight-through gradients inside the range and which
the TFLite converter reads as the tensor's scale and zero point.

* `LastValueQuantizer`: weights. The range is the current value's (symmetric: `[-max|w|, max|w|]`,
  per output channel or per tensor), recomputed at every call, so it always matches the weights.
* `MovingAverageQuantizer`: activations. The range is the first training batch's min/max, then an
  exponential moving average of each batch's min/max; inference uses the stored range.
* `FixedRangeQuantizer`: a range known in advance (softmax/sigmoid outputs, as TFLite fixes them).

A quantizer is configured by `num_bits`, `narrow_range`, `per_axis` and `symmetric`, so other
bit widths use the same classes.

Example:
    >>> quantizer = MovingAverageQuantizer(num_bits=8)
    >>> variables = quantizer.build((None, 16), "relu", layer)   # in a layer's build()
    >>> y = quantizer(x, training=True, weights=variables)
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator

import keras

_PACKAGE = "tfprune"
SPARSITY_MASK = "sparsity_mask"  # the variable of a sparsity-preserving weight quantizer (`prune_preserve`)
_RECORDING = threading.local()


@contextlib.contextmanager
def recording_activations(record: Callable[[Any, Any], None]) -> Iterator[None]:
    """Within the block, eager calls of `MovingAverageQuantizer` pass their input through unquantized
    and hand it to `record(range_variable, values)` (how calibration sees every quantized activation).

    Example:
        >>> with recording_activations(lambda var, x: seen.append(x.numpy())):
        ...     model(x, training=False)
    """
    previous = getattr(_RECORDING, "record", None)
    _RECORDING.record = record
    try:
        yield
    finally:
        _RECORDING.record = previous


def _check_bits(num_bits: Any) -> int:
    if isinstance(num_bits, bool) or not isinstance(num_bits, int) or not 2 <= num_bits <= 16:
        raise ValueError(f"`num_bits` must be an int between 2 and 16; received {num_bits!r}.")
    return num_bits


class Quantizer:
    """Base class: `build` creates the variables a quantizer keeps, `__call__` fake-quantizes.

    Subclasses implement `build(tensor_shape, name, layer) -> dict` (variables made with
    `layer.add_weight`) and `__call__(inputs, training, weights) -> tensor`, plus `get_config`.

    Example:
        >>> class Identity(Quantizer):
        ...     def __call__(self, inputs, training, weights, **kwargs):
        ...         return inputs
    """

    def build(self, tensor_shape: Any, name: str, layer: keras.layers.Layer) -> dict:
        """Creates the quantizer's variables on `layer`; the base class keeps none."""
        return {}

    def __call__(self, inputs: Any, training: bool, weights: dict, **kwargs: Any) -> Any:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config: dict) -> "Quantizer":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[union-attr]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def fake_quant(inputs: Any, min_value: Any, max_value: Any, num_bits: int, narrow_range: bool,
               per_axis: bool) -> Any:
    """Fake-quantizes `inputs` to the grid of `[min_value, max_value]` (per last axis if `per_axis`).

    Example:
        >>> fake_quant(x, -1.0, 1.0, num_bits=8, narrow_range=True, per_axis=False)
    """
    import tensorflow as tf

    if per_axis:
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            inputs, min_value, max_value, num_bits=num_bits, narrow_range=narrow_range)
    return tf.quantization.fake_quant_with_min_max_vars(
        inputs, min_value, max_value, num_bits=num_bits, narrow_range=narrow_range)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LastValueQuantizer(Quantizer):
    """Weight quantizer: the range is taken from the tensor at every call.

    Args:
        num_bits: bits of the integer grid (8 for TFLite int8).
        per_axis: one range per output channel (the trailing `channel_dims` axes), else per tensor.
        symmetric: range `[-max|w|, max|w|]` (zero point 0, as TFLite requires for weights),
            else `[min(w, 0), max(w, 0)]`.
        narrow_range: use `[-(2^(b-1)-1), 2^(b-1)-1]` (int8: [-127, 127]).
        channel_dims: how many trailing axes form the channel (2 for a depthwise kernel
            `(h, w, in, multiplier)`, whose TFLite channel is `in * multiplier`).

    Example:
        >>> LastValueQuantizer(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)
    """

    def __init__(self, num_bits: int = 8, per_axis: bool = True, symmetric: bool = True,
                 narrow_range: bool = True, channel_dims: int = 1) -> None:
        self.num_bits = _check_bits(num_bits)
        self.per_axis = bool(per_axis)
        self.symmetric = bool(symmetric)
        self.narrow_range = bool(narrow_range)
        if channel_dims not in (1, 2):
            raise ValueError(f"`channel_dims` must be 1 or 2; received {channel_dims!r}.")
        self.channel_dims = channel_dims

    def range_of(self, values: Any) -> tuple[Any, Any]:
        """`(min, max)` of `values` as this quantizer sees them (per channel or scalars)."""
        import tensorflow as tf

        axes = list(range(len(values.shape) - 1)) if self.per_axis else None
        if self.symmetric:
            bound = tf.maximum(tf.reduce_max(tf.abs(values), axis=axes), 1e-8)
            return -bound, bound
        low = tf.minimum(tf.reduce_min(values, axis=axes), 0.0)
        high = tf.maximum(tf.reduce_max(values, axis=axes), low + 1e-8)
        return low, high

    def __call__(self, inputs: Any, training: bool, weights: dict, **kwargs: Any) -> Any:
        import tensorflow as tf

        values = tf.convert_to_tensor(inputs)
        shape = tf.shape(values)
        flat = values
        if self.per_axis and self.channel_dims == 2:
            flat = tf.reshape(values, tf.concat([shape[:-2], [shape[-2] * shape[-1]]], 0))
        low, high = self.range_of(flat)
        out = fake_quant(flat, low, high, self.num_bits, self.narrow_range, self.per_axis)
        return tf.reshape(out, shape) if flat is not values else out

    def with_channel_dims(self, channel_dims: int) -> "LastValueQuantizer":
        """The same quantizer for a kernel with `channel_dims` trailing channel axes."""
        return type(self).from_config(dict(self.get_config(), channel_dims=channel_dims))

    def get_config(self) -> dict:
        return {"num_bits": self.num_bits, "per_axis": self.per_axis, "symmetric": self.symmetric,
                "narrow_range": self.narrow_range, "channel_dims": self.channel_dims}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MovingAverageQuantizer(Quantizer):
    """Activation quantizer with a learned per-tensor range.

    The first training batch sets `min`/`max` (widened to contain 0); later training batches move
    them by `ema_decay`. Inference (and export) uses the stored range. Calibration writes the
    range directly (`set_range`).

    Args:
        num_bits: bits of the grid (8: TFLite int8, asymmetric, zero point from the range).
        ema_decay: weight of the old range in each update.
        narrow_range: drop the lowest integer (off for activations in TFLite's int8 spec).

    Example:
        >>> MovingAverageQuantizer(num_bits=8, ema_decay=0.999)
    """

    def __init__(self, num_bits: int = 8, ema_decay: float = 0.999, narrow_range: bool = False) -> None:
        self.num_bits = _check_bits(num_bits)
        if not 0.0 <= float(ema_decay) < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1); received {ema_decay!r}.")
        self.ema_decay = float(ema_decay)
        self.narrow_range = bool(narrow_range)

    def build(self, tensor_shape: Any, name: str, layer: keras.layers.Layer) -> dict:
        def add(suffix: str, value: float) -> Any:
            return layer.add_weight(name=f"{name}_{suffix}", shape=(), trainable=False,
                                    initializer=keras.initializers.Constant(value))

        return {"min": add("min", -6.0), "max": add("max", 6.0), "initialized": add("initialized", 0.0)}

    def __call__(self, inputs: Any, training: bool, weights: dict, **kwargs: Any) -> Any:
        import tensorflow as tf

        low_var, high_var, init_var = weights["min"], weights["max"], weights["initialized"]
        record = getattr(_RECORDING, "record", None)
        if record is not None:
            record(low_var, inputs)
            return inputs
        if training:
            batch_low = tf.minimum(tf.reduce_min(inputs), 0.0)
            batch_high = tf.maximum(tf.reduce_max(inputs), 0.0)
            seen = tf.cast(init_var > 0.5, inputs.dtype)
            decay = self.ema_decay * seen  # 0 on the first batch: take its range as is
            low = decay * low_var + (1.0 - decay) * batch_low
            high = decay * high_var + (1.0 - decay) * batch_high
            low_var.assign(low)
            high_var.assign(high)
            init_var.assign(1.0)
        else:
            low, high = tf.convert_to_tensor(low_var), tf.convert_to_tensor(high_var)
        high = tf.maximum(high, low + 1e-6)
        return self.quantize_in_range(inputs, low, high, training=training)

    def quantize_in_range(self, inputs: Any, low: Any, high: Any, training: bool = False) -> Any:
        """Fake-quantizes `inputs` to the grid of `[low, high]` (subclasses put other grids here)."""
        return fake_quant(inputs, low, high, self.num_bits, self.narrow_range, per_axis=False)

    def set_range(self, weights: dict, min_value: float, max_value: float) -> None:
        """Stores a range (from calibration); it is used as is, and training continues from it."""
        low, high = min(float(min_value), 0.0), max(float(max_value), 0.0)
        if high <= low:
            high = low + 1e-6
        weights["min"].assign(low)
        weights["max"].assign(high)
        weights["initialized"].assign(1.0)

    def get_config(self) -> dict:
        return {"num_bits": self.num_bits, "ema_decay": self.ema_decay, "narrow_range": self.narrow_range}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FixedRangeQuantizer(Quantizer):
    """Quantizes to a fixed `[min_value, max_value]` (TFLite's fixed output ranges, e.g. softmax).

    Example:
        >>> FixedRangeQuantizer(0.0, 255 / 256)   # int8 softmax: scale 1/256, zero point -128
    """

    def __init__(self, min_value: float, max_value: float, num_bits: int = 8, narrow_range: bool = False) -> None:
        if not float(min_value) <= 0.0 <= float(max_value) or float(min_value) == float(max_value):
            raise ValueError(f"the range must contain 0 and not be empty; received [{min_value}, {max_value}].")
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.num_bits = _check_bits(num_bits)
        self.narrow_range = bool(narrow_range)

    def __call__(self, inputs: Any, training: bool, weights: dict, **kwargs: Any) -> Any:
        return fake_quant(inputs, self.min_value, self.max_value, self.num_bits, self.narrow_range, per_axis=False)

    def get_config(self) -> dict:
        return {"min_value": self.min_value, "max_value": self.max_value, "num_bits": self.num_bits,
                "narrow_range": self.narrow_range}


def serialize_quantizer(quantizer: Quantizer | None) -> Any:
    """A JSON-able description of `quantizer` (None stays None)."""
    return None if quantizer is None else keras.saving.serialize_keras_object(quantizer)


def deserialize_quantizer(config: Any) -> Quantizer | None:
    """The inverse of `serialize_quantizer`."""
    return None if config is None else keras.saving.deserialize_keras_object(config)
