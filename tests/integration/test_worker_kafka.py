"""The worker against a real broker: it learns, dead-letters what is malformed, joins late labels.

Each test runs the Worker in-process (on a thread) against the session's tansu broker, on
fresh topics and a fresh consumer group.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kafka_tools import Running, create_topic, event, read_topic, send, unique, worker_settings

from streamlearn.app import build_worker
from streamlearn.worker.checkpoint import CheckpointStore

pytestmark = pytest.mark.timeout(180)


def start(settings):
    import threading

    worker = build_worker(settings, threading.Event())
    assert worker is not None
    return Running(worker)


def test_events_in_model_learns_and_restarts_exactly_once(kafka_bootstrap: str, tmp_path: Path):
    settings = worker_settings(
        kafka_bootstrap, tmp_path / "ckpt", kafka={"output_topic": unique("predictions")}
    )
    k = settings.kafka
    create_topic(kafka_bootstrap, k.topic, partitions=2)
    n = 800
    send(kafka_bootstrap, k.topic, [event(i) for i in range(n)], keys=[b"%d" % i for i in range(n)])

    run = start(settings)
    assert run.wait_for(lambda: run.worker.preq.seen == n, 60), run.worker.preq.seen
    run.stop()
    worker = run.worker
    assert sum(worker.positions.values()) == n
    assert worker.stats.events == n and worker.stats.rejected == {}

    # the model learned the rule y = (a > 0)
    probe = [json.loads(event(i))["x"] for i in range(10_000, 10_400)]
    truth = np.array([x["a"] > 0 for x in probe])
    proba = worker.preq.predict(probe)
    classes = worker.preq.classes()
    predicted = np.array([classes[j] for j in proba.argmax(1)]) == 1
    assert (predicted == truth).mean() > 0.9

    # one prediction per event on the output topic, made before learning from it
    out = read_topic(kafka_bootstrap, k.output_topic, n)
    assert len(out) == n
    docs = [json.loads(r.value) for r in out]
    assert {d["id"] for d in docs} == {f"e-{i}" for i in range(n)}
    assert all(set(d) == {"id", "prediction", "model_step"} for d in docs)
    assert max(d["model_step"] for d in docs) > 0

    # the checkpoint loads with weights_only=True and holds the offsets
    newest = CheckpointStore(settings.checkpoint.dir).checkpoints()[-1][1]
    state = torch.load(newest, weights_only=True)
    assert state["prequential"]["counters"]["seen"] == n
    assert sum(o for _, _, o in state["offsets"]) == n

    # damage the newest checkpoint: the restart takes the older one and replays the rest
    older = CheckpointStore(settings.checkpoint.dir).checkpoints()[-2]
    seen_older = torch.load(older[1], weights_only=True)["prequential"]["counters"]["seen"]
    assert seen_older < n
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))

    rerun = start(settings)
    assert rerun.wait_for(lambda: rerun.worker.preq.seen == n, 60), rerun.worker.preq.seen
    assert rerun.worker.store.corrupt_skipped == 1
    rerun.wait_for(lambda: False, 1.5)  # nothing more arrives: nothing is learned twice
    rerun.stop()
    assert rerun.worker.preq.seen == n
    assert sum(rerun.worker.positions.values()) == n


BAD = {
    "not_json": b"this is not json {",
    "wrong_type": b'{"id": "w", "x": {"a": [1, 2]}, "y": 1}',
    "non_finite": b'{"id": "nan", "x": {"a": NaN}, "y": 1}',
    "unknown_class": b'{"id": "u", "x": {"a": 1.0}, "y": "maybe"}',
    "oversized": json.dumps({"id": "big", "x": {"s": "x" * 3000}, "y": "yes"}).encode(),
    "missing_field": b'{"id": "m", "y": "yes"}',
    "not_object": b"[1, 2, 3]",
}


def test_malformed_messages_go_to_the_dead_letter_topic(kafka_bootstrap: str, tmp_path: Path):
    settings = worker_settings(
        kafka_bootstrap,
        tmp_path / "ckpt",
        kafka={"dead_letter_topic": unique("dlq")},
        learner={"classes": ["no", "yes"]},
        worker={"max_event_bytes": 2048},
    )
    k = settings.kafka
    create_topic(kafka_bootstrap, k.topic)
    good = [event(i, y="yes" if i % 2 else "no") for i in range(40)]
    values = good[:20] + list(BAD.values()) + good[20:]
    send(kafka_bootstrap, k.topic, values, headers=[("source", b"test")])

    run = start(settings)
    assert run.wait_for(lambda: run.worker.positions.get((k.topic, 0)) == len(values), 60)
    run.stop()
    assert run.worker.preq.seen == 40
    assert run.worker.stats.rejected == dict.fromkeys(BAD, 1)

    dead = read_topic(kafka_bootstrap, k.dead_letter_topic, len(BAD))
    assert len(dead) == len(BAD)
    by_reason = {}
    for record in dead:
        headers = dict(record.headers)
        by_reason[headers["dlq.reason"].decode()] = (record.value, headers)
    assert set(by_reason) == set(BAD)
    for reason, (value, headers) in by_reason.items():
        assert value == BAD[reason]  # the original bytes
        assert headers["source"] == b"test"  # the original headers travel along
        assert headers["dlq.topic"].decode() == k.topic
        assert headers["dlq.partition"] == b"0"
        assert int(headers["dlq.offset"]) == values.index(BAD[reason])
        assert headers["dlq.detail"]


def test_late_labels_are_joined_and_learned(kafka_bootstrap: str, tmp_path: Path):
    labels_topic = unique("labels")
    settings = worker_settings(
        kafka_bootstrap,
        tmp_path / "ckpt",
        kafka={"labels_topic": labels_topic},
        worker={"label_cache_size": 90},
    )
    k = settings.kafka
    create_topic(kafka_bootstrap, k.topic)
    create_topic(kafka_bootstrap, labels_topic)
    send(kafka_bootstrap, k.topic, [event(i, y=None) for i in range(100)])  # score only

    run = start(settings)
    assert run.wait_for(lambda: run.worker.stats.events == 100, 60)
    assert run.worker.preq.seen == 0
    assert run.worker.join.evictions()[("event", "count")] == 10  # the 10 oldest: 90 slots

    labels = [json.dumps({"id": f"e-{i}", "y": json.loads(event(i))["y"]}) for i in range(20)]
    labels += [json.dumps({"id": f"nope-{i}", "y": 1}) for i in range(5)]
    send(kafka_bootstrap, labels_topic, [s.encode() for s in labels])
    assert run.wait_for(lambda: run.worker.positions.get((labels_topic, 0)) == 25, 30)
    run.stop()
    w = run.worker
    assert w.join.joined == 10 and w.preq.seen == 10 and w.stats.late_learned == 10
    assert len(w.join.events) == 80
    assert len(w.join.labels) == 15  # labels of evicted events and of unknown ids wait
