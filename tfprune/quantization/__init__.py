"""Quantization for Keras 3: quantization-aware training, calibrated post-training quantization, and
full-integer TFLite export that computes what the Keras model computes.

Example:
    >>> import tfprune.quantization as tfq
    >>> qat = tfq.quantize_model(model)
    >>> qat.compile("adam", "sparse_categorical_crossentropy"); qat.fit(x, y, epochs=1)
    >>> data = tfq.to_tflite(qat, inference_input_type=tf.int8)
"""

from tfprune.quantization.annotate import QuantizeAnnotate, quantize_annotate_layer, quantize_annotate_model
from tfprune.quantization.apply import Default8BitScheme, quantize_apply, quantize_model, quantize_scope
from tfprune.quantization.configs import (
    LAYER_QUANTIZATION,
    FoldSpec,
    LayerQuantization,
    NoOpQuantizeConfig,
    OutputQuantizeConfig,
    UnsupportedLayerQuantizationError,
    WeightsQuantizeConfig,
    layer_quantization,
    quantize_config_for,
)
from tfprune.quantization.calibration import METHODS as CALIBRATION_METHODS
from tfprune.quantization.layers import (
    QuantizeFoldedBatchNorm,
    QuantizeLayer,
    QuantizeSeparableConv,
    QuantizeWrapper,
)
from tfprune.quantization.post_training import CalibrationDataError, quantize_post_training
from tfprune.quantization.quantize_config import QuantizeConfig
from tfprune.quantization.quantizers import (
    FixedRangeQuantizer,
    LastValueQuantizer,
    MovingAverageQuantizer,
    Quantizer,
)
from tfprune.quantization.tflite import FullIntegerExportError, float_operators, quantization_parameters, to_tflite

__all__ = [
    "CALIBRATION_METHODS",
    "CalibrationDataError",
    "Default8BitScheme",
    "FixedRangeQuantizer",
    "FoldSpec",
    "FullIntegerExportError",
    "LAYER_QUANTIZATION",
    "LastValueQuantizer",
    "LayerQuantization",
    "MovingAverageQuantizer",
    "NoOpQuantizeConfig",
    "OutputQuantizeConfig",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeFoldedBatchNorm",
    "QuantizeLayer",
    "QuantizeSeparableConv",
    "QuantizeWrapper",
    "Quantizer",
    "UnsupportedLayerQuantizationError",
    "WeightsQuantizeConfig",
    "float_operators",
    "layer_quantization",
    "quantization_parameters",
    "quantize_annotate_layer",
    "quantize_annotate_model",
    "quantize_apply",
    "quantize_config_for",
    "quantize_model",
    "quantize_post_training",
    "quantize_scope",
    "to_tflite",
]
