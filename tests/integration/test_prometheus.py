"""The dashboard and the alert rules against a real Prometheus scraping a real worker and server.

A Worker (in-process, the in-memory Kafka stand-in of tests/worker_support.py fed endlessly,
with a concept flip every few hundred events and a malformed record now and then) learns and
publishes to a filesystem registry and serves its metrics on a loopback port; a server (uvicorn)
hot-swaps the published versions and takes some traffic, bad requests included. Prometheus
(/usr/bin/prometheus, the Debian package; ``make install-test`` installs it) scrapes both every
second with deploy/prometheus/alerts.yml loaded. Then every PromQL expression of the dashboard
and of the rules is evaluated through the HTTP API: each must parse, each dashboard panel query
must return data, each rule must evaluate without error. promtool checks the rules, the scrape
config and both /metrics outputs. Loopback only; every process is stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from serving_support import free_port, stop_process
from worker_support import TOPIC, FakeReader, FakeWriter, event

from streamlearn.app import (
    build_export_hook,
    build_publisher,
    build_registry,
    build_server,
    start_metrics_server,
)
from streamlearn.core.prequential import Prequential
from streamlearn.demo.serving import BackgroundServer
from streamlearn.metrics.worker import WorkerMetrics
from streamlearn.settings import Settings, load_settings
from streamlearn.worker.checkpoint import CheckpointStore
from streamlearn.worker.health import Heartbeat
from streamlearn.worker.loop import Worker

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "streamlearn.json"
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
# what Grafana puts in for its built-in variables, at a 1 s scrape interval, and for the
# dashboard's namespace / job / instance variables set to "All"
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$__range": "1m",
    "$namespace": ".*",
    "$job": ".*",
    "$instance": ".*",
}
DEADLINE_S = 40.0

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="no prometheus/promtool binary: `apt-get install prometheus` (as root, Debian/Ubuntu; "
    "`make install-test` does it when it can)",
)


class StreamingReader(FakeReader):
    """Two partitions that grow as they are polled, a little faster than the worker reads."""

    def __init__(self) -> None:
        super().__init__({(TOPIC, 0): [], (TOPIC, 1): []}, max_per_poll=8)
        self.produced = 0

    def poll(self, timeout_s: float, max_records: int) -> list:
        time.sleep(0.01)  # leave the GIL to the HTTP servers
        for tp in sorted(self.log):
            for _ in range(10):
                self.log[tp].append(self._next())
        return super().poll(timeout_s, max_records)

    def _next(self) -> bytes:
        i, self.produced = self.produced, self.produced + 1
        if i % 97 == 13:
            return b"not json"
        record = json.loads(event(i))
        if (i // 600) % 2:  # the concept flips every 600 events: drifts
            record["y"] = 1 - record["y"]
        return json.dumps(record).encode()


def _settings(tmp_path: Path) -> Settings:
    return load_settings(
        kafka={"topic": TOPIC, "dead_letter_topic": "dlq"},
        learner={"hidden": [16], "device": "cpu"},
        features={"numeric_slots": 4, "categorical_slots": 2, "hash_buckets": 64},
        source={"batch_size": 16},
        worker={"max_wait_s": 0.01, "poll_timeout_s": 0.01},
        checkpoint={"dir": tmp_path / "ckpt", "every_batches": 20, "every_s": 0},
        drift={"min_samples": 100, "window": 100, "cooldown": 200},
        registry={"kind": "filesystem", "path": tmp_path / "registry", "poll_s": 0.2},
        export={"every_steps": 10, "min_rows": 32, "gate_margin": 10.0, "memory_push_s": 0.5},
        serve={"memory_poll_s": 0.5},
        metrics={"port": 0, "host": "127.0.0.1", "lag_interval_s": 0.5},
    )


@contextlib.contextmanager
def _worker(settings: Settings) -> Iterator[int]:
    """The worker loop in a thread, its metrics on a loopback port; yields the port."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, settings.metrics.smoothing)
    heartbeat = Heartbeat(settings.worker.liveness_timeout_s)
    server = start_metrics_server(settings, registry, heartbeat)
    assert server is not None
    publisher = build_publisher(settings, build_registry(settings))
    worker = Worker(
        settings, Prequential.from_settings(settings), StreamingReader(), FakeWriter(),
        CheckpointStore(settings.checkpoint.dir), build_export_hook(publisher, metrics),
        metrics=metrics, heartbeat=heartbeat,
    )  # fmt: skip
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        worker.stop()
        thread.join(30)
        server.shutdown()
        server.server_close()


def _traffic(url: str, stop: threading.Event) -> None:
    """Good and bad requests until stopped, so every serving series exists."""
    v1 = "/v1/models/streamlearn:predict"
    good = {"instances": [{"a": 0.5, "c": "r"}, {"a": -1.2, "c": "b"}]}
    tensors = {
        "inputs": [
            {"name": "num", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.0, 0.0]},
            {"name": "cat", "datatype": "INT64", "shape": [1, 2], "data": [1, 0]},
        ]
    }
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.wait(0.05):
            client.post(v1, json=good)
            client.post("/v2/models/streamlearn/infer", json=tensors)
            client.post(v1, content=b"{not json")  # 400
            client.post("/v1/models/other:predict", json=good)  # 404
            client.get("/v2/health/ready")


@contextlib.contextmanager
def _prometheus(tmp_path: Path, worker_port: int, server_port: int) -> Iterator[str]:
    """Prometheus scraping both every second with the project's rules; yields its URL."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}
            for job, target in (
                ("streamlearn-worker", worker_port),
                ("streamlearn-server", server_port),
            )
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp_path / "prometheus.log").open("wb")
    assert PROMETHEUS is not None
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start: {_tail(tmp_path)}")
            time.sleep(0.1)
        yield url
    finally:
        stop_process(proc)
        log.close()


def _tail(tmp_path: Path) -> str:
    return (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]


def _expr(text: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        text = text.replace(name, value)
    assert "$" not in text, f"unknown Grafana variable in {text!r}"
    return text


def _query(url: str, expr: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    return response.json()  # 400 with status "error" for an expression that does not parse


def _dashboard_queries() -> list[tuple[str, str, bool]]:
    """(where, expression, must return data) for every panel target and annotation."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"], True)
        for p in dashboard["panels"]
        for t in p.get("targets", [])
    ]
    queries += [
        (f"annotation {a['name']!r}", a["expr"], False)
        for a in dashboard["annotations"]["list"]
        if "expr" in a
    ]
    return queries


def _rule_queries() -> list[tuple[str, str, bool]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(f"rule {r['alert']}", r["expr"], False) for g in groups for r in g["rules"]]


# queries that legitimately return nothing in this run, with the reason
EMPTY_IN_THIS_RUN = {
    "streamlearn_worker_prequential_mae": "the worker learns a classification task here; MAE "
    "is a regressor's metric (its accuracy panel query has data)",
}


def _empty_here(expr: str) -> bool:
    return any(name in expr for name in EMPTY_IN_THIS_RUN)


def _problems(url: str, queries: list[tuple[str, str, bool]]) -> list[str]:
    problems = []
    for where, expr, needs_data in queries:
        answer = _query(url, _expr(expr))
        if answer.get("status") != "success":
            problems.append(f"{where}: {answer.get('error')} in {expr!r}")
        elif needs_data and not answer["data"]["result"] and not _empty_here(expr):
            problems.append(f"{where}: no data for {expr!r}")
    return problems


def _promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, timeout=30)


def test_promtool_accepts_the_rules_and_the_scrape_config():
    rules = _promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _promtool("check", "config", str(SCRAPE_CONFIG))  # rule_files resolve next to it
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_dashboard_and_alert_query_works_on_real_scrapes(tmp_path):
    settings = _settings(tmp_path)
    serve_registry = build_registry(settings)
    app, _ = build_server(settings, serve_registry, CollectorRegistry())
    server = BackgroundServer(app, "127.0.0.1", 0)
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(server.url, stop), daemon=True)
    try:
        with _worker(settings) as worker_port:
            traffic.start()
            with _prometheus(tmp_path, worker_port, server.port) as prom:
                queries = _dashboard_queries() + _rule_queries()
                deadline = time.monotonic() + DEADLINE_S
                while (problems := _problems(prom, queries)) and time.monotonic() < deadline:
                    time.sleep(1.0)
                assert problems == [], (problems, _tail(tmp_path))
                broken = [("x", "streamlearn_nonexistent", True), ("y", "rate(up[1m]", False)]
                assert len(_problems(prom, broken)) == 2  # the check itself can fail
                for group in httpx.get(f"{prom}/api/v1/rules", timeout=5).json()["data"]["groups"]:
                    for rule in group["rules"]:
                        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
                up = _query(prom, "up")["data"]["result"]
                assert {r["metric"]["job"]: r["value"][1] for r in up} == {
                    "streamlearn-worker": "1",
                    "streamlearn-server": "1",
                }
            worker_text = httpx.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=5).content
        server_text = httpx.get(f"{server.url}/metrics", timeout=5).content
    finally:
        stop.set()
        traffic.join(10)
        server.stop()
        serve_registry.close()
    for text in (worker_text, server_text):
        lint = _promtool("check", "metrics", stdin=text)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    assert b"streamlearn_worker_drifts_total" in worker_text
    assert b'streamlearn_serve_swaps_total{result="swapped"}' in server_text
    for text in (worker_text, server_text):  # the process's own collections, for operators
        assert b'python_gc_collections_total{generation="2"}' in text


def test_rule_and_dashboard_queries_are_listed():
    """Guard against a test that checks nothing: both files hold queries."""
    assert len(_dashboard_queries()) >= 30 and len(_rule_queries()) >= 7
