"""Recurrent layers: SimpleRNN, GRU and LSTM (and `keras.layers.RNN` over their cells).

Their input and recurrent kernels are magnitude-prunable. The dependency graph does not trace
them, so their channels are frozen in structured pruning.

Example:
    >>> get_handler(keras.layers.LSTM(8)).prunable_weights   # ('kernel', 'recurrent_kernel')
"""

from __future__ import annotations

from typing import Any

import keras

from tfprune.layers.base import LayerHandler
from tfprune.layers.registry import register_layer

_CELLS = (keras.layers.SimpleRNNCell, keras.layers.GRUCell, keras.layers.LSTMCell)


class RecurrentHandler(LayerHandler):
    """A recurrent layer: the input and recurrent kernels of its cell are pruned."""

    prunable_weights = ("kernel", "recurrent_kernel")


class GenericRNNHandler(LayerHandler):
    """`keras.layers.RNN(cell)`: prunable when every cell is a built-in cell (stacked cells included)."""

    def _cells(self, layer: Any) -> list[Any]:
        cell = layer.cell
        return list(getattr(cell, "cells", [cell]))

    def prunable_weight_names(self, layer: Any) -> tuple[str, ...]:
        cells = self._cells(layer)
        if not cells or not all(isinstance(c, _CELLS) for c in cells):
            return ()
        if len(cells) == 1:
            return ("kernel", "recurrent_kernel")
        names = []
        for cell in cells:
            names += [f"{cell.name}/kernel", f"{cell.name}/recurrent_kernel"]
        return tuple(names)


for _cls in (keras.layers.SimpleRNN, keras.layers.GRU, keras.layers.LSTM):
    register_layer(_cls, RecurrentHandler())
register_layer(keras.layers.RNN, GenericRNNHandler())
