"""Prequential scoring: per-event hits (or errors), rolling curves and before/after-drift figures.

"Continual evaluation for lifelong learning" (De Lange et al., 2023) shows that evaluating only
at task ends hides the stability gap, so every event is scored as it arrives and kept.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DriftWindow", "PrequentialScore", "mean_loss", "predicted_labels", "row_losses"]

P_MIN = 1e-7  # the smallest probability a log loss takes: a sure miss costs −log(1e-7), not ∞


def mean_loss(prediction: np.ndarray, target: np.ndarray, regression: bool) -> float:
    """Mean log loss of the true classes' probabilities (p ≥ ``P_MIN``) or mean squared error:
    how the quality gate and the expert pool compare two models on the same rows."""
    return float(np.mean(row_losses(prediction, target, regression)))


def row_losses(prediction: np.ndarray, target: np.ndarray, regression: bool) -> np.ndarray:
    """:func:`mean_loss`'s loss of each row."""
    if regression:
        return (prediction.astype(np.float64) - target) ** 2
    p = np.take_along_axis(prediction, target[:, None].astype(np.int64), axis=1)[:, 0]
    return -np.log(np.clip(p, P_MIN, 1.0))


def predicted_labels(prediction: np.ndarray, classes: Sequence[Hashable]) -> list[Hashable | None]:
    """Argmax class per row; None where no class was known yet (an all-zero row)."""
    best = prediction.argmax(axis=1)
    has = prediction.max(axis=1) > 0
    return [
        classes[k] if ok and k < len(classes) else None for k, ok in zip(best, has, strict=False)
    ]


def _same(a: Hashable, b: Hashable) -> bool:
    """Label equality that keeps True and 1 apart, as LabelMap does."""
    return bool(a == b) and isinstance(a, bool | np.bool_) == isinstance(b, bool | np.bool_)


@dataclass(frozen=True, slots=True)
class DriftWindow:
    """Accuracy in the ``span`` events before and after a drift position."""

    position: int
    before: float
    after: float


class PrequentialScore:
    """Accumulates a per-event score: 1/0 hits for classification, absolute error otherwise."""

    def __init__(self, regression: bool = False) -> None:
        self.regression = regression
        self._scores: list[np.ndarray] = []

    @property
    def metric(self) -> str:
        return "MAE" if self.regression else "accuracy"

    def update(
        self,
        prediction: np.ndarray,
        ys: Sequence[Hashable | None],
        classes: Sequence[Hashable] = (),
    ) -> None:
        """Score the labelled rows of one batch (unlabelled rows are not scored)."""
        labelled = [i for i, y in enumerate(ys) if y is not None]
        if self.regression:
            pred = np.asarray(prediction, dtype=np.float64)[labelled]
            truth = np.array([float(ys[i]) for i in labelled])  # type: ignore[arg-type]
            self._scores.append(np.abs(pred - truth))
        else:
            labels = predicted_labels(np.asarray(prediction)[labelled], classes)
            hits = [
                labels[j] is not None and _same(labels[j], ys[i]) for j, i in enumerate(labelled)
            ]
            self._scores.append(np.asarray(hits, dtype=np.float64))

    def values(self) -> np.ndarray:
        return np.concatenate(self._scores) if self._scores else np.zeros(0)

    def __len__(self) -> int:
        return int(sum(len(s) for s in self._scores))

    def overall(self) -> float:
        v = self.values()
        return float(v.mean()) if len(v) else float("nan")

    def between(self, start: int, stop: int) -> float:
        v = self.values()[max(start, 0) : stop]
        return float(v.mean()) if len(v) else float("nan")

    def curve(self, window: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Rolling mean over the last ``window`` events, as (event positions, values)."""
        v = self.values()
        if len(v) == 0:
            return np.zeros(0), np.zeros(0)
        cumulative = np.concatenate([[0.0], np.cumsum(v)])
        ends = np.arange(1, len(v) + 1)
        starts = np.maximum(ends - window, 0)
        return ends, (cumulative[ends] - cumulative[starts]) / (ends - starts)

    def around(self, positions: Sequence[int], span: int) -> list[DriftWindow]:
        return [
            DriftWindow(p, self.between(p - span, p), self.between(p, p + span)) for p in positions
        ]
