"""KafkaSource: the plain Source protocol over a Kafka topic (demo, river), on the worker's
batching: decoded events, no checkpoints, no commits."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from streamlearn.events import Event, Rejection
from streamlearn.settings import KafkaSettings
from streamlearn.worker.batching import Batcher
from streamlearn.worker.decode import EventDecoder
from streamlearn.worker.kafka.client import TopicPartition, open_reader

__all__ = ["KafkaSource"]


class _NoOffsets:
    """Rebalance handler of the plain source: committed offsets, nothing to checkpoint."""

    def assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}

    def revoked(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}


class KafkaSource:
    """The Source protocol over a Kafka topic (demo, river): decoded events, no checkpoints.

    Ends after ``idle_stop_s`` without a message (None: runs until interrupted). The worker
    (streamlearn/worker/loop.py) is the production path, with exactly-once model state.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        max_wait_s: float = 1.0,
        idle_stop_s: float | None = None,
        max_bytes: int = 64 * 1024,
    ) -> None:
        self.settings = settings
        self.max_wait_s = max_wait_s
        self.idle_stop_s = idle_stop_s
        self.max_bytes = max_bytes

    def batches(self, batch_size: int) -> Iterator[list[Event | Rejection]]:
        reader = open_reader(self.settings)
        decode = EventDecoder(self.max_bytes).event  # events.decode's events, at msgspec's speed
        try:
            reader.subscribe([self.settings.topic], _NoOffsets())
            batcher = Batcher(
                reader.poll, batch_size, self.max_wait_s, 0.1, self.settings.max_poll_records
            )
            while self.idle_stop_s is None or batcher.idle_s() < self.idle_stop_s:
                batch = batcher.next()
                if batch:
                    yield [decode(r.value or b"") for r in batch]
        finally:
            reader.close()
