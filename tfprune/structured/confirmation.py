"""Confirming a measured latency: repeated comparisons of one pruned model against the original until
their mean is clearly inside (or outside) an acceptance band, on a host whose comparisons spread.

A plan is picked by its first comparison, so that one leans toward whatever picked it; the decision
rests on the comparisons after it (the confirmations). `CONFIRMATIONS` of them are always taken. When
their mean is in the band but two standard errors around it reach past a wider band (the comparisons
spread more than the tolerance allows to tell), more are taken, up to `MAX_CONFIRMATIONS`.

Example:
    >>> measurements = [table.compare(model, [pruned])[0]]
    >>> ok = confirm_measurements(measurements, lambda: table.compare(model, [pruned])[0],
    ...                           band=(0.4875, 0.5125), wide=(0.475, 0.525))
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

CONFIRMATIONS = 2  # comparisons after the first that every confirmation takes
MAX_CONFIRMATIONS = 5  # at most this many when the confirmations spread too much to decide


def spread_bound(values: list[float]) -> float:
    """Two standard errors of the mean of `values` (0 for fewer than two).

    Example:
        >>> spread_bound([0.48, 0.52])     # 0.04
    """
    if len(values) < 2:
        return 0.0
    return 2.0 * float(np.std(values, ddof=1)) / math.sqrt(len(values))


def confirm_measurements(measurements: list[float], measure: Callable[[], float], band: tuple[float, float],
                         wide: tuple[float, float]) -> bool:
    """Append comparisons from `measure()` to `measurements` (its first entry is the comparison that
    picked the plan) until it holds `CONFIRMATIONS` more; True if their mean lies in `band` (low,
    high) and two standard errors around it stay in `wide`. When the mean is in `band` but the
    bound reaches past `wide`, comparisons go on up to `MAX_CONFIRMATIONS` (then the mean alone
    decides). A mean outside `band` is False without more comparisons. Measurements already taken
    count, so a confirmed plan is not timed again.

    Example:
        >>> confirm_measurements([0.505], next_comparison, band=(0.4875, 0.5125), wide=(0.475, 0.525))
    """
    if not measurements:
        raise ValueError("measurements must hold the comparison that picked the plan; received none.")
    low, high = band
    wide_low, wide_high = wide
    if not (wide_low <= low <= high <= wide_high):
        raise ValueError(f"band {band} must lie inside wide {wide}.")
    while True:
        confirmations = measurements[1:]
        if len(confirmations) < CONFIRMATIONS:
            measurements.append(float(measure()))
            continue
        mean = float(np.mean(confirmations))
        if not low <= mean <= high:
            return False
        bound = spread_bound(confirmations)
        if (wide_low <= mean - bound and mean + bound <= wide_high) or len(confirmations) >= MAX_CONFIRMATIONS:
            return True
        measurements.append(float(measure()))
