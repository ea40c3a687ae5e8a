from streamlearn.events import Event, Rejection
from streamlearn.sources import MemorySource, Source


def test_decodes_values_in_order_and_batches():
    values = [b'{"id": "a", "x": {"v": 1}}', b"garbage", b'{"id": "b", "x": {}, "y": "cat"}']
    source = MemorySource(values)
    assert isinstance(source, Source)
    batches = list(source.batches(2))
    assert [len(b) for b in batches] == [2, 1]
    first, bad, last = (item for batch in batches for item in batch)
    assert first == Event("a", {"v": 1.0})
    assert isinstance(bad, Rejection) and bad.reason == "not_json" and bad.raw == b"garbage"
    assert last.y == "cat"


def test_holds_its_own_copy():
    values = [b'{"id": "a", "x": {}}']
    source = MemorySource(values)
    values.append(b"later")
    assert sum(len(b) for b in source.batches(10)) == 1
    assert list(MemorySource([]).batches(3)) == []
