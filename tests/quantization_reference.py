"""Numpy references for the quantization tests (independent of tfprune's code)."""

import numpy as np


def fake_quant(x, low, high, num_bits=8, narrow_range=False):
    """TensorFlow's FakeQuantWithMinMaxVars: nudge the range so 0 is on the grid, clamp, round half up."""
    x = np.asarray(x, dtype=np.float64)
    qmin = 1 if narrow_range else 0
    qmax = 2 ** num_bits - 1
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    scale = (high - low) / (qmax - qmin)
    zero_point = np.clip(np.round(qmin - low / scale), qmin, qmax)
    nudged_low, nudged_high = (qmin - zero_point) * scale, (qmax - zero_point) * scale
    clamped = np.clip(x, nudged_low, nudged_high)
    return np.floor((clamped - nudged_low) / scale + 0.5) * scale + nudged_low


def symmetric_per_channel(w, num_bits=8):
    """Per last-axis symmetric narrow-range quantization: scale max|w| / 127."""
    w = np.asarray(w, dtype=np.float64)
    bound = np.abs(w.reshape(-1, w.shape[-1])).max(axis=0)
    levels = 2 ** (num_bits - 1) - 1
    scale = bound / levels
    return np.clip(np.round(w / scale), -levels, levels) * scale
