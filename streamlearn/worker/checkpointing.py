"""Checkpoint: when the worker's state becomes durable, and in which order.

The commit sequence (:meth:`Checkpoint.commit`), which the loop runs when :meth:`Checkpoint.due`
says so, at shutdown, and before partitions are given up:

1. **settle** — every message written back for the learned records (dead letters, predictions)
   is acknowledged by the broker; failures are retried with back-off. At shutdown this is
   bounded by ``worker.shutdown_timeout_s``: past it nothing is saved, and the batches since
   the last checkpoint are learned again after the restart (never lost, never twice);
2. **save** — the whole state (the chain, the RNG, the next offset of every partition, late
   labels, counters) as one atomic file (:class:`~streamlearn.worker.checkpoint.CheckpointStore`);
3. **commit** — the saved offsets of the partitions still assigned go to the consumer group.
   They only show lag: a restart seeks to the checkpoint's offsets, never to the group's.

So a checkpoint never moves past a record whose outputs are not safely in Kafka, and group
commits follow checkpoints, never lead them. On a revocation the reader commits what
:meth:`Checkpoint.save_for_handover` saved (steps 1 and 2 here, 3 by the client).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from streamlearn.errors import KafkaUnavailable
from streamlearn.metrics.worker import WorkerMetrics
from streamlearn.settings import CheckpointSettings, WorkerSettings
from streamlearn.worker.backoff import BrokerHealth
from streamlearn.worker.checkpoint import CheckpointStore
from streamlearn.worker.kafka.client import KafkaReader, KafkaWriter, TopicPartition

__all__ = ["Checkpoint"]

log = logging.getLogger(__name__)

Offsets = Mapping[TopicPartition, int]


class Checkpoint:
    """The worker's checkpoint cadence and commit sequence over a store, a writer and a reader.

    ``snapshot`` returns the state to save (offsets included); ``stop`` is the loop's stop
    event (a stopping worker waits out back-off delays on it instead of sleeping).
    """

    def __init__(
        self,
        store: CheckpointStore,
        reader: KafkaReader,
        writer: KafkaWriter,
        settings: tuple[CheckpointSettings, WorkerSettings],
        health: BrokerHealth,
        metrics: WorkerMetrics,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.reader, self.writer = store, reader, writer
        self.settings, self.worker_settings = settings
        self.health, self.metrics, self._stop, self._clock = health, metrics, stop, clock
        self.saved: dict[TopicPartition, int] = {}  # the offsets in the newest checkpoint
        self.dirty = False  # learned something since the newest checkpoint
        self._since_save = 0
        self._saved_at = clock()

    def learned(self) -> None:
        """A batch was learned: the state moved past the newest checkpoint."""
        self.dirty = True
        self._since_save += 1

    def restored(self, offsets: Offsets) -> None:
        """The loop restored a checkpoint with these offsets."""
        self.saved = dict(offsets)

    def due(self) -> bool:
        """Whether the loop should commit now (``checkpoint.every_batches`` / ``every_s``)."""
        if not self.dirty:
            return False
        c = self.settings
        by_count = bool(c.every_batches) and self._since_save >= c.every_batches
        return by_count or (bool(c.every_s) and self._clock() - self._saved_at >= c.every_s)

    def commit(
        self,
        snapshot: Callable[[], dict[str, Any]],
        offsets: Offsets,
        owned: set[TopicPartition],
        lock: threading.RLock,
        *,
        final: bool = False,
    ) -> bool:
        """The commit sequence: settle, save (holding ``lock``), commit the owned partitions'
        offsets; False when settling gave up (``final``: at the shutdown deadline)."""
        if not self._settle(final):
            return False
        with lock:
            self._save(snapshot, offsets)
        self.commit_offsets(owned)
        return True

    def save_for_handover(self, snapshot: Callable[[], dict[str, Any]], offsets: Offsets) -> None:
        """Settle and save before partitions are given up (their client commits)."""
        if self._settle(final=True):
            self._save(snapshot, offsets)

    def commit_offsets(self, owned: set[TopicPartition]) -> None:
        """Step 3 alone: the saved offsets of ``owned`` to the consumer group (lag only)."""
        offsets = {tp: o for tp, o in self.saved.items() if tp in owned}
        try:
            self.reader.commit(offsets)
        except KafkaUnavailable as exc:  # lag only; the next checkpoint commits again
            log.log(logging.INFO if self.health.up else logging.DEBUG, "commit skipped: %s", exc)

    def _settle(self, final: bool) -> bool:
        """Wait (with back-off) until every dead letter / prediction is acknowledged."""
        w = self.worker_settings
        deadline = self._clock() + w.shutdown_timeout_s
        waited = self.writer.pending > 0
        while not self.writer.settle(timeout_s=min(5.0, w.backoff_max_s)):
            delay = self.health.failed("publish", f"{self.writer.pending} messages unacknowledged")
            if (final or self._stop.is_set()) and self._clock() >= deadline:
                log.error(
                    "stopping with %d unacknowledged messages: not checkpointing; the batches "
                    "since the last checkpoint will be replayed",
                    self.writer.pending,
                )
                return False
            self._stop.wait(0.0 if self._stop.is_set() else delay)
        if waited:
            self.health.ok()
        return True

    def _save(self, snapshot: Callable[[], dict[str, Any]], offsets: Offsets) -> None:
        start = time.perf_counter()
        path = self.store.save(snapshot())
        self.saved = dict(offsets)
        self.dirty = False
        self._since_save = 0
        self._saved_at = self._clock()
        self.metrics.observe_checkpoint(time.perf_counter() - start, path)
        log.debug("checkpoint %s", path.name)
