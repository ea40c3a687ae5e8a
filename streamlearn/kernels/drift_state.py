"""The loss-deviation detector's state, as every drift kernel reads and updates it in place."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COUNTERS", "DriftParams", "DriftState"]

# the counters array, in this order (drift.c's enum): values in the window, the ring slot
# written next, events left in the cooldown, finite losses seen, whether the EWMA has a value
COUNTERS = ("filled", "head", "quiet", "seen", "has_value")


@dataclass(frozen=True, slots=True)
class DriftParams:
    """The rule's constants (see LossDeviationDetector)."""

    alpha: float
    window: int
    k: float
    cooldown: int
    min_samples: int
    min_rise: float


def _counter(name: str) -> property:
    """An int attribute kept in the counters array."""
    index = COUNTERS.index(name)

    def get(self: DriftState) -> int:
        return int(self.counters[index])

    def put(self: DriftState, value: int) -> None:
        self.counters[index] = value

    return property(get, put, doc=f"counter {name!r}")


class DriftState:
    """The window's ring, the counters and the EWMA: plain arrays a kernel updates in place."""

    def __init__(self, window: int) -> None:
        self.ring = np.zeros(window)
        self.counters = np.zeros(len(COUNTERS), dtype=np.int64)
        self.value = np.zeros(1)

    filled = _counter("filled")
    head = _counter("head")
    quiet = _counter("quiet")
    seen = _counter("seen")

    @property
    def smoothed(self) -> float | None:
        """The EWMA of the loss; None before the first finite loss."""
        return float(self.value[0]) if self.counters[COUNTERS.index("has_value")] else None

    @smoothed.setter
    def smoothed(self, value: float | None) -> None:
        self.counters[COUNTERS.index("has_value")] = value is not None
        self.value[0] = 0.0 if value is None else value
