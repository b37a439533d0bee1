"""The layer registry: everything tfprune knows about each layer type, found by one lookup rule.

Each module here describes one family of built-in layers with a `LayerHandler` and registers it;
`registry` holds the table (exact class first, then the class hierarchy). A custom layer joins with
one call, `tfprune.register_layer(MyLayer, handler)`, and gets every capability its handler declares:
magnitude-prunable weights, MACs, dependency-graph tracing and rebuild, zeroing for verification,
BatchNormalization folding and quantization (a `QuantizationSpec`, read by `tfprune.quantization`).
keras_hub layers (Transformer blocks, position embeddings) are handled by `keras_hub_handlers`,
imported the first time a keras_hub layer is looked up.

Example:
    >>> class Scale(keras.layers.Layer): ...          # per-channel multiplier on the last axis
    >>> tfprune.register_layer(Scale, tfprune.layers.PerChannel())
    >>> tfprune.layers.get_handler(Scale()).keeps_weights    # True
"""

from tfprune.layers.base import (
    ELEMENTWISE_ACTIVATIONS,
    LayerHandler,
    PrunableLayer,
    Unknown,
    Unsupported,
    UnsupportedLayerError,
    activation_name,
    check_channels_last,
    static_shape,
)
from tfprune.layers.quantization_spec import QuantizationSpec
from tfprune.layers.registry import (
    get_handler,
    is_pass_through,
    is_prunable,
    lookup,
    prunable_weights,
    register_layer,
    registered_classes,
    supported_layer_classes,
    unsupported_message,
)
from tfprune.layers.passthrough import PassThrough, PerChannel
from tfprune.layers.conv import Conv, ConvTranspose, Depthwise, Separable
from tfprune.layers.dense import DenseHandler, EinsumDenseHandler
from tfprune.layers.embedding import EmbeddingHandler
from tfprune.layers.normalization import (
    LAYER_NORM_MODES,
    BatchNormalizationHandler,
    ChannelNormalization,
    KeepsWeights,
    LayerScaleHandler,
    check_layer_norm_mode,
)
from tfprune.layers.merge import ConcatenateHandler, Merge
from tfprune.layers.reshape import FlattenHandler, ReshapeHandler
from tfprune.layers.recurrent import GenericRNNHandler, RecurrentHandler
from tfprune.layers.attention import ATTENTION_MODES, MultiHeadAttentionHandler, check_attention_mode
from tfprune.layers.pruned_normalization import PrunedLayerNormalization, PrunedRMSNormalization
from tfprune.layers.deferred import defer_package, defer_serializable

# keras_hub: handlers and pruned block classes are imported only for models that use keras_hub
defer_package("keras_hub", "tfprune.layers.keras_hub_handlers")
for _name in ("PrunedTransformerEncoder", "PrunedTransformerDecoder"):
    defer_serializable(f"tfprune>{_name}", "tfprune.layers.pruned_transformer", _name)

__all__ = [
    "ATTENTION_MODES",
    "BatchNormalizationHandler",
    "ChannelNormalization",
    "ConcatenateHandler",
    "Conv",
    "ConvTranspose",
    "DenseHandler",
    "Depthwise",
    "ELEMENTWISE_ACTIVATIONS",
    "EinsumDenseHandler",
    "EmbeddingHandler",
    "FlattenHandler",
    "GenericRNNHandler",
    "KeepsWeights",
    "LAYER_NORM_MODES",
    "LayerHandler",
    "LayerScaleHandler",
    "Merge",
    "MultiHeadAttentionHandler",
    "PassThrough",
    "PerChannel",
    "PrunableLayer",
    "PrunedLayerNormalization",
    "PrunedRMSNormalization",
    "QuantizationSpec",
    "RecurrentHandler",
    "ReshapeHandler",
    "Separable",
    "Unknown",
    "Unsupported",
    "UnsupportedLayerError",
    "activation_name",
    "check_attention_mode",
    "check_channels_last",
    "check_layer_norm_mode",
    "get_handler",
    "is_pass_through",
    "is_prunable",
    "lookup",
    "prunable_weights",
    "register_layer",
    "registered_classes",
    "static_shape",
    "supported_layer_classes",
    "unsupported_message",
]
