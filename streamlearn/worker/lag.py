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
from concurrent.futures import Future
from concurrent.futures import wait as wait_for

from streamlearn.worker.kafka.client import KafkaReader, TopicPartition

__all__ = ["LagLookup"]

Ends = dict[TopicPartition, int]


class LagLookup:
    """One lookup at a time, until its answer is taken: :meth:`start` it, :meth:`take` the
    answer on the same turn (on the loop's thread) or a later one (on a thread of its own).

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
        self._lookup: Future[Ends] | None = None

    def start(self, partitions: Sequence[TopicPartition], timeout_s: float) -> None:
        """Look the end offsets of ``partitions`` up (nothing while one has not been taken)."""
        if self._lookup is not None:
            return
        lookup = self._lookup = Future()
        args = (lookup, list(partitions), timeout_s)
        if self.background:
            threading.Thread(
                target=self._run, args=args, name="streamlearn-lag", daemon=True
            ).start()
        else:
            self._run(*args)

    def _run(
        self, lookup: Future[Ends], partitions: list[TopicPartition], timeout_s: float
    ) -> None:
        try:
            lookup.set_result(self.reader.end_offsets(partitions, timeout_s))
        except BaseException as exc:  # raised by take, on the loop's thread
            lookup.set_exception(exc)

    def take(self) -> Ends | None:
        """The finished lookup's end offsets, once (None: none finished since the last take);
        its error (KafkaUnavailable) is raised here."""
        lookup = self._lookup
        if lookup is None or not lookup.done():
            return None
        self._lookup = None
        return lookup.result()

    def wait(self, timeout_s: float) -> None:
        """Let a lookup in flight finish, up to ``timeout_s`` (before the client closes)."""
        if self._lookup is not None:
            wait_for([self._lookup], max(0.0, timeout_s))
