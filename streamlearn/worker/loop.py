"""Worker: the long-running loop. Stages are called in one fixed order, nothing else lives here.

    poll a batch → decode (bad → dead-letter) → score → drift → learn → error memory
    (all inside Prequential) → predictions out → metrics → export hook → checkpoint → commit

Exactly-once model state: the checkpoint holds the model *and* the next offset of every
partition it has learned from; on start the worker restores the newest readable checkpoint and
seeks there, so after any crash each event has shaped the restored model once. When and in
which order a checkpoint becomes durable is the commit sequence of
:class:`~streamlearn.worker.checkpointing.Checkpoint`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from streamlearn.core.features import EncodedFeatures
from streamlearn.core.prequential import Prequential
from streamlearn.errors import CheckpointError, KafkaUnavailable
from streamlearn.events import FeatureValue, Label
from streamlearn.metrics.worker import WorkerMetrics
from streamlearn.settings import Settings
from streamlearn.worker.assignment import Assignment
from streamlearn.worker.backoff import Backoff, BrokerHealth
from streamlearn.worker.batching import Batcher
from streamlearn.worker.checkpoint import CheckpointStore, restore_rng, rng_state
from streamlearn.worker.checkpointing import Checkpoint
from streamlearn.worker.decode import EventDecoder
from streamlearn.worker.health import Heartbeat
from streamlearn.worker.intake import (
    Intake,
    events_and_labels,
    label_check,
    send_dead_letters,
    send_predictions,
    split,
)
from streamlearn.worker.kafka.client import (
    KafkaReader,
    KafkaWriter,
    Record,
    TopicPartition,
    next_offsets,
)
from streamlearn.worker.lag import LagLookup
from streamlearn.worker.late_labels import LabelJoin

if TYPE_CHECKING:  # torch.distributed: only for a worker that is one rank of several
    from streamlearn.worker.distributed.lockstep import Lockstep

__all__ = ["ExportHook", "Worker", "WorkerStats", "no_export"]

log = logging.getLogger(__name__)

CLOSE_MARGIN_S = 1.0  # each client's close gets this long at least, past the shutdown deadline

# The export seam: called after every batch with the live chain and the batch count; the hook
# owns its cadence (``streamlearn worker`` passes Publisher.after_batch).
ExportHook = Callable[[Prequential, int], None]


def no_export(preq: Prequential, batches: int) -> None:
    """Export nothing (tests and benchmarks that only learn)."""


@dataclass
class WorkerStats:
    """Counters that travel in the checkpoint (the model's own are in Prequential)."""

    batches: int = 0
    events: int = 0  # decoded events, labelled or not
    late_learned: int = 0  # events learned from when their late label arrived
    rejected: dict[str, int] = field(default_factory=dict)
    published: int = 0  # predictions sent to the output topic

    def load(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, dict(value) if name == "rejected" else int(value))


class Worker:
    """Drives Prequential from Kafka with checkpoints; also the reader's RebalanceHandler."""

    def __init__(
        self,
        settings: Settings,
        preq: Prequential,
        reader: KafkaReader,
        writer: KafkaWriter,
        store: CheckpointStore,
        export: ExportHook = no_export,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
        metrics: WorkerMetrics | None = None,
        heartbeat: Heartbeat | None = None,
        lockstep: Lockstep | None = None,
    ) -> None:
        """``lockstep``: this worker is one rank of several keeping one model (scale-out)."""
        self.settings, self.preq, self.reader, self.writer = settings, preq, reader, writer
        self.store, self.export, self._clock = store, export, clock
        k, w = settings.kafka, settings.worker
        self.topics = [k.topic] + ([k.labels_topic] if k.labels_topic else [])
        self.positions: dict[TopicPartition, int] = {}  # next offset after what was learned
        self.stats = WorkerStats()
        self.join = LabelJoin(
            (w.label_cache_size, w.label_ttl_s), (w.early_label_cache_size, w.early_label_ttl_s)
        )
        self.batcher = Batcher(
            self._poll, settings.source.batch_size, w.max_wait_s, w.poll_timeout_s,
            k.max_poll_records, clock,
        )  # fmt: skip
        self.health = BrokerHealth(Backoff(w.backoff_initial_s, w.backoff_max_s), log, clock)
        self._check = label_check(preq)
        self.decoder = EventDecoder(w.max_event_bytes)
        self._stop = stop or threading.Event()
        self._lock = threading.RLock()  # rebalance callbacks may run on a client thread
        self._next_probe = self._next_log = self._next_lag = clock()
        self.metrics = metrics or WorkerMetrics(CollectorRegistry(), settings.metrics.smoothing)
        self.metrics.watch_broker(lambda: self.health.up)
        self.metrics.watch_loop(preq, self.stats)
        self.heartbeat = heartbeat or Heartbeat(w.liveness_timeout_s, clock)
        self.assignment = Assignment(self.topics, settings, self.metrics, self.heartbeat, clock)
        self.lag = LagLookup(reader, reader.thread_safe)
        self.lockstep = lockstep
        self.reassigned = False  # partitions moved after the ranks' start (lockstep only)
        self.checkpoints = (Checkpoint if lockstep is None else lockstep.checkpoint)(
            store, reader, writer, (settings.checkpoint, w), self.health, self.metrics,
            self._stop, clock,
        )  # fmt: skip

    @property
    def owned(self) -> set[TopicPartition]:
        """The partitions assigned to this worker right now."""
        return self.assignment.owned

    def stop(self) -> None:
        """Ask the loop to finish its batch, checkpoint, commit and return (signal-safe)."""
        self._stop.set()

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.restore()
            self.heartbeat.restored = True
            self.reader.subscribe(self.topics, self)
            if self.lockstep is not None:
                self.lockstep.fence(self.batcher.fill, lambda: set(self.owned), self._stop)
                self.join.keep(self.owned)  # the cut held every rank's waiting entries
            while not (self._stop.is_set() if self.lockstep is None else self.lockstep.stopped):
                self.step()
        except BaseException:
            if self.lockstep is not None:  # the others are in another collective: no cut
                self.lockstep.group.broken = True
            raise
        finally:
            self.shutdown()

    def step(self) -> None:
        """One turn: a batch if one is due (else idle work), a broker probe if one is due, the
        commit of a checkpoint written meanwhile, then a checkpoint if due; then a heartbeat
        (``/livez``)."""
        batch, drifts = self.batcher.next(), len(self.preq.drifts)
        if batch:
            with self._lock:
                self.process(batch)
        else:
            self.idle()
        self._probe()
        self.checkpoints.written(self.owned)
        due = self.checkpoints.due()
        if self.lockstep is not None:  # every rank, every turn: one model, one decision
            due = self.lockstep.turn(
                self.preq, self.batcher, drifted=len(self.preq.drifts) > drifts,
                stop=self._stop.is_set(), due=due, reassigned=self.reassigned,
            )  # fmt: skip
            group = self.lockstep.group
            self.metrics.observe_collectives(group.collective_s, group.collective_bytes)
        if due:
            self.checkpoint()
        self._observe_lag()
        self.heartbeat.beat()

    def process(self, batch: Sequence[Record]) -> None:
        """One batch through the fixed stages; its offsets count as learned afterwards.

        Without a labels topic, events whose features all have a slot are decoded straight
        into the encoder's slots (``process_encoded``); otherwise, and when a batch holds an
        event with a new feature, one dict per event (``process``): the same model either way.
        """
        start, k = time.perf_counter(), self.settings.kafka
        decode = self.decoder.event if k.labels_topic else self.decoder.rows(self.preq.encoder)
        intake = split(
            batch, k.labels_topic, self.settings.worker.max_event_bytes, self._check, decode
        )
        send_dead_letters(self.writer, k.dead_letter_topic, intake, self.stats.rejected)
        xs, ys = self._rows(intake)
        outcome = None
        if ys:
            step = self.preq.learner.steps
            learn = self.preq.process if isinstance(xs, list) else self.preq.process_encoded
            outcome = learn(xs, ys)  # score → drift → learn → error memory
            if k.output_topic is not None:
                classes, prediction = self.preq.classes(), outcome.prediction
                self.stats.published += send_predictions(
                    self.writer, k.output_topic, intake, prediction, classes, step
                )
        moved = next_offsets(batch)
        self.positions.update(moved)
        self.stats.batches += 1
        self.stats.events += len(intake.events)
        self.checkpoints.learned()
        seconds = time.perf_counter() - start
        self.metrics.observe_batch(len(batch), seconds, outcome, moved)
        self.export(self.preq, self.stats.batches)

    def idle(self) -> None:
        """No batch due: expire late-label entries, warn without partitions, log progress."""
        self.join.expire()
        self.metrics.observe_label_join(self.join)
        self.assignment.warn_if_none()
        now, w = self._clock(), self.settings.worker
        if now >= self._next_log:
            self._next_log = now + w.log_every_s
            self.log_progress()

    def shutdown(self) -> None:
        """Final checkpoint and commit, then both clients closed, by the shutdown deadline
        (``worker.shutdown_timeout_s`` from now; each close gets at least CLOSE_MARGIN_S): what
        does not fit is skipped and logged, never waited for (see Checkpoint)."""
        self.checkpoints.stopping()
        ranks = self.lockstep
        try:
            if ranks is not None and ranks.group.broken:
                log.error("a rank failed: no final checkpoint, the group resumes from the last")
            elif self.checkpoints.dirty or ranks is not None:  # a cut needs every rank
                self.checkpoint(final=True)
            else:
                self.checkpoints.commit_offsets(self.owned)
        finally:
            self.lag.wait(self.checkpoints.remaining_s())  # not inside the client as it closes
            self.reader.close(max(self.checkpoints.remaining_s(), CLOSE_MARGIN_S))
            self.writer.close(max(self.checkpoints.remaining_s(), CLOSE_MARGIN_S))
            self.log_progress()

    def _probe(self) -> None:
        """A round trip to the broker when one is due, the only thing that ends an outage
        (records and acknowledgements may predate it, see BrokerHealth.ok): while the broker is
        up, after ``idle_probe_s`` without records (an idle consumer sees no errors); while it
        is down, at each back-off delay, batches or not (buffered records outlast an outage's
        start)."""
        w = self.settings.worker
        if self.health.up:
            if self._clock() < self._next_probe or self.batcher.idle_s() < w.idle_probe_s:
                return
        elif not self.health.retry_due():
            return
        try:
            self.reader.probe(min(self.settings.kafka.request_timeout_ms / 1000, 5.0))
        except KafkaUnavailable as exc:
            self.health.failed("probe", exc)
        else:
            self.health.ok()
            self._next_probe = self._clock() + w.idle_probe_s

    # -- stages -----------------------------------------------------------------------------
    def _poll(self, timeout_s: float, max_records: int) -> list[Record]:
        try:
            records = self.reader.poll(timeout_s, max_records)
        except KafkaUnavailable as exc:
            self._stop.wait(self.health.failed("poll", exc))
            return []
        return records

    def _rows(
        self, intake: Intake
    ) -> tuple[EncodedFeatures | list[Mapping[str, FeatureValue]], list[Label | None]]:
        """The batch's events (an unlabelled one with the label that waited for it, if any),
        then the events that waited for a label of this batch. Events go first so a pair
        within one batch completes whatever its order. Without a labels topic the features
        are encoded already where the decoder could (see EventDecoder.features)."""
        events, ys = events_and_labels(intake)
        if self.settings.kafka.labels_topic is None:
            return self.decoder.features(events, self.preq.encoder), ys
        # with a labels topic every event took the dict path: an unlabelled one waits as a dict
        xs: list[Mapping[str, FeatureValue]] = [e.x for e in events]
        for i, (record, event) in enumerate(intake.events):
            if event.y is None and (y := self.join.event(event.id, event.x, record.tp)) is not None:
                ys[i] = y
                self.stats.late_learned += 1
        for record, label in intake.labels:
            if (x := self.join.label(label, record.tp)) is not None:
                xs.append(x)
                ys.append(label.y)
                self.stats.late_learned += 1
        self.metrics.observe_label_join(self.join)
        return xs, ys

    # -- checkpoints and commits ------------------------------------------------------------
    def checkpoint(self, final: bool = False) -> bool:
        """Run the commit sequence now (Checkpoint.commit); False when settling gave up."""
        return self.checkpoints.commit(
            self._state, self.positions, self.owned, self._lock, final=final
        )

    def _state(self) -> dict[str, Any]:
        """Everything a restart needs, the offsets included."""
        return {
            "prequential": self.preq.state_dict(),
            "rng": rng_state(),
            "offsets": [[t, p, o] for (t, p), o in sorted(self.positions.items())],
            "late_labels": self.join.state_dict(),
            "stats": asdict(self.stats),
        }

    def restore(self) -> None:
        """Load the newest readable checkpoint (damaged newer ones are skipped and counted)."""
        ranks = self.lockstep
        loaded = self.store.load_latest() if ranks is None else ranks.load_latest(self.store)
        if self.store.corrupt_skipped:
            log.warning("%d damaged checkpoint(s) skipped", self.store.corrupt_skipped)
        if loaded is None:
            log.info("no checkpoint in %s: starting fresh", self.store.directory)
            if ranks is not None:
                ranks.restored(self.preq, lambda: None)
            self.metrics.observe_restore(self.preq, self.stats, None, self.store.corrupt_skipped)
            return
        state = loaded.state
        try:
            self.preq.load_state_dict(state["prequential"])
            restore_rng(state["rng"])
            self.join.load_state_dict(state["late_labels"])
            self.stats.load(state["stats"])
            self.positions = {(str(t), int(p)): int(o) for t, p, o in state["offsets"]}
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {loaded.path} does not fit the configured model ({exc}); use the "
                "settings it was written with, or another checkpoint.dir"
            ) from exc
        self.checkpoints.restored(self.positions)
        if ranks is not None:
            ranks.restored(self.preq, lambda: self.stats.load(asdict(WorkerStats())))
        created = float(state.get("created", 0.0)) or None
        self.metrics.observe_restore(self.preq, self.stats, created, self.store.corrupt_skipped)
        self.metrics.observe_label_join(self.join, baseline=True)
        log.info(
            "restored %s: %d events learned, resuming at %s",
            loaded.path.name, self.preq.seen, self.positions,
        )  # fmt: skip

    def _observe_lag(self) -> None:
        """Consumer lag from the broker's end offsets: a lookup started at most every
        ``lag_interval_s`` (on a thread of its own where the client allows, see LagLookup),
        reported on the turn its answer is there."""
        now = self._clock()
        if now >= self._next_lag and self.health.up:
            self._next_lag = now + self.settings.metrics.lag_interval_s
            timeout_s = min(self.settings.kafka.request_timeout_ms / 1000, 2.0)
            self.lag.start(sorted(self.owned), timeout_s)
        try:
            ends = self.lag.take()
        except KafkaUnavailable as exc:  # metrics only: the next poll notices an outage
            log.debug("end offsets unavailable: %s", exc)
            return
        if ends is not None:
            self.metrics.observe_lag(ends, self.positions)

    # -- RebalanceHandler -------------------------------------------------------------------
    def assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        self._moved()
        self.assignment.add(partitions)
        starts = {tp: self.positions[tp] for tp in partitions if tp in self.positions}
        log.info("assigned %s; from checkpoint: %s", list(partitions), starts or "none")
        return starts

    def revoked(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Checkpoint before the partitions are given up; drop their unprocessed records."""
        with self._lock:
            self._moved()
            dropped = self.batcher.drop(partitions)
            self.assignment.remove(partitions)
            self.checkpoints.save_for_handover(self._state, self.positions)
        log.info("revoked %s (%d buffered records dropped)", list(partitions), dropped)
        saved = self.checkpoints.saved
        return {tp: saved[tp] for tp in partitions if tp in saved}

    def _moved(self) -> None:
        """A rank's partitions moving once the ranks learn: the group must restart (Lockstep)."""
        if self.lockstep is not None and self.lockstep.fenced and not self.lockstep.stopped:
            self.reassigned = True

    def log_progress(self) -> None:
        s = self.stats
        log.info(
            "partitions %d, batches %d, events %d, learned %d (late %d), rejected %s, drifts %d, "
            "late labels: %d joined (%d label-first), waiting %d events / %d labels, "
            "evicted %s, offsets %s",
            len(self.owned), s.batches, s.events, self.preq.seen, s.late_learned, s.rejected or 0,
            len(self.preq.drifts), self.join.joined, self.join.early, len(self.join.events),
            len(self.join.labels), _nonzero(self.join.evictions()), self.positions,
        )  # fmt: skip


def _nonzero(counts: Mapping[tuple[str, str], int]) -> dict[str, int] | int:
    """``{"event/age": 3, ...}`` for the counts that are not zero (0 when none is), for logs."""
    return {"/".join(key): n for key, n in counts.items() if n} or 0
