"""Calibration math: the range of an activation from its observed values (pure numpy).

`RangeCollector` streams batches into a histogram of magnitudes (separately for positive and negative
values, `num_bins` bins over `[0, R]`, R doubling as larger values arrive, so no second pass is
needed) plus the exact min and max. A method turns it into `(min, max)`:

* `minmax`: the observed min and max.
* `percentile`: the `100 - p` and `p` percentiles (default p = 99.99).
* `entropy`: TensorRT's search: on the 2048-bin histogram of |x|, the threshold whose clipped
  distribution has the smallest KL divergence from its quantized version (128 levels for a signed
  tensor, 256 for a non-negative one, which the asymmetric int8 range gives all of its levels). The
  zero bin counts as its neighbour: the exact zeros of ReLU outputs or padded inputs would otherwise
  dominate the divergence and pull the threshold far below the values that matter.
* `mse`: the clipping of `[min, max]` (scaled by a factor in (0, 1]) with the smallest expected
  squared error of the 8-bit asymmetric quantization, outliers clipped.

Example:
    >>> collector = RangeCollector()
    >>> for batch in batches: collector.update(batch)
    >>> low, high = compute_range(collector, "entropy")
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHODS = ("minmax", "percentile", "entropy", "mse")
"""The activation-range calibration methods of `quantize_post_training` (exported as `CALIBRATION_METHODS`).

Example:
    >>> ptq = quantize_post_training(model, x_calib, method=CALIBRATION_METHODS[2])   # "entropy"
"""


class RangeCollector:
    """Streaming statistics of one tensor: min, max and histograms of positive and negative magnitudes.

    Example:
        >>> c = RangeCollector(num_bins=2048); c.update(np.random.randn(1000)); c.min < 0 < c.max
        True
    """

    def __init__(self, num_bins: int = 2048) -> None:
        if not isinstance(num_bins, int) or num_bins < 256 or num_bins % 2:
            raise ValueError(f"`num_bins` must be an even int >= 256; received {num_bins!r}.")
        self.num_bins = num_bins
        self.min = np.inf
        self.max = -np.inf
        self.count = 0
        self.bound = 0.0  # histograms cover [0, bound]
        self.positive = np.zeros(num_bins, dtype=np.float64)
        self.negative = np.zeros(num_bins, dtype=np.float64)

    def _grow(self, needed: float) -> None:
        if self.bound == 0.0:
            self.bound = float(needed)
            return
        while self.bound < needed:  # double the range: merge pairs of bins into the lower half
            for hist in (self.positive, self.negative):
                merged = hist.reshape(-1, 2).sum(axis=1)
                hist[:] = 0.0
                hist[: len(merged)] = merged
            self.bound *= 2.0

    def update(self, values: Any) -> None:
        """Adds a batch of values (any shape)."""
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        self.count += values.size
        magnitude = float(max(abs(self.min), abs(self.max)))
        if magnitude > self.bound:
            self._grow(magnitude if magnitude > 0 else 1e-8)
        if self.bound == 0.0:
            self._grow(1e-8)
        edges = (0.0, self.bound)
        self.positive += np.histogram(values[values > 0], bins=self.num_bins, range=edges)[0]
        self.negative += np.histogram(-values[values < 0], bins=self.num_bins, range=edges)[0]
        zeros = np.count_nonzero(values == 0)
        self.positive[0] += zeros / 2.0
        self.negative[0] += zeros / 2.0

    @property
    def bin_width(self) -> float:
        return self.bound / self.num_bins

    def signed_histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """`(centers, counts)` over `[-bound, bound]`."""
        width = self.bin_width
        centers = (np.arange(self.num_bins) + 0.5) * width
        return (np.concatenate([-centers[::-1], centers]),
                np.concatenate([self.negative[::-1], self.positive]))


def minmax_range(collector: RangeCollector) -> tuple[float, float]:
    """The observed `(min, max)`, widened to contain 0."""
    return min(collector.min, 0.0), max(collector.max, 0.0)


def percentile_range(collector: RangeCollector, percentile: float = 99.99) -> tuple[float, float]:
    """The `(100 - p, p)` percentiles of the observed values (resolution: one histogram bin)."""
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"`percentile` must be in (50, 100]; received {percentile!r}.")
    centers, counts = collector.signed_histogram()
    width = collector.bin_width
    cumulative = np.cumsum(counts) / counts.sum()
    upper_q, lower_q = percentile / 100.0, 1.0 - percentile / 100.0
    low = centers[min(np.searchsorted(cumulative, lower_q, side="left"), len(centers) - 1)] - width / 2
    high = centers[min(np.searchsorted(cumulative, upper_q, side="left"), len(centers) - 1)] + width / 2
    low, high = max(low, collector.min), min(high, collector.max)
    return min(low, 0.0), max(high, 0.0)


def kl_divergence_threshold(histogram: np.ndarray, bin_width: float, num_quantized_bins: int = 128) -> float:
    """TensorRT's entropy calibration: the |x| threshold minimizing KL(P || Q) over thresholds.

    `histogram` counts |x| in equal bins of `bin_width` starting at 0. For each candidate number of
    bins i >= num_quantized_bins, P is the first i bins with the rest added to the last one, Q is P
    merged into `num_quantized_bins` groups and spread back evenly over each group's non-empty bins.

    Example:
        >>> kl_divergence_threshold(np.histogram(abs(x), 2048)[0], abs(x).max() / 2048)
    """
    hist = np.asarray(histogram, dtype=np.float64)
    n = len(hist)
    if n < num_quantized_bins:
        return n * bin_width
    best_i, best_kl = n, np.inf
    for i in range(num_quantized_bins, n + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nonzero = hist[:i] != 0
        groups = np.minimum(np.arange(i) // (i // num_quantized_bins), num_quantized_bins - 1)
        sums = np.bincount(groups, weights=hist[:i], minlength=num_quantized_bins)
        used = np.bincount(groups, weights=nonzero.astype(np.float64), minlength=num_quantized_bins)
        q = np.where(nonzero, sums[groups] / np.maximum(used[groups], 1.0), 0.0)
        total_p, total_q = p.sum(), q.sum()
        if total_p == 0 or total_q == 0:
            continue
        p_norm, q_norm = p / total_p, q / total_q
        support = p_norm > 0
        q_safe = np.where(q_norm[support] > 0, q_norm[support], 1e-12)
        kl = float(np.sum(p_norm[support] * np.log(p_norm[support] / q_safe)))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return (best_i + 0.5) * bin_width


def entropy_range(collector: RangeCollector, num_quantized_bins: int = 128) -> tuple[float, float]:
    """`[-T, T]` clipped to the observed range, with T from `kl_divergence_threshold` on |x|.

    A non-negative tensor (min >= 0) is searched with twice `num_quantized_bins` levels, and the zero
    bin's count is replaced by its neighbour's (see the module docstring).
    """
    histogram = collector.positive + collector.negative
    if len(histogram) > 1:
        histogram[0] = histogram[1]
    levels = 2 * num_quantized_bins if collector.min >= 0 else num_quantized_bins
    threshold = kl_divergence_threshold(histogram, collector.bin_width, levels)
    return min(max(-threshold, collector.min), 0.0), max(min(threshold, collector.max), 0.0)


def quantization_mse(centers: np.ndarray, counts: np.ndarray, low: float, high: float, num_bits: int = 8) -> float:
    """Expected squared error of fake-quantizing values at `centers` (weights `counts`) to `[low, high]`."""
    levels = 2 ** num_bits - 1
    scale = (high - low) / levels
    zero_point = np.clip(np.round(-low / scale), 0, levels)
    q = (np.clip(np.round(centers / scale) + zero_point, 0, levels) - zero_point) * scale
    return float(np.sum(counts * (centers - q) ** 2) / max(counts.sum(), 1.0))


def mse_range(collector: RangeCollector, num_bits: int = 8, steps: int = 100) -> tuple[float, float]:
    """The scaling `a` in (0, 1] of `[min, max]` with the smallest expected quantization error."""
    low, high = minmax_range(collector)
    if high - low <= 0:
        return low, high
    centers, counts = collector.signed_histogram()
    best, best_error = (low, high), np.inf
    for factor in np.linspace(1.0 / steps, 1.0, steps):
        candidate = (low * factor, high * factor)
        error = quantization_mse(centers, counts, *candidate, num_bits=num_bits)
        if error < best_error:
            best, best_error = candidate, error
    return float(best[0]), float(best[1])


def compute_range(collector: RangeCollector, method: str, percentile: float = 99.99) -> tuple[float, float]:
    """`(min, max)` of a collected tensor by `method` (one of `METHODS`).

    Example:
        >>> compute_range(collector, "percentile", percentile=99.9)
    """
    if collector.count == 0:
        raise ValueError("no values were collected for this tensor. Fix: pass non-empty calibration data.")
    if method == "minmax":
        return minmax_range(collector)
    if method == "percentile":
        return percentile_range(collector, percentile)
    if method == "entropy":
        return entropy_range(collector)
    if method == "mse":
        return mse_range(collector)
    raise ValueError(f"unknown calibration method {method!r}. Fix: use one of {', '.join(METHODS)}.")
