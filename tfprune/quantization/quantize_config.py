"""The `QuantizeConfig` protocol: what of a layer is quantized, and how.

A config names the layer's weights and their quantizers, the activation functions and their
quantizers, and the quantizers of its outputs; `QuantizeWrapper` calls it around the layer's
`call`. It is the same protocol as tfmot's, so a tfmot config ports by changing its base class.

Example:
    >>> class MyDenseConfig(QuantizeConfig):
    ...     def get_weights_and_quantizers(self, layer):
    ...         return [(layer.kernel, LastValueQuantizer(per_axis=False))]
    ...     def get_activations_and_quantizers(self, layer):
    ...         return []
    ...     def set_quantize_weights(self, layer, quantize_weights):
    ...         layer.my_kernel = quantize_weights[0]
    ...     def set_quantize_activations(self, layer, quantize_activations):
    ...         pass
    ...     def get_output_quantizers(self, layer):
    ...         return [MovingAverageQuantizer()]
    ...     def get_config(self):
    ...         return {}
"""

from __future__ import annotations

import abc
from typing import Any

from tfprune.quantization.quantizers import Quantizer


class QuantizeConfig(abc.ABC):
    """How one layer is quantized: weights, activation functions and outputs.

    Example:
        >>> config = quantize_config_for(keras.layers.Conv2D(8, 3))   # a built-in config
        >>> config.get_output_quantizers(layer)
    """

    @abc.abstractmethod
    def get_weights_and_quantizers(self, layer: Any) -> list[tuple[Any, Quantizer]]:
        """`(variable, quantizer)` pairs of the weights to quantize."""

    @abc.abstractmethod
    def get_activations_and_quantizers(self, layer: Any) -> list[tuple[Any, Quantizer]]:
        """`(activation callable, quantizer)` pairs: the activation's result is quantized."""

    @abc.abstractmethod
    def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
        """Makes `layer.call` use `quantize_weights` (same order as `get_weights_and_quantizers`)."""

    @abc.abstractmethod
    def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
        """Makes `layer.call` use these activation callables (same order as above)."""

    @abc.abstractmethod
    def get_output_quantizers(self, layer: Any) -> list[Quantizer]:
        """Quantizers applied to the layer's outputs (one, or one per output)."""

    @abc.abstractmethod
    def get_config(self) -> dict:
        """The constructor arguments, for saving."""

    @classmethod
    def from_config(cls, config: dict) -> "QuantizeConfig":
        return cls(**config)
