"""QualityGate: publish a candidate only if it is not worse than the published model.

Both are judged on the *same* recent labelled rows, all of them unseen by both: the candidate
by its prequential loss (each row predicted before it was learned), the published model by
running its artifact, with its own frozen encoder statistics, on the raw rows. Rows are kept
only since the last publish (the published model never trained on them) and since the last
detected drift (the window then describes the new concept, where an old model loses). The
loss is the log loss (−log p of the true class, p ≥ 1e-7) or the squared error in target
units. The candidate passes when ``candidate ≤ published × (1 + margin)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamlearn.core.evaluation import mean_loss
from streamlearn.export.artifact import ModelBundle

__all__ = ["GateVerdict", "QualityGate"]


@dataclass(frozen=True, slots=True)
class GateVerdict:
    passed: bool
    candidate_loss: float
    published_loss: float  # NaN when nothing is published yet
    rows: int


class QualityGate:
    """A ring buffer of recent labelled rows and the comparison made on them."""

    def __init__(self, window: int, margin: float, regression: bool) -> None:
        self.window, self.margin, self.regression = window, margin, regression
        self._num: np.ndarray | None = None
        self._cat = np.zeros((0, 0), dtype=np.int64)
        self._target = np.zeros(0)
        self._pred = np.zeros(0, dtype=np.float32)
        self.rows = 0  # rows held (≤ window)
        self._cursor = 0

    def _allocate(self, num: np.ndarray, cat: np.ndarray, pred: np.ndarray) -> None:
        w = self.window
        self._num = np.zeros((w, num.shape[1]))
        self._cat = np.zeros((w, cat.shape[1]), dtype=np.int64)
        self._target = np.zeros(w, dtype=np.float64 if self.regression else np.int64)
        self._pred = np.zeros((w, *pred.shape[1:]), dtype=np.float32)

    def observe(
        self, num: np.ndarray, cat: np.ndarray, target: np.ndarray, prediction: np.ndarray
    ) -> None:
        """A learned batch: raw inputs, targets and the candidate's prequential predictions."""
        if self._num is None or self._pred.shape[1:] != prediction.shape[1:]:
            self._allocate(num, cat, prediction)
        assert self._num is not None
        n = min(len(target), self.window)
        slots = (np.arange(n) + self._cursor) % self.window
        self._num[slots] = num[-n:]
        self._cat[slots] = cat[-n:]
        self._target[slots] = target[-n:]
        self._pred[slots] = prediction[-n:]
        self._cursor = (self._cursor + n) % self.window
        self.rows = min(self.rows + n, self.window)

    def clear(self) -> None:
        self.rows = self._cursor = 0

    def _loss(self, prediction: np.ndarray, target: np.ndarray) -> float:
        return mean_loss(prediction, target, self.regression)

    def _published_predictions(self, bundle: ModelBundle) -> np.ndarray:
        """The published artifact on the window's raw rows, encoded as serving would."""
        assert self._num is not None
        n, enc = self.rows, bundle.encoder
        num, cat = self._num[:n].copy(), self._cat[:n].copy()
        num[:, len(enc.numeric_names) :] = np.nan  # names it had no slot for: missing
        cat[:, len(enc.categorical_names) :] = 0
        prediction, _ = bundle.run(enc.standardize(num), cat)
        return prediction

    def judge(self, published: ModelBundle | None) -> GateVerdict:
        """Compare on the rows held now (call with rows > 0)."""
        n = self.rows
        target = self._target[:n]
        candidate = self._loss(self._pred[:n], target)
        assert self._num is not None
        if published is None or (published.numeric_slots, published.categorical_slots) != (
            self._num.shape[1],
            self._cat.shape[1],
        ):  # nothing published, or a different input schema: nothing to compare against
            return GateVerdict(True, candidate, math.nan, n)
        incumbent = self._loss(self._published_predictions(published), target)
        passed = candidate <= incumbent * (1.0 + self.margin) or not math.isfinite(incumbent)
        return GateVerdict(passed, candidate, incumbent, n)
