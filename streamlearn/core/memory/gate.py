"""CompensationGate: how much of the error memory's compensation to apply, learned online.

The memory's compensation helps right after a drift and can cost accuracy on a stationary
stream (its neighbours' labels are noise there). The learner sees, for every labelled event
before it learns it, both the base prediction ŷ_base and the compensated one ŷ_comp, so it
can judge the compensation prequentially, on the metric the stream is scored by. The gate
treats the two as experts and weighs them by exponential weights on discounted losses (the
exponentially weighted average forecaster, Cesa-Bianchi & Lugosi, *Prediction, Learning, and
Games*, 2006, ch. 2, with the discounted losses of its §2.11)::

    Δ ← clip(β^n·Δ + Σ_i (ℓ_base,i − ℓ_comp,i), −L⁻, L⁺)   (n rows in the batch)
    w = σ(η·Δ)                                              (the compensation's weight)
    ŷ = (1 − w)·ŷ_base + w·ŷ_comp

ℓ is the 0/1 loss of the arg max for classification (the accuracy the stream is scored by;
1 − p(true class) was measured to keep losses, decision 0030) and, for regression, |y − ŷ|
over the discounted mean |y − ŷ_base| (the MAE, in units of the base model's own), the row's
difference clipped to [−1, 1] so that a row weighs at most one event, as a hit does. Clipping
the evidence keeps the losing expert's weight from vanishing, as Fixed Share does (Herbster
& Warmuth, *Tracking the Best Expert*, 1998): the gate switches within L⁺ net losses of the
compensation, or L⁻ net wins. The limits are asymmetric (decision 0030): the base model is the
default, so the compensation goes off soon after it starts losing (small L⁺) and must win
for longer to come back (larger L⁻). On a detected drift Δ restarts at ``prior`` > 0: the
memory restarts empty then, its compensation helps most in the events after a drift, and
how it did on the old concept says little about the new one.

Numpy alone; the weight travels with the memory's snapshot to serving.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CompensationGate"]


class CompensationGate:
    """Discounted, clipped exponential weights between the base and the compensated prediction.

    ``discount`` β per row (the evidence spans about 1 / (1 − β) rows), ``eta`` η the weights'
    learning rate, ``limits`` (−L⁻, L⁺) the range of the evidence kept, ``prior`` Δ at the
    start and after a detected drift (> 0 favours the compensation).
    """

    def __init__(
        self, discount: float, eta: float, limits: tuple[float, float], prior: float
    ) -> None:
        self.discount, self.eta, self.limits, self.prior = discount, eta, limits, prior
        self.advantage = prior  # Δ: discounted Σ (base loss − compensated loss)
        self.error_sum = 0.0  # regression: discounted Σ |y − ŷ_base| ...
        self.error_rows = 0.0  # ... and Σ rows: the loss's scale
        self.weight = _sigmoid(eta * prior)

    def update(self, target: np.ndarray, base: np.ndarray, compensated: np.ndarray) -> None:
        """Learn from labelled rows: class slots [B] with probabilities [B, W], or values [B]
        with predictions [B]."""
        n = len(target)
        if n == 0:
            return
        fade = self.discount**n
        if base.ndim == 1:  # regression: |error| in units of the base's mean |error|, ≤ 1
            y = np.asarray(target, dtype=np.float64)
            base_error = np.abs(y - base)
            self.error_sum = fade * self.error_sum + float(base_error.sum())
            self.error_rows = fade * self.error_rows + n
            scale = max(self.error_sum / self.error_rows, 1e-12)
            gain = float(np.clip((base_error - np.abs(y - compensated)) / scale, -1, 1).sum())
        else:  # hits of the compensated arg max minus hits of the base one
            hit = np.asarray(target, dtype=np.int64)
            gain = float(np.count_nonzero(compensated.argmax(1) == hit))
            gain -= float(np.count_nonzero(base.argmax(1) == hit))
        low, high = self.limits
        self.advantage = min(max(fade * self.advantage + gain, low), high)
        self.weight = _sigmoid(self.eta * self.advantage)

    def on_drift(self) -> None:
        """Restart the evidence at the prior (the memory restarts empty)."""
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


def _sigmoid(x: float) -> float:
    """σ(x), without overflow for large |x|."""
    return 0.5 * (1.0 + math.tanh(0.5 * x))
