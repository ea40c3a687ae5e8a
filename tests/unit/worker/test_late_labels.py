import pytest

from streamlearn.events import Rejection
from streamlearn.worker.late_labels import LabelCache, LateLabel, decode_label


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


def test_join_pops_once_and_counts_unmatched():
    cache = LabelCache(10, ttl_s=60, clock=Clock())
    cache.put("a", {"x": 1.0})
    assert cache.join("a") == {"x": 1.0}
    assert cache.join("a") is None  # learned once only
    assert (cache.joined, cache.unmatched, len(cache)) == (1, 1, 0)


def test_capacity_and_ttl_expire_the_oldest():
    clock = Clock()
    cache = LabelCache(3, ttl_s=60, clock=clock)
    for i in range(4):
        cache.put(str(i), {"i": float(i)})
        clock.now += 10
    assert cache.expired == 1 and cache.join("0") is None  # pushed out by capacity
    clock.now += 35  # "1" is now 65 s old, "2" 55 s
    assert cache.join("2") == {"i": 2.0}
    assert cache.expired == 2 and len(cache) == 1


def test_re_put_refreshes_and_state_round_trips():
    clock = Clock()
    cache = LabelCache(3, ttl_s=60, clock=clock)
    cache.put("a", {"v": "old"})
    cache.put("b", {"v": 1.0})
    cache.put("a", {"v": "new"})
    other = LabelCache(3, ttl_s=60, clock=clock)
    other.load_state_dict(cache.state_dict())
    assert other.join("a") == {"v": "new"} and len(other) == 1


def test_zero_capacity_keeps_nothing():
    cache = LabelCache(0, ttl_s=60)
    cache.put("a", {})
    assert len(cache) == 0 and cache.join("a") is None
