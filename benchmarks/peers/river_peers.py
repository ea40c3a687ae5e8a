"""river peers: which models, and the prequential loop (predict_one, then learn_one).

Every peer sees the same rows in the same order as streamlearn. Only the model's own calls are
timed; progress reporting and scoring happen outside the timed region.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from report import ModelRun, score_from_hits
from river import forest, linear_model, multiclass, preprocessing, tree
from river.base import Classifier
from tqdm import tqdm

__all__ = ["RIVER_PEERS", "RiverPeer", "run_river_peer"]

Row = tuple[dict[str, Any], Hashable]

_OVR_NOTE = "LogisticRegression is binary-only: wrapped in multiclass.OneVsRestClassifier"


def _logistic(task: str) -> Classifier:
    lr = linear_model.LogisticRegression()
    return multiclass.OneVsRestClassifier(lr) if task == "multiclass" else lr


@dataclass(frozen=True)
class RiverPeer:
    """A named river model: ``build(task, seed)`` returns a fresh, untrained classifier."""

    key: str
    name: str
    build: Callable[[str, int], Classifier]
    multiclass_note: str = ""  # said in the table notes on multiclass streams


RIVER_PEERS: dict[str, RiverPeer] = {
    peer.key: peer
    for peer in (
        RiverPeer(
            "river-lr",
            "river LogisticRegression",
            lambda task, seed: _logistic(task),
            _OVR_NOTE,
        ),
        RiverPeer(
            "river-scaled-lr",
            "river StandardScaler | LogisticRegression",
            lambda task, seed: preprocessing.StandardScaler() | _logistic(task),
            _OVR_NOTE,
        ),
        RiverPeer(
            "river-hat",
            "river HoeffdingAdaptiveTree",
            lambda task, seed: tree.HoeffdingAdaptiveTreeClassifier(seed=seed),
        ),
        RiverPeer(
            "river-arf",
            "river ARF (10 models)",
            lambda task, seed: forest.ARFClassifier(n_models=10, seed=seed),
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
) -> ModelRun:
    """Prequential run of one river peer: each row is predicted, then learned.

    A prediction of ``None`` (nothing learned yet) counts as a miss, as in streamlearn.
    """
    model = peer.build(task, seed)
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
    hits = [p is not None and p == y for p, (_, y) in zip(predictions, rows, strict=True)]
    notes = [peer.multiclass_note] if task == "multiclass" and peer.multiclass_note else []
    return ModelRun(peer.key, peer.name, score_from_hits(hits), seconds, notes)
