"""The DriftDetector protocol and the settings-driven factory."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamlearn.kernels.backend import DriftKernel
from streamlearn.settings import DriftSettings

__all__ = ["DriftDetector", "NoDrift", "build_detector"]


@runtime_checkable
class DriftDetector(Protocol):
    """Consumes per-event losses in stream order; reports where drift was detected."""

    def update(self, losses: np.ndarray) -> list[int]:
        """Feed a batch of losses; return the offsets within it where drift fired."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class NoDrift:
    """Detector that never fires (drift detection switched off)."""

    def update(self, losses: np.ndarray) -> list[int]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def build_detector(settings: DriftSettings, kernel: DriftKernel | None = None) -> DriftDetector:
    """The detector named in settings, configured from them; ``kernel``: the loss-deviation
    detector's compute (default: numpy)."""
    from streamlearn.core.drift.loss_deviation import LossDeviationDetector
    from streamlearn.core.drift.river import RiverDriftDetector

    if settings.detector == "none":
        return NoDrift()
    if settings.detector == "loss_deviation":
        return LossDeviationDetector(
            alpha=settings.alpha,
            window=settings.window,
            k=settings.k,
            cooldown=settings.cooldown,
            min_samples=settings.min_samples,
            min_rise=settings.min_rise,
            kernel=kernel,
        )
    return RiverDriftDetector(settings.detector, settings.params, cooldown=settings.cooldown)
