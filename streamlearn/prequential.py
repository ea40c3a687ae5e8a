"""Prequential: the stages every consumer shares — encode → score → loss → drift → learn.

The worker, the demo, the river estimators and the benchmarks all drive this one object, so
"predict first, then learn" and the drift response are written once. It works on micro-batches
of feature dicts or of columns; labels may be missing (score only) or unknown (counted, not
learned).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.drift import build_detector
from streamlearn.features import EncodedFeatures, FeatureEncoder
from streamlearn.labels import LabelMap
from streamlearn.learn.learner import OnlineLearner
from streamlearn.settings import Settings

__all__ = ["BatchOutcome", "Prequential"]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Per-row results of one micro-batch, in input order."""

    prediction: np.ndarray  # [B, C] class probabilities (rows sum to 1, or 0 if no class yet)
    #                         or [B] regression values
    loss: np.ndarray  # [B] prequential loss; NaN for rows not learned
    learned: np.ndarray  # [B] bool: the row was trained on
    drifts: list[int]  # global positions (labelled-event count) where drift fired


class Prequential:
    """Owns encoder, label map, learner and drift detector; processes micro-batches."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        f, lrn = settings.features, settings.learner
        self.encoder = FeatureEncoder(
            f.numeric_slots, f.categorical_slots, f.hash_buckets, f.numeric, f.categorical
        )
        self.regression = lrn.task == "regression"
        self.labels = LabelMap(
            2 if lrn.task == "binary" else lrn.max_classes, lrn.classes, fixed=bool(lrn.classes)
        )
        self.learner = OnlineLearner(lrn, f)
        self.learner.set_classes(self._class_mask())
        self.detector = build_detector(settings.drift)
        self.seen = 0  # labelled events learned from
        self.unknown_labels = 0
        self.drifts: list[int] = []

    def _class_mask(self) -> np.ndarray:
        mask = np.zeros(self.learner.model.class_mask.shape[0], dtype=bool)
        mask[: len(self.labels)] = True
        return mask

    # -- scoring only ---------------------------------------------------------------------
    def predict(self, xs: Sequence[Mapping[Any, Any]]) -> np.ndarray:
        return self._predict(self.encoder.encode(xs))

    def predict_columns(self, columns: Mapping[Any, Any]) -> np.ndarray:
        return self._predict(self.encoder.encode_columns(columns))

    def _predict(self, feats: EncodedFeatures) -> np.ndarray:
        return self.learner.predict(self.encoder.standardize(feats.num), feats.cat)

    # -- prequential step -----------------------------------------------------------------
    def process(
        self, xs: Sequence[Mapping[Any, Any]], ys: Sequence[Hashable | None]
    ) -> BatchOutcome:
        """Score every row, then learn from the labelled ones."""
        return self.process_encoded(self.encoder.encode(xs), ys)

    def process_columns(
        self, columns: Mapping[Any, Any], ys: Sequence[Hashable | None]
    ) -> BatchOutcome:
        return self.process_encoded(self.encoder.encode_columns(columns), ys)

    def _targets(self, ys: Sequence[Hashable | None]) -> tuple[np.ndarray, np.ndarray]:
        """(rows to learn, their targets); unknown classes are counted and not learned."""
        if self.regression:
            target = np.array([np.nan if y is None else float(y) for y in ys])  # type: ignore[arg-type]
            ok = np.isfinite(target)
            return ok, target[ok]
        slots = np.array([-1 if y is None else _slot(self.labels, y) for y in ys], np.int64)
        labelled = np.array([y is not None for y in ys])
        self.unknown_labels += int((labelled & (slots < 0)).sum())
        ok = slots >= 0
        return ok, slots[ok]

    def process_encoded(
        self, feats: EncodedFeatures, ys: Sequence[Hashable | None]
    ) -> BatchOutcome:
        n = len(feats)
        known_before = len(self.labels)
        ok, target = self._targets(ys)
        z = self.encoder.standardize(feats.num)
        if len(self.labels) != known_before:
            self.learner.set_classes(self._class_mask())
        width = () if self.regression else (self.learner.model.class_mask.shape[0],)
        prediction = np.zeros((n, *width), dtype=np.float32)
        loss = np.full(n, np.nan)
        drifts: list[int] = []
        if ok.any():
            result = self.learner.step(z[ok], feats.cat[ok], target)
            prediction[ok] = result.prediction
            loss[ok] = result.loss
            for offset in self.detector.update(result.loss):
                drifts.append(self.seen + offset)
            if drifts:
                self.learner.on_drift()
            self.seen += int(ok.sum())
            self.encoder.observe(feats.num[ok])
        if not ok.all():
            prediction[~ok] = self.learner.predict(z[~ok], feats.cat[~ok])
        if not self.regression and len(self.labels) != known_before:
            prediction = _without_new_classes(prediction, known_before)
        self.drifts.extend(drifts)
        return BatchOutcome(prediction, loss, ok, drifts)

    def classes(self) -> list[Hashable]:
        return list(self.labels.classes)


def _slot(labels: LabelMap, y: Hashable) -> int:
    slot = labels.add(y)
    return -1 if slot is None else slot


def _without_new_classes(prediction: np.ndarray, known: int) -> np.ndarray:
    """Renormalise over classes known before this batch: its labels stay unseen."""
    prediction[:, known:] = 0.0
    total = prediction.sum(axis=1, keepdims=True)
    return np.divide(prediction, total, out=np.zeros_like(prediction), where=total > 0)
