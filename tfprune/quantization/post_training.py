"""Post-training quantization: calibrate the activation ranges of a quantize-aware model on data.

Example:
    >>> ptq = quantize_post_training(model, x_calibration[:512], method="entropy")
    >>> data = to_tflite(ptq, inference_input_type=tf.int8)
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

import keras
import numpy as np

from tfprune.quantization import calibration
from tfprune.quantization.apply import quantize_model
from tfprune.quantization.layers import (
    QuantizeFoldedBatchNorm,
    QuantizeLayer,
    QuantizeSeparableConv,
    QuantizeWrapper,
)
from tfprune.quantization.quantizers import MovingAverageQuantizer, recording_activations


class CalibrationDataError(ValueError):
    """Calibration data that does not fit the model (shape, dtype, type or emptiness).

    Example:
        >>> try:
        ...     quantize_post_training(model, np.zeros((4, 7)))
        ... except CalibrationDataError as err:
        ...     print(err)   # names the shape received and the one expected
    """


def _input_specs(model: keras.Model) -> list[tuple[tuple, str]]:
    return [(tuple(t.shape)[1:], str(t.dtype)) for t in model.inputs]


def _as_inputs(element: Any) -> Any:
    """The model inputs of one element: `x` of an `(x, y)` / `(x, y, w)` tuple, else the element itself."""
    if isinstance(element, dict):
        return element
    if isinstance(element, tuple) and len(element) in (2, 3):
        return element[0]
    return element


def _check_batch(batch: Any, specs: list[tuple[tuple, str]], where: str) -> list[np.ndarray]:
    arrays = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    if len(arrays) != len(specs):
        raise CalibrationDataError(
            f"{where}: the model has {len(specs)} input(s), the calibration data gives {len(arrays)}. Fix: yield one "
            "array per model input (or (inputs, labels) tuples).")
    out = []
    for array, (shape, dtype) in zip(arrays, specs):
        array = np.asarray(array)
        if array.dtype.kind not in "fiub":
            raise CalibrationDataError(
                f"{where}: calibration data has dtype {array.dtype}, the model input is {dtype}. Fix: pass numeric "
                "arrays (images as float32, scaled as in training).")
        if array.ndim != len(shape) + 1 or any(e is not None and e != g for e, g in zip(shape, array.shape[1:])):
            raise CalibrationDataError(
                f"{where}: calibration batch has shape {array.shape}, the model expects (batch,) + {shape}. Fix: pass "
                "batches of model inputs with a leading batch axis.")
        out.append(array.astype(dtype if "float" in dtype else array.dtype, copy=False))
    return out


def _batches(data: Any, specs: list, batch_size: int) -> tuple[Iterator[list[np.ndarray]], int | None]:
    """Validates the first batch (before any work) and returns an iterator over all batches and their count."""
    import tensorflow as tf

    if isinstance(data, np.ndarray) or (isinstance(data, (list, tuple)) and data and isinstance(data[0], np.ndarray)
                                        and len(specs) > 1):
        arrays = _check_batch(data, specs, "representative_data")
        n = len(arrays[0])
        if n == 0:
            raise CalibrationDataError("representative_data is empty. Fix: pass at least one sample.")
        count = -(-n // batch_size)
        return (iter([[a[i:i + batch_size] for a in arrays] for i in range(0, n, batch_size)]), count)
    if isinstance(data, tf.data.Dataset):
        iterator: Iterator = (keras.tree.map_structure(lambda t: t.numpy(), e) for e in data)
        cardinality = int(data.cardinality())
        count = cardinality if cardinality >= 0 else None
    elif callable(data) and not hasattr(data, "__next__"):
        iterator, count = iter(data()), None  # a generator function, as TFLite's representative_dataset
    elif isinstance(data, Iterable):
        iterator = iter(data)
        count = len(data) if hasattr(data, "__len__") else None
    else:
        raise CalibrationDataError(
            f"representative_data must be an array, a tf.data.Dataset, a generator or an iterable of batches; "
            f"received {type(data).__name__}.")
    try:
        first = next(iterator)
    except StopIteration:
        raise CalibrationDataError("representative_data yields nothing. Fix: pass at least one batch.") from None
    checked = _check_batch(_as_inputs(first), specs, "representative_data (first batch)")

    def rest() -> Iterator[list[np.ndarray]]:
        yield checked
        for index, element in enumerate(iterator, start=2):
            yield _check_batch(_as_inputs(element), specs, f"representative_data (batch {index})")

    return rest(), count


def activation_quantizers(model: keras.Model) -> list[tuple[MovingAverageQuantizer, dict]]:
    """`(quantizer, variables)` of every learned-range activation quantizer in a quantize-aware model."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, QuantizeLayer):
            pairs = [(layer.quantizer, layer.quantizer_vars)]
        elif isinstance(layer, QuantizeWrapper):
            quantizers = [q for _, q in layer.quantize_config.get_activations_and_quantizers(layer.layer)]
            pairs = list(zip(quantizers, layer.activation_vars)) + list(zip(layer.output_quantizers, layer.output_vars))
        elif isinstance(layer, QuantizeFoldedBatchNorm):
            pairs = list(zip(layer.output_quantizers, layer.output_vars))
        elif isinstance(layer, QuantizeSeparableConv):
            pairs = [(layer.middle_quantizer, layer.middle_vars)]
            pairs += list(zip(layer.output_quantizers, layer.output_vars))
            if layer.activation_input_vars is not None:
                pairs.append((layer.quantize_config.activation_input_quantizer, layer.activation_input_vars))
        elif hasattr(layer, "activation_quantizer_pairs"):
            pairs = layer.activation_quantizer_pairs()
        else:
            continue
        found.extend((q, v) for q, v in pairs if isinstance(q, MovingAverageQuantizer))
    return found


def quantize_post_training(model: keras.Model, representative_data: Any, method: str = "minmax",
                           percentile: float = 99.99, batch_size: int = 32, max_batches: int | None = None,
                           num_bins: int = 2048, verbose: int = 1) -> keras.Model:
    """A quantize-aware copy of `model` whose activation ranges are calibrated on `representative_data`.

    The result is the same kind of model as `quantize_model` gives (BatchNormalization folded,
    weights per-channel), with its ranges set: export it with `to_tflite`, or fine-tune it (QAT
    starting from the calibrated ranges).

    Args:
        model: a float Sequential/functional model, or a model from `quantize_model` (re-calibrated).
        representative_data: an array (batched by `batch_size`), a `tf.data.Dataset` of batches, a
            generator function or an iterable of batches; elements may be `(x, y)` tuples. Streamed once.
        method: 'minmax', 'percentile', 'entropy' or 'mse' (see `tfprune.quantization.calibration`).
        percentile: with 'percentile', the upper percentile (the lower one is 100 - p).
        batch_size: batch size for array data.
        max_batches: stop after this many batches.
        num_bins: histogram bins per sign (2048, as TensorRT).
        verbose: 1 shows a progress bar.

    Raises:
        CalibrationDataError: data of the wrong shape, dtype or type, or empty (before any work).

    Example:
        >>> ptq = quantize_post_training(model, x_train[:1000], method="percentile", percentile=99.99)
    """
    if method not in calibration.METHODS:
        raise ValueError(f"unknown calibration method {method!r}. Fix: use one of {', '.join(calibration.METHODS)}.")
    if method == "percentile" and not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"`percentile` must be in (50, 100]; received {percentile!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; received {batch_size!r}.")
    if not isinstance(model, keras.Model) or not model.inputs:
        raise TypeError("`model` must be a built Sequential or functional keras.Model; received "
                        f"{type(model).__name__}.")
    batches, count = _batches(representative_data, _input_specs(model), batch_size)
    calibration.RangeCollector(num_bins)  # validates num_bins before any work
    quantized = model if activation_quantizers(model) else quantize_model(model)
    pairs = activation_quantizers(quantized)
    collectors = {id(v["min"]): calibration.RangeCollector(num_bins) for _, v in pairs}

    def record(variable: Any, values: Any) -> None:
        collectors[id(variable)].update(keras.ops.convert_to_numpy(values))

    if max_batches is not None:
        batches = itertools.islice(batches, max_batches)
        count = max_batches if count is None else min(count, max_batches)
    progress = keras.utils.Progbar(count, unit_name="batch") if verbose else None
    seen = 0
    with recording_activations(record):
        for seen, arrays in enumerate(batches, start=1):
            quantized(arrays if len(arrays) > 1 else arrays[0], training=False)
            if progress is not None:
                progress.update(seen)
    for quantizer, variables in pairs:
        low, high = calibration.compute_range(collectors[id(variables["min"])], method, percentile)
        quantizer.set_range(variables, low, high)
    return quantized
