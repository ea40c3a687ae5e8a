"""SmoothedScores: the worker's smoothed prequential loss and score, folded many batches at once.

The gauges ``prequential_loss`` and ``prequential_accuracy`` (``prequential_mae`` for regression)
are event-weighted exponential moving averages over each micro-batch's learned rows: a batch of
n learned rows whose mean is m moves an average by w = 1 − (1 − s)^n towards m. A batch's means
take a few numpy reductions over a few dozen rows, each paying numpy's fixed cost per call, and
the worker's loop paid them for every batch. Here the loop only keeps the batch's outcome; once
``fold_rows`` rows are kept, and whenever the gauges are read, one pass computes every kept
batch's means with one reduction per quantity, then takes the averages' steps in the batches'
order: the values per-batch updates would give (to the order of the sums' additions). Counted in
rows, not batches: small batches share the fixed cost of a reduction, large ones pay about what
they did.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streamlearn.core.prequential import BatchOutcome

__all__ = ["FOLD_ROWS", "SmoothedScores"]

FOLD_ROWS = 2048  # rows kept before the loop folds them (a scrape folds what is kept)


class SmoothedScores:
    """The smoothed loss and score of the batches :meth:`add` kept, up to date after
    :meth:`fold`. ``smoothing``: s, the weight of one learned event. Not thread-safe: its owner
    serialises calls."""

    def __init__(self, smoothing: float, fold_rows: int = FOLD_ROWS) -> None:
        self.smoothing = smoothing
        self.fold_rows = fold_rows
        self.loss: float | None = None  # None until a batch had a finite mean
        self.score: float | None = None
        self.score_name: str | None = None  # "accuracy" or "mae", once a score exists
        self._kept: list[BatchOutcome] = []
        self._rows = 0  # rows of the kept batches

    def add(self, outcome: BatchOutcome) -> bool:
        """Keep a learned batch's outcome (its arrays are read at the fold, not copied: the
        learner hands out new ones per batch); True once ``fold_rows`` rows are kept."""
        self._kept.append(outcome)
        self._rows += len(outcome.learned)
        return self._rows >= self.fold_rows

    def fold(self) -> bool:
        """Take the kept batches' steps, in order; whether any batch had learned rows."""
        kept, self._kept, self._rows = self._kept, [], 0
        moved = False
        # a fold concatenates predictions: batches of one width together (the width is the
        # model's class slots, fixed while it runs)
        for _, group in itertools.groupby(kept, key=lambda o: o.prediction.shape[1:]):
            moved |= self._fold_group(list(group))
        return moved

    def _fold_group(self, group: list[BatchOutcome]) -> bool:
        learned = np.concatenate([o.learned for o in group])
        starts = np.cumsum([0, *(len(o.learned) for o in group[:-1])])
        counts = np.add.reduceat(learned.astype(np.intp), starts)
        loss = np.concatenate([o.loss for o in group])
        finite = learned & np.isfinite(loss)  # a row without a finite loss: the others' mean
        loss_sums = np.add.reduceat(np.where(finite, loss, 0.0), starts)
        finite_counts = np.add.reduceat(finite.astype(np.intp), starts)
        with np.errstate(invalid="ignore", divide="ignore"):
            batch_losses = np.where(finite_counts > 0, loss_sums / finite_counts, np.nan)
        used = counts > 0  # batches without a learned row take no step
        learned_counts = counts[used]
        if not len(learned_counts):
            return False
        # targets are the learned rows' only, in order: so are the predictions taken here
        prediction = np.concatenate([o.prediction for o in group])
        if not learned.all():
            prediction = prediction[learned]
        target = np.concatenate([o.target for o in group])
        row_starts = np.cumsum([0, *learned_counts[:-1]])
        if prediction.ndim == 1:
            name, per_row = "mae", np.abs(prediction - target)
        else:
            name, per_row = "accuracy", (prediction.argmax(axis=1) == target).astype(np.intp)
        values = np.add.reduceat(per_row, row_starts) / learned_counts
        keep = 1.0 - self.smoothing
        for n, batch_loss, value in zip(
            learned_counts.tolist(), batch_losses[used].tolist(), values.tolist(), strict=True
        ):
            weight = 1.0 - keep**n
            if math.isfinite(batch_loss):
                self.loss = _ewma(self.loss, batch_loss, weight)
            if math.isfinite(value):
                self.score, self.score_name = _ewma(self.score, value, weight), name
        return True


def _ewma(old: float | None, new: float, weight: float) -> float:
    return new if old is None else old + weight * (new - old)
