"""LagLookup: the lag metric's end offsets never hold the loop up where the client allows."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from test_loop_operations import P0, build, sample
from worker_support import FakeReader, event

from streamlearn.errors import KafkaUnavailable
from streamlearn.worker.kafka.client import TopicPartition
from streamlearn.worker.lag import LagLookup


class SlowBroker(FakeReader):
    """A thread-safe client whose end-offset lookups wait until ``answer`` is set (a broker
    answering behind a long-polling fetch), or fail while ``down``."""

    thread_safe = True

    def __init__(self, log: dict[TopicPartition, list[bytes]]) -> None:
        super().__init__(log)
        self.answer = threading.Event()
        self.down = False
        self.lookups = 0

    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int]:
        self.lookups += 1
        self.answer.wait(10)
        if self.down:
            raise KafkaUnavailable("no answer")
        return super().end_offsets(partitions, timeout_s)


def test_a_background_lookup_is_taken_once_and_one_runs_at_a_time():
    reader = SlowBroker({P0: [event(i) for i in range(5)]})
    lookup = LagLookup(reader, background=True)
    lookup.start([P0], 1.0)
    lookup.start([P0], 1.0)  # one in flight: not another
    assert lookup.take() is None  # not answered yet, and the caller did not wait
    reader.answer.set()
    lookup.wait(5)
    assert reader.lookups == 1
    assert lookup.take() == {P0: 5} and lookup.take() is None
    reader.down = True
    lookup.start([P0], 1.0)
    lookup.wait(5)
    with pytest.raises(KafkaUnavailable):
        lookup.take()


def test_the_loop_learns_while_a_lookup_waits_and_reports_it_once_answered(tmp_path: Path):
    reader = SlowBroker({P0: [event(i) for i in range(200)]})
    worker, registry = build(tmp_path, reader, metrics={"lag_interval_s": 3600})
    while worker.preq.seen < 200:
        worker.step()
    # a lookup the loop had waited for would have given up after 10 s with an answer
    assert reader.lookups == 1
    assert sample(registry, "consumer_lag_messages", topic=P0[0], partition=0) is None
    reader.answer.set()
    worker.lag.wait(5)
    worker.step()
    assert sample(registry, "consumer_lag_messages", topic=P0[0], partition=0) == 0
    assert sample(registry, "consumer_offset", topic=P0[0], partition=0) == 200
