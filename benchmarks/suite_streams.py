"""The learning-quality suite's streams (issue 23): river's bundled data sets and drifting
generators, seeded, each with its task, its kind of drift and where it drifts.

Only data sets that river ships inside its wheel are used, so the suite runs without a network.
Generated streams switch concept abruptly (streamlearn.sources.synthetic's ``_abrupt``),
gradually (river's ConceptDriftStream, a sigmoid transition of a given width), recur to earlier
concepts, or drift incrementally (no single drift point). ``sparse-categorical`` is made here:
river has no high-cardinality categorical generator.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from river import datasets
from river.datasets import synth

from streamlearn.sources.synthetic import STREAMS as WORKER_STREAMS

__all__ = ["SUITE", "SuiteStream", "suite_rows"]

Row = tuple[dict[str, Any], Hashable]


@dataclass(frozen=True)
class SuiteStream:
    """A named stream of the suite: how to build it and where its concept changes."""

    name: str
    description: str
    task: str  # binary, multiclass or regression
    drift: str  # none, abrupt, gradual, recurring or incremental
    build: Callable[[int, int], Iterable[Row]]  # (n_events, seed) -> (x, y) pairs
    switches: int = 0  # abrupt/gradual/recurring: concept switches at equal fractions
    real: bool = False  # a real data set (its whole length, at most n_events)

    def drift_positions(self, n_events: int) -> list[int]:
        return [n_events * i // (self.switches + 1) for i in range(1, self.switches + 1)]


def _switching(concepts: list[Iterable[Row]], n_events: int) -> Iterator[Row]:
    """concept 0 → 1 → … switching abruptly at equal fractions of the stream."""
    streams = [iter(c) for c in concepts]
    for i in range(n_events):
        yield next(streams[i * len(concepts) // n_events])


def _gradual(concepts: list[Any], n_events: int, width: int, seed: int) -> Any:
    """ConceptDriftStreams chained: each switch centred at an equal fraction, ``width`` wide."""
    stream = concepts[-1]
    for k in range(len(concepts) - 1, 0, -1):
        position = n_events * k // len(concepts)
        stream = synth.ConceptDriftStream(
            concepts[k - 1], stream, position=position, width=width, seed=seed + k
        )
    return stream


def _stagger_recurring(n: int, seed: int) -> Iterator[Row]:
    """STAGGER rules 0 → 1 → 2 → 0 → 1 → 2 with the attributes as categories (strings)."""
    concepts = [synth.STAGGER(classification_function=f % 3, seed=seed + f) for f in range(6)]
    for x, y in _switching(concepts, n):
        yield {k: f"{k}{v}" for k, v in x.items()}, y


def _sparse_categorical(n: int, seed: int) -> Iterator[Row]:
    """12 categorical features of 50–2,000 values plus 4 numeric ones; the label is the sign of
    a sum of per-value effects (a click-through-like table), with 10 % label noise. At the
    middle, half of the categorical features' effects are drawn again (one abrupt drift)."""
    rng = np.random.default_rng(seed)
    cards = [50, 100, 200, 500, 1000, 2000] * 2
    probs = [1.0 / np.arange(1, c + 1) ** 0.8 for c in cards]  # Zipf-like: a few values common
    probs = [p / p.sum() for p in probs]
    effects = [rng.normal(0.0, 1.0, c) for c in cards]
    weights = rng.normal(0.0, 0.5, 4)
    values = np.stack([rng.choice(c, size=n, p=p) for c, p in zip(cards, probs, strict=True)], 1)
    num = rng.normal(0.0, 1.0, (n, 4))
    noise = rng.random(n) < 0.1
    redrawn = [
        rng.normal(0.0, 1.0, c) if j % 2 == 0 else e
        for j, (c, e) in enumerate(zip(cards, effects, strict=True))
    ]
    for i in range(n):
        table = effects if i < n // 2 else redrawn
        score = sum(e[v] for e, v in zip(table, values[i], strict=True)) / 2 + num[i] @ weights
        x: dict[str, Any] = {f"c{j}": f"v{v}" for j, v in enumerate(values[i])}
        x.update({f"n{j}": float(v) for j, v in enumerate(num[i])})
        yield x, bool(score > 0) ^ bool(noise[i])


def _worker_stream(name: str) -> Callable[[int, int], Iterable[Row]]:
    return WORKER_STREAMS[name].build


SUITE: dict[str, SuiteStream] = {
    s.name: s
    for s in (
        # -- real data sets bundled with river -------------------------------------------------
        SuiteStream(
            "phishing",
            "Phishing web pages (river.datasets.Phishing), 9 features, 1,250 events",
            "binary",
            "none",
            lambda n, seed: datasets.Phishing(),
            real=True,
        ),
        SuiteStream(
            "bananas",
            "Bananas (river.datasets.Bananas), 2 features, non-linear boundary, 5,300 events",
            "binary",
            "none",
            lambda n, seed: datasets.Bananas(),
            real=True,
        ),
        SuiteStream(
            "image-segments",
            "ImageSegments (river.datasets.ImageSegments), 7 classes, 18 features, 2,310 events",
            "multiclass",
            "none",
            lambda n, seed: datasets.ImageSegments(),
            real=True,
        ),
        SuiteStream(
            "shuttle",
            "Shuttle (river.datasets.Shuttle), 9 features, rare anomalies, first events",
            "binary",
            "none",
            lambda n, seed: datasets.Shuttle(),
            real=True,
        ),
        SuiteStream(
            "trump-approval",
            "TrumpApproval (river.datasets.TrumpApproval), regression, 6 features, 1,001 events",
            "regression",
            "none",
            lambda n, seed: datasets.TrumpApproval(),
            real=True,
        ),
        SuiteStream(
            "chick-weights",
            "ChickWeights (river.datasets.ChickWeights), regression, 3 features, 578 events",
            "regression",
            "none",
            lambda n, seed: datasets.ChickWeights(),
            real=True,
        ),
        # -- generators ------------------------------------------------------------------------
        SuiteStream(
            "agrawal-abrupt",
            WORKER_STREAMS["agrawal-drift"].description,
            "binary",
            "abrupt",
            _worker_stream("agrawal-drift"),
            switches=2,
        ),
        SuiteStream(
            "sea-gradual",
            "SEA variants 0 → 2 → 1, 10 % label noise, two gradual drifts 2,000 events wide",
            "binary",
            "gradual",
            lambda n, seed: _gradual(
                [synth.SEA(variant=v, noise=0.1, seed=seed + v) for v in (0, 2, 1)], n, 2000, seed
            ),
            switches=2,
        ),
        SuiteStream(
            "hyperplane",
            WORKER_STREAMS["hyperplane"].description,
            "binary",
            "incremental",
            _worker_stream("hyperplane"),
        ),
        SuiteStream(
            "sine-abrupt",
            "Sine rules 0 → 1 → 2 → 3 (2 features, non-linear), three abrupt drifts",
            "binary",
            "abrupt",
            lambda n, seed: _switching(
                [synth.Sine(classification_function=f, seed=seed + f) for f in range(4)], n
            ),
            switches=3,
        ),
        SuiteStream(
            "stagger-recurring",
            "STAGGER rules 0 → 1 → 2 → 0 → 1 → 2, categorical attributes, recurring concepts",
            "binary",
            "recurring",
            _stagger_recurring,
            switches=5,
        ),
        SuiteStream(
            "sparse-categorical",
            "12 high-cardinality categorical (50–2,000 values) + 4 numeric features, "
            "click-through-like, one abrupt drift",
            "binary",
            "abrupt",
            _sparse_categorical,
            switches=1,
        ),
        SuiteStream(
            "rbf-incremental",
            WORKER_STREAMS["rbf-drift"].description,
            "multiclass",
            "incremental",
            _worker_stream("rbf-drift"),
        ),
        SuiteStream(
            "led-abrupt",
            "LED digits, 10 classes, 24 features (17 irrelevant), 10 % noise; the drifting "
            "attributes change at two abrupt drifts",
            "multiclass",
            "abrupt",
            lambda n, seed: _switching(
                [
                    synth.LEDDrift(
                        seed=seed + k,
                        noise_percentage=0.1,
                        irrelevant_features=True,
                        n_drift_features=d,
                    )
                    for k, d in enumerate((0, 3, 7))
                ],
                n,
            ),
            switches=2,
        ),
        SuiteStream(
            "waveform",
            "Waveform, 3 classes, 21 noisy features, no drift",
            "multiclass",
            "none",
            lambda n, seed: synth.Waveform(seed=seed),
        ),
        SuiteStream(
            "friedman-gradual",
            "Friedman #1 regression, 10 features; global gradual drifts 2,000 events wide (a "
            "tenth of a shorter stream) at a third and two thirds (FriedmanDrift 'gsg')",
            "regression",
            "gradual",
            lambda n, seed: synth.FriedmanDrift(
                drift_type="gsg",
                position=(n // 3, 2 * n // 3),
                transition_window=min(2000, n // 10),
                seed=seed,
            ),
            switches=2,
        ),
        SuiteStream(
            "friedman-abrupt",
            "Friedman #1 regression, 10 features; local expanding abrupt drifts at a quarter, "
            "a half and three quarters (FriedmanDrift 'lea')",
            "regression",
            "abrupt",
            lambda n, seed: synth.FriedmanDrift(
                drift_type="lea", position=(n // 4, n // 2, 3 * n // 4), seed=seed
            ),
            switches=3,
        ),
    )
}


def suite_rows(name: str, n_events: int, seed: int) -> list[Row]:
    """The first ``n_events`` (x, y) pairs of a suite stream (a real data set: at most its
    whole length), feature names as strings and numpy scalars as Python values."""
    rows = []
    for x, y in islice(SUITE[name].build(n_events, seed), n_events):
        rows.append(({str(k): _plain(v) for k, v in x.items()}, _plain(y)))
    return rows


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
