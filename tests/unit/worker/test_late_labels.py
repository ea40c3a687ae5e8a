import pytest

from streamlearn.events import Rejection
from streamlearn.worker.late_labels import LabelJoin, LateLabel, decode_label


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "not_json"),
        (b"[1]", "not_object"),
        (b'{"y": 1}', "missing_field"),
        (b'{"id": "a"}', "missing_field"),
        (b'{"id": true, "y": 1}', "wrong_type"),
        (b'{"id": "a", "y": [1]}', "wrong_type"),
        (b'{"id": "a", "y": NaN}', "non_finite"),
        (b'{"id": "a", "y": 1e999}', "non_finite"),
        (b'{"id": "a", "y": "' + b"x" * 100 + b'"}', "oversized"),
    ],
)
def test_bad_labels_are_rejections(raw, reason):
    got = decode_label(raw, max_bytes=64)
    assert isinstance(got, Rejection) and got.reason == reason and got.raw == raw


def test_good_labels():
    assert decode_label(b'{"id": 7, "y": "cat"}') == LateLabel("7", "cat")


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def join(events: int = 10, labels: int = 10, ttl_s: float = 60, clock=None) -> LabelJoin:
    return LabelJoin((events, ttl_s), (labels, ttl_s), clock or Clock())


def test_event_first_then_label_completes_once():
    j = join()
    assert j.event("a", {"x": 1.0}) is None  # waits
    assert j.label(LateLabel("a", 1)) == {"x": 1.0}
    assert j.label(LateLabel("a", 1)) is None  # the event left: this label now waits
    assert (j.joined, j.early, len(j.events), len(j.labels)) == (1, 0, 0, 1)


def test_label_first_then_event_completes_once():
    j = join()
    assert j.label(LateLabel("a", "cat")) is None  # waits for its event
    assert j.event("a", {"x": 1.0}) == "cat"
    assert j.event("a", {"x": 1.0}) is None  # the label left: this event now waits
    assert (j.joined, j.early, len(j.events), len(j.labels)) == (1, 1, 1, 0)


def test_count_and_age_evict_the_oldest_on_each_side():
    clock = Clock()
    j = join(events=3, labels=2, ttl_s=60, clock=clock)
    for i in range(4):
        j.event(f"e{i}", {"i": float(i)})
        j.label(LateLabel(f"l{i}", i))
        clock.now += 10
    assert j.evictions() == {
        ("event", "age"): 0, ("event", "count"): 1, ("label", "age"): 0, ("label", "count"): 2,
    }  # fmt: skip
    assert j.label(LateLabel("e0", 0)) is None  # e0 was pushed out: the label waits (l2 goes)
    assert [k for k, _, _ in j.labels] == ["l3", "e0"]
    clock.now += 35  # e1 is now 65 s old, e2 55 s
    assert j.label(LateLabel("e2", 1)) == {"i": 2.0}
    got = j.evictions()
    assert (got[("event", "age")], got[("label", "count")], got[("label", "age")]) == (1, 3, 0)
    clock.now += 20  # e3 and l3 are now 65 s old, e0's label 55 s
    j.expire()
    assert j.evictions()[("event", "age")] == 2 and j.evictions()[("label", "age")] == 1
    assert len(j.events) == 0 and [k for k, _, _ in j.labels] == ["e0"]


def test_a_second_entry_for_an_id_replaces_the_first():
    j = join()
    j.event("a", {"v": "old"})
    j.event("a", {"v": "new"})
    assert len(j.events) == 1 and j.label(LateLabel("a", 1)) == {"v": "new"}


def test_state_round_trips_both_sides():
    clock = Clock()
    j = join(clock=clock)
    j.event("a", {"v": 1.0})
    j.label(LateLabel("b", 2))
    j.label(LateLabel("a", 1))
    other = join(clock=clock)
    other.load_state_dict(j.state_dict())
    assert other.state_dict() == j.state_dict()
    assert other.event("b", {"v": 2.0}) == 2 and (other.joined, other.early) == (2, 1)


def test_a_checkpoint_from_before_labels_could_wait_loads():
    old = {"entries": [["a", {"v": 1.0}, 1000.0]], "joined": 4, "unmatched": 2, "expired": 3}
    j = join()
    j.load_state_dict(old)
    assert j.label(LateLabel("a", 1)) == {"v": 1.0}
    assert j.joined == 5 and j.evictions()[("event", "age")] == 3


def test_zero_capacity_keeps_nothing_and_counts_it():
    j = join(events=0, labels=0)
    assert j.event("a", {}) is None and j.label(LateLabel("b", 1)) is None
    assert len(j.events) == len(j.labels) == 0
    assert j.evictions()[("event", "count")] == j.evictions()[("label", "count")] == 1


def test_entries_remember_their_partition_and_keep_drops_other_ranks_ones_without_evicting():
    j = LabelJoin((10, 60), (10, 60), clock=lambda: 0.0)
    j.event("a", {"x": 1.0}, ("events", 0))
    j.event("b", {"x": 2.0}, ("events", 1))
    j.label(LateLabel("c", 1), ("labels", 1))
    restored = LabelJoin((10, 60), (10, 60), clock=lambda: 0.0)
    restored.load_state_dict(j.state_dict())  # homes travel with the entries
    restored.keep({("events", 0), ("labels", 0)})
    assert [key for key, _, _ in restored.events] == ["a"] and len(restored.labels) == 0
    assert all(n == 0 for n in restored.evictions().values())  # their owner still has them
    assert restored.label(LateLabel("a", 0)) == {"x": 1.0}
