"""The worker through a broker outage, a consumer-group rebalance, and on confluent-kafka."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from kafka_tools import (
    Running,
    TcpProxy,
    create_topic,
    event,
    read_topic,
    send,
    start_broker,
    unique,
    worker_settings,
)
from serving_support import free_port, stop_process

from streamlearn.app import build_worker

pytestmark = pytest.mark.timeout(60)


def start(settings) -> Running:
    worker = build_worker(settings, threading.Event())
    assert worker is not None
    return Running(worker)


def test_broker_outage_is_retried_with_backoff_and_logged_once(
    broker_binary: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    # a broker of its own, reached (and advertised) through a proxy the test can cut
    broker_port, proxy_port = free_port(), free_port()
    broker = start_broker(broker_binary, broker_port, proxy_port, tmp_path / "broker.log")
    proxy = TcpProxy(broker_port, proxy_port).start()
    bootstrap = f"127.0.0.1:{proxy_port}"
    try:
        settings = worker_settings(
            bootstrap,
            tmp_path / "ckpt",
            kafka={
                "request_timeout_ms": 3000,  # probes give up sooner
                "session_timeout_ms": 3000,  # and the group re-forms sooner afterwards
                "heartbeat_interval_ms": 500,
                "max_poll_interval_ms": 3500,
            },
            worker={"idle_probe_s": 0.5, "backoff_initial_s": 0.2, "backoff_max_s": 1.0},
        )
        topic = create_topic(bootstrap, settings.kafka.topic)
        send(bootstrap, topic, [event(i) for i in range(300)])
        caplog.set_level(logging.INFO, logger="streamlearn")
        run = start(settings)
        assert run.wait_for(lambda: run.worker.preq.seen == 300, 60)

        proxy.cut()
        assert run.wait_for(lambda: not run.worker.health.up, 30), "outage not noticed"
        assert run.wait_for(lambda: run.worker.health.retries >= 2, 30)  # kept retrying
        proxy.restore()
        send(bootstrap, topic, [event(i) for i in range(300, 600)])
        assert run.wait_for(lambda: run.worker.preq.seen == 600, 90), run.worker.preq.seen
        assert run.wait_for(lambda: run.worker.health.up, 10)  # once a probe answers
        run.stop()
    finally:
        proxy.cut()
        stop_process(broker)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("streamlearn")]
    assert sum("Kafka unreachable" in m for m in ours) == 1, ours
    assert sum("Kafka reachable again" in m for m in ours) == 1, ours
    assert sum(run.worker.positions.values()) == 600  # no loss, no double learning


@pytest.mark.parametrize("reader_process", [False, True], ids=["in-process", "reader-process"])
def test_rebalance_checkpoints_and_commits_before_giving_partitions_up(
    kafka_bootstrap: str, tmp_path: Path, reader_process: bool
):
    """Also with the client in a child process: the revocation crosses the pipe, in order."""
    only_on_revoke = {"every_batches": 0, "every_s": 0}  # no periodic checkpoints here
    a_settings = worker_settings(
        kafka_bootstrap,
        tmp_path / "a",
        checkpoint=only_on_revoke,
        kafka={"reader_process": reader_process},
    )
    k = a_settings.kafka
    b_settings = worker_settings(
        kafka_bootstrap,
        tmp_path / "b",
        checkpoint=only_on_revoke,
        kafka={"topic": k.topic, "group_id": k.group_id, "reader_process": reader_process},
    )
    create_topic(kafka_bootstrap, k.topic, partitions=2)
    for p in range(2):
        send(kafka_bootstrap, k.topic, [event(i) for i in range(p, 400, 2)], partition=p)

    a = start(a_settings)
    assert a.wait_for(lambda: a.worker.preq.seen == 400, 60)
    assert a.worker.store.saved == 0
    b = start(b_settings)
    one_each = lambda: len(a.worker.owned) == len(b.worker.owned) == 1  # noqa: E731
    assert a.wait_for(one_each, 60)
    assert a.worker.store.saved >= 1  # checkpointed when its partitions were revoked
    assert a.worker.checkpoints.saved == {(k.topic, 0): 200, (k.topic, 1): 200}

    for p in range(2):
        send(kafka_bootstrap, k.topic, [event(i) for i in range(400 + p, 800, 2)], partition=p)
    total = lambda: a.worker.preq.seen + b.worker.preq.seen  # noqa: E731
    assert a.wait_for(lambda: total() == 800, 60), (a.worker.preq.seen, b.worker.preq.seen)
    a.stop()
    b.stop()
    assert total() == 800
    assert b.worker.preq.seen == 200  # b started where a's commit on revoke left its partition


def test_confluent_client_learns_dead_letters_and_resumes(kafka_bootstrap: str, tmp_path: Path):
    settings = worker_settings(
        kafka_bootstrap,
        tmp_path / "ckpt",
        kafka={
            "client": "confluent",
            "dead_letter_topic": unique("dlq"),
            "output_topic": unique("predictions"),
        },
    )
    k = settings.kafka
    create_topic(kafka_bootstrap, k.topic, partitions=2)
    bad = [b"{", b'{"id": 1}', b'{"id": "x", "x": {"a": "1"}, "y": [1]}']
    send(kafka_bootstrap, k.topic, [event(i) for i in range(300)] + bad)

    run = start(settings)
    assert run.wait_for(lambda: sum(run.worker.positions.values()) == 303, 60)
    run.stop()
    assert run.worker.preq.seen == 300
    assert sum(run.worker.stats.rejected.values()) == 3
    assert len(read_topic(kafka_bootstrap, k.dead_letter_topic, 3)) == 3
    assert len(read_topic(kafka_bootstrap, k.output_topic, 300)) == 300

    rerun = start(settings)  # restores the checkpoint; nothing is learned twice
    assert rerun.wait_for(lambda: bool(rerun.worker.owned), 60)
    time.sleep(1.5)
    rerun.stop()
    assert rerun.worker.preq.seen == 300
