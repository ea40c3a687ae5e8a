"""The worker's consumer-lag metric from a real broker's end offsets, with both Kafka clients.

tansu (the session's broker) may answer "latest" with less than the true end offset; the
metric is clamped at 0, so it is never negative, and it is 0 once everything is learned.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from kafka_tools import Running, create_topic, event, send, unique, worker_settings
from prometheus_client import CollectorRegistry

from streamlearn.app import build_worker
from streamlearn.metrics.worker import WorkerMetrics
from streamlearn.worker.kafka.client import open_reader

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_lag_and_offsets_per_partition(kafka_bootstrap: str, tmp_path: Path, client: str):
    settings = worker_settings(
        kafka_bootstrap, tmp_path / "ckpt", kafka={"client": client},
        metrics={"lag_interval_s": 0.2},
    )  # fmt: skip
    topic, n = settings.kafka.topic, 400
    create_topic(kafka_bootstrap, topic, partitions=2)
    send(kafka_bootstrap, topic, [event(i) for i in range(n)], keys=[b"%d" % i for i in range(n)])
    registry = CollectorRegistry()
    worker = build_worker(settings, threading.Event(), metrics=WorkerMetrics(registry))
    assert worker is not None

    def sample(name: str, partition: int) -> float | None:
        labels = {"topic": topic, "partition": str(partition), "rank": "0"}
        return registry.get_sample_value(f"streamlearn_worker_{name}", labels)

    run = Running(worker)
    try:
        assert run.wait_for(lambda: worker.preq.seen == n, 60), worker.preq.seen
        settled = lambda: all(sample("consumer_lag_messages", p) == 0 for p in (0, 1))  # noqa: E731
        assert run.wait_for(settled, 10), [sample("consumer_lag_messages", p) for p in (0, 1)]
        assert sum(sample("consumer_offset", p) or 0 for p in (0, 1)) == n
        assert (
            registry.get_sample_value("streamlearn_worker_events_consumed_total", {"rank": "0"})
            == n
        )
        assert registry.get_sample_value("streamlearn_worker_broker_up", {"rank": "0"}) == 1
    finally:
        run.stop()
    # the end offsets themselves: a fresh consumer that has read everything reports the true
    # end of each partition, although tansu answers "latest" too low (the last fetch's high
    # watermark corrects it)
    reader = open_reader(settings.kafka.model_copy(update={"group_id": unique("probe")}))
    try:
        reader.subscribe([topic], _FromStart())
        read = 0
        for _ in range(300):
            read += len(reader.poll(0.1, 500))
            if read >= n:
                break
        assert read == n
        ends = reader.end_offsets([(topic, 0), (topic, 1)], 10.0)
    finally:
        reader.close()
    assert ends == worker.positions


class _FromStart:
    """Rebalance handler of the probe: committed offsets (none: from the start)."""

    def assigned(self, partitions):
        return {}

    def revoked(self, partitions):
        return {}
