"""What an operator sees of the worker against a real broker (tansu), with both Kafka clients: a
member without partitions warns and shows 0 assigned partitions, outage lines are true, and
SIGTERM in an outage exits 0 within ``worker.shutdown_timeout_s`` (+ a margin), losing nothing.

The outage tests reach their own broker through a TCP proxy the test cuts (kafka_tools.TcpProxy).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka_tools import Running, TcpProxy, create_topic, event, send, start_broker, unique
from kafka_tools import worker_settings as base_settings
from prometheus_client import CollectorRegistry
from serving_support import free_port, stop_process
from worker_process import WorkerProcess, newest_state, run_to_end, seen, write_config

from streamlearn.app import build_worker
from streamlearn.metrics.worker import WorkerMetrics
from streamlearn.settings import Settings

pytestmark = pytest.mark.timeout(180)

CLIENTS = ["kafka-python", "confluent"]
# an outage is noticed within a second or so, and probes give up after 2 s
OUTAGE = {
    "kafka": {"request_timeout_ms": 2000},
    "worker": {"idle_probe_s": 0.5, "backoff_initial_s": 0.2, "backoff_max_s": 1.0},
}


def start(settings: Settings) -> tuple[Running, CollectorRegistry]:
    registry = CollectorRegistry()
    worker = build_worker(settings, threading.Event(), metrics=WorkerMetrics(registry))
    assert worker is not None
    return Running(worker), registry


def assigned(registry: CollectorRegistry, topic: str) -> float | None:
    return registry.get_sample_value(
        "streamlearn_worker_assigned_partitions", {"topic": topic, "rank": "0"}
    )


@pytest.fixture(scope="module")
def proxied(broker_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcpProxy]:
    """A broker of this module's own, reached (and advertised) through a proxy to cut."""
    broker_port, proxy_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = start_broker(broker_binary, broker_port, proxy_port, log)
    proxy = TcpProxy(broker_port, proxy_port).start()
    try:
        yield proxy
    finally:
        proxy.cut()
        stop_process(broker)


@pytest.fixture
def proxy(proxied: TcpProxy) -> Iterator[TcpProxy]:
    """The module's proxy, listening again after each test."""
    yield proxied
    proxied.cut()
    proxied.restore()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_member_without_partitions_warns_and_shows_none(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, client: str
):
    warn = {"no_partitions_warn_s": 1.0, "log_every_s": 1.0}
    first = base_settings(kafka_bootstrap, tmp_path / "a", kafka={"client": client}, worker=warn)
    k = first.kafka
    second = base_settings(
        kafka_bootstrap, tmp_path / "b",
        kafka={"client": client, "topic": k.topic, "group_id": k.group_id}, worker=warn,
    )  # fmt: skip
    create_topic(kafka_bootstrap, k.topic, partitions=1)
    send(kafka_bootstrap, k.topic, [event(i) for i in range(50)])
    caplog.set_level(logging.WARNING, logger="streamlearn.worker.loop")

    def warnings(run: Running, since: float = 0.0) -> list[str]:
        """Its no-partitions warnings (logged on its own loop thread) since ``since``."""
        return [
            r.getMessage() for r in caplog.records
            if "no partition assigned" in r.getMessage()
            and r.thread == run.thread.ident and r.created >= since
        ]  # fmt: skip

    a, a_metrics = start(first)
    b = None
    try:
        assert a.wait_for(lambda: a.worker.preq.seen == 50, 60)
        b_started = time.time()
        b, b_metrics = start(second)
        assert b.wait_for(lambda: warnings(b), 10)  # unassigned from its start
        assert warnings(b)[0] and time.time() - b_started < 1.0 + 2.0
        # after the rebalance one member owns the partition; the other keeps warning
        members = {a: a_metrics, b: b_metrics}

        def settled() -> bool:
            owners = [run for run in members if run.worker.owned]
            idle = [run for run in members if not run.worker.owned]
            return len(owners) == 1 and bool(warnings(idle[0], time.time() - 1.5))

        assert a.wait_for(settled, 30), (a.worker.owned, b.worker.owned)
        (owner,) = [run for run in members if run.worker.owned]
        (idle,) = [run for run in members if not run.worker.owned]
        assert assigned(members[owner], k.topic) == 1 and assigned(members[idle], k.topic) == 0
        since = time.time()
        time.sleep(3.2)
        assert owner.worker.owned and not idle.worker.owned  # still so
    finally:
        if b is not None:
            b.stop()
        a.stop()
    repeated = warnings(idle, since)
    assert 2 <= len(repeated) <= 4, repeated  # every log_every_s (1 s) while it lasts
    assert not warnings(owner, since)
    assert f"group {k.group_id!r} has more consumers than partitions in {k.topic}," in repeated[0]


@pytest.mark.parametrize("client", CLIENTS)
def test_reachable_again_only_once_the_broker_is_back(
    proxy: TcpProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture, client: str
):
    bootstrap = f"127.0.0.1:{proxy.port}"
    settings = base_settings(
        bootstrap, tmp_path / "ckpt",
        kafka={"client": client, "output_topic": unique("predictions"), **OUTAGE["kafka"]},
        worker=OUTAGE["worker"],
    )  # fmt: skip
    topic = create_topic(bootstrap, settings.kafka.topic)
    create_topic(bootstrap, settings.kafka.output_topic)
    n = 3000
    send(bootstrap, topic, [event(i) for i in range(n)])
    caplog.set_level(logging.INFO, logger="streamlearn")
    run, _ = start(settings)
    health = run.worker.health

    def reachable_again() -> list[str]:
        return [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]

    assert run.wait_for(lambda: run.worker.preq.seen >= 200, 60)
    cut_at = time.monotonic()
    proxy.cut()  # mid-stream: records the client fetched already keep coming for a while
    assert run.wait_for(lambda: not health.up, 30), "outage not noticed"
    noticed_at = time.monotonic()
    assert run.wait_for(lambda: health.retries >= 3, 30)
    time.sleep(1.0)
    assert not reachable_again() and not health.up
    restored_at = time.monotonic()
    proxy.restore()
    assert run.wait_for(reachable_again, 30)
    logged_at = time.monotonic()
    assert run.wait_for(lambda: sum(run.worker.positions.values()) == n, 60)
    run.stop()
    (line,) = reachable_again()
    found = re.search(r"after ([\d.]+) s \((\d+) retries\)", line)
    assert found is not None, line
    seconds, retries = float(found[1]), int(found[2])
    assert restored_at - noticed_at <= seconds <= logged_at - cut_at, (line, cut_at, logged_at)
    assert retries >= 3
    assert run.worker.preq.seen == n  # no loss, no double learning


@pytest.mark.parametrize("client", CLIENTS)
def test_sigterm_in_an_outage_exits_0_in_time_and_loses_nothing(
    proxy: TcpProxy, tmp_path: Path, client: str
):
    bootstrap = f"127.0.0.1:{proxy.port}"
    timeout_s = 2.0
    topic, output = create_topic(bootstrap, unique("term")), unique("predictions")
    create_topic(bootstrap, output)
    config = write_config(
        tmp_path / "w.yaml", bootstrap, topic,
        kafka={"client": client, "output_topic": output, **OUTAGE["kafka"]},
        worker={**OUTAGE["worker"], "shutdown_timeout_s": timeout_s},
    )  # fmt: skip
    n = 3000
    send(bootstrap, topic, [event(i) for i in range(n)])

    worker = WorkerProcess(config)
    deadline = time.monotonic() + 60
    while seen(newest_state(tmp_path / "ckpt")) == 0:
        assert worker.proc.poll() is None and time.monotonic() < deadline, worker.text()
        time.sleep(0.05)
    proxy.cut()  # mid-stream: outputs go unacknowledged, commits cannot be made
    worker.wait_log("Kafka unreachable", 30)
    time.sleep(1.0)
    start = time.monotonic()
    code = worker.terminate(timeout_s=60)
    took = time.monotonic() - start
    assert code == 0, worker.text()
    # the margin: the step in progress (a probe gives up after 2 s), the clients' closes
    assert took < timeout_s + 4.0, (took, worker.text())
    assert "Traceback" not in worker.text()

    proxy.restore()
    final = run_to_end(config, n)  # resumes from the checkpoint: nothing lost, nothing twice
    assert seen(final) == n
    assert {(t, int(p)): int(o) for t, p, o in final["offsets"]} == {(topic, 0): n}
    group = yaml.safe_load(config.read_text())["kafka"]["group_id"]
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:  # with the broker up, the final commit is made (confluent: on its helper thread)
        assert consumer.committed(TopicPartition(topic, 0)) == n
    finally:
        consumer.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_sigterm_as_the_broker_goes_skips_the_final_commit_in_time(
    proxy: TcpProxy, tmp_path: Path, client: str
):
    bootstrap = f"127.0.0.1:{proxy.port}"
    timeout_s, n = 2.0, 500
    topic = create_topic(bootstrap, unique("gone"))
    config = write_config(
        tmp_path / "w.yaml", bootstrap, topic,
        # a long session: librdkafka's own commit would wait for it to time out
        kafka={"client": client, "request_timeout_ms": 30_000, "session_timeout_ms": 10_000,
               "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 10_000},
        # no probe notices the outage first: the final commit is tried, and abandoned
        worker={"idle_probe_s": 600, "shutdown_timeout_s": timeout_s},
    )  # fmt: skip
    send(bootstrap, topic, [event(i) for i in range(n)])
    worker = WorkerProcess(config)
    deadline = time.monotonic() + 60
    group = yaml.safe_load(config.read_text())["kafka"]["group_id"]
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:  # the checkpoint's commit is made once its file is durable: cut after both
        while (
            seen(newest_state(tmp_path / "ckpt")) < n
            or consumer.committed(TopicPartition(topic, 0)) != n
        ):
            assert worker.proc.poll() is None and time.monotonic() < deadline, worker.text()
            time.sleep(0.05)
    finally:
        consumer.close()
    proxy.cut()
    start = time.monotonic()
    code = worker.terminate(timeout_s=60)
    took = time.monotonic() - start
    assert code == 0, worker.text()
    assert took < timeout_s + 4.0, (took, worker.text())
    assert "skipped" in worker.text() and "Traceback" not in worker.text()
    state = newest_state(tmp_path / "ckpt")
    assert seen(state) == n and state is not None
    assert {(t, int(p)): int(o) for t, p, o in state["offsets"]} == {(topic, 0): n}
