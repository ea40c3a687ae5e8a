"""Batcher: micro-batches by count, with a maximum wait, that do not depend on poll timing.

Exactly-once model state means a restart must learn the same batches an uninterrupted run
would have. So batches are formed by *count* from the restored offsets: a batch is the next
``size`` records, whatever number of polls delivered them. A partial batch is learned only
when its oldest record has waited ``max_wait_s`` **and** the latest poll brought nothing (the
topic went quiet) — so a quiet topic still trains, while a busy one never cuts a batch short
because one fetch was slow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from streamlearn.worker.kafka.client import Record, TopicPartition

__all__ = ["Batcher"]

Poll = Callable[[float, int], list[Record]]


class Batcher:
    """Buffers polled records and hands them out in batches of ``size``.

    >>> polls = [[Record("t", 0, i, b"") for i in range(5)], [], []]
    >>> now = [0.0]
    >>> b = Batcher(lambda timeout, n: polls.pop(0), 4, max_wait_s=1.0, clock=lambda: now[0])
    >>> [r.offset for r in b.next()]  # a full batch as soon as 4 are there
    [0, 1, 2, 3]
    >>> now[0] = 0.5; b.next()  # one left that waited 0.5 s: not yet
    []
    >>> now[0] = 2.0; [r.offset for r in b.next()]  # waited 2 s and the topic is quiet
    [4]
    """

    def __init__(
        self,
        poll: Poll,
        size: int,
        max_wait_s: float,
        poll_timeout_s: float = 0.1,
        max_records: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError("batch size must be at least 1")
        self._poll = poll
        self.size = size
        self.max_wait_s = max_wait_s
        self.poll_timeout_s = poll_timeout_s
        self.max_records = max_records
        self._clock = clock
        self._buffer: list[Record] = []  # a batch is cut off its front by one slice
        self._oldest_at = 0.0  # when the oldest buffered record arrived
        self._last_record_at = clock()

    def __len__(self) -> int:
        return len(self._buffer)

    def idle_s(self) -> float:
        """Seconds since a poll last brought a record."""
        return self._clock() - self._last_record_at

    def next(self) -> list[Record]:
        """A full batch, a partial one that waited long enough, or [] (nothing due yet)."""
        if len(self._buffer) >= self.size:
            return self._take(self.size, self._clock())
        timeout = self.poll_timeout_s
        if self._buffer:
            timeout = min(timeout, max(0.0, self._oldest_at + self.max_wait_s - self._clock()))
        got, now = self._poll_into(timeout)
        if len(self._buffer) >= self.size:
            return self._take(self.size, now)
        if self._buffer and not got and now - self._oldest_at >= self.max_wait_s:
            return self._take(len(self._buffer), now)
        return []

    def fill(self) -> None:
        """One poll into the buffer, no batch cut (waiting for a settled assignment)."""
        self._poll_into(self.poll_timeout_s)

    def _poll_into(self, timeout_s: float) -> tuple[bool, float]:
        """One poll, its records buffered: (whether it brought any, when it returned)."""
        records = self._poll(timeout_s, self.max_records)
        now = self._clock()
        if records:
            if not self._buffer:
                self._oldest_at = now
            self._buffer.extend(records)
            self._last_record_at = now
        return bool(records), now

    def _take(self, n: int, now: float) -> list[Record]:
        batch = self._buffer[:n]
        del self._buffer[:n]
        if self._buffer:  # the rest arrived no later than now; their wait starts now
            self._oldest_at = now
        return batch

    def drop(self, partitions: Collection[TopicPartition]) -> int:
        """Forget buffered records of partitions given up (they are re-read by the next owner)."""
        gone = set(partitions)
        kept = [r for r in self._buffer if (r.topic, r.partition) not in gone]
        dropped = len(self._buffer) - len(kept)
        self._buffer = kept
        return dropped
