"""LossDeviationDetector: drift when the smoothed loss leaves its recent range (after TAME).

TAME (task-aware mixture of experts, see seed-abstracts) detects a task shift from a deviation
of the loss. Here the loss is smoothed by an EWMA, s_t = α·l_t + (1−α)·s_{t−1}; a window of the
last W smoothed values gives mean μ and std σ, and drift fires when s_t > μ + max(k·σ, δ):
the floor δ (``min_rise``, in loss units) keeps a well-learned concept, whose smoothed loss
barely moves, from firing on small bumps (measured on agrawal-drift: δ = 0.2 turns eleven
detections into the two true drifts and one more). After a detection the window restarts (the new
concept sets the next baseline) and a cooldown passes before the next detection can fire.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["LossDeviationDetector"]


class LossDeviationDetector:
    """EWMA-smoothed loss against mean + k·std of its recent window, with a cooldown.

    >>> import numpy as np
    >>> det = LossDeviationDetector(alpha=0.1, window=200, k=4, cooldown=100, min_samples=100)
    >>> rng = np.random.default_rng(0)
    >>> losses = np.concatenate([rng.normal(0.2, 0.05, 1000), rng.normal(0.9, 0.05, 500)])
    >>> det.update(losses)
    [1000]
    """

    def __init__(
        self,
        alpha: float = 0.02,
        window: int = 500,
        k: float = 4.0,
        cooldown: int = 1000,
        min_samples: int = 300,
        min_rise: float = 0.0,
    ) -> None:
        self.alpha = alpha
        self.window = window
        self.k = k
        self.cooldown = cooldown
        self.min_samples = min(min_samples, window)
        self.min_rise = min_rise
        self._ring = np.zeros(window)
        self._filled = 0
        self._head = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self._smoothed: float | None = None
        self._quiet = 0  # events left in the cooldown
        self.seen = 0

    @property
    def smoothed(self) -> float | None:
        """The current EWMA of the loss (None before the first loss)."""
        return self._smoothed

    def _restart_window(self) -> None:
        self._filled = self._head = 0
        self._sum = self._sumsq = 0.0

    def _push(self, value: float) -> None:
        if self._filled == self.window:
            old = self._ring[self._head]
            self._sum -= old
            self._sumsq -= old * old
        else:
            self._filled += 1
        self._ring[self._head] = value
        self._head = (self._head + 1) % self.window
        self._sum += value
        self._sumsq += value * value

    def _deviates(self, value: float) -> bool:
        n = self._filled
        if n < self.min_samples:
            return False
        mean = self._sum / n
        std = math.sqrt(max(self._sumsq / n - mean * mean, 0.0))
        return value > mean + max(self.k * std, self.min_rise)

    def update(self, losses: np.ndarray) -> list[int]:
        fired: list[int] = []
        alpha = self.alpha
        for i, loss in enumerate(np.asarray(losses, dtype=np.float64).tolist()):
            if not math.isfinite(loss):
                continue
            s = loss if self._smoothed is None else alpha * loss + (1 - alpha) * self._smoothed
            self._smoothed = s
            self.seen += 1
            if self._quiet:
                self._quiet -= 1
            elif self._deviates(s):
                fired.append(i)
                self._quiet = self.cooldown
                self._restart_window()
                continue
            self._push(s)
        return fired

    def state_dict(self) -> dict[str, Any]:
        return {
            "ring": self._ring.tolist(),
            "filled": self._filled,
            "head": self._head,
            "sum": self._sum,
            "sumsq": self._sumsq,
            "smoothed": self._smoothed,
            "quiet": self._quiet,
            "seen": self.seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ring = np.asarray(state["ring"], dtype=np.float64)
        self._filled, self._head = int(state["filled"]), int(state["head"])
        self._sum, self._sumsq = float(state["sum"]), float(state["sumsq"])
        self._smoothed = state["smoothed"]
        self._quiet, self.seen = int(state["quiet"]), int(state["seen"])
