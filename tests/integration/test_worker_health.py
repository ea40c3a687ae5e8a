"""The worker's /livez and /readyz against a real broker (tansu): a running loop is alive and,
once restored and assigned, ready; a loop stuck in a step fails /livez within
``worker.liveness_timeout_s``, and passes again once it moves."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from kafka_tools import Running, create_topic, event, send, worker_settings
from prometheus_client import CollectorRegistry

from streamlearn.app import build_worker, start_metrics_server
from streamlearn.metrics.worker import WorkerMetrics
from streamlearn.worker.health import Heartbeat

pytestmark = pytest.mark.timeout(120)


def probe(url: str, path: str) -> tuple[int, str]:
    r = httpx.get(url + path, timeout=2)
    return r.status_code, r.json()["reason"]


def test_a_stuck_loop_fails_livez_in_time_and_a_running_one_passes(kafka_bootstrap, tmp_path):
    settings = worker_settings(
        kafka_bootstrap, tmp_path / "ckpt",
        worker={"liveness_timeout_s": 2.0, "backoff_max_s": 1.0},
        metrics={"port": 0, "host": "127.0.0.1"},
    )  # fmt: skip
    create_topic(kafka_bootstrap, settings.kafka.topic)
    registry = CollectorRegistry()
    heartbeat = Heartbeat(settings.worker.liveness_timeout_s)
    server = start_metrics_server(settings, registry, heartbeat)
    assert server is not None
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert probe(url, "/livez")[0] == 200  # starting counts as alive
        assert probe(url, "/readyz") == (503, "restoring the checkpoint")
        worker = build_worker(
            settings, threading.Event(), metrics=WorkerMetrics(registry), heartbeat=heartbeat
        )
        assert worker is not None
        gate, stuck = threading.Event(), threading.Event()
        process = worker.preq.process

        def hang_once(xs, ys):
            if not gate.is_set():
                stuck.set()
                gate.wait(60)  # a step that hangs, as a deadlocked client or device would
            return process(xs, ys)

        gate.set()  # not stuck yet
        worker.preq.process = hang_once
        run = Running(worker)
        assert run.wait_for(lambda: probe(url, "/readyz")[0] == 200, 60)
        for _ in range(5):  # the idle loop keeps turning: alive well past the limit
            assert probe(url, "/livez")[0] == 200
            time.sleep(0.6)
        assert "text/plain" in httpx.get(url + "/metrics").headers["content-type"]

        gate.clear()
        send(kafka_bootstrap, settings.kafka.topic, [event(i) for i in range(16)])
        assert stuck.wait(30)
        hung_at = time.monotonic()
        assert run.wait_for(lambda: probe(url, "/livez")[0] == 503, 10)
        waited = time.monotonic() - hung_at
        assert 1.5 < waited < 2.0 + 2.5, waited  # the limit, plus a probe's and a turn's slack
        assert "no turn" in probe(url, "/livez")[1]

        gate.set()  # the step finishes: alive again
        assert run.wait_for(lambda: probe(url, "/livez")[0] == 200, 10)
        run.stop()
        assert worker.preq.seen == 16
    finally:
        server.shutdown()
        server.server_close()
