"""MultiHeadAttention: its query, key, value and output projections are magnitude-prunable.

The dependency graph does not trace attention, so its channels are frozen in structured pruning.

Example:
    >>> get_handler(keras.layers.MultiHeadAttention(2, 4)).prunable_weights[0]   # 'query/kernel'
"""

from __future__ import annotations

import keras

from tfprune.layers.base import LayerHandler
from tfprune.layers.registry import register_layer


class MultiHeadAttentionHandler(LayerHandler):
    """MultiHeadAttention: the kernels of its four projections are pruned."""

    prunable_weights = ("query/kernel", "key/kernel", "value/kernel", "attention_output/kernel")


register_layer(keras.layers.MultiHeadAttention, MultiHeadAttentionHandler())
