"""Quantization schemes: which `QuantizeConfig` each layer gets when a model is quantized.

* `Default8BitScheme`: TFLite's int8 specification (each layer's `QuantizationSpec`, declared by its
  handler in `tfprune.layers`, read through `configs.layer_quantization`).
* `Default8BitPrunePreserveQuantizeScheme`: the same, with every weight quantizer wrapped in a
  `PrunePreserveQuantizer` whose mask is fixed from the weights' zeros: pruned weights stay zero
  through QAT and in the int8 TFLite kernel (tfmot's scheme of that name, for Keras 3).
* `LowBitScheme`: 2..8-bit, ternary, binary or DoReFa weights and 2..8-bit, binary or DoReFa
  activations (`tfprune.quantization.low_bit`), optionally sparsity-preserving. The model's output
  tensors, its quantized inputs, fixed-range outputs (softmax, sigmoid, tanh) and the tensor between
  a separable convolution's two halves keep 8-bit activation quantizers.

A scheme answers `layer_quantization(layer)` (the row built from the layer's spec), `adapt_config(config, layer, at_output)`
(a scheme's change to a row's config) and `finalize(model)` (after the weights are copied).

Example:
    >>> quantize_apply(annotated, scheme=Default8BitPrunePreserveQuantizeScheme())
    >>> quantize_apply(annotated, scheme="Default8BitPrunePreserveQuantizeScheme")   # by name, as tfmot's
    >>> quantize_model(model, scheme=LowBitScheme(weights="ternary", activation_bits=8))
"""

from __future__ import annotations

from typing import Any

from tfprune.quantization import configs as configs_lib
from tfprune.quantization import low_bit
from tfprune.quantization.configs import LayerQuantization, OutputQuantizeConfig, WeightsQuantizeConfig
from tfprune.quantization.normalization import is_normalization
from tfprune.quantization.prune_preserve import PrunePreserveQuantizer, init_sparsity_masks
from tfprune.quantization.quantize_config import QuantizeConfig
from tfprune.quantization.quantizers import LastValueQuantizer, MovingAverageQuantizer, Quantizer


def _check_delay(freeze_bn_delay: Any) -> int | None:
    if freeze_bn_delay is not None and (isinstance(freeze_bn_delay, bool) or not isinstance(freeze_bn_delay, int)
                                        or freeze_bn_delay < 0):
        raise ValueError(f"`freeze_bn_delay` must be None or an int >= 0; received {freeze_bn_delay!r}.")
    return freeze_bn_delay


class Default8BitScheme:
    """TFLite's int8 scheme: the row of each layer's `QuantizationSpec` (`configs.layer_quantization`).

    Args:
        freeze_bn_delay: folded BatchNormalization stops updating its statistics after this many
            training steps (None: never).

    Example:
        >>> quantize_apply(annotated, scheme=Default8BitScheme(freeze_bn_delay=2000))
    """

    preserve_sparsity = False

    def __init__(self, freeze_bn_delay: int | None = None) -> None:
        self.freeze_bn_delay = _check_delay(freeze_bn_delay)

    def layer_quantization(self, layer: Any) -> LayerQuantization | None:
        row = configs_lib.layer_quantization(layer)
        if row is not None and row.normalization and not is_normalization(layer):
            return None  # another axis, or rms_scaling: no int8 chain for it
        return row

    def adapt_config(self, config: QuantizeConfig, layer: Any, at_output: bool) -> QuantizeConfig:
        """The config the scheme uses for `layer` (`at_output`: the layer computes a model output)."""
        return config

    def finalize(self, model: Any) -> None:
        """Runs once on the quantized model, after its weights are copied."""


def _preserving(quantizer: Quantizer | None) -> Quantizer | None:
    if quantizer is None or isinstance(quantizer, PrunePreserveQuantizer):
        return quantizer
    return PrunePreserveQuantizer(quantizer)


class Default8BitPrunePreserveQuantizeScheme(Default8BitScheme):
    """The default 8-bit scheme, with pruned (zero) weights kept exactly zero through QAT and export.

    Pass a stripped pruned model (`tfprune.strip_pruning`); `quantize_model(model, preserve_sparsity=True)`
    strips a still-wrapped one itself. The masks are taken from the zeros when the model is quantized.

    Example:
        >>> qat = quantize_apply(quantize_annotate_model(strip_pruning(pruned)),
        ...                      Default8BitPrunePreserveQuantizeScheme())
    """

    preserve_sparsity = True

    def adapt_config(self, config: QuantizeConfig, layer: Any, at_output: bool) -> QuantizeConfig:
        if isinstance(config, WeightsQuantizeConfig):
            return WeightsQuantizeConfig(config.weight_attrs, _preserving(config.weight_quantizer),
                                         config.output_quantizer, config.activation_input_quantizer)
        return config

    def finalize(self, model: Any) -> None:
        init_sparsity_masks(model)


class LowBitScheme(Default8BitScheme):
    """Low-bit weights and activations on the default scheme's rows (the same `QuantizationSpec`s).

    Args:
        weights: 'uniform' (`weight_bits` symmetric per channel; Dense per tensor, as in the default
            scheme), 'ternary' (TWN), 'binary' (XNOR-Net) or 'dorefa' (`weight_bits` 2..7).
        weight_bits: bits of 'uniform' / 'dorefa' weights (2..8).
        activations: 'uniform' (`activation_bits` asymmetric, learned ranges), 'binary' (sign, STE) or
            'dorefa' (clip to [0, 1], `activation_bits`).
        activation_bits: bits of 'uniform' / 'dorefa' activations (2..8).
        preserve_sparsity: keep zero weights zero (as `Default8BitPrunePreserveQuantizeScheme`).
        freeze_bn_delay: as in `Default8BitScheme`.

    Example:
        >>> qat = quantize_model(model, scheme=LowBitScheme(weights="ternary", activations="uniform",
        ...                                                  activation_bits=8))
    """

    def __init__(self, weights: str = "uniform", weight_bits: int = 8, activations: str = "uniform",
                 activation_bits: int = 8, preserve_sparsity: bool = False,
                 freeze_bn_delay: int | None = None) -> None:
        super().__init__(freeze_bn_delay)
        if weights not in low_bit.WEIGHT_QUANTIZERS:
            raise ValueError(f"unknown `weights` {weights!r}. Fix: use one of {', '.join(low_bit.WEIGHT_QUANTIZERS)}.")
        if activations not in low_bit.ACTIVATION_QUANTIZERS:
            raise ValueError(f"unknown `activations` {activations!r}. Fix: use one of "
                             f"{', '.join(low_bit.ACTIVATION_QUANTIZERS)}.")
        self.weights, self.activations = weights, activations
        self.weight_bits, self.activation_bits = weight_bits, activation_bits
        self.preserve_sparsity = bool(preserve_sparsity)
        self.weight_quantizer(True, 1)  # validates the bit widths now
        self.activation_quantizer()

    def weight_quantizer(self, per_axis: bool, channel_dims: int) -> Quantizer:
        """A new weight quantizer of this scheme."""
        if self.weights == "uniform" and self.weight_bits == 8:
            return LastValueQuantizer(8, per_axis=per_axis, channel_dims=channel_dims)
        cls = low_bit.WEIGHT_QUANTIZERS[self.weights]
        if self.weights in ("uniform", "dorefa"):
            return cls(self.weight_bits, per_axis=per_axis, channel_dims=channel_dims)
        return cls(per_axis=per_axis, channel_dims=channel_dims)

    def activation_quantizer(self) -> Quantizer:
        """A new activation quantizer of this scheme."""
        if self.activations == "uniform":
            return MovingAverageQuantizer() if self.activation_bits == 8 else \
                low_bit.KBitActivationQuantizer(self.activation_bits)
        if self.activations == "dorefa":
            return low_bit.DoReFaActivationQuantizer(self.activation_bits)
        return low_bit.BinaryActivationQuantizer()

    def _activation(self, quantizer: Quantizer | None, at_output: bool) -> Quantizer | None:
        if at_output or type(quantizer) is not MovingAverageQuantizer:
            return quantizer  # None, fixed ranges (softmax) and the model's outputs stay as they are
        return self.activation_quantizer()

    def adapt_config(self, config: QuantizeConfig, layer: Any, at_output: bool) -> QuantizeConfig:
        if isinstance(config, WeightsQuantizeConfig):
            weight = config.weight_quantizer
            if type(weight) is LastValueQuantizer:
                weight = self.weight_quantizer(weight.per_axis, weight.channel_dims)
            config = WeightsQuantizeConfig(config.weight_attrs,
                                           _preserving(weight) if self.preserve_sparsity else weight,
                                           self._activation(config.output_quantizer, at_output),
                                           self._activation(config.activation_input_quantizer, at_output))
        elif isinstance(config, OutputQuantizeConfig):
            config = OutputQuantizeConfig(self._activation(config.output_quantizer, at_output))
        return config

    def finalize(self, model: Any) -> None:
        if self.preserve_sparsity:
            init_sparsity_masks(model)


SCHEMES = {"Default8BitQuantizeScheme": Default8BitScheme, "Default8BitScheme": Default8BitScheme,
           "Default8BitPrunePreserveQuantizeScheme": Default8BitPrunePreserveQuantizeScheme,
           "LowBitScheme": LowBitScheme}


def get_scheme(scheme: Any) -> Default8BitScheme:
    """A scheme instance from an instance, a scheme class or its name (tfmot's names included).

    Example:
        >>> get_scheme("Default8BitPrunePreserveQuantizeScheme")
    """
    if scheme is None:
        return Default8BitScheme()
    if isinstance(scheme, str):
        if scheme not in SCHEMES:
            raise ValueError(f"unknown quantization scheme {scheme!r}. Fix: use one of {', '.join(SCHEMES)}, or an "
                             "instance of tfprune.quantization.Default8BitScheme (or a subclass).")
        return SCHEMES[scheme]()
    if isinstance(scheme, type) and issubclass(scheme, Default8BitScheme):
        return scheme()
    if isinstance(scheme, Default8BitScheme):
        return scheme
    raise TypeError(f"`scheme` must be a scheme name, class or instance; received {type(scheme).__name__}. "
                    f"Fix: use one of {', '.join(SCHEMES)}.")


__all__ = ["Default8BitPrunePreserveQuantizeScheme", "Default8BitScheme", "LowBitScheme", "SCHEMES", "get_scheme"]
