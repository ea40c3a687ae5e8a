import pytest

from streamlearn.sources import Source, batched


@pytest.mark.parametrize(
    ("n", "size", "expected"),
    [(0, 3, []), (1, 3, [1]), (6, 3, [3, 3]), (7, 3, [3, 3, 1]), (5, 1, [1] * 5)],
)
def test_batched_sizes(n, size, expected):
    batches = list(batched(range(n), size))
    assert [len(b) for b in batches] == expected
    assert [x for b in batches for x in b] == list(range(n))


def test_batched_is_lazy():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    it = batched(endless(), 4)
    assert next(it) == [0, 1, 2, 3]
    assert next(it) == [4, 5, 6, 7]


def test_source_protocol_is_structural():
    class Custom:
        def batches(self, batch_size):
            return iter([])

    assert isinstance(Custom(), Source)
    assert not isinstance(object(), Source)
