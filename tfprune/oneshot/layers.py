"""How one-shot pruning sees a layer: its kernel as a matrix `(inputs, outputs)` and its inputs as rows.

A layer computes `rows(x) @ matrix()` (plus bias and activation), so Wanda and SparseGPT can treat every
supported layer as a linear map. Supported: `Dense`, `EinsumDense` whose contracted axes are the trailing
axes of its input (the `MultiHeadAttention` projections are such layers), `Conv1D`/`Conv2D`
(channels_last, `groups=1`; a k x k kernel is seen through its input patches, so 1x1 convolutions are plain
matrices).

    >>> layer = keras.layers.Dense(3); layer.build((None, 4))
    >>> view = linear_view(layer); view.inputs, view.outputs
    (4, 3)
"""

from __future__ import annotations

import numpy as np
import keras
import tensorflow as tf

SUPPORTED = "Dense, EinsumDense (contracting its input's trailing axes), MultiHeadAttention, Conv1D, Conv2D"


class UnsupportedOneShotLayer(ValueError):
    """A layer that one-shot pruning cannot see as a matrix; the message says why and what to do.

    Example:
        >>> try:
        ...     prune(model, x_calib, layers=["depthwise"])
        ... except UnsupportedOneShotLayer as error:
        ...     print(error)
    """


class LinearView:
    """A layer's kernel as a `(inputs, outputs)` matrix and its call input as `(samples, inputs)` rows."""

    def __init__(self, layer: keras.layers.Layer, shape: tuple[int, ...], perm: tuple[int, ...], inputs: int):
        self.layer = layer
        self._shape, self._perm, self.inputs = shape, perm, inputs
        self.outputs = int(np.prod(shape)) // inputs

    def matrix(self) -> np.ndarray:
        """The kernel, permuted and reshaped to `(inputs, outputs)`."""
        kernel = keras.ops.convert_to_numpy(self.layer.kernel)
        return np.transpose(kernel, self._perm).reshape(self.inputs, self.outputs)

    def assign(self, matrix: np.ndarray) -> None:
        """Writes a `(inputs, outputs)` matrix back into the kernel."""
        permuted = [self._shape[p] for p in self._perm]
        kernel = np.transpose(np.reshape(matrix, permuted), np.argsort(self._perm))
        self.layer.kernel.assign(kernel.astype(keras.backend.standardize_dtype(self.layer.kernel.dtype)))

    def rows(self, x: object) -> np.ndarray:
        """The layer's call input as float32 rows `(samples, inputs)`."""
        return np.asarray(keras.ops.convert_to_numpy(x), np.float32).reshape(-1, self.inputs)


class ConvView(LinearView):
    """A convolution: rows are the input patches, ordered like the kernel's `(k..., cin)` axes."""

    def rows(self, x: object) -> np.ndarray:
        layer = self.layer
        x = tf.convert_to_tensor(keras.ops.convert_to_numpy(x), tf.float32)
        kernel_size, strides, rates = layer.kernel_size, layer.strides, layer.dilation_rate
        padding = layer.padding.upper()
        if len(kernel_size) == 1:  # Conv1D as a one-row Conv2D
            if padding == "CAUSAL":
                x = tf.pad(x, [[0, 0], [(kernel_size[0] - 1) * rates[0], 0], [0, 0]])
                padding = "VALID"
            x, kernel_size, strides, rates = x[:, None], (1,) + kernel_size, (1,) + strides, (1,) + rates
        if kernel_size == (1, 1) and rates == (1, 1) and (padding == "VALID" or strides == (1, 1)):
            patches = x[:, :: strides[0], :: strides[1]]
        else:
            patches = tf.image.extract_patches(
                x, [1, *kernel_size, 1], [1, *strides, 1], [1, *rates, 1], padding=padding
            )
        return patches.numpy().reshape(-1, self.inputs)


def _einsum_view(layer: keras.layers.Layer) -> LinearView:
    equation = layer.equation.replace(" ", "")
    operands, output = equation.split("->")
    x_spec, k_spec = operands.split(",")
    x_letters = x_spec.replace("...", "")
    misplaced = x_spec.count("...") and not x_spec.startswith("...")
    if "..." in k_spec or "..." in output.replace("...", "", 1) or misplaced:
        raise UnsupportedOneShotLayer(f"EinsumDense '{layer.name}': equation '{equation}' uses an ellipsis in the "
                                      "kernel or inside the input. Fix: leave this layer out of `layers`.")
    contracted = [c for c in x_letters if c in k_spec and c not in output]
    shared = [c for c in k_spec if c in x_letters and c in output]
    if shared or not contracted or x_letters[len(x_letters) - len(contracted):] != "".join(contracted):
        raise UnsupportedOneShotLayer(
            f"EinsumDense '{layer.name}': equation '{equation}' does not contract the trailing axes of its input "
            "with the kernel (one-shot pruning needs `x[..., inputs] @ kernel[inputs, outputs]`). "
            "Fix: leave this layer out of `layers`."
        )
    perm = tuple(k_spec.index(c) for c in contracted) + tuple(i for i, c in enumerate(k_spec) if c not in contracted)
    shape = tuple(int(d) for d in layer.kernel.shape)
    inputs = int(np.prod([shape[k_spec.index(c)] for c in contracted]))
    return LinearView(layer, shape, perm, inputs)


def linear_view(layer: keras.layers.Layer) -> LinearView:
    """The `LinearView` of a supported, built layer; `UnsupportedOneShotLayer` otherwise.

    Example:
        >>> conv = keras.layers.Conv2D(8, 3); conv.build((None, 6, 6, 2)); linear_view(conv).inputs
        18
    """
    if not layer.built:
        raise UnsupportedOneShotLayer(f"Layer '{layer.name}' is not built. Fix: build the model (give it an "
                                      "`keras.Input`) before pruning.")
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise UnsupportedOneShotLayer(f"Layer '{layer.name}' has LoRA or quantization enabled. Fix: merge or "
                                      "disable it (or leave the layer out of `layers`).")
    shape = tuple(int(d) for d in getattr(layer, "kernel").shape) if hasattr(layer, "kernel") else ()
    if isinstance(layer, keras.layers.Dense):
        return LinearView(layer, shape, (0, 1), shape[0])
    if isinstance(layer, keras.layers.EinsumDense):
        return _einsum_view(layer)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)) and not isinstance(
        layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.DepthwiseConv2D,
                keras.layers.SeparableConv2D, keras.layers.SeparableConv1D, keras.layers.DepthwiseConv1D)
    ):
        if layer.groups != 1 or layer.data_format != "channels_last":
            raise UnsupportedOneShotLayer(
                f"Convolution '{layer.name}' has groups={layer.groups}, data_format='{layer.data_format}'; one-shot "
                "pruning supports groups=1 with channels_last. Fix: leave this layer out of `layers`."
            )
        return ConvView(layer, shape, tuple(range(len(shape))), int(np.prod(shape[:-1])))
    raise UnsupportedOneShotLayer(
        f"Layer '{layer.name}' ({type(layer).__name__}) is not supported by one-shot pruning; supported: "
        f"{SUPPORTED}. Fix: leave it out of `layers`."
    )


def attention_projections(layer: keras.layers.MultiHeadAttention) -> list[tuple[str, keras.layers.Layer]]:
    """The `(suffix, EinsumDense)` projections of a MultiHeadAttention layer, in call order.

    Example:
        >>> mha = keras.layers.MultiHeadAttention(2, 4); x = keras.Input((5, 8)); _ = mha(x, x)
        >>> [name for name, _ in attention_projections(mha)]
        ['query', 'key', 'value', 'output']
    """
    names = (("query", "_query_dense"), ("key", "_key_dense"), ("value", "_value_dense"),
             ("gate", "_gate_dense"), ("output", "_output_dense"))
    return [(name, getattr(layer, attr)) for name, attr in names if getattr(layer, attr, None) is not None]
