"""LagLookup: the consumer-lag metric's end offsets, looked up without stalling the loop.

A lookup is a round trip to each partition's leader, which answers it only after any fetch it
holds on the same connection: at the end of a partition a consumer's fetch waits there up to
the client's fetch wait (500 ms in librdkafka), and the lookup with it. Where the client may be
called from two threads at once (confluent-kafka: librdkafka's handle is thread-safe) the
lookup runs on a thread of its own and the loop takes its answer on a later turn; kafka-python's
consumer is not thread-safe, so there the lookup runs on the loop's thread, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from streamlearn.errors import KafkaUnavailable
from streamlearn.worker.kafka.client import KafkaReader, TopicPartition

__all__ = ["LagLookup"]

Ends = dict[TopicPartition, int]


class LagLookup:
    """One lookup at a time: :meth:`start` it, :meth:`take` its answer (once) on a later turn.

    >>> class Reader:
    ...     def end_offsets(self, partitions, timeout_s):
    ...         return {tp: 10 for tp in partitions}
    >>> lookup = LagLookup(Reader(), background=False)
    >>> lookup.start([("t", 0)], 1.0)
    >>> lookup.take(), lookup.take()
    ({('t', 0): 10}, None)
    """

    def __init__(self, reader: KafkaReader, background: bool) -> None:
        self.reader, self.background = reader, background
        self._thread: threading.Thread | None = None
        self._answer: Ends | KafkaUnavailable | None = None
        self._lock = threading.Lock()

    def start(self, partitions: Sequence[TopicPartition], timeout_s: float) -> None:
        """Look the end offsets of ``partitions`` up (nothing while a lookup is in flight)."""
        if self._thread is not None and self._thread.is_alive():
            return
        if not self.background:
            self._run(list(partitions), timeout_s)
            return
        self._thread = threading.Thread(
            target=self._run, args=(list(partitions), timeout_s), name="streamlearn-lag",
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    def _run(self, partitions: list[TopicPartition], timeout_s: float) -> None:
        answer: Ends | KafkaUnavailable
        try:
            answer = self.reader.end_offsets(partitions, timeout_s)
        except KafkaUnavailable as exc:
            answer = exc
        with self._lock:
            self._answer = answer

    def take(self) -> Ends | None:
        """The finished lookup's end offsets, once (None: none finished since the last take);
        its KafkaUnavailable is raised here."""
        with self._lock:
            answer, self._answer = self._answer, None
        if isinstance(answer, KafkaUnavailable):
            raise answer
        return answer

    def wait(self, timeout_s: float) -> None:
        """Let a lookup in flight finish, up to ``timeout_s`` (before the client closes)."""
        if self._thread is not None:
            self._thread.join(max(0.0, timeout_s))
