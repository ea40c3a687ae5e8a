"""Learning-rate schedule: warm-up to a constant ("infinite") rate, re-warmed on drift.

After Ibrahim et al., "Simple and Scalable Strategies to Continually Pre-train Large Language
Models" (2024): on a distribution shift, re-warm the LR and re-decay it; and after "Beyond
Cosine Decay" (infinite schedules): no fixed horizon, a constant rate between shifts.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["RewarmSchedule"]


class RewarmSchedule:
    """LR as a function of the step: linear warm-up, constant, and a re-warm/re-decay per drift.

    >>> s = RewarmSchedule(lr=0.01, warmup_steps=10, rewarm_factor=3, rewarm_steps=2,
    ...                    redecay_steps=4)
    >>> round(s.value(4), 4), s.value(50)
    (0.005, 0.01)
    >>> s.on_drift(50); [round(s.value(t), 4) for t in range(50, 57)]
    [0.02, 0.03, 0.03, 0.0271, 0.02, 0.0129, 0.01]
    """

    def __init__(
        self,
        lr: float,
        warmup_steps: int,
        rewarm_factor: float,
        rewarm_steps: int,
        redecay_steps: int,
    ) -> None:
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.peak = lr * rewarm_factor
        self.rewarm_steps = rewarm_steps
        self.redecay_steps = redecay_steps
        self.drift_step: int | None = None
        self.drift_start_lr = lr

    def value(self, step: int) -> float:
        if self.drift_step is None or step < self.drift_step:
            return self.lr * min(1.0, (step + 1) / max(self.warmup_steps, 1))
        t = step - self.drift_step
        if t < self.rewarm_steps:
            frac = (t + 1) / self.rewarm_steps
            return self.drift_start_lr + (self.peak - self.drift_start_lr) * frac
        t -= self.rewarm_steps
        if t < self.redecay_steps:
            cosine = 0.5 * (1 + math.cos(math.pi * t / self.redecay_steps))
            return self.lr + (self.peak - self.lr) * cosine
        return self.lr

    def on_drift(self, step: int) -> None:
        """Start a re-warm from wherever the LR stands now."""
        self.drift_start_lr = self.value(step)
        self.drift_step = step

    def end_rewarm(self) -> None:
        """Back to the constant rate at once: a re-warm helps a model adapt to a new concept,
        not one that knows the concept already (an expert switched in, core/experts.py)."""
        self.drift_step = None

    def state_dict(self) -> dict[str, Any]:
        return {"drift_step": self.drift_step, "drift_start_lr": self.drift_start_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.drift_step = state["drift_step"]
        self.drift_start_lr = float(state["drift_start_lr"])
