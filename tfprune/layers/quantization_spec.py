"""`QuantizationSpec`: how a layer type is quantized, declared on its handler as plain data.

A handler's `quantization` attribute (None: not declared) says what TFLite's int8 scheme does with
the layer; `tfprune.quantization` reads it through the layer registry and builds the `QuantizeConfig`
from it, for the default 8-bit, the prune-preserving and the low-bit schemes alike. Nothing here
imports tfprune.quantization.

Kinds:

* 'weights': the named weights get a symmetric narrow-range weight quantizer, per channel over their
  `channel_dims` trailing axes (or per tensor), and the output an asymmetric range; a fused
  softmax / sigmoid / tanh `activation=` also gets a range on its input and TFLite's fixed output range;
* 'output': only the output gets a range (Add, average pooling, BatchNormalization);
* 'activation': an activation layer: an output range, TFLite's fixed one for softmax / sigmoid / tanh;
* 'normalization': LayerNormalization / RMSNormalization over the last axis, computed as TFLite's
  int8 op chain;
* 'none': nothing is quantized: TFLite runs the layer on its input's scale (max pooling, reshape);
* 'config': `config` names a registered `QuantizeConfig` class (`'package>Name'`, see
  `keras.saving.register_keras_serializable`), built with no arguments.

A layer whose handler declares nothing gets an output range if it has no weights, and is refused by
the quantization schemes (with the fixes named) if it has weights.

Example:
    >>> handler.quantization = QuantizationSpec("weights", ("kernel",), folds_batchnorm=True,
    ...                                         fuses_activation=True)        # a Conv2D-like layer
"""

from __future__ import annotations

import dataclasses

KINDS = ("weights", "output", "activation", "normalization", "none", "config")


@dataclasses.dataclass(frozen=True)
class QuantizationSpec:
    """What the quantization schemes do with a layer type (see the module docstring for `kind`).

    Args:
        kind: one of `KINDS`.
        weights: ('weights' only) the weight attributes to quantize, e.g. `("kernel",)`.
        channel_dims: trailing axes of those weights that form one channel (1: conv, dense; 2:
            depthwise kernels, whose channel is input x multiplier).
        per_channel: one scale per channel (False: one per tensor, as TFLite's FULLY_CONNECTED needs).
        folds_batchnorm: a BatchNormalization read only by this layer folds into its first weight
            (with `channel_dims` channel axes), as TFLite folds it.
        fuses_activation: TFLite fuses a following ReLU / ReLU6 into the op, so the op's own output
            needs no range when that activation is its only reader.
        same_scale_inputs: TFLite wants the inputs on the output's scale (Concatenate).
        separable: depthwise then pointwise weights, with a range for the tensor between (TFLite's
            two ops).
        config: ('config' only) the registered name of a `QuantizeConfig` class.

    Example:
        >>> QuantizationSpec("weights", ("kernel",), channel_dims=2, folds_batchnorm=True)  # depthwise
        >>> QuantizationSpec("output", fuses_activation=True)                              # Add
    """

    kind: str
    weights: tuple[str, ...] = ()
    channel_dims: int = 1
    per_channel: bool = True
    folds_batchnorm: bool = False
    fuses_activation: bool = False
    same_scale_inputs: bool = False
    separable: bool = False
    config: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"QuantizationSpec kind must be one of {', '.join(KINDS)}; received {self.kind!r}.")
        weights = (self.weights,) if isinstance(self.weights, str) else tuple(self.weights)
        object.__setattr__(self, "weights", weights)
        if (self.kind == "weights") != bool(weights):
            raise ValueError(
                f"QuantizationSpec({self.kind!r}) received weights={weights!r}. Fix: name the weights "
                "(e.g. weights=('kernel',)) exactly when kind='weights'."
            )
        if (self.kind == "config") != bool(self.config):
            raise ValueError(
                f"QuantizationSpec({self.kind!r}) received config={self.config!r}. Fix: give config, the "
                "registered name of a QuantizeConfig class ('package>Name'), exactly when kind='config'."
            )
        if isinstance(self.channel_dims, bool) or not isinstance(self.channel_dims, int) or self.channel_dims < 1:
            raise ValueError(f"`channel_dims` must be an int >= 1; received {self.channel_dims!r}.")
        if self.folds_batchnorm and self.kind != "weights":
            raise ValueError("`folds_batchnorm` needs kind='weights' (the folded kernel is quantized).")
        if self.separable and len(weights) != 2:
            raise ValueError(
                f"a separable layer has two weights (depthwise, pointwise); received weights={weights!r}."
            )


OUTPUT = QuantizationSpec("output")
ACTIVATION = QuantizationSpec("activation")
NORMALIZATION = QuantizationSpec("normalization")
INPUT_SCALE = QuantizationSpec("none")  # runs on its input's scale: nothing to quantize

__all__ = ["ACTIVATION", "INPUT_SCALE", "KINDS", "NORMALIZATION", "OUTPUT", "QuantizationSpec"]
