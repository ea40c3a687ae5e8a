"""Both Kafka readers against a real broker: a poll hands over what has arrived at once.

The worker polls for up to ``kafka.max_poll_records`` records; a poll that waited for that many
before returning would hold back every batch of a quiet topic, and a stream's last records, for
the whole poll timeout.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from kafka_tools import create_topic, event, send, worker_settings

from streamlearn.worker.kafka.client import Record, TopicPartition, open_reader

pytestmark = pytest.mark.timeout(120)


class _FromCommitted:
    """A rebalance handler that keeps no offsets of its own."""

    def assigned(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}

    def revoked(self, partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
        return {}


def _collect(reader, n: int, timeout_s: float, poll_timeout_s: float) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < n and time.monotonic() < deadline:
        records += reader.poll(poll_timeout_s, 500)
    return records


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_poll_returns_what_arrived_without_waiting_for_a_full_batch(
    kafka_bootstrap: str, tmp_path: Path, client: str
):
    settings = worker_settings(kafka_bootstrap, tmp_path, kafka={"client": client}).kafka
    create_topic(kafka_bootstrap, settings.topic)
    send(kafka_bootstrap, settings.topic, [event(i) for i in range(5)])
    reader = open_reader(settings)
    try:
        reader.subscribe([settings.topic], _FromCommitted())
        first = _collect(reader, 5, timeout_s=60, poll_timeout_s=0.5)  # includes the group join
        assert [r.offset for r in first] == [0, 1, 2, 3, 4]

        send(kafka_bootstrap, settings.topic, [event(i) for i in range(5, 8)])
        started = time.monotonic()
        later = _collect(reader, 3, timeout_s=30, poll_timeout_s=30.0)
        waited = time.monotonic() - started
    finally:
        reader.close()
    assert [r.offset for r in later] == [5, 6, 7]
    # 3 of the 500 a poll may return: a reader that waited to fill the poll would take 30 s
    assert waited < 10, f"poll held 3 records back for {waited:.1f} s"


def test_kafka_pythons_records_parsed_natively_are_those_it_parses_itself(
    kafka_bootstrap: str, tmp_path: Path
):
    """The worker's kafka-python reader has records.c parse its fetches (where it is built):
    the same Records as kafka-python's own parser, through gzip batches, keys and headers."""
    from kafka import KafkaProducer

    from streamlearn.worker.kafka import native_records

    if native_records.parser() is None:
        pytest.skip("the record parser (records.c) is not built")
    settings = worker_settings(kafka_bootstrap, tmp_path, kafka={"client": "kafka-python"}).kafka
    create_topic(kafka_bootstrap, settings.topic)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type="gzip")
    for i in range(300):
        headers = [("trace", b"%d" % i), ("empty", b"")] if i % 3 else []
        key = None if i % 2 else b"k%d" % i
        producer.send(settings.topic, value=event(i), key=key, headers=headers)
    producer.flush(30)
    producer.close()
    got = {}
    for native in (True, False):
        reader = open_reader(
            settings.model_copy(update={"group_id": f"{settings.group_id}-{native}"})
        )
        try:
            assert reader.native  # the extension is built here: installed on the consumer
            if not native:  # kafka-python's own parser, its records converted by poll
                reader.consumer._fetcher.PartitionRecords = native_records._partition_records_type()
                reader.native = False
            reader.subscribe([settings.topic], _FromCommitted())
            got[native] = _collect(reader, 300, timeout_s=60, poll_timeout_s=0.5)
        finally:
            reader.close()
    assert [r.offset for r in got[True]] == list(range(300))
    assert got[True] == got[False]
    assert got[True][1].headers == (("trace", b"1"), ("empty", b""))
    assert got[True][2].key == b"k2" and got[True][1].key is None
