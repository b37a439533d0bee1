"""Where to plan next when a latency budget is checked by measurement.

The planner turns a goal (a latency the cost model predicts, as a fraction of the original's) into a
plan, the runtime measures the plan, and the next goal has to correct the cost model's error. Plans
are discrete and the measured latency can be flat against the predicted one over a stretch, so a
plain ratio correction can stall. `GoalSearch` brackets the budget between the plans measured below
and above it and interpolates; while every measurement stays on one side it steps on by the measured
miss, a larger step for each further miss on that side; a goal that gives a plan already measured is
bisected against the other side (or stepped further) until a new plan comes out.

Example:
    >>> search = GoalSearch(fraction=0.5)
    >>> goal = search.measured([MeasuredPoint(predicted=0.45, measured=0.55)], floor=0.1, goal=0.45)
    >>> round(goal, 3)            # 0.45 * 0.5 / 0.55
    0.409
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

INTERPOLATION_LIMITS = (0.1, 0.9)  # where between two bracketing plans the next goal may fall
CONVERGED = 1e-4  # goals closer than this (relative to the budget) plan the same: nothing is left to try


@dataclasses.dataclass(frozen=True)
class MeasuredPoint:
    """One measured plan: its latency as the (current) cost model predicts it and as measured, both as
    fractions of the original model's."""

    predicted: float
    measured: float


class GoalSearch:
    """The goal sequence of a measured latency budget `fraction` (see the module docstring).

    Example:
        >>> search = GoalSearch(0.5)
        >>> search.measured([MeasuredPoint(0.5, 0.6), MeasuredPoint(0.4, 0.45)], floor=0.1, goal=0.4)
        0.4333...
    """

    def __init__(self, fraction: float) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"the latency budget must be in (0, 1], received {fraction!r}.")
        self.fraction = fraction
        self.run = 0  # plans in a row on the same side of the budget
        self.side = 0  # -1: below the budget (too fast), +1: above it
        self.lower: float | None = None  # a goal known to give a plan measured below the budget
        self.upper: float | None = None  # a goal known to give a plan measured above it

    def _count(self, measured: float) -> None:
        side = -1 if measured < self.fraction else 1
        self.run = self.run + 1 if side == self.side else 1
        self.side = side

    def measured(self, points: Sequence[MeasuredPoint], floor: float, goal: float) -> float:
        """The next goal after a new plan was measured (the last of `points`; every point's prediction
        is the current cost model's). Never below `floor` (the smallest plan's prediction) nor above 1."""
        if not points:
            raise ValueError("GoalSearch.measured needs at least one measured plan.")
        self._count(points[-1].measured)
        below = [p for p in points if p.measured < self.fraction]
        above = [p for p in points if p.measured >= self.fraction]
        if below and above:
            low = max(below, key=lambda p: (p.predicted, p.measured))
            high = min(above, key=lambda p: (p.predicted, -p.measured))
            self.lower, self.upper = low.predicted, high.predicted
            if high.predicted > low.predicted and high.measured > low.measured:
                t = (self.fraction - low.measured) / (high.measured - low.measured)
                t = min(max(t, INTERPOLATION_LIMITS[0]), INTERPOLATION_LIMITS[1])
                new = low.predicted + t * (high.predicted - low.predicted)
            else:  # the cost model orders the two the other way round: halve the gap between them
                self.lower, self.upper = sorted((low.predicted, high.predicted))
                new = (low.predicted + high.predicted) / 2
        else:
            nearest = min(below or above, key=lambda p: abs(p.measured / self.fraction - 1))
            self.lower = self.upper = None
            start = max(goal, nearest.predicted) if below else min(goal, nearest.predicted)
            new = start * (self.fraction / nearest.measured) ** self.run
        return _clamp(new, floor)

    def repeated(self, point: MeasuredPoint, floor: float, goal: float) -> float | None:
        """The next goal after `goal` gave the plan of `point` again (nothing new was measured), or None
        when the goals around it have closed in and no other plan is left between them."""
        self._count(point.measured)
        if point.measured < self.fraction:
            self.lower = goal if self.lower is None else max(self.lower, goal)
            if self.upper is not None and self.upper > self.lower:
                new = (self.lower + self.upper) / 2
            else:
                new = max(goal, point.predicted) * (self.fraction / point.measured) ** self.run
        else:
            top = min(goal, point.predicted)
            self.upper = top if self.upper is None else min(self.upper, top)
            if self.lower is not None and self.lower < self.upper:
                new = (self.lower + self.upper) / 2
            else:
                new = top * (self.fraction / point.measured) ** self.run
        new = _clamp(new, floor)
        if abs(new - goal) <= CONVERGED * self.fraction:
            return None
        return new


def _clamp(goal: float, floor: float) -> float:
    return float(min(max(goal, floor), 1.0))
