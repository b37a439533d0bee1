"""Calibration data as a re-iterable stream of model-input batches, checked against the model's inputs,
and the recording of a layer's call inputs while the model runs.

Accepted data: a numpy array or tensor (a list or dict of them for several inputs; an `(x, y)` or
`(x, y, w)` tuple is read as `x`), split into batches of `batch_size`; a `tf.data.Dataset` (already batched; elements `x`,
`(x, y)` or `(x, y, w)`), iterated anew on every pass; a callable returning a fresh iterator of batches,
called on every pass; or any other iterable/generator, read once and its batches kept in memory.

    >>> source = CalibrationSource(np.zeros((10, 4)), batch_size=4, num_inputs=1)
    >>> [b.shape[0] for b in source.batches()]
    [4, 4, 2]
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf


def _is_array(value: Any) -> bool:
    if isinstance(value, (np.ndarray, tf.Tensor)):
        return True
    return hasattr(value, "__array__") and not isinstance(value, (list, tuple, dict))


def _features(element: Any, num_inputs: int) -> Any:
    """The model-input part of one batch element: drops targets and sample weights."""
    if isinstance(element, dict) or _is_array(element):
        return element
    if isinstance(element, (list, tuple)):
        if num_inputs > 1 and len(element) == num_inputs and all(_is_array(e) for e in element):
            return list(element)
        if 1 <= len(element) <= 3:
            first = element[0]
            return list(first) if isinstance(first, tuple) else first
    raise TypeError(
        f"A calibration batch must be an array (or a list/dict of arrays for a multi-input model), or an `(x, y)` "
        f"pair; received {type(element).__name__}. Fix: pass input arrays, a tf.data.Dataset or a generator of them."
    )


def _slice(data: Any, start: int, stop: int) -> Any:
    if isinstance(data, dict):
        return {k: v[start:stop] for k, v in data.items()}
    if isinstance(data, list):
        return [v[start:stop] for v in data]
    return data[start:stop]


def _length(data: Any) -> int:
    first = next(iter(data.values())) if isinstance(data, dict) else data[0] if isinstance(data, list) else data
    return int(first.shape[0])


class CalibrationSource:
    """Calibration data that can be iterated several times, one batch of model inputs at a time.

    Example:
        >>> ds = tf.data.Dataset.from_tensor_slices(np.ones((6, 3), "float32")).batch(4)
        >>> [tuple(b.shape) for b in CalibrationSource(ds, num_inputs=1).batches()]
        [(4, 3), (2, 3)]
    """

    def __init__(self, data: Any, batch_size: int = 32, num_inputs: int = 1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
        self._num_inputs, self._batch_size = num_inputs, batch_size
        self._arrays = self._factory = self._cached = self._iterator = None
        if data is None:
            raise ValueError("This method needs `calibration_data` (input batches for the model). "
                             "Fix: pass e.g. a few hundred training inputs as an array.")
        if isinstance(data, tf.data.Dataset):
            self._factory = lambda: iter(data)
        elif callable(data) and not _is_array(data):
            self._factory = data
        elif _is_array(data) or isinstance(data, dict) or (
            isinstance(data, (list, tuple)) and data and all(_is_array(v) or isinstance(v, (list, dict)) for v in data)
        ):
            if isinstance(data, list) and num_inputs == 1 and len(data) > 1:
                raise TypeError(
                    f"`calibration_data` is a list of {len(data)} arrays, which is read as one array per model input, "
                    "but the model has one input. Fix: pass one array, an `(x, y)` tuple, or `iter(list_of_batches)` "
                    "for a list of batches."
                )
            arrays = _features(data, num_inputs) if not _is_array(data) else data
            self._arrays = arrays
            if _length(arrays) == 0:
                raise ValueError("`calibration_data` is empty. Fix: pass at least one input sample.")
        elif hasattr(data, "__iter__") or hasattr(data, "__next__"):
            self._iterator = iter(data)
        else:
            raise TypeError(f"`calibration_data` must be arrays, a tf.data.Dataset, a callable returning an "
                            f"iterator, or an iterable of batches; received {type(data).__name__}.")

    def _raw(self) -> Iterator[Any]:
        if self._arrays is not None:
            size = _length(self._arrays)
            for start in range(0, size, self._batch_size):
                yield _slice(self._arrays, start, start + self._batch_size)
        elif self._factory is not None:
            yield from self._factory()
        else:
            if self._cached is None:
                self._cached = [_features(e, self._num_inputs) for e in self._iterator]
            yield from self._cached

    def batches(self) -> Iterator[Any]:
        """A fresh pass over the data: every element reduced to the model inputs."""
        for element in self._raw():
            yield _features(element, self._num_inputs)

    def first(self) -> Any:
        """The first batch (for checking shapes before any work); raises if there is none."""
        for batch in self.batches():
            return batch
        raise ValueError("`calibration_data` yielded no batch. Fix: pass at least one batch of inputs.")


def check_batch(model: keras.Model, batch: Any) -> None:
    """Raises ValueError when `batch` does not fit the model's inputs (count, rank, fixed sizes).

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> check_batch(model, np.zeros((3, 4)))
    """
    expected = list(model.inputs)
    names = [t.name for t in expected]
    if isinstance(batch, dict):
        missing = [n for n in names if n not in batch]
        if missing:
            raise ValueError(f"Calibration batch has keys {sorted(batch)}; the model's inputs are {names}. "
                             "Fix: key the arrays by input name.")
        arrays = [batch[n] for n in names]
    else:
        arrays = list(batch) if isinstance(batch, list) else [batch]
    if len(arrays) != len(expected):
        raise ValueError(f"Calibration batch has {len(arrays)} input array(s); model '{model.name}' takes "
                         f"{len(expected)} ({names}). Fix: pass one array per model input.")
    for array, tensor in zip(arrays, expected):
        got, want = tuple(np.shape(array)), tuple(tensor.shape)
        fits = len(got) == len(want) and all(w is None or g == w for g, w in zip(got[1:], want[1:]))
        if not fits:
            raise ValueError(
                f"Calibration batch for input '{tensor.name}' has shape {got}; the model expects {want} "
                "(None: any size). Fix: pass batches of model inputs, e.g. x_train[:256]."
            )
        if len(got) and got[0] == 0:
            raise ValueError("A calibration batch is empty. Fix: drop empty batches.")


@contextlib.contextmanager
def recording_inputs(layers: list[tuple[keras.layers.Layer, Callable[[Any], None]]]) -> Iterator[None]:
    """While active, every call of each layer first hands its input tensor to the paired callback.

    The layers' own `call` is restored on exit (also after an error).

    Example:
        >>> layer = keras.layers.Dense(2); seen = []
        >>> with recording_inputs([(layer, seen.append)]): _ = layer(np.ones((1, 3)))
        >>> seen[0].shape
        (1, 3)
    """
    installed = []
    try:
        for layer, callback in layers:
            original = layer.call

            def call(inputs, *args, _original=original, _callback=callback, **kwargs):
                _callback(inputs)
                return _original(inputs, *args, **kwargs)

            object.__setattr__(layer, "call", call)
            installed.append(layer)
        yield
    finally:
        for layer in installed:
            object.__delattr__(layer, "call")
