from streamlearn.worker.batching import Batcher
from streamlearn.worker.kafka.client import Record


def records(start: int, n: int, partition: int = 0) -> list[Record]:
    return [Record("t", partition, i, b"") for i in range(start, start + n)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_batches_are_cut_by_count_whatever_the_polls_deliver():
    polls = [records(0, 3), records(3, 7), records(10, 1), records(11, 5)]
    clock = Clock()

    def poll(timeout: float, n: int) -> list[Record]:
        clock.now += 0.01
        return polls.pop(0) if polls else []

    batcher = Batcher(poll, size=4, max_wait_s=10.0, clock=clock)
    got = []
    while polls or len(batcher) >= 4:
        batch = batcher.next()
        if batch:
            got.append([r.offset for r in batch])
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]


def test_partial_batch_only_after_max_wait_and_a_quiet_poll():
    clock = Clock()
    polls = [records(0, 2), [], records(2, 1), []]

    def poll(timeout: float, n: int) -> list[Record]:
        return polls.pop(0) if polls else []

    batcher = Batcher(poll, size=4, max_wait_s=1.0, clock=clock)
    assert batcher.next() == []  # 2 buffered
    clock.now = 0.5
    assert batcher.next() == []  # quiet, but not waited long enough
    clock.now = 1.5
    assert batcher.next() == []  # waited long enough, but this poll brought data
    clock.now = 1.6
    assert [r.offset for r in batcher.next()] == [0, 1, 2]  # quiet and waited: flush


def test_poll_timeout_never_exceeds_the_remaining_wait():
    clock = Clock()
    timeouts = []

    def poll(timeout: float, n: int) -> list[Record]:
        timeouts.append(timeout)
        return records(0, 1) if len(timeouts) == 1 else []

    batcher = Batcher(poll, size=4, max_wait_s=1.0, poll_timeout_s=0.5, clock=clock)
    batcher.next()
    clock.now = 0.8
    batcher.next()
    assert timeouts[0] == 0.5 and abs(timeouts[1] - 0.2) < 1e-9


def test_drop_forgets_buffered_records_of_revoked_partitions():
    polls = [records(0, 3, partition=0) + records(0, 2, partition=1)]
    batcher = Batcher(lambda t, n: polls.pop(0) if polls else [], size=10, max_wait_s=5.0)
    batcher.next()
    assert batcher.drop([("t", 0)]) == 3
    assert len(batcher) == 2
