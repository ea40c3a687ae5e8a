"""Named drifting streams from river.datasets.synth, seeded, with their drift positions.

Abrupt streams switch concept at equal fractions of the stream (one third and two thirds for
three concepts); incremental ones drift continuously and have no single drift point. river is
imported when a stream is built, not with this module: the command line lists the streams in
every role, and the serving role does not install river.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from types import ModuleType
from typing import Any

from streamlearn.errors import SourceError
from streamlearn.events import Event, Label
from streamlearn.sources.base import batched

__all__ = ["STREAMS", "StreamSpec", "SyntheticSource", "stream_rows"]


def _abrupt(
    concepts: list[Any], n_events: int, order: tuple[int, ...] = ()
) -> Iterator[tuple[dict[str, Any], Any]]:
    """concept0 → concept1 → … switching abruptly at equal fractions of the stream.

    river's ConceptDriftStream models a sigmoid transition whose width-1 form overflows on
    long streams, so the switch is done here: event i comes from concept ⌊i·k/n⌋ of ``order``
    (k segments; default: each concept once, in turn). A concept that recurs in ``order``
    continues its own generator: it returns with fresh events, not a replay.
    """
    streams = [iter(c) for c in concepts]
    order = order or tuple(range(len(concepts)))
    for i in range(n_events):
        yield next(streams[order[i * len(order) // n_events]])


def _synth() -> ModuleType:
    """river.datasets.synth (the worker's extra)."""
    from river.datasets import synth

    return synth


@dataclass(frozen=True)
class StreamSpec:
    """A named synthetic stream: how to build it and where it drifts."""

    name: str
    description: str
    task: str
    n_concepts: int  # segments, each one concept; > 1: abrupt drifts between them
    build: Callable[[int, int], Any]  # (n_events, seed) -> iterable of (x, y)
    order: tuple[int, ...] = ()  # the concept of each segment where one recurs (else in turn)

    def drift_positions(self, n_events: int) -> list[int]:
        return [n_events * i // self.n_concepts for i in range(1, self.n_concepts)]

    def returns(self, n_events: int) -> list[tuple[int, int]]:
        """(drift position, where that concept's previous segment ended) for each drift back
        to a concept seen before."""
        starts = [0, *self.drift_positions(n_events)]
        last_end: dict[int, int] = {}
        found = []
        for i, concept in enumerate(self.order):
            if concept in last_end:
                found.append((starts[i], last_end[concept]))
            last_end[concept] = starts[i + 1] if i + 1 < len(starts) else n_events
        return found


_RECURRING = (0, 1, 0, 1)  # agrawal-recurring: A → B → A → B

STREAMS: dict[str, StreamSpec] = {
    spec.name: spec
    for spec in (
        StreamSpec(
            "agrawal-drift",
            "Agrawal loan data, classification functions 0 → 2 → 4, two abrupt drifts",
            "binary",
            3,
            lambda n, seed: _abrupt(
                [_synth().Agrawal(classification_function=f, seed=seed + f) for f in (0, 2, 4)], n
            ),
        ),
        StreamSpec(
            "sea-drift",
            "SEA concepts, variants 0 → 1 → 2 → 3, 10% label noise, three abrupt drifts",
            "binary",
            4,
            lambda n, seed: _abrupt(
                [_synth().SEA(variant=v, noise=0.1, seed=seed + v) for v in range(4)], n
            ),
        ),
        StreamSpec(
            "agrawal-recurring",
            "Agrawal loan data, classification functions 0 → 2 → 0 → 2: concepts recur",
            "binary",
            4,
            lambda n, seed: _abrupt(
                [_synth().Agrawal(classification_function=f, seed=seed + f) for f in (0, 2)],
                n,
                _RECURRING,
            ),
            _RECURRING,
        ),
        StreamSpec(
            "hyperplane",
            "rotating hyperplane, 10 features, 5 drifting, 5% noise (incremental drift)",
            "binary",
            1,
            lambda n, seed: _synth().Hyperplane(
                seed=seed, n_features=10, n_drift_features=5, mag_change=0.001
            ),
        ),
        StreamSpec(
            "rbf-drift",
            "random RBF, 4 classes, 50 centroids moving at speed 1e-4 (incremental drift)",
            "multiclass",
            1,
            lambda n, seed: _synth().RandomRBFDrift(
                seed_model=seed,
                seed_sample=seed + 1,
                n_classes=4,
                n_features=10,
                n_centroids=50,
                change_speed=1e-4,
                n_drift_centroids=50,
            ),
        ),
    )
}


def spec_for(name: str) -> StreamSpec:
    try:
        return STREAMS[name]
    except KeyError:
        known = ", ".join(sorted(STREAMS))
        raise SourceError(f"source.stream: unknown stream {name!r} (known: {known})") from None


def stream_rows(name: str, n_events: int, seed: int) -> Iterator[tuple[dict[str, Any], Label]]:
    """The first ``n_events`` (x, y) pairs of a named stream; same seed, same stream."""
    spec = spec_for(name)
    for x, y in islice(spec.build(n_events, seed), n_events):
        yield {str(k): v for k, v in x.items()}, y


class SyntheticSource:
    """A named stream as a Source of Events with ids ``<name>-<index>``."""

    def __init__(self, name: str, n_events: int, seed: int) -> None:
        self.spec = spec_for(name)
        self.n_events = n_events
        self.seed = seed

    @property
    def drift_positions(self) -> list[int]:
        return self.spec.drift_positions(self.n_events)

    def batches(self, batch_size: int) -> Iterator[list[Event]]:
        rows = stream_rows(self.spec.name, self.n_events, self.seed)
        events = (Event(f"{self.spec.name}-{i}", x, y) for i, (x, y) in enumerate(rows))
        return batched(events, batch_size)
