"""Full-integer TFLite export of a quantize-aware model, checked to be integer throughout.

The TFLite converter reads every `FakeQuantWithMinMaxVars` range of the model as the scale and zero
point of that tensor, so no representative dataset is needed: the flatbuffer computes with exactly
the trained (or calibrated) ranges. After conversion every operator is inspected; one that still
computes in float (no int8 kernel, or a tensor without a range) fails the export with its name.

Example:
    >>> data = to_tflite(qat_model, inference_input_type=tf.int8)
    >>> open("model_int8.tflite", "wb").write(data)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

# Operators whose float tensors are the model's float interface, not computation.
_INTERFACE_OPS = {"QUANTIZE", "DEQUANTIZE"}
_INTEGER_TYPES = ("int8", "int16", "int32", "int64", "uint8", "bool")


class FullIntegerExportError(ValueError):
    """The model cannot become a full-integer TFLite model (an op without an int8 kernel, a tensor without a range).

    Example:
        >>> try:
        ...     to_tflite(partly_quantized_model)
        ... except FullIntegerExportError as err:
        ...     print(err)   # "... still computes in float in: FULLY_CONNECTED ..."
    """


def _dtype_name(value: Any) -> str:
    import numpy as np

    return np.dtype(value).name


def float_operators(tflite_model: bytes) -> list[str]:
    """Operators of a TFLite model that compute in float (QUANTIZE/DEQUANTIZE at the interface excepted).

    Example:
        >>> float_operators(to_tflite(model))
        []
    """
    from tfprune.interpreter import make_interpreter

    interpreter = make_interpreter(model_content=tflite_model)
    tensors = {t["index"]: _dtype_name(t["dtype"]) for t in interpreter.get_tensor_details()}
    found = []
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        if name in _INTERFACE_OPS:
            continue
        used = [i for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0]
        if any(tensors.get(i, "int8") not in _INTEGER_TYPES for i in used):
            found.append(name)
    return found


def _op_names_in(message: str) -> list[str]:
    names = re.findall(r"'(tfl?\.[A-Za-z0-9_]+)'", message) + re.findall(r"\b(tf\.[A-Z][A-Za-z0-9_]+)", message)
    seen: list[str] = []
    for name in names:
        if name not in seen:
            seen.append(name)
    return seen


def _check_io_type(value: Any, what: str) -> Any:
    import tensorflow as tf

    allowed = (tf.float32, tf.int8, tf.uint8)
    dtype = tf.as_dtype(value) if value is not None else None
    if dtype not in allowed:
        raise ValueError(f"`{what}` must be tf.float32, tf.int8 or tf.uint8; received {value!r}.")
    return dtype


def to_tflite(model: Any, inference_input_type: Any = None, inference_output_type: Any = None) -> bytes:
    """A full-integer TFLite flatbuffer of a quantize-aware (QAT or calibrated) Keras model.

    Args:
        model: a model from `quantize_model`, `quantize_apply` or `quantize_post_training`.
        inference_input_type: tf.float32 (default: the model quantizes its input itself), tf.int8
            or tf.uint8 (the caller quantizes with the input tensor's scale and zero point).
        inference_output_type: the same choices; default: `inference_input_type`.

    Raises:
        FullIntegerExportError: the converted model would compute some op in float; the op is named.

    Example:
        >>> data = to_tflite(qat, inference_input_type=tf.int8)
    """
    import tensorflow as tf

    input_type = _check_io_type(tf.float32 if inference_input_type is None else inference_input_type,
                                "inference_input_type")
    output_type = _check_io_type(input_type if inference_output_type is None else inference_output_type,
                                 "inference_output_type")
    if not _has_quantizers(model):
        raise FullIntegerExportError(
            f"Model '{getattr(model, 'name', model)}' has no fake-quantization: a full-integer export would need "
            "guessed ranges. Fix: quantize it first with quantize_model(model) (then train) or "
            "quantize_post_training(model, representative_data)."
        )
    work = tempfile.mkdtemp(prefix="tfprune-quant-")
    try:
        saved = os.path.join(work, "saved_model")
        model.export(saved, format="tf_saved_model", verbose=False)
        data = _convert(tf.lite.TFLiteConverter.from_saved_model(saved), model.name, input_type, output_type)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floating = float_operators(data)
    if floating:
        raise FullIntegerExportError(
            f"the TFLite model of '{model.name}' still computes in float in: {', '.join(sorted(set(floating)))}. "
            "Fix: give those ops' inputs and outputs quantizers (a QuantizeConfig), or replace the layers."
        )
    return data


def _convert(converter: Any, name: str, input_type: Any, output_type: Any) -> bytes:
    import warnings

    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    # Not `supported_ops = [TFLITE_BUILTINS_INT8]`: TF 2.21 then demands a representative dataset before it
    # looks at the graph. The fake-quant ranges make the model integer; `float_operators` checks it below.
    converter.inference_input_type = input_type
    converter.inference_output_type = output_type
    try:
        with warnings.catch_warnings():
            # "Statistics for quantized inputs were expected": the ranges are in the model.
            warnings.simplefilter("ignore")
            data = converter.convert()
    except Exception as err:  # noqa: BLE001 - the converter raises several types
        message = str(err)
        ops = _op_names_in(message)
        named = f" (op: {', '.join(ops)})" if ops else ""
        first = next((line for line in message.splitlines() if "error" in line.lower()), message[:300])
        raise FullIntegerExportError(
            f"the TFLite converter could not make model '{name}' full integer{named}: {first.strip()} "
            "Fix: replace that layer by one TFLite has an int8 kernel for, or quantize it with a QuantizeConfig "
            "that gives its inputs and outputs ranges."
        ) from None
    return data


def _has_quantizers(model: Any) -> bool:
    from tfprune.quantization import layers
    from tfprune.quantization.normalization import QuantizeBatchNormalization, QuantizeNormalization

    quantize_aware = (layers.QuantizeLayer, layers.QuantizeWrapper, layers.QuantizeFoldedBatchNorm,
                      layers.QuantizeSeparableConv, QuantizeNormalization, QuantizeBatchNormalization)
    return any(isinstance(layer, quantize_aware)
               for layer in model._flatten_layers(include_self=False, recursive=True))


def quantization_parameters(tflite_model: bytes, which: str = "output") -> tuple[float, int]:
    """`(scale, zero_point)` of the first input or output tensor of a TFLite model.

    Example:
        >>> scale, zero_point = quantization_parameters(data, "output")
    """
    from tfprune.interpreter import make_interpreter

    if which not in ("input", "output"):
        raise ValueError(f"`which` must be 'input' or 'output'; received {which!r}.")
    interpreter = make_interpreter(model_content=tflite_model)
    details = interpreter.get_input_details() if which == "input" else interpreter.get_output_details()
    scale, zero_point = details[0]["quantization"]
    return float(scale), int(zero_point)
