import itertools

import pytest

from streamlearn.errors import SourceError
from streamlearn.events import Event
from streamlearn.sources import STREAMS, Source, SyntheticSource
from streamlearn.sources.synthetic import spec_for, stream_rows

NAMES = sorted(STREAMS)


def test_the_named_streams():
    assert NAMES == ["agrawal-drift", "agrawal-recurring", "hyperplane", "rbf-drift", "sea-drift"]
    for name, spec in STREAMS.items():
        assert spec.name == name and spec.description
        assert spec.task in ("binary", "multiclass")


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed(name):
    a = list(stream_rows(name, 300, 11))
    b = list(stream_rows(name, 300, 11))
    c = list(stream_rows(name, 300, 12))
    assert len(a) == 300
    assert a == b
    assert a != c
    for x, _ in a:
        assert all(isinstance(k, str) for k in x)  # feature names are strings


@pytest.mark.parametrize("name", NAMES)
def test_labels_match_the_task(name):
    labels = {y for _, y in stream_rows(name, 400, 1)}
    if STREAMS[name].task == "binary":
        assert len(labels) == 2 and {int(y) for y in labels} == {0, 1}
    else:
        assert len(labels) > 2


def test_drift_positions():
    assert STREAMS["sea-drift"].drift_positions(8000) == [2000, 4000, 6000]
    assert STREAMS["agrawal-drift"].drift_positions(30_000) == [10_000, 20_000]
    assert STREAMS["agrawal-drift"].drift_positions(100) == [33, 66]
    assert STREAMS["hyperplane"].drift_positions(5000) == []
    assert SyntheticSource("sea-drift", 1000, 0).drift_positions == [250, 500, 750]


def test_abrupt_switch_happens_at_the_drift_position():
    # SEA concepts differ only in the threshold on x0 + x1 (y = x0 + x1 > threshold); 10% noise
    rows = list(stream_rows("sea-drift", 4000, 3))
    thresholds = [8.0, 9.0, 7.0, 9.5]
    for segment, threshold in enumerate(thresholds):
        part = rows[segment * 1000 : (segment + 1) * 1000]
        agree = sum((x["0"] + x["1"] > threshold) == bool(y) for x, y in part) / len(part)
        assert agree > 0.85, (segment, agree)
        other = thresholds[(segment + 1) % 4]
        near = [
            (x, y)
            for x, y in part
            if min(threshold, other) < x["0"] + x["1"] <= max(threshold, other)
        ]
        wrong = sum((x["0"] + x["1"] > other) == bool(y) for x, y in near) / len(near)
        assert wrong < 0.3, (segment, wrong)  # the neighbouring concept does not fit


def test_a_recurring_concept_returns_with_fresh_rows():
    """agrawal-recurring: Agrawal's function 0 (y = age < 40 or age ≥ 60) in segments 0 and 2,
    function 2 in 1 and 3; the return continues the concept's generator, it does not replay."""
    spec = STREAMS["agrawal-recurring"]
    assert spec.drift_positions(4000) == [1000, 2000, 3000]
    assert spec.returns(4000) == [(2000, 1000), (3000, 2000)]
    assert STREAMS["agrawal-drift"].returns(4000) == []
    rows = list(stream_rows("agrawal-recurring", 4000, 3))
    for segment in range(4):
        part = rows[segment * 1000 : (segment + 1) * 1000]
        fits = sum(int(x["age"] < 40 or x["age"] >= 60) == y for x, y in part) / len(part)
        assert (fits == 1.0) == (segment % 2 == 0), (segment, fits)
    assert not any(a == b for a, b in zip(rows[:1000], rows[2000:3000], strict=True))


def test_unknown_stream_names_the_known_ones():
    with pytest.raises(SourceError) as info:
        spec_for("no-such-stream")
    message = str(info.value)
    assert "no-such-stream" in message
    assert all(name in message for name in NAMES)
    with pytest.raises(SourceError):
        SyntheticSource("nope", 10, 0)
    with pytest.raises(SourceError):
        next(stream_rows("nope", 10, 0))


def test_source_batches_events_with_ids():
    source = SyntheticSource("rbf-drift", 130, 5)
    assert isinstance(source, Source)
    batches = list(source.batches(50))
    assert [len(b) for b in batches] == [50, 50, 30]
    events = list(itertools.chain.from_iterable(batches))
    assert all(isinstance(e, Event) for e in events)
    assert [e.id for e in events[:2]] == ["rbf-drift-0", "rbf-drift-1"]
    assert events[-1].id == "rbf-drift-129"
    rows = list(stream_rows("rbf-drift", 130, 5))
    assert [(e.x, e.y) for e in events] == rows
    again = [e for b in source.batches(7) for e in b]  # a source can be read again
    assert again == events
