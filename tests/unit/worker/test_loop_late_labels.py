"""Late labels through the worker loop, without a broker: any arrival order, exactly once.

The same properties the broker tests check end to end
(tests/integration/test_worker_late_labels.py), here fast and at many crash points: labels read
before their events are learned, and after crashes each event is learned from its label once
(counted per id in the checkpointed state).
"""

from __future__ import annotations

import random
from pathlib import Path

from worker_support import CountingJoin, FakeReader, FakeWriter, event, label

from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings, load_settings
from streamlearn.worker.checkpoint import CheckpointStore
from streamlearn.worker.loop import Worker

EVENTS, LABELS = ("events", 0), ("labels", 0)


def settings(tmp_path: Path, **worker: int) -> Settings:
    return load_settings(
        kafka={"topic": "events", "labels_topic": "labels", "dead_letter_topic": None},
        learner={"hidden": [16], "device": "cpu"},
        features={"numeric_slots": 4, "categorical_slots": 2, "hash_buckets": 64},
        source={"batch_size": 8},
        worker={"max_wait_s": 0.01, "poll_timeout_s": 0.01, **worker},
        checkpoint={"dir": tmp_path, "every_batches": 3, "every_s": 0},
    )


def make(s: Settings, reader: FakeReader) -> Worker:
    worker = Worker(
        s, Prequential.from_settings(s), reader, FakeWriter(), CheckpointStore(s.checkpoint.dir)
    )
    w = s.worker
    worker.join = CountingJoin(
        (w.label_cache_size, w.label_ttl_s), (w.early_label_cache_size, w.early_label_ttl_s)
    )
    worker.restore()
    worker.reader.subscribe(worker.topics, worker)
    return worker


def drive(worker: Worker, done, max_steps: int = 5_000) -> None:
    for _ in range(max_steps):
        if done(worker):
            return
        worker.step()
    raise AssertionError(f"stuck at {worker.positions}, {worker.preq.seen} learned")


def test_labels_read_before_their_events_wait_and_are_all_learned(tmp_path: Path):
    log = {LABELS: [label(i) for i in range(100)], EVENTS: []}
    worker = make(settings(tmp_path), FakeReader(log, max_per_poll=13))
    drive(worker, lambda w: w.positions.get(LABELS) == 100)
    assert worker.preq.seen == 0 and len(worker.join.labels) == 100

    log[EVENTS] += [event(i, labelled=False) for i in range(100)]
    drive(worker, lambda w: w.positions.get(EVENTS) == 100)
    assert worker.preq.seen == 100 and worker.stats.late_learned == 100
    assert (worker.join.joined, worker.join.early) == (100, 100)
    assert len(worker.join.labels) == len(worker.join.events) == 0
    assert worker.join.completed == {f"e-{i}": 1 for i in range(100)}


def test_crashes_anywhere_in_a_late_label_stream_learn_each_label_once(tmp_path: Path):
    n = 400
    ids = list(range(n))
    random.Random(3).shuffle(ids)  # about half the labels are read before their events
    log = {EVENTS: [event(i, labelled=False) for i in range(n)], LABELS: [label(i) for i in ids]}
    s, end = settings(tmp_path), {EVENTS: n, LABELS: n}
    rng = random.Random(11)
    for _ in range(6):  # crash: the object is dropped without a final checkpoint
        worker = make(s, FakeReader(log, max_per_poll=rng.randint(1, 9)))
        until = worker.stats.batches + rng.randint(1, 20)
        drive(worker, lambda w, until=until: w.stats.batches >= until or w.positions == end)
    assert worker.positions != end  # the crashes were mid-stream
    worker = make(s, FakeReader(log, max_per_poll=5))
    drive(worker, lambda w: w.positions == end)
    worker.checkpoint(final=True)

    restored = make(s, FakeReader(log))
    assert restored.join.completed == {f"e-{i}": 1 for i in range(n)}
    assert restored.preq.seen == n and restored.join.joined == n
    assert 0 < restored.join.early < n  # both orders happened
    assert len(restored.join.events) == len(restored.join.labels) == 0


def test_waiting_sets_and_evictions_are_metrics_and_a_restore_is_no_increment(tmp_path: Path):
    log = {LABELS: [label(i) for i in range(30)], EVENTS: []}
    s = settings(tmp_path, early_label_cache_size=10)
    worker = make(s, FakeReader(log))
    drive(worker, lambda w: w.positions.get(LABELS) == 30)

    def value(w: Worker, name: str, **labels: str) -> float | None:
        labels = {"rank": "0", **labels}
        return w.metrics.registry.get_sample_value("streamlearn_worker_" + name, labels)

    assert value(worker, "late_labels_waiting", side="label") == 10
    assert value(worker, "late_labels_evicted_total", side="label", cause="count") == 20
    assert value(worker, "late_labels_evicted_total", side="event", cause="age") == 0
    worker.checkpoint(final=True)

    restored = make(s, FakeReader(log))
    assert restored.join.evictions()[("label", "count")] == 20  # the checkpoint's total
    assert value(restored, "late_labels_evicted_total", side="label", cause="count") == 0
    log[EVENTS] += [event(i, labelled=False) for i in range(20, 30)]
    drive(restored, lambda w: w.positions.get(EVENTS) == 10)
    assert restored.preq.seen == 10
    assert value(restored, "late_labels_waiting", side="label") == 0
