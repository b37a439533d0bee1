"""Quantization for Keras 3: quantization-aware training, calibrated post-training quantization, and
full-integer TFLite export that computes what the Keras model computes.

Example:
    >>> import tfprune.quantization as tfq
    >>> qat = tfq.quantize_model(model)
    >>> qat.compile("adam", "sparse_categorical_crossentropy"); qat.fit(x, y, epochs=1)
    >>> data = tfq.to_tflite(qat, inference_input_type=tf.int8)
"""

from tfprune.quantization.annotate import QuantizeAnnotate, quantize_annotate_layer, quantize_annotate_model
from tfprune.quantization.apply import quantize_apply, quantize_model, quantize_scope
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
from tfprune.quantization.low_bit import (
    BinaryActivationQuantizer,
    BinaryWeightQuantizer,
    DoReFaActivationQuantizer,
    DoReFaWeightQuantizer,
    GridWeightQuantizer,
    KBitActivationQuantizer,
    KBitWeightQuantizer,
    TernaryWeightQuantizer,
)
from tfprune.quantization.layers import (
    QuantizeFoldedBatchNorm,
    QuantizeLayer,
    QuantizeSeparableConv,
    QuantizeWrapper,
)
from tfprune.quantization.normalization import QuantizeBatchNormalization, QuantizeNormalization
from tfprune.quantization.post_training import CalibrationDataError, quantize_post_training
from tfprune.quantization.prune_preserve import PrunePreserveQuantizer, init_sparsity_masks
from tfprune.quantization.quantize_config import QuantizeConfig
from tfprune.quantization.schemes import (
    Default8BitPrunePreserveQuantizeScheme,
    Default8BitScheme,
    LowBitScheme,
    get_scheme,
)
from tfprune.quantization.quantizers import (
    FixedRangeQuantizer,
    LastValueQuantizer,
    MovingAverageQuantizer,
    Quantizer,
)
from tfprune.quantization.tflite import FullIntegerExportError, float_operators, quantization_parameters, to_tflite

__all__ = [
    "BinaryActivationQuantizer",
    "BinaryWeightQuantizer",
    "CALIBRATION_METHODS",
    "CalibrationDataError",
    "Default8BitPrunePreserveQuantizeScheme",
    "Default8BitScheme",
    "DoReFaActivationQuantizer",
    "DoReFaWeightQuantizer",
    "FixedRangeQuantizer",
    "FoldSpec",
    "FullIntegerExportError",
    "GridWeightQuantizer",
    "KBitActivationQuantizer",
    "KBitWeightQuantizer",
    "LAYER_QUANTIZATION",
    "LastValueQuantizer",
    "LayerQuantization",
    "LowBitScheme",
    "MovingAverageQuantizer",
    "NoOpQuantizeConfig",
    "OutputQuantizeConfig",
    "PrunePreserveQuantizer",
    "QuantizeAnnotate",
    "QuantizeConfig",
    "QuantizeBatchNormalization",
    "QuantizeFoldedBatchNorm",
    "QuantizeLayer",
    "QuantizeNormalization",
    "QuantizeSeparableConv",
    "QuantizeWrapper",
    "Quantizer",
    "TernaryWeightQuantizer",
    "UnsupportedLayerQuantizationError",
    "WeightsQuantizeConfig",
    "float_operators",
    "get_scheme",
    "init_sparsity_masks",
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
