"""Late labels against a real broker, both clients: any arrival order, exactly once across kill -9.

(a) The backlog case: unlabelled events and then their labels, all on the topics before the
worker starts, then labels read before their events: every label is joined and learned.
(b) A late-label stream on two partitions per topic, labels before and after their events, the
worker killed with SIGKILL mid-stream twice and restarted: the final checkpoint has learned each
event from its label exactly once, counted per id (tests/integration/counting_worker.py keeps
the count in the checkpoint).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_tools import Running, create_topic, read_topic, send, unique, worker_settings
from worker_process import WorkerProcess, newest_state, run_to_end, seen, write_config
from worker_support import event, label

from streamlearn.app import build_worker
from streamlearn.settings import load_settings
from streamlearn.worker.kafka.client import open_writer

pytestmark = pytest.mark.timeout(300)

CLIENTS = ["kafka-python", "confluent"]
COUNTING_WORKER = (str(Path(__file__).with_name("counting_worker.py")),)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_backlog_of_events_then_labels_is_all_learned(
    kafka_bootstrap: str, tmp_path: Path, client: str
):
    n = 5000
    settings = worker_settings(
        kafka_bootstrap,
        tmp_path / "ckpt",
        kafka={"labels_topic": unique("labels"), "client": client},
        source={"batch_size": 64},
    )
    k = settings.kafka
    assert k.labels_topic is not None
    create_topic(kafka_bootstrap, k.topic)
    create_topic(kafka_bootstrap, k.labels_topic)
    send(kafka_bootstrap, k.topic, [event(i, labelled=False) for i in range(n)])
    send(kafka_bootstrap, k.labels_topic, [label(i) for i in range(n)])

    worker = build_worker(settings, threading.Event())
    assert worker is not None
    run = Running(worker)
    events, labels = (k.topic, 0), (k.labels_topic, 0)
    assert run.wait_for(lambda: worker.positions == {events: n, labels: n}, 120)
    assert worker.join.joined == n and worker.preq.seen == n

    # then labels certainly read before their events: the events are sent once they are read
    send(kafka_bootstrap, k.labels_topic, [label(i) for i in range(n, n + 1000)])
    assert run.wait_for(lambda: worker.positions.get(labels) == n + 1000, 60)
    assert len(worker.join.labels) == 1000 and worker.preq.seen == n
    send(kafka_bootstrap, k.topic, [event(i, labelled=False) for i in range(n, n + 1000)])
    assert run.wait_for(lambda: worker.positions.get(events) == n + 1000, 60)
    run.stop()
    m = n + 1000
    assert worker.join.joined == m and worker.preq.seen == m and worker.stats.late_learned == m
    assert worker.join.early >= 1000
    assert len(worker.join.events) == len(worker.join.labels) == 0
    assert not any(worker.join.evictions().values())


@pytest.mark.parametrize("client", CLIENTS)
def test_kill_9_mid_stream_learns_each_late_label_exactly_once(
    kafka_bootstrap: str, tmp_path: Path, client: str
):
    n = 4000
    topic, labels_topic = unique("events"), unique("labels")
    for name in (topic, labels_topic):
        create_topic(kafka_bootstrap, name, partitions=2)
    # events 0..h first; labels for 0..h-500 late and for h..h+500 early (their events come
    # later); the rest of both after the first kill
    h = n // 2
    keys = [f"e-{i}".encode() for i in range(n)]  # both topics keyed by id: co-partitioned
    rng = random.Random(19)
    first = sorted(range(h + 500), key=lambda i: i + rng.randint(-300, 300))
    rest = sorted(range(h + 500, n), key=lambda i: i + rng.randint(-300, 300))

    def send_events(ids: range) -> None:
        send(
            kafka_bootstrap,
            topic,
            [event(i, labelled=False) for i in ids],
            keys=[keys[i] for i in ids],
        )

    def send_labels(ids: list[int]) -> None:
        send(kafka_bootstrap, labels_topic, [label(i) for i in ids], keys=[keys[i] for i in ids])

    send_events(range(h))
    send_labels(first)
    config = write_config(
        tmp_path / "w.yaml", kafka_bootstrap, topic,
        kafka={"labels_topic": labels_topic, "client": client, "max_poll_records": 50},
        checkpoint={"every_batches": 5},
    )  # fmt: skip
    ckpt = tmp_path / "ckpt"

    def kill_when(ready: Callable[[dict[str, Any]], bool]) -> int:
        """Run the worker until its newest checkpoint satisfies ``ready``, then SIGKILL it."""
        worker = WorkerProcess(config, COUNTING_WORKER)
        deadline = time.monotonic() + 120
        while (state := newest_state(ckpt)) is None or not ready(state):
            assert worker.proc.poll() is None, worker.text()
            assert time.monotonic() < deadline, worker.text()
            time.sleep(0.01)
        worker.kill()
        return seen(newest_state(ckpt))

    # first kill: once early labels wait in the checkpoint; only then do their events come
    at_kill = [
        kill_when(lambda state: seen(state) > 0 and len(state["late_labels"]["labels"]) >= 300)
    ]
    send_events(range(h, n))
    send_labels(rest)
    at_kill.append(kill_when(lambda state: seen(state) >= 3 * n // 4))
    final = run_to_end(config, n, COUNTING_WORKER)

    assert all(0 < s < n for s in at_kill), at_kill  # killed mid-stream
    join = final["late_labels"]
    assert join["completed"] == {f"e-{i}": 1 for i in range(n)}  # each id learned once
    assert seen(final) == n and join["joined"] == n
    # labels were read before their events (which side a client reads first varies: kafka-python
    # sometimes takes the whole labels topic first; the unit test covers both orders exactly)
    assert join["early"] > 0
    assert join["events"] == [] and join["labels"] == []
    ends = {(t, p): o for t, p, o in final["offsets"]}
    assert sum(o for (t, _), o in ends.items() if t == topic) == n
    assert sum(o for (t, _), o in ends.items() if t == labels_topic) == n


def test_streamlearns_confluent_writer_partitions_keys_like_kafka_python(kafka_bootstrap: str):
    ours, theirs = (create_topic(kafka_bootstrap, unique("keys"), partitions=4) for _ in "ab")
    settings = load_settings(kafka={"bootstrap_servers": [kafka_bootstrap], "client": "confluent"})
    writer = open_writer(settings.kafka)
    keys = [f"e-{i}".encode() for i in range(200)]
    try:
        for key in keys:
            writer.send(ours, b"{}", key)
        assert writer.settle(30)
    finally:
        writer.close()
    send(kafka_bootstrap, theirs, [b"{}"] * len(keys), keys=keys)  # kafka-python's producer
    got, expected = (
        {r.key: r.partition for r in read_topic(kafka_bootstrap, topic, len(keys))}
        for topic in (ours, theirs)
    )
    assert got == expected and len(set(got.values())) == 4
