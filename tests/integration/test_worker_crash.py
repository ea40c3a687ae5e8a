"""Exactly-once model state under kill -9, and a clean SIGTERM, with the real command line.

The worker runs as ``python -m streamlearn worker`` subprocesses. One is killed with SIGKILL
at seeded random points and restarted each time; at the end the model has been trained on
every event exactly once, and its weights equal, bit for bit, those of an uninterrupted run
on the same events (batches are formed by count from the restored offsets).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka_tools import create_topic, event, send, unique

pytestmark = pytest.mark.timeout(300)

N_EVENTS = 6010  # not a multiple of the batch size: the last batch is a partial one
# faster failure detection than the other tests: a SIGKILLed member leaves the group only when
# its session times out, and every restart waits for that
GROUP = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 3500}


def write_config(path: Path, bootstrap: str, topic: str, **sections: Any) -> Path:
    config = {
        "kafka": {
            "bootstrap_servers": [bootstrap], "topic": topic, "group_id": unique("group"),
            "dead_letter_topic": None, **GROUP,
        },
        "learner": {"task": "binary", "hidden": [32], "device": "cpu", "seed": 0},
        "features": {"numeric_slots": 8, "categorical_slots": 4, "hash_buckets": 256},
        "drift": {"detector": "loss_deviation", "min_samples": 100, "window": 200},
        "source": {"batch_size": 16},
        "worker": {"max_wait_s": 0.5, "log_every_s": 1},
        "checkpoint": {"dir": str(path.parent / "ckpt"), "every_batches": 10, "every_s": 1},
        "registry": {"kind": "filesystem", "path": str(path.parent / "registry")},
        **sections,
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


class WorkerProcess:
    """``streamlearn worker`` in a subprocess, its log in a file."""

    def __init__(self, config: Path) -> None:
        self.log = config.parent / f"worker-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("wb") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlearn", "worker", "--config", str(config)],
                stdout=handle, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.text():
            assert self.proc.poll() is None, f"worker exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            time.sleep(0.02)

    def terminate(self, timeout_s: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no handler, no final checkpoint
        self.proc.wait(10)


def newest_state(ckpt: Path) -> dict[str, Any] | None:
    """The newest checkpoint, read without touching the directory (the worker may be live)."""
    for _ in range(20):
        files = sorted(ckpt.glob("ckpt-*.pt"))
        if not files:
            return None
        try:
            return torch.load(files[-1], weights_only=True)
        except FileNotFoundError:  # pruned between listing and reading
            continue
    raise AssertionError("checkpoints keep vanishing")


def seen(state: dict[str, Any] | None) -> int:
    return 0 if state is None else int(state["prequential"]["counters"]["seen"])


def run_to_end(config: Path, n: int) -> dict[str, Any]:
    """Start a worker, wait until its checkpoint holds all n events, SIGTERM it (exit 0)."""
    worker = WorkerProcess(config)
    ckpt = config.parent / "ckpt"
    deadline = time.monotonic() + 120
    while seen(newest_state(ckpt)) < n:
        assert worker.proc.poll() is None, worker.text()
        assert time.monotonic() < deadline, worker.text()
        time.sleep(0.1)
    assert worker.terminate() == 0, worker.text()
    state = newest_state(ckpt)
    assert state is not None
    return state


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
