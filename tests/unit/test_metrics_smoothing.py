"""SmoothedScores: batches folded many at once give the per-batch moving averages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamlearn.core.prequential import BatchOutcome
from streamlearn.metrics.smoothing import SmoothedScores

SMOOTHING = 0.01


def per_batch(outcomes: list[BatchOutcome]) -> tuple[float | None, float | None]:
    """The reference: each batch's means over its learned rows (a non-finite loss row left
    out of the loss), then one step of each average per batch, in order."""
    loss = score = None
    for o in outcomes:
        n = int(o.learned.sum())
        if n == 0:
            continue
        rows = o.loss[o.learned]
        rows = rows[np.isfinite(rows)]
        batch_loss = float(rows.sum()) / len(rows) if len(rows) else math.nan
        pred = o.prediction[o.learned]
        if pred.ndim == 1:
            value = float(np.abs(pred - o.target).sum()) / n
        else:
            value = float(np.count_nonzero(pred.argmax(axis=1) == o.target)) / n
        weight = 1.0 - (1.0 - SMOOTHING) ** n
        if math.isfinite(batch_loss):
            loss = batch_loss if loss is None else loss + weight * (batch_loss - loss)
        if math.isfinite(value):
            score = value if score is None else score + weight * (value - score)
    return loss, score


def batches(regression: bool, count: int, seed: int) -> list[BatchOutcome]:
    """Outcomes of every shape the learner hands out: whole batches, some rows not learned,
    none learned, a NaN or an infinite loss, a non-finite prediction."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        size = int(rng.integers(1, 40))
        learned = rng.random(size) < (1.0 if i % 3 else 0.7)
        if i % 11 == 5:
            learned[:] = False
        loss = np.where(learned, rng.exponential(size=size), np.nan)
        if i % 7 == 3:
            loss[rng.integers(size)] = rng.choice([np.nan, np.inf])
        if regression:
            prediction = rng.normal(size=size).astype(np.float32)
            target = rng.normal(size=int(learned.sum()))
        else:
            prediction = rng.dirichlet(np.ones(4), size=size).astype(np.float32)
            target = rng.integers(0, 4, size=int(learned.sum()))
        if i == 9 and learned.any():
            prediction[np.flatnonzero(learned)[0]] = np.nan  # the score's step is skipped
        out.append(BatchOutcome(prediction, loss, learned, [], target))
    return out


@pytest.mark.parametrize("regression", [False, True])
@pytest.mark.parametrize("fold_rows", [1, 100, 2048])
def test_folds_of_any_size_give_the_per_batch_averages(regression, fold_rows):
    outcomes = batches(regression, 150, seed=fold_rows)
    scores = SmoothedScores(SMOOTHING, fold_rows)
    for o in outcomes:
        if scores.add(o):
            scores.fold()
    scores.fold()  # what is left, as a scrape folds it
    loss, score = per_batch(outcomes)
    assert scores.loss == pytest.approx(loss, rel=1e-9)
    assert scores.score == pytest.approx(score, rel=1e-9)
    assert scores.score_name == ("mae" if regression else "accuracy")


def test_add_says_when_a_fold_is_due_and_a_fold_empties_the_kept():
    outcomes = batches(False, 3, seed=1)
    rows = [len(o.learned) for o in outcomes]
    scores = SmoothedScores(SMOOTHING, fold_rows=rows[0] + rows[1] + 1)
    assert [scores.add(o) for o in outcomes] == [False, False, True]
    assert scores.fold() is True and scores.fold() is False  # nothing kept any more


def test_batches_without_learned_rows_take_no_step():
    scores = SmoothedScores(SMOOTHING)
    none_learned = BatchOutcome(
        np.full((4, 2), 0.5, np.float32), np.full(4, np.nan), np.zeros(4, bool), [], np.array([])
    )
    scores.add(none_learned)
    assert scores.fold() is False and scores.loss is None and scores.score is None
