"""RiverDriftDetector: any river.drift detector (ADWIN, PageHinkley, KSWIN) run on the loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from river import drift

from streamlearn.errors import ConfigError

__all__ = ["RIVER_DETECTORS", "RiverDriftDetector"]

RIVER_DETECTORS = {"adwin": drift.ADWIN, "page_hinkley": drift.PageHinkley, "kswin": drift.KSWIN}


class RiverDriftDetector:
    """Adapter: feeds each loss to a river detector and reports where it signals drift.

    river detectors keep no exportable state, so a restored adapter restarts its detector
    empty (it re-learns the loss level within its own window) but keeps its event count.

    >>> import numpy as np
    >>> det = RiverDriftDetector("page_hinkley", {"threshold": 20.0}, cooldown=0)
    >>> rng = np.random.default_rng(0)
    >>> losses = np.concatenate([rng.normal(0.2, 0.05, 500), rng.normal(0.9, 0.05, 200)])
    >>> fired = det.update(losses)
    >>> 500 <= fired[0] < 560
    True
    """

    def __init__(
        self, name: str, params: Mapping[str, Any] | None = None, cooldown: int = 0
    ) -> None:
        if name not in RIVER_DETECTORS:
            raise ConfigError(f"drift.detector: unknown river detector {name!r}")
        self.name = name
        self.params = dict(params or {})
        self.cooldown = cooldown
        self.seen = 0
        self._quiet = 0
        self._detector = self._build()

    def _build(self) -> Any:
        try:
            return RIVER_DETECTORS[self.name](**self.params)
        except TypeError as exc:
            raise ConfigError(f"drift.params for {self.name}: {exc}") from None

    def update(self, losses: np.ndarray) -> list[int]:
        fired: list[int] = []
        for i, loss in enumerate(np.asarray(losses, dtype=np.float64).tolist()):
            if not math.isfinite(loss):
                continue
            self.seen += 1
            self._detector.update(loss)
            if self._quiet:
                self._quiet -= 1
            elif self._detector.drift_detected:
                fired.append(i)
                self._quiet = self.cooldown
        return fired

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "quiet": self._quiet}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self._quiet = int(state["seen"]), int(state["quiet"])
        self._detector = self._build()
