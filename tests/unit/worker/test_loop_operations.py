"""What an operator sees of the worker loop, against the in-memory Kafka stand-ins: the
no-partitions warning and gauge, the offset gauge per micro-batch, outage lines that are true,
and a shutdown bounded in time.

A fake clock drives the timings; the broker tests (tests/integration/test_worker_operations.py)
check the same end to end with both clients.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from worker_support import TOPIC, FakeReader, FakeWriter, event

from streamlearn.core.prequential import Prequential
from streamlearn.errors import KafkaUnavailable
from streamlearn.metrics.worker import WorkerMetrics
from streamlearn.settings import load_settings
from streamlearn.worker.checkpoint import CheckpointStore
from streamlearn.worker.kafka.client import TopicPartition
from streamlearn.worker.loop import CLOSE_MARGIN_S, Worker

LOOP = "streamlearn.worker.loop"
P0, P1 = (TOPIC, 0), (TOPIC, 1)


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BrokerReader(FakeReader):
    """A FakeReader whose broker can be down: probes and commits fail then, while polls still
    hand out records (as clients do with what they fetched before the outage)."""

    def __init__(self, log: dict[TopicPartition, list[bytes]]) -> None:
        super().__init__(log)
        self.down = False
        self.probes = 0
        self.commit_timeouts: list[float | None] = []
        self.close_timeout: float | None = None

    def probe(self, timeout_s: float) -> None:
        self.probes += 1
        if self.down:
            raise KafkaUnavailable("no answer")

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_s: float | None = None) -> None:
        self.commit_timeouts.append(timeout_s)
        if self.down:
            raise KafkaUnavailable("no coordinator")
        super().commit(offsets, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self.close_timeout = timeout_s


def build(
    tmp_path: Path,
    reader: FakeReader,
    clock: Clock | None = None,
    writer: FakeWriter | None = None,
    **sections: dict[str, Any],
) -> tuple[Worker, CollectorRegistry]:
    """A subscribed worker on ``reader`` with its own metrics registry."""
    config: dict[str, dict[str, Any]] = {
        "kafka": {"topic": TOPIC, "output_topic": "predictions", "dead_letter_topic": None},
        "learner": {"hidden": [16], "device": "cpu"},
        "features": {"numeric_slots": 4, "categorical_slots": 2, "hash_buckets": 64},
        "source": {"batch_size": 8},
        "worker": {"max_wait_s": 0.01, "poll_timeout_s": 0.01},
        "checkpoint": {"dir": tmp_path, "every_batches": 5, "every_s": 0},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    s = load_settings(**config)
    registry = CollectorRegistry()
    worker = Worker(
        s, Prequential.from_settings(s), reader, writer or FakeWriter(),
        CheckpointStore(tmp_path), clock=clock or time.monotonic,
        metrics=WorkerMetrics(registry),
    )  # fmt: skip
    worker.restore()
    reader.subscribe(worker.topics, worker)
    return worker, registry


def sample(registry: CollectorRegistry, name: str, **labels: object) -> float | None:
    labels = {"rank": "0"} | {key: str(value) for key, value in labels.items()}
    return registry.get_sample_value(f"streamlearn_worker_{name}", labels)


def messages(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


def test_no_partitions_warns_after_the_configured_time_then_every_log_every_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    clock = Clock()
    reader = BrokerReader({})  # a group that assigns this member nothing, rebalance after rebalance
    worker, registry = build(
        tmp_path, reader, clock, worker={"no_partitions_warn_s": 10, "log_every_s": 4}
    )
    caplog.set_level(logging.WARNING, LOOP)
    warned_at = []
    for t in range(30):
        clock.now = float(t)
        before = len(messages(caplog, "no partition assigned"))
        worker.step()
        if len(messages(caplog, "no partition assigned")) > before:
            warned_at.append(t)
    assert warned_at == [10, 14, 18, 22, 26]
    text = messages(caplog, "no partition assigned")[0]
    group = worker.settings.kafka.group_id
    assert f"group {group!r} has more consumers than partitions in {TOPIC}," in text
    assert "stuck rebalancing" in text and f"--group {group}" in text
    assert sample(registry, "assigned_partitions", topic=TOPIC) == 0

    reader.log = {P0: [event(i) for i in range(20)], P1: []}  # assigned at the next poll
    for t in range(30, 60):
        clock.now = float(t)
        worker.step()
    assert sample(registry, "assigned_partitions", topic=TOPIC) == 2
    assert len(messages(caplog, "no partition assigned")) == 5  # none while it has partitions

    reader.revoke_all()  # at 59 s, none left: the clock starts again
    assert sample(registry, "assigned_partitions", topic=TOPIC) == 0
    reader.log = {}
    for t in range(60, 72):
        clock.now = float(t)
        worker.step()
    assert len(messages(caplog, "no partition assigned")) == 6  # at 69 s


def test_the_offset_gauge_follows_every_batch_and_the_lag_its_end_offset(tmp_path: Path):
    log = {P0: [event(i) for i in range(100)], P1: [event(i) for i in range(61)]}
    # one end-offset lookup for the whole run: the offsets move with the batches alone
    worker, registry = build(tmp_path, FakeReader(log), metrics={"lag_interval_s": 3600})
    checked = 0
    while worker.positions != {P0: 100, P1: 61}:
        worker.step()
        for (topic, partition), offset in worker.positions.items():
            assert sample(registry, "consumer_offset", topic=topic, partition=partition) == offset
            lag = sample(registry, "consumer_lag_messages", topic=topic, partition=partition)
            assert lag in (None, len(log[(topic, partition)]) - offset)
            checked += lag is not None
    assert checked > 10
    assert sample(registry, "consumer_lag_messages", topic=TOPIC, partition=0) == 0


def test_reachable_again_only_after_a_probe_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    clock = Clock()
    reader = BrokerReader({P0: [event(i) for i in range(40)]})
    worker, _ = build(
        tmp_path,
        reader,
        clock,
        worker={"idle_probe_s": 5, "backoff_initial_s": 1, "backoff_max_s": 4},
    )
    caplog.set_level(logging.INFO, "streamlearn.worker")

    def run_until(t: float) -> None:
        while clock.now < t:
            clock.now += 0.25
            worker.step()

    run_until(10)
    assert worker.positions == {P0: 40}
    reader.down = True
    while worker.health.up:  # idle: the next probe fails
        run_until(clock.now + 0.25)
    down_at = clock.now
    assert down_at <= 16
    # records the client fetched before the outage, and predictions acknowledged before it,
    # keep coming: batches, checkpoints (settled), but no "reachable again"
    reader.log[P0] += [event(i) for i in range(40, 120)]
    probes = reader.probes
    run_until(down_at + 20)
    worker.checkpoints.written(worker.owned, wait=True)  # the newest file, written on a thread
    assert worker.positions == {P0: 120} and worker.store.saved > 0
    assert reader.probes > probes + 3  # probed at each back-off delay, batches or not
    assert not messages(caplog, "reachable again") and not worker.health.up
    reader.down = False
    up_at = clock.now
    run_until(50)
    assert worker.health.up
    (line,) = messages(caplog, "reachable again")
    seconds, retries = re.search(r"after ([\d.]+) s \((\d+) retries\)", line).groups()
    assert up_at - down_at <= float(seconds) <= up_at - down_at + 4.25  # + the back-off delay
    assert int(retries) >= 3


def test_shutdown_without_acknowledgements_ends_by_the_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    writer = FakeWriter()
    reader = BrokerReader({P0: [event(i) for i in range(40)]})
    worker, _ = build(
        tmp_path, reader, writer=writer, worker={"shutdown_timeout_s": 0.5},
        checkpoint={"every_batches": 0},
    )  # fmt: skip
    writer.acknowledge = False
    while worker.positions != {P0: 40}:
        worker.step()
    caplog.set_level(logging.INFO, "streamlearn.worker")
    start = time.monotonic()
    worker.stop()
    worker.shutdown()
    assert time.monotonic() - start < 0.5 + 0.3
    assert messages(caplog, "unacknowledged messages: not checkpointing")
    assert worker.store.saved == 0 and reader.commits == []  # replayed after a restart
    assert reader.close_timeout == CLOSE_MARGIN_S  # the deadline passed: the margin is left


@pytest.mark.parametrize("down", [False, True])
def test_the_final_commit_gets_the_time_left_or_is_skipped_in_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, down: bool
):
    reader = BrokerReader({P0: [event(i) for i in range(44)]})
    worker, _ = build(tmp_path, reader, worker={"shutdown_timeout_s": 5})
    while worker.positions != {P0: 44}:
        worker.step()
    worker.checkpoints.written(worker.owned, wait=True)  # the periodic one's file and commit
    if down:
        reader.down = True
        worker.health.failed("probe", "no answer")
    caplog.set_level(logging.INFO, "streamlearn.worker")
    worker.stop()
    worker.shutdown()
    assert worker.checkpoints.saved == {P0: 44}  # the checkpoint holds the offsets either way
    if down:
        assert reader.commits == [{P0: 40}]  # the periodic one only; the final one not tried
        assert messages(caplog, "skipped (Kafka unreachable)")
    else:
        assert reader.commits[-1] == {P0: 44}
        assert 4 < reader.commit_timeouts[-1] <= 5  # the time left before the deadline
    assert reader.close_timeout is not None and reader.close_timeout > 4
