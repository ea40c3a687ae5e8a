"""Hedge: exponential weights between two predictions of the same rows, learned online.

Where two predictors score every labelled event before it is learned, each can be judged
prequentially on the metric the stream is scored by, and their predictions mixed by
exponential weights on discounted losses (the exponentially weighted average forecaster,
Cesa-Bianchi & Lugosi, *Prediction, Learning, and Games*, 2006, ch. 2, with the discounted
losses of its §2.11)::

    Δ ← clip(β^n·Δ + Σ_i (ℓ_first,i − ℓ_second,i), −L⁻, L⁺)   (n rows in the batch)
    w = σ(η·Δ)                                                (the second's weight)
    ŷ = (1 − w)·ŷ_first + w·ŷ_second

ℓ is the 0/1 loss of the arg max for classification (the accuracy the stream is scored by) and,
for regression, |y − ŷ| over the discounted mean |y − ŷ_first| (the MAE, in units of the first
predictor's own), the row's difference clipped to [−1, 1] so that a row weighs at most one
event, as a hit does. Clipping the evidence keeps the losing predictor's weight from vanishing,
as Fixed Share does (Herbster & Warmuth, *Tracking the Best Expert*, 1998): the weights
switch within L⁺ net losses of the second, or L⁻ net wins.

Used by the error memory's gate (core/memory/gate.py: base vs compensated) and the linear
model's mixture (core/linear.py: network vs linear model). The weight travels to serving with
what uses it; the evidence's count runs in mix.c where the kernels load (numpy elsewhere).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from streamlearn.kernels.cpu.binding import float32_rows, loaded
from streamlearn.settings import LinearSettings, NeighbourSettings

__all__ = ["Hedge", "hit_gain"]


class Hedge:
    """Discounted, clipped exponential weights between a first prediction (the default) and a
    second one.

    ``discount`` β per row (the evidence spans about 1 / (1 − β) rows), ``eta`` η the weights'
    learning rate, ``limits`` (−L⁻, L⁺) the range of the evidence kept, ``prior`` Δ at the
    start and after :meth:`restart` (> 0 favours the second prediction).
    """

    def __init__(
        self, discount: float, eta: float, limits: tuple[float, float], prior: float
    ) -> None:
        self.discount, self.eta, self.limits, self.prior = discount, eta, limits, prior
        self.advantage = prior  # Δ: discounted Σ (first loss − second loss)
        self.error_sum = 0.0  # regression: discounted Σ |y − first| ...
        self.error_rows = 0.0  # ... and Σ rows: the loss's scale
        self.weight = _sigmoid(eta * prior)

    @classmethod
    def from_settings(cls, settings: LinearSettings | NeighbourSettings) -> Hedge:
        """From a settings section with ``horizon`` (rows the evidence spans), ``eta``,
        ``limit`` and ``prior``."""
        return cls(
            1.0 - 1.0 / settings.horizon,
            settings.eta,
            (-settings.limit, settings.limit),
            settings.prior,
        )

    def update(self, target: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
        """Learn from labelled rows: class slots [B] with probabilities [B, W], or values [B]
        with predictions [B]."""
        n = len(target)
        if n == 0:
            return
        fade = self.discount**n
        if first.ndim == 1:  # regression: |error| in units of the first's mean |error|, ≤ 1
            y = np.asarray(target, dtype=np.float64)
            first_error = np.abs(y - first)
            self.error_sum = fade * self.error_sum + float(first_error.sum())
            self.error_rows = fade * self.error_rows + n
            scale = max(self.error_sum / self.error_rows, 1e-12)
            gain = float(np.clip((first_error - np.abs(y - second)) / scale, -1, 1).sum())
        else:  # hits of the second arg max minus hits of the first one
            gain = float(hit_gain(np.asarray(target, dtype=np.int64), first, second))
        low, high = self.limits
        self.advantage = min(max(fade * self.advantage + gain, low), high)
        self.weight = _sigmoid(self.eta * self.advantage)

    def set_advantage(self, advantage: float) -> None:
        """Take Δ as given (ranks of a scaled-out worker agree on their average)."""
        low, high = self.limits
        self.advantage = min(max(advantage, low), high)
        self.weight = _sigmoid(self.eta * self.advantage)

    def restart(self) -> None:
        """Restart the evidence at the prior."""
        self.advantage = self.prior
        self.weight = _sigmoid(self.eta * self.prior)

    def state_dict(self) -> dict[str, Any]:
        return {
            "advantage": self.advantage,
            "error_sum": self.error_sum,
            "error_rows": self.error_rows,
            "weight": self.weight,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.advantage = float(state["advantage"])
        self.error_sum = float(state["error_sum"])
        self.error_rows = float(state["error_rows"])
        self.weight = float(state["weight"])


def hit_gain(target: np.ndarray, first: np.ndarray, second: np.ndarray) -> int:
    """Rows whose ``second`` arg max is their class slot ``target`` (int64 [B]) minus those
    whose ``first`` one is (predictions [B, W]): mix.c's count where it loads and takes the
    arrays, else numpy's (the same count: numpy's arg max, the first largest or first NaN)."""
    kernels = loaded()
    if kernels is not None and target.flags.c_contiguous and float32_rows(first, second):
        return int(kernels.hedge_hits(target, first, second))
    return int(np.count_nonzero(second.argmax(1) == target)) - int(
        np.count_nonzero(first.argmax(1) == target)
    )


def _sigmoid(x: float) -> float:
    """σ(x), without overflow for large |x|."""
    return 0.5 * (1.0 + math.tanh(0.5 * x))
