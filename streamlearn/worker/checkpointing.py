"""Checkpoint: when the worker's state becomes durable, and in which order.

The commit sequence (:meth:`Checkpoint.commit`), which the loop runs when :meth:`Checkpoint.due`
says so, at shutdown, and before partitions are given up:

1. **settle** — every message written back for the learned records (dead letters, predictions)
   is acknowledged by the broker; failures are retried with back-off. At shutdown this is
   bounded by the shutdown deadline (:meth:`Checkpoint.stopping`): past it nothing is saved,
   and the batches since the last checkpoint are learned again after the restart (never lost,
   never twice);
2. **save** — the whole state (the chain, the RNG, the next offset of every partition, late
   labels, counters) as one atomic file (:class:`~streamlearn.worker.checkpoint.CheckpointStore`).
   Its bytes are taken on the loop's thread; writing them (digest, fsync, rename, fsync of the
   directory: mostly waiting for the disk) runs on a thread of its own while the loop learns on
   (:meth:`Checkpoint.written` sees it end). One write at a time: the next checkpoint, a
   revocation and shutdown wait for the one in flight; its error (OSError) is raised on the
   loop's thread, as a failed save always was;
3. **commit** — once the file is durable, the saved offsets of the partitions still assigned go
   to the consumer group. They only show lag: a restart seeks to the checkpoint's offsets, never
   to the group's. So a commit is never waited for: skipped while the broker is down, bounded by
   the shutdown deadline, and a failed one waits for the next checkpoint.

So a checkpoint never moves past a record whose outputs are not safely in Kafka, and group
commits follow durable checkpoints, never lead them (``saved`` changes only then). A crash
while a file is written is a crash before that checkpoint: the previous one is restored. On a
revocation the reader commits what :meth:`Checkpoint.save_for_handover` saved (steps 1 and 2
here, written before it returns; 3 by the client).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
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
        self._deadline: float | None = None  # set once the worker stops
        # the file being written (its path and when it was durable), its offsets, its start
        self._writing: tuple[Future[tuple[Path, float]], Offsets, float] | None = None
        self._finishing = threading.Lock()

    def stopping(self) -> None:
        """The worker stops: from now on every wait of the commit sequence (the final one, and a
        revocation's inside the clients' close) ends ``worker.shutdown_timeout_s`` from now."""
        self._deadline = self._clock() + self.worker_settings.shutdown_timeout_s

    def remaining_s(self) -> float:
        """Seconds left before the shutdown deadline (infinite while the worker runs)."""
        return math.inf if self._deadline is None else max(0.0, self._deadline - self._clock())

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
        """The commit sequence: settle, save (holding ``lock`` while the state is copied), and
        once the file is durable commit the owned partitions' offsets (at once with ``final``,
        else when :meth:`written` sees the write end); False when settling gave up (``final``:
        at the shutdown deadline)."""
        self.written(owned, wait=True)  # the previous one's offsets first
        if not self._settle(final):
            return False
        with lock:
            self._save(snapshot, offsets, wait=False)
        if final:
            self.written(owned, wait=True)
        return True

    def written(self, owned: set[TopicPartition], *, wait: bool = False) -> None:
        """If the checkpoint being written is durable (``wait``: once it is), its offsets become
        the saved ones and those of ``owned`` are committed; its write's error is raised here.
        The loop calls this every turn."""
        if self._finish(wait):
            self.commit_offsets(owned)

    def _finish(self, wait: bool) -> bool:
        """Whether a write in flight just ended (after waiting for it with ``wait``); once per
        write, whichever thread asks (a revocation may come on a client's thread)."""
        with self._finishing:
            if self._writing is None or not (wait or self._writing[0].done()):
                return False
            written, offsets, start = self._writing
            self._writing = None
            path, end = written.result()  # raises the write's error
            self.saved = dict(offsets)
        self.metrics.observe_checkpoint(end - start, path)
        log.debug("checkpoint %s", path.name)
        return True

    def save_for_handover(self, snapshot: Callable[[], dict[str, Any]], offsets: Offsets) -> None:
        """Before partitions are given up (their client commits ``saved``): the write in flight
        finished, then, if something was learned since, settle and save; not once the shutdown
        deadline has passed (the final checkpoint gave up settling already)."""
        self._finish(wait=True)
        if self.dirty and self.remaining_s() > 0 and self._settle(final=True):
            self._save(snapshot, offsets)

    def commit_offsets(self, owned: set[TopicPartition]) -> None:
        """Step 3 alone: the saved offsets of ``owned`` to the consumer group (lag only).

        Not tried while the broker is known to be down, and given only the time left before the
        shutdown deadline (else the client's request timeout): a commit that cannot be made in
        time is skipped with a log line, never waited for."""
        self._finish(wait=True)  # the newest checkpoint's offsets, never an older one's
        offsets = {tp: o for tp, o in self.saved.items() if tp in owned}
        if not offsets:
            return
        left = self.remaining_s()
        if not self.health.up:
            reason = "Kafka unreachable"
        elif left <= 0:
            reason = "no time left before the shutdown deadline"
        else:
            try:
                self.reader.commit(offsets, None if math.isinf(left) else left)
                return
            except KafkaUnavailable as exc:  # lag only; the next checkpoint commits again
                reason = str(exc)
        # said at INFO unless it repeats through a known outage; the final commit always is
        said = self.health.up or self._deadline is not None
        log.log(
            logging.INFO if said else logging.DEBUG,
            "commit of %s skipped (%s): the group's offsets only show lag, the checkpoint holds "
            "them",
            offsets, reason,
        )  # fmt: skip

    def _settle(self, final: bool) -> bool:
        """Wait (with back-off) until every dead letter / prediction is acknowledged. False when
        ``final`` and the deadline passed first (the shutdown deadline once :meth:`stopping` was
        called, else ``shutdown_timeout_s`` from now), or, not ``final``, as soon as the worker
        is asked to stop (its final checkpoint follows, with the whole shutdown budget).

        Success does not end an outage (acknowledgements may predate it): the loop's probe does.
        """
        w = self.worker_settings
        deadline = self._deadline
        if deadline is None:
            deadline = self._clock() + w.shutdown_timeout_s
        attempt_s = min(5.0, w.backoff_max_s)
        while True:
            left = max(0.0, deadline - self._clock())
            if self.writer.settle(timeout_s=min(attempt_s, left) if final else attempt_s):
                return True
            delay = self.health.failed("publish", f"{self.writer.pending} messages unacknowledged")
            if not final and self._stop.is_set():
                return False
            if final and self._clock() >= deadline:
                log.error(
                    "stopping with %d unacknowledged messages: not checkpointing; the batches "
                    "since the last checkpoint will be replayed",
                    self.writer.pending,
                )
                return False
            self._stop.wait(0.0 if self._stop.is_set() else delay)

    def _save(
        self, snapshot: Callable[[], dict[str, Any]], offsets: Offsets, *, wait: bool = True
    ) -> None:
        """Step 2: the state copied now (after the write in flight, if any, ended), its file
        written on a thread of its own; with ``wait``, durable and ``saved`` when this returns."""
        self._finish(wait=True)
        start = time.perf_counter()
        data = self.store.encode(snapshot())
        self.dirty = False
        self._since_save = 0
        self._saved_at = self._clock()
        written: Future[tuple[Path, float]] = Future()
        self._writing = (written, dict(offsets), start)
        threading.Thread(
            target=_run, args=(written, self.store.write, data), name="streamlearn-checkpoint",
            daemon=True,
        ).start()  # fmt: skip
        if wait:
            self._finish(wait=True)


def _run(future: Future[tuple[Path, float]], write: Callable[[bytes], Path], data: bytes) -> None:
    """``write(data)`` on this thread, its outcome (the path, and when) in ``future``."""
    try:
        future.set_result((write(data), time.perf_counter()))
    except BaseException as exc:  # raised on the loop's thread by Checkpoint.written
        future.set_exception(exc)
