"""LossDeviationDetector: drift when the smoothed loss leaves its recent range (after TAME).

TAME (task-aware mixture of experts, see seed-abstracts) detects a task shift from a deviation
of the loss. Here the loss is smoothed by an EWMA, s_t = α·l_t + (1−α)·s_{t−1}; a window of the
last W smoothed values gives mean μ and std σ, and drift fires when s_t > μ + max(k·σ, δ):
the floor δ (``min_rise``, in loss units) keeps a well-learned concept, whose smoothed loss
barely moves, from firing on small bumps (measured on agrawal-drift: δ = 0.2 turns eleven
detections into the two true drifts and one more). After a detection the window restarts (the new
concept sets the next baseline) and a cooldown passes before the next detection can fire.

The rule's compute is a collaborator passed in (a
:class:`~streamlearn.kernels.backend.DriftKernel`: numpy, or the compiled per-event loop, whose
smoothed values are the same bit for bit and whose window mean and spread agree to rounding).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamlearn.kernels.backend import DriftKernel
from streamlearn.kernels.drift_state import DriftParams, DriftState

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
        kernel: DriftKernel | None = None,
    ) -> None:
        """``kernel``: the compute of :meth:`update` (default: numpy)."""
        if kernel is None:
            from streamlearn.kernels.reference.drift import NumpyDrift

            kernel = NumpyDrift()
        self.params = DriftParams(alpha, window, k, cooldown, min(min_samples, window), min_rise)
        self.state = DriftState(window)
        self.kernel = kernel

    @property
    def window(self) -> int:
        return self.params.window

    @property
    def seen(self) -> int:
        """Finite losses seen."""
        return self.state.seen

    @property
    def smoothed(self) -> float | None:
        """The current EWMA of the loss (None before the first loss)."""
        return self.state.smoothed

    def update(self, losses: np.ndarray) -> list[int]:
        """Offsets into ``losses`` where drift fired; non-finite losses are skipped entirely."""
        x = np.asarray(losses, dtype=np.float64).ravel()
        return self.kernel.update(x, self.state, self.params)

    def state_dict(self) -> dict[str, Any]:
        """The ring's sum and sum of squares are derived from it (kept for older readers)."""
        s = self.state
        window = s.ring[: s.filled]
        return {
            "ring": s.ring.tolist(),
            "filled": s.filled,
            "head": s.head,
            "sum": float(window.sum()),
            "sumsq": float((window * window).sum()),
            "smoothed": s.smoothed,
            "quiet": s.quiet,
            "seen": s.seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ring = np.array(state["ring"], dtype=np.float64)  # a copy of its own, C-contiguous
        if ring.shape != (self.window,):
            raise ValueError(f"detector state: a ring of {ring.shape}, not ({self.window},)")
        s = self.state
        s.ring = ring
        s.filled, s.head = int(state["filled"]), int(state["head"])
        s.smoothed = state["smoothed"]
        s.quiet, s.seen = int(state["quiet"]), int(state["seen"])
