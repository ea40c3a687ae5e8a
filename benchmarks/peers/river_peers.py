"""river peers: which models, and the prequential loop (predict_one, then learn_one).

Every peer sees the same rows in the same order as streamlearn. Only the model's own calls are
timed; progress reporting and scoring happen outside the timed region. ``RIVER_PEERS`` are the
prequential benchmark's classifiers; the suite (benchmarks/suite.py) adds ``EXTRA_CLASSIFIERS``
and compares regression streams against ``REGRESSION_PEERS``. Linear models and AMF read
numbers only: on streams with string features, those are one-hot encoded in front of the model
(``categorical=True``), as river's own pipelines do; the Hoeffding trees read them as nominal.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from report import ModelRun, score_from_errors, score_from_hits
from river import compose, forest, linear_model, multiclass, preprocessing, rules, tree
from river.base import Estimator
from tqdm import tqdm

__all__ = ["EXTRA_CLASSIFIERS", "REGRESSION_PEERS", "RIVER_PEERS", "RiverPeer", "run_river_peer"]

Row = tuple[dict[str, Any], Hashable]

_OVR_NOTE = "LogisticRegression is binary-only: wrapped in multiclass.OneVsRestClassifier"


def _logistic(task: str) -> Estimator:
    lr = linear_model.LogisticRegression()
    return multiclass.OneVsRestClassifier(lr) if task == "multiclass" else lr


def _inputs(scaled: bool, categorical: bool) -> Estimator | None:
    """What a linear peer puts in front of its model: a StandardScaler (``scaled``) and, on a
    stream with string features, those one-hot encoded beside the numbers."""
    if not categorical:
        return preprocessing.StandardScaler() if scaled else None
    numbers_part = compose.SelectType(numbers.Number)
    if scaled:
        numbers_part = numbers_part | preprocessing.StandardScaler()
    return numbers_part + (compose.SelectType(str) | preprocessing.OneHotEncoder())


def _numeric(model: Callable[[], Estimator], scaled: bool) -> Callable[[bool], Estimator]:
    """A builder of ``model`` behind :func:`_inputs` (for models that read numbers only)."""

    def build(categorical: bool) -> Estimator:
        front = _inputs(scaled, categorical)
        return model() if front is None else front | model()

    return build


@dataclass(frozen=True)
class RiverPeer:
    """A named river model: ``build(task, seed, categorical)`` returns a fresh, untrained one
    (``categorical``: the stream has string features)."""

    key: str
    name: str
    build: Callable[[str, int, bool], Estimator]
    multiclass_note: str = ""  # said in the table notes on multiclass streams


RIVER_PEERS: dict[str, RiverPeer] = {
    peer.key: peer
    for peer in (
        RiverPeer(
            "river-lr",
            "river LogisticRegression",
            lambda task, seed, cat: _numeric(lambda: _logistic(task), False)(cat),
            _OVR_NOTE,
        ),
        RiverPeer(
            "river-scaled-lr",
            "river StandardScaler | LogisticRegression",
            lambda task, seed, cat: _numeric(lambda: _logistic(task), True)(cat),
            _OVR_NOTE,
        ),
        RiverPeer(
            "river-hat",
            "river HoeffdingAdaptiveTree",
            lambda task, seed, cat: tree.HoeffdingAdaptiveTreeClassifier(seed=seed),
        ),
        RiverPeer(
            "river-arf",
            "river ARF (10 models)",
            lambda task, seed, cat: forest.ARFClassifier(n_models=10, seed=seed),
        ),
    )
}
EXTRA_CLASSIFIERS: dict[str, RiverPeer] = {
    "river-amf": RiverPeer(
        "river-amf",
        "river AMF (10 trees)",
        lambda task, seed, cat: _numeric(
            lambda: forest.AMFClassifier(n_estimators=10, seed=seed), False
        )(cat),
    ),
}
REGRESSION_PEERS: dict[str, RiverPeer] = {
    peer.key: peer
    for peer in (
        RiverPeer(
            "river-linreg",
            "river LinearRegression",
            lambda task, seed, cat: _numeric(linear_model.LinearRegression, False)(cat),
        ),
        RiverPeer(
            "river-scaled-linreg",
            "river StandardScaler | LinearRegression",
            lambda task, seed, cat: _numeric(linear_model.LinearRegression, True)(cat),
        ),
        RiverPeer(
            "river-hatr",
            "river HoeffdingAdaptiveTreeRegressor",
            lambda task, seed, cat: tree.HoeffdingAdaptiveTreeRegressor(seed=seed),
        ),
        RiverPeer(
            "river-arfr",
            "river ARF regressor (10 models)",
            lambda task, seed, cat: forest.ARFRegressor(n_models=10, seed=seed),
        ),
        RiverPeer(
            "river-amrules",
            "river AMRules",
            lambda task, seed, cat: rules.AMRules(),
        ),
    )
}


def _chunks(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def run_river_peer(
    peer: RiverPeer,
    rows: Sequence[Row],
    task: str,
    seed: int,
    *,
    progress: bool = True,
    chunk: int = 500,
    categorical: bool = False,
) -> ModelRun:
    """Prequential run of one river peer: each row is predicted, then learned.

    A prediction of ``None`` (nothing learned yet) counts as a miss, as in streamlearn; on a
    regression stream the score is the absolute error (``None`` scored as 0.0 predicted).
    """
    model = peer.build(task, seed, categorical)
    predictions: list[Hashable | None] = []
    seconds = 0.0
    with tqdm(total=len(rows), desc=peer.name, unit="ev", disable=not progress, leave=False) as bar:
        for part in _chunks(len(rows), chunk):
            start = time.perf_counter()
            for i in part:
                x, y = rows[i]
                predictions.append(model.predict_one(x))
                model.learn_one(x, y)
            seconds += time.perf_counter() - start
            bar.update(len(part))
    notes = [peer.multiclass_note] if task == "multiclass" and peer.multiclass_note else []
    if task == "regression":
        errors = [
            abs(float(p or 0.0) - float(y)) for p, (_, y) in zip(predictions, rows, strict=True)
        ]
        return ModelRun(peer.key, peer.name, score_from_errors(errors), seconds, notes)
    hits = [p is not None and p == y for p, (_, y) in zip(predictions, rows, strict=True)]
    return ModelRun(peer.key, peer.name, score_from_hits(hits), seconds, notes)
