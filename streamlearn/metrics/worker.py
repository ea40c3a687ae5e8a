"""The worker's metrics, served on ``metrics.port`` by ``streamlearn worker``.

Cost: the worker's loop calls :meth:`WorkerMetrics.observe_batch` once per micro-batch: two
histogram observations, the batch's outcome kept for the smoothed loss and score (folded many
batches at once, metrics/smoothing.py) and the batch's offsets noted; no loop over events.
Everything else is read at scrape time (decision 0034): the totals the loop keeps (events
learned, optimizer steps, drifts, …) become counter increments by difference, the learner's
state sets its gauges, and the noted offsets set each partition's offset and lag. A scrape
every few seconds then costs the loop nothing, where a per-batch update cost it a share of its
time at tens of thousands of events a second. What it reads of the worker's loop and publisher
is stated as Protocols here (metrics sit below the worker in the layers).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streamlearn.events import RejectionReason
from streamlearn.metrics.base import SLOW_BUCKETS, MetricFactory
from streamlearn.metrics.ranked import RankLabelled
from streamlearn.metrics.smoothing import SmoothedScores

if TYPE_CHECKING:
    from streamlearn.core.prequential import BatchOutcome, Prequential

__all__ = [
    "PUBLISH_RESULTS",
    "SCORE_SERIES",
    "LabelJoinCounts",
    "PublishOutcome",
    "WorkerCounts",
    "WorkerMetrics",
]

TopicPartition = tuple[str, int]

DROP_REASONS = ("no_slot", "not_a_number", "non_finite")  # feature values treated as missing
PUBLISH_RESULTS = ("published", "gated", "waiting_for_rows", "export_failed", "registry_error")
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SCORES = {
    "accuracy": "Smoothed prequential accuracy of the served prediction (classification)",
    "mae": "Smoothed prequential mean absolute error of the served prediction (regression)",
}
# created with the task's first learned batch, so only the task's own exists
SCORE_SERIES = tuple(f"streamlearn_worker_prequential_{name}" for name in _SCORES)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class WorkerCounts(Protocol):
    """The worker loop's own totals (``WorkerStats``), read at scrape time."""

    @property
    def late_learned(self) -> int: ...  # events learned from when their late label arrived

    @property
    def published(self) -> int: ...  # predictions sent to the output topic

    @property
    def rejected(self) -> Mapping[str, int]: ...  # dead-lettered records by reason


class LabelJoinCounts(Protocol):
    """The late-label join's waiting sets and evictions (``LabelJoin``)."""

    @property
    def events(self) -> Sized: ...  # unlabelled events waiting for their label

    @property
    def labels(self) -> Sized: ...  # labels waiting for their event

    def evictions(self) -> Mapping[tuple[str, str], int]: ...  # (side, cause) → entries


class PublishOutcome(Protocol):
    """What one export attempt did (``PublishResult``)."""

    @property
    def published(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def version(self) -> int | None: ...

    @property
    def seconds(self) -> float: ...


class WorkerMetrics:
    """The worker's metrics; served on ``metrics.port`` by ``streamlearn worker``."""

    def __init__(
        self, registry: CollectorRegistry, smoothing: float = 0.01, rank: int = 0,
        world_size: int = 1,
    ) -> None:  # fmt: skip
        """Families on ``registry``, each with the label ``rank`` (a scaled-out worker's ranks
        serve one ``/metrics`` each; "0" for a single worker)."""
        self.registry = registry
        MetricFactory(registry, "streamlearn_worker_").process_metrics()
        families = CollectorRegistry(auto_describe=True)
        registry.register(_Refreshed(RankLabelled(families, "rank", str(rank)), self._refresh))
        m = MetricFactory(families, "streamlearn_worker_")
        m.build_info()
        tp = ("topic", "partition")
        self.consumed = m.counter("events_consumed", "Kafka records consumed")
        self.rejected = m.counter("events_rejected", "Records dead-lettered, by reason", ["reason"])
        self._rejected = {r: self.rejected.labels(r) for r in get_args(RejectionReason)}
        self.trained = m.counter("events_trained", "Labelled events learned")
        self.dropped = m.counter(
            "feature_values_dropped",
            "Feature values treated as missing: no_slot (slots full or not in the schema), "
            "not_a_number (a string for a numeric feature), non_finite (±inf)",
            ["reason"],
        )
        self._dropped = {reason: self.dropped.labels(reason) for reason in DROP_REASONS}
        self.stats_skipped = m.counter(
            "feature_statistics_skipped",
            "Standardisation updates of a feature skipped: its batch values overflowed float64",
        )
        self.unknown_labels = m.counter(
            "labels_unknown", "Labels not learned: beyond max_classes, or not a usable target"
        )
        self.late = m.counter("late_labels_joined", "Events learned when their late label came")
        self.late_waiting = m.gauge(
            "late_labels_waiting",
            "Waiting for a partner: side=event (unlabelled events), side=label (labels first)",
            ["side"],
        )
        self.late_evicted = m.counter(
            "late_labels_evicted",
            "Waiting entries dropped without a partner, by side and cause (age, count)",
            ["side", "cause"],
        )
        self.sent = m.counter("predictions_sent", "Predictions sent to the output topic")
        self.steps = m.counter("train_steps", "Optimizer steps taken")
        self.nonfinite = m.counter(
            "train_steps_skipped_nonfinite", "Optimizer steps skipped: non-finite loss or gradient"
        )
        self.step_seconds = m.histogram(
            "step_duration_seconds",
            "Micro-batch time: decode, score, drift, learn, error memory (not the export)",
            STEP_BUCKETS,
        )
        self.batch_records = m.histogram("batch_records", "Records per micro-batch", BATCH_BUCKETS)
        self.loss = m.gauge(
            "prequential_loss",
            "Smoothed prequential loss of the network (what the drift detector watches)",
        )
        # one quantity per name, created when the task's first batch is learned (a regression
        # worker has no accuracy series, a classifier no MAE)
        self._factory = m
        self.score: Gauge | None = None
        self.drifts = m.counter("drifts", "Drift detections")
        self.lr = m.gauge("learning_rate", "Current learning rate")
        self.replay_rows = m.gauge("replay_rows", "Rows in the replay reservoir")
        self.replay_capacity = m.gauge("replay_capacity_rows", "Replay reservoir capacity")
        self.memory_rows = m.gauge("error_memory_rows", "Samples in the error memory (0 = off)")
        self.memory_capacity = m.gauge(
            "error_memory_capacity_rows", "Error memory capacity (top-k ring; 0 = off or LSH)"
        )
        self.memory_weight = m.gauge(
            "error_memory_weight",
            "Share of the error memory's compensation in predictions: the gate's weight "
            "(1 = full, 0 = off or none)",
        )
        self.linear_share = m.gauge(
            "linear_share",
            "Share of the linear model beside the network in a classifier's base prediction "
            "(0 = off, regression, or the network alone)",
        )
        self.linear_slow_share = m.gauge(
            "linear_slow_share",
            "Share of the slow rate within a classifier's linear model (0 = one rate, off, or "
            "regression)",
        )
        self.neighbour_share = m.gauge(
            "neighbour_share",
            "Share of the nearest recent rows' vote in a classifier's predictions (0 = off, "
            "regression, retired, or the model alone)",
        )
        self.fresh_share = m.gauge(
            "fresh_model_share",
            "Share of the fresh model learning after a detection in the worker's predictions "
            "(0 = none learning, or experts.fresh_mix off; exports carry the live model)",
        )
        self.experts = m.gauge("expert_pool_size", "Past models in the expert pool (0 = off)")
        self.expert_switches = m.counter(
            "expert_switches",
            "Switches of the live model to a past model from the pool or to a fresh model",
        )
        self.lag = m.gauge(
            "consumer_lag_messages", "End offset - next offset to learn (clamped at 0)", tp
        )
        self.position = m.gauge("consumer_offset", "Next offset to learn", tp)
        self.assigned = m.gauge(
            "assigned_partitions",
            "Partitions assigned to this worker per subscribed topic (0 for long: more consumers "
            "than partitions, or a stuck group)",
            ["topic"],
        )
        self.broker_up = m.gauge("broker_up", "1 while the broker answers")
        self.ckpt_seconds = m.histogram(
            "checkpoint_duration_seconds", "Time to write one checkpoint", SLOW_BUCKETS
        )
        self.ckpt_bytes = m.gauge("checkpoint_size_bytes", "Size of the newest checkpoint")
        self.ckpt_time = m.gauge(
            "checkpoint_last_success_timestamp_seconds",
            "When the newest checkpoint was written (the restored one, else process start)",
        )
        self.ckpt_corrupt = m.counter("checkpoints_corrupt", "Damaged checkpoints skipped")
        self.publish = m.counter("publish", "Export attempts by result", ["result"])
        self._publish = {result: self.publish.labels(result) for result in PUBLISH_RESULTS}
        self.publish_seconds = m.histogram(
            "publish_duration_seconds", "Gate + ONNX export + parity + publish", SLOW_BUCKETS
        )
        self.publish_time = m.gauge(
            "last_publish_timestamp_seconds", "When this process last published (0 = not yet)"
        )
        self.version = m.gauge("model_version", "Last version this process published (0 = none)")
        self.memory_pushes = m.counter("error_memory_pushes", "Error-memory snapshots pushed")
        self.backend = m.gauge(
            "compute_backend",
            "1 for the compute backend the learner runs on (compiled: the C kernels; torch)",
            ["backend"],
        )
        self.world_size = m.gauge("world_size", "Ranks keeping this model (1: a single worker)")
        self.world_size.set(world_size)
        self.collective_seconds = m.counter(
            "collective_seconds", "Time inside torch.distributed collectives (scale-out)"
        )
        self.collective_bytes = m.counter(
            "collective_bytes", "Payload bytes this rank gave to torch.distributed collectives"
        )
        self._collective = (0.0, 0)
        self.ckpt_time.set(time.time())
        self._lock = threading.Lock()  # the loop's thread and the scrape's share what follows
        self._loop: tuple[Prequential, WorkerCounts] | None = None  # read at scrape time
        self._consumed = 0  # records consumed, published at scrape time
        self._moved: dict[TopicPartition, int] = {}  # offsets noted since the last scrape
        self._last: dict[str, int] = {}
        self._scores = SmoothedScores(smoothing)  # smoothing: EWMA weight of one learned event
        self._partitions: set[TopicPartition] = set()  # those with offset / lag samples
        self._ends: dict[TopicPartition, int] = {}  # the last end offsets looked up
        self._position_of: dict[TopicPartition, Gauge] = {}  # gauge children, looked up once
        self._lag_of: dict[TopicPartition, Gauge] = {}

    # -- worker loop ------------------------------------------------------------------------
    def watch_broker(self, up: Callable[[], bool]) -> None:
        """Read the broker state at scrape time (no update on the loop)."""
        self.broker_up.set_function(lambda: float(up()))

    def observe_assignment(self, topics: Sequence[str], owned: Collection[TopicPartition]) -> None:
        """The partitions assigned now, per subscribed topic (0 included, so that a member
        without partitions shows)."""
        for topic in topics:
            self.assigned.labels(topic).set(sum(1 for t, _ in owned if t == topic))

    def watch_loop(self, preq: Prequential, stats: WorkerCounts) -> None:
        """Read the loop's totals and the learner's state at scrape time (see the module)."""
        with self._lock:
            self._loop = (preq, stats)

    def observe_restore(
        self, preq: Prequential, stats: WorkerCounts, created: float | None, corrupt: int = 0
    ) -> None:
        """After a restore: restored totals are a baseline, not increments of this process."""
        self.backend.labels(preq.backend.name).set(1)
        with self._lock:
            self._last = {"consumed": self._consumed}
            self._advance(preq, stats, publish=False)
        if created is not None:
            self.ckpt_time.set(created)
        self.ckpt_corrupt.inc(corrupt)

    def observe_batch(
        self,
        records: int,
        seconds: float,
        outcome: BatchOutcome | None,
        offsets: Mapping[TopicPartition, int],
    ) -> None:
        """One micro-batch: its size and time observed, loss and score smoothed; ``offsets``:
        the next offset to learn of the batch's partitions (only those), set at scrape time."""
        self.batch_records.observe(records)
        self.step_seconds.observe(seconds)
        with self._lock:
            self._consumed += records
            self._moved.update(offsets)
            if outcome is not None and self._scores.add(outcome):
                self._publish_scores()

    def _refresh(self) -> None:
        """At scrape time: counters by how far the loop's totals moved, gauges set from the
        learner's state and the offsets noted since the last scrape."""
        with self._lock:
            self._publish_scores()  # what the loop kept since its last fold
            moved, self._moved = self._moved, {}
            for tp, offset in moved.items():
                self._offset(tp, offset)
            self._bump(self.consumed, "consumed", self._consumed, True)
            if self._loop is None:
                return
            preq, stats = self._loop
            self._advance(preq, stats, publish=True)
        learner, memory = preq.learner, preq.memory
        self.lr.set(learner.lr)
        self.replay_rows.set(len(learner.replay))
        self.replay_capacity.set(learner.replay.capacity)
        self.memory_rows.set(0 if memory is None else len(memory.memory))
        topk = memory is not None and memory.settings.kind == "topk"
        self.memory_capacity.set(memory.settings.size if memory is not None and topk else 0)
        self.memory_weight.set(0.0 if memory is None else memory.weight)
        self.linear_share.set(0.0 if preq.linear is None else preq.linear.share)
        self.linear_slow_share.set(0.0 if preq.linear is None else preq.linear.model.slow_share)
        self.neighbour_share.set(0.0 if preq.neighbours is None else preq.neighbours.share)
        self.fresh_share.set(0.0 if preq.experts is None else preq.experts.fresh_share)
        self.experts.set(0 if preq.experts is None else len(preq.experts))

    def _advance(self, preq: Prequential, stats: WorkerCounts, *, publish: bool) -> None:
        """Increment counters by how far the loop's own totals moved (or just record them)."""
        learner, encoder = preq.learner, preq.encoder
        for counter, key, value in (
            (self.trained, "trained", preq.seen),
            (self._dropped["no_slot"], "dropped:no_slot", encoder.ignored),
            (self._dropped["not_a_number"], "dropped:not_a_number", encoder.mismatched),
            (self._dropped["non_finite"], "dropped:non_finite", encoder.non_finite),
            (self.stats_skipped, "stats_skipped", encoder.overflowed),
            (self.unknown_labels, "unknown_labels", preq.unknown_labels),
            (self.steps, "steps", learner.steps),
            (self.nonfinite, "nonfinite", learner.skipped_nonfinite),
            (self.drifts, "drifts", len(preq.drifts)),
            (self.expert_switches, "expert_switches", preq.expert_switches),
            (self.late, "late", stats.late_learned),
            (self.sent, "sent", stats.published),
        ):
            self._bump(counter, key, value, publish)
        for reason, value in list(stats.rejected.items()):  # a copy: the loop may add a reason
            if reason not in self._rejected:
                self._rejected[reason] = self.rejected.labels(reason)
            self._bump(self._rejected[reason], "rejected:" + reason, value, publish)

    def _bump(self, counter: Counter, key: str, value: int, publish: bool) -> None:
        step = value - self._last.get(key, 0)
        self._last[key] = value
        if publish and step > 0:
            counter.inc(step)

    def _publish_scores(self) -> None:
        """Fold the kept batches into the smoothed loss and score, and set their gauges (the
        score's is made with the task's first score: accuracy or mae)."""
        scores = self._scores
        if not scores.fold():
            return
        if scores.loss is not None:
            self.loss.set(scores.loss)
        if scores.score is not None and scores.score_name is not None:
            if self.score is None:
                self.score = self._factory.gauge(
                    f"prequential_{scores.score_name}", _SCORES[scores.score_name]
                )
            self.score.set(scores.score)

    def observe_label_join(self, join: LabelJoinCounts, *, baseline: bool = False) -> None:
        """The waiting sets' sizes, and evictions by difference (``baseline``: after a restore,
        the restored totals are not increments of this process)."""
        self.late_waiting.labels("event").set(len(join.events))
        self.late_waiting.labels("label").set(len(join.labels))
        with self._lock:
            for (side, cause), value in join.evictions().items():
                key = f"evicted:{side}:{cause}"
                self._bump(self.late_evicted.labels(side, cause), key, value, not baseline)

    def observe_lag(
        self, ends: Mapping[TopicPartition, int], positions: Mapping[TopicPartition, int]
    ) -> None:
        """End offsets looked up (every ``metrics.lag_interval_s``): offset and lag of each
        partition reported; a partition no longer reported is dropped (and the offsets noted
        since the last scrape with it: ``positions`` are as new)."""
        current = {tp for tp in ends if tp in positions}
        with self._lock:
            self._moved = {}
            for topic, partition in self._partitions - current:
                self._position_of.pop((topic, partition), None)
                self._lag_of.pop((topic, partition), None)
                for gauge in (self.lag, self.position):
                    with contextlib.suppress(KeyError):  # no lag before the first end offset
                        gauge.remove(topic, str(partition))
            self._partitions = set()
            self._ends = {tp: ends[tp] for tp in current}
            for tp in current:
                self._offset(tp, positions[tp])

    def _offset(self, tp: TopicPartition, offset: int) -> None:
        """A partition's next offset to learn and its lag = last end offset looked up - offset
        (once one was). Clamped at 0: some brokers (tansu) answer "latest" with less than the
        true end offset, and the end may have grown since it was looked up."""
        position = self._position_of.get(tp)
        if position is None:
            position = self._position_of[tp] = self.position.labels(tp[0], str(tp[1]))
        position.set(offset)
        end = self._ends.get(tp)
        if end is not None:
            lag = self._lag_of.get(tp)
            if lag is None:
                lag = self._lag_of[tp] = self.lag.labels(tp[0], str(tp[1]))
            lag.set(max(0, end - offset))
        self._partitions.add(tp)

    def observe_collectives(self, seconds: float, payload: int) -> None:
        """The process group's running totals (time inside collectives, payload bytes)."""
        last_s, last_b = self._collective
        self.collective_seconds.inc(max(0.0, seconds - last_s))
        self.collective_bytes.inc(max(0, payload - last_b))
        self._collective = (seconds, payload)

    def observe_checkpoint(self, seconds: float, path: Path) -> None:
        """A checkpoint was written to ``path`` in ``seconds``."""
        self.ckpt_seconds.observe(seconds)
        self.ckpt_time.set(time.time())
        with contextlib.suppress(OSError):
            self.ckpt_bytes.set(path.stat().st_size)

    def observe_publish(self, result: PublishOutcome, memory_pushes: int) -> None:
        """What the export hook did after a batch (``not_due`` is not counted)."""
        with self._lock:
            self._bump(self.memory_pushes, "memory_pushes", memory_pushes, True)
        if result.reason == "not_due":
            return
        if result.reason not in self._publish:
            self._publish[result.reason] = self.publish.labels(result.reason)
        self._publish[result.reason].inc()
        if result.reason in ("published", "gated"):
            self.publish_seconds.observe(result.seconds)
        if result.published and result.version is not None:
            self.version.set(result.version)
            self.publish_time.set(time.time())


class _Refreshed(Collector):
    """``inner``'s families, collected after ``refresh`` brought them up to date (the values
    read at scrape time, see the module)."""

    def __init__(self, inner: Collector, refresh: Callable[[], None]) -> None:
        self.inner, self.refresh = inner, refresh

    def collect(self) -> Iterator[Metric]:
        self.refresh()
        yield from self.inner.collect()
