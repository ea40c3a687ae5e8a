"""Exactly-once model state under kill -9, and a clean SIGTERM, with the real command line.

The worker runs as ``python -m streamlearn worker`` subprocesses. One is killed with SIGKILL
at seeded random points and restarted each time; at the end the model has been trained on
every event exactly once, and its weights equal, bit for bit, those of an uninterrupted run
on the same events (batches are formed by count from the restored offsets).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka_tools import create_topic, event, send, unique
from worker_process import WorkerProcess, newest_state, run_to_end, seen, write_config

pytestmark = pytest.mark.timeout(300)

N_EVENTS = 6010  # not a multiple of the batch size: the last batch is a partial one


def offsets(state: dict[str, Any]) -> dict[tuple[str, int], int]:
    return {(t, int(p)): int(o) for t, p, o in state["offsets"]}


def test_kill_9_at_random_points_trains_each_event_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
):
    topic = create_topic(kafka_bootstrap, unique("crash"), partitions=1)
    send(kafka_bootstrap, topic, [event(i) for i in range(N_EVENTS)], partition=0)

    reference = run_to_end(
        write_config(tmp_path / "ref" / "w.yaml", kafka_bootstrap, topic), N_EVENTS
    )

    config = write_config(tmp_path / "crash" / "w.yaml", kafka_bootstrap, topic)
    rng = random.Random(20241126)
    at_kill = []
    for _ in range(3):
        worker = WorkerProcess(config)
        worker.wait_log("assigned")
        time.sleep(rng.uniform(0.05, 0.8))
        worker.kill()
        at_kill.append(seen(newest_state(tmp_path / "crash" / "ckpt")))
    final = run_to_end(config, N_EVENTS)

    assert any(0 < s < N_EVENTS for s in at_kill), at_kill  # killed mid-stream
    for state in (reference, final):
        assert seen(state) == N_EVENTS
        assert offsets(state) == {(topic, 0): N_EVENTS}
    ref_model = reference["prequential"]["learner"]["model"]
    got_model = final["prequential"]["learner"]["model"]
    assert ref_model.keys() == got_model.keys()
    for name, tensor in ref_model.items():
        assert torch.equal(got_model[name], tensor), name  # bitwise
    ref_opt = reference["prequential"]["learner"]["optimizer"]
    got_opt = final["prequential"]["learner"]["optimizer"]
    assert ref_opt.keys() == got_opt.keys()
    for key, value in ref_opt.items():  # Adam moments and step, active widths
        assert torch.equal(torch.as_tensor(got_opt[key]), torch.as_tensor(value)), key
    assert (
        final["prequential"]["learner"]["counters"]
        == reference["prequential"]["learner"]["counters"]
    )


def test_kill_9_with_several_partitions_keeps_the_count_exact(kafka_bootstrap: str, tmp_path: Path):
    topic = create_topic(kafka_bootstrap, unique("crash3"), partitions=3)
    n = 4500
    for p in range(3):
        send(kafka_bootstrap, topic, [event(i) for i in range(p, n, 3)], partition=p)
    config = write_config(tmp_path / "w.yaml", kafka_bootstrap, topic)
    rng = random.Random(7)
    for _ in range(2):
        worker = WorkerProcess(config)
        worker.wait_log("assigned")
        time.sleep(rng.uniform(0.05, 0.6))
        worker.kill()
    final = run_to_end(config, n)
    assert seen(final) == n
    assert offsets(final) == {(topic, p): n // 3 for p in range(3)}


def test_sigterm_checkpoints_commits_and_exits_0(kafka_bootstrap: str, tmp_path: Path):
    topic = create_topic(kafka_bootstrap, unique("term"), partitions=1)
    send(kafka_bootstrap, topic, [event(i) for i in range(N_EVENTS)], partition=0)
    config = write_config(tmp_path / "w.yaml", kafka_bootstrap, topic)
    group = yaml.safe_load(config.read_text())["kafka"]["group_id"]

    worker = WorkerProcess(config)
    worker.wait_log("assigned")
    time.sleep(0.3)
    assert worker.terminate() == 0, worker.text()
    state = newest_state(tmp_path / "ckpt")
    assert state is not None
    learned = seen(state)
    assert learned == offsets(state)[(topic, 0)]  # every learned event accounted for

    # the group commit followed the final checkpoint
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    try:
        assert consumer.committed(TopicPartition(topic, 0)) == learned
    finally:
        consumer.close()

    final = run_to_end(config, N_EVENTS)  # nothing lost: the rest is learned after a restart
    assert seen(final) == N_EVENTS
    assert offsets(final) == {(topic, 0): N_EVENTS}
