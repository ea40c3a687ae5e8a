import json

import pytest

from streamlearn.errors import SourceError, StreamlearnError
from streamlearn.events import Event, Rejection
from streamlearn.sources import FileSource, Source


def write_events(path):
    good = [{"id": f"e-{i}", "x": {"a": float(i), "c": "red"}, "y": i % 2} for i in range(5)]
    lines = [
        json.dumps(good[0]),
        "",
        json.dumps(good[1]),
        "   ",
        "this is not json",
        json.dumps(good[2]) + "\r",  # CRLF file
        '{"id": "nan", "x": {"a": NaN}}',
        json.dumps(good[3]),
        '["not", "an", "object"]',
        json.dumps(good[4]),
    ]
    path.write_bytes(("\n".join(lines) + "\n").encode())
    return good


def test_good_blank_and_bad_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    good = write_events(path)
    source = FileSource(path)
    assert isinstance(source, Source)
    items = [item for batch in source.batches(100) for item in batch]
    assert len(items) == 8  # blank lines skipped
    events = [i for i in items if isinstance(i, Event)]
    rejections = [i for i in items if isinstance(i, Rejection)]
    assert [e.id for e in events] == [g["id"] for g in good]
    assert events[1] == Event("e-1", {"a": 1.0, "c": "red"}, 1)
    assert [r.reason for r in rejections] == ["not_json", "non_finite", "not_object"]
    assert rejections[0].raw == b"this is not json"
    # stream order is kept, rejections in place
    assert [type(i).__name__ for i in items] == [
        "Event", "Event", "Rejection", "Event", "Rejection", "Event", "Rejection", "Event",
    ]  # fmt: skip


@pytest.mark.parametrize(("size", "expected"), [(1, [1] * 8), (3, [3, 3, 2]), (8, [8]), (50, [8])])
def test_batch_sizes(tmp_path, size, expected):
    path = tmp_path / "events.jsonl"
    write_events(path)
    assert [len(b) for b in FileSource(str(path)).batches(size)] == expected


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert list(FileSource(path).batches(4)) == []


def test_missing_file_is_source_error(tmp_path):
    with pytest.raises(SourceError, match=r"source\.path"):
        FileSource(tmp_path / "absent.jsonl")
    with pytest.raises(StreamlearnError):
        FileSource(tmp_path)  # a directory is not a file
