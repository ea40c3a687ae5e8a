"""Odd but decodable input never crashes the prequential chain nor makes its output non-finite.

A seeded fuzz: events with values at the edges of float64 (1e308, denormals, 10**300), long
and non-ASCII strings, numeric strings, nulls, and labels of every type, through ``decode`` and
``Prequential.process``/``predict`` for each task.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from streamlearn.core.prequential import Prequential
from streamlearn.events import Event, decode
from streamlearn.settings import load_settings

VALUES = (
    lambda r: r.uniform(-10, 10),
    lambda r: 1e308,
    lambda r: -1e308,
    lambda r: 5e-324,
    lambda r: 3.4e38,
    lambda r: 1e154,
    lambda r: 10**300,
    lambda r: r.randint(-(10**15), 10**15),
    lambda r: True,
    lambda r: None,
    lambda r: "x" * r.randint(0, 50),
    lambda r: "é中",
    lambda r: "1.5",
    lambda r: -0.0,
)
LABELS = (
    lambda r: r.randint(0, 3),
    lambda r: "a",
    lambda r: True,
    lambda r: None,
    lambda r: 1e300,
    lambda r: r.uniform(-1e6, 1e6),
    lambda r: 10**18,
    lambda r: "",
    lambda r: 5e-324,
)


def _batch(rng: random.Random, names: list[str]) -> list[Event]:
    events = []
    for i in range(rng.randint(0, 40)):
        x = {n: rng.choice(VALUES)(rng) for n in rng.sample(names, rng.randint(0, len(names)))}
        decoded = decode(json.dumps({"id": i, "x": x, "y": rng.choice(LABELS)(rng)}).encode())
        if isinstance(decoded, Event):
            events.append(decoded)
    return events


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_odd_values_keep_everything_finite(task: str, seed: int) -> None:
    rng = random.Random(seed)
    preq = Prequential.from_settings(
        load_settings(
            learner={"task": task, "hidden": [16]},
            features={"numeric_slots": 6, "categorical_slots": 3},
        )
    )
    names = [f"f{i}" for i in range(rng.randint(3, 9))]
    learned = 0
    with np.errstate(all="ignore"):  # numpy may warn on the way; the results must be finite
        for _ in range(6):
            events = _batch(rng, names)
            outcome = preq.process([e.x for e in events], [e.y for e in events])
            learned += int(outcome.learned.sum())
            assert np.isfinite(outcome.prediction).all()
            if events:
                assert np.isfinite(preq.predict([e.x for e in events])).all()
    assert learned > 0  # the fuzz must exercise learning, not only rejections
    assert np.isfinite(preq.encoder.mean).all() and np.isfinite(preq.encoder.m2).all()
    assert all(np.isfinite(p.detach().cpu().numpy()).all() for p in preq.learner.model.parameters())
