"""The Kafka reader in a child process (``kafka.reader_process``) against a real broker.

Records arrive in order through the pipe; a rebalance reaches the worker's handler; a killed
child counts as lost partitions and the next poll starts a new one; a worker killed with
SIGKILL leaves no child behind, and its restarts learn every event exactly once.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from kafka_tools import create_topic, event, send, unique, worker_settings
from worker_process import WorkerProcess, run_to_end, seen, write_config

from streamlearn.errors import ConfigError, KafkaUnavailable
from streamlearn.worker.kafka.client import Record, TopicPartition, open_reader
from streamlearn.worker.kafka.reader_process import ProcessReader

pytestmark = pytest.mark.timeout(180)


class _Positions:
    """A rebalance handler keeping its own positions, as the worker's checkpoints do."""

    def __init__(self) -> None:
        self.positions: dict[TopicPartition, int] = {}
        self.calls: list[tuple[str, list[TopicPartition]]] = []

    def assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        self.calls.append(("assigned", list(partitions)))
        return {tp: self.positions[tp] for tp in partitions if tp in self.positions}

    def revoked(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        self.calls.append(("revoked", list(partitions)))
        return {tp: self.positions[tp] for tp in partitions if tp in self.positions}

    def learned(self, records: Sequence[Record]) -> None:
        for r in records:
            self.positions[(r.topic, r.partition)] = r.offset + 1


def _collect(reader, handler: _Positions, n: int, timeout_s: float) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < n and time.monotonic() < deadline:
        try:
            got = reader.poll(0.5, 100)
        except KafkaUnavailable:
            continue
        handler.learned(got)
        records += got
    return records


def _gone(pid: int, timeout_s: float) -> bool:
    """Whether the process exits within ``timeout_s`` (a zombie nobody reaps counts: here a
    container's first process may not reap orphans)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_records_in_order_and_a_killed_child_is_replaced(kafka_bootstrap: str, tmp_path: Path):
    settings = worker_settings(kafka_bootstrap, tmp_path, kafka={"reader_process": True}).kafka
    tp = (settings.topic, 0)
    create_topic(kafka_bootstrap, settings.topic)
    send(kafka_bootstrap, settings.topic, [event(i) for i in range(300)])
    reader = open_reader(settings)
    assert isinstance(reader, ProcessReader)
    handler = _Positions()
    try:
        reader.subscribe([settings.topic], handler)
        first = _collect(reader, handler, 300, timeout_s=60)
        assert [r.offset for r in first] == list(range(300))
        assert [r.value for r in first[:2]] == [event(0), event(1)]
        assert handler.calls == [("assigned", [tp])]
        assert reader.end_offsets([tp], 10.0) == {tp: 300}

        child = reader._process.pid
        assert child is not None
        os.kill(child, signal.SIGKILL)
        with pytest.raises(KafkaUnavailable, match="reader process ended"):
            for _ in range(100):  # the loop notices at its next read of the pipe
                reader.poll(0.1, 100)
        assert handler.calls[-1] == ("revoked", [tp])  # lost: checkpointed, not committed

        send(kafka_bootstrap, settings.topic, [event(i) for i in range(300, 350)])
        later = _collect(reader, handler, 50, timeout_s=60)  # a new child, from our positions
        assert reader._process.pid != child
        assert [r.offset for r in later] == list(range(300, 350))
        assert handler.calls[-1] == ("assigned", [tp])
    finally:
        reader.close()
    assert not reader._process.is_alive()


def test_a_client_that_cannot_start_is_the_same_error_as_in_process(tmp_path: Path):
    """A configuration mistake raised in the child reaches the worker as the ConfigError the
    in-process client gives (the CLI's exit code 2), and the child is gone."""
    settings = worker_settings("127.0.0.1:1", tmp_path, kafka={"client_options": {"bogus": 1}})
    with pytest.raises(ConfigError, match="Unrecognized configs") as in_process:
        open_reader(settings.kafka)
    child = settings.kafka.model_copy(update={"reader_process": True})
    with pytest.raises(ConfigError, match="Unrecognized configs") as in_child:
        open_reader(child)
    assert str(in_child.value) == str(in_process.value)


def test_kill_9_leaves_no_reader_behind_and_learns_each_event_once(
    kafka_bootstrap: str, tmp_path: Path
):
    n = 4000
    topic = create_topic(kafka_bootstrap, unique("crash-rp"), partitions=2)
    for p in range(2):
        send(kafka_bootstrap, topic, [event(i) for i in range(p, n, 2)], partition=p)
    config = write_config(
        tmp_path / "w.yaml", kafka_bootstrap, topic, kafka={"reader_process": True}
    )
    rng = random.Random(11)
    for _ in range(2):
        worker = WorkerProcess(config)
        worker.wait_log("assigned")
        child = int(re.findall(r"Kafka reader process (\d+) started", worker.text())[-1])
        time.sleep(rng.uniform(0.05, 0.6))
        worker.kill()
        assert _gone(child, 10.0), f"reader process {child} outlived its worker"
    final = run_to_end(config, n)
    assert seen(final) == n
    assert {(t, int(p)): int(o) for t, p, o in final["offsets"]} == {
        (topic, 0): n // 2,
        (topic, 1): n // 2,
    }
