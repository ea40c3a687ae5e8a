"""streamlearn/metrics/: every metric family is produced by the code path that owns it.

Each test builds a fresh CollectorRegistry, drives the real worker loop (in-memory Kafka
stand-ins from tests/worker_support.py) or the real server app (Starlette's TestClient), and
reads the samples back with ``registry.get_sample_value``.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest
from serving_support import export, small_settings, trained
from starlette.testclient import TestClient
from worker_support import TOPIC, FakeReader, FakeWriter, event

from streamlearn.app import (
    build_export_hook,
    build_publisher,
    build_registry,
    build_server,
    start_metrics_server,
)
from streamlearn.cli import _kafka_overrides, _parser
from streamlearn.core.prequential import BatchOutcome, Prequential
from streamlearn.errors import RegistryError
from streamlearn.export.memory import encode_memory
from streamlearn.metrics.serve import ServeMetrics
from streamlearn.metrics.worker import PUBLISH_RESULTS, WorkerMetrics
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.settings import Settings, load_settings
from streamlearn.worker.checkpoint import CheckpointStore
from streamlearn.worker.health import Heartbeat
from streamlearn.worker.loop import Worker, WorkerStats

W = "streamlearn_worker_"
S = "streamlearn_serve_"


def _settings(tmp_path: Path, **sections: dict) -> Settings:
    base: dict[str, dict] = {
        "kafka": {"topic": TOPIC, "dead_letter_topic": "dlq"},
        "learner": {"hidden": [16], "device": "cpu"},
        "features": {"numeric_slots": 4, "categorical_slots": 2, "hash_buckets": 64},
        "source": {"batch_size": 8},
        "worker": {"max_wait_s": 0.01, "poll_timeout_s": 0.01},
        "checkpoint": {"dir": tmp_path / "ckpt", "every_batches": 5, "every_s": 0},
        "metrics": {"lag_interval_s": 1e-6},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return load_settings(**base)


def _worker(
    s: Settings, reader: FakeReader, export=None, metrics: WorkerMetrics | None = None
) -> tuple[Worker, CollectorRegistry]:
    """A worker reporting to ``metrics`` (default: a fresh registry), restored and subscribed."""
    metrics = metrics or WorkerMetrics(CollectorRegistry(), s.metrics.smoothing)
    store = CheckpointStore(s.checkpoint.dir)
    worker = Worker(s, Prequential.from_settings(s), reader, FakeWriter(), store, metrics=metrics)
    if export is not None:
        worker.export = export
    worker.restore()
    reader.subscribe(worker.topics, worker)
    return worker, metrics.registry


def _drive(worker: Worker, until_seen: int) -> None:
    for _ in range(5_000):
        if worker.preq.seen >= until_seen:
            return
        worker.step()
    raise AssertionError(f"only {worker.preq.seen} learned")


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """A sample's value; worker families carry ``rank`` ("0": a single worker)."""
    if name.startswith(W):
        labels = {"rank": "0", **labels}
    return registry.get_sample_value(name, labels)


# -- worker -------------------------------------------------------------------------------------
def test_batches_produce_the_event_learning_and_state_families(tmp_path):
    values = [event(0), b"nope", b'{"id": "x", "x": {"a": NaN}, "y": 1}'] + [
        event(i) for i in range(1, 120)
    ]
    worker, reg = _worker(_settings(tmp_path), FakeReader({(TOPIC, 0): values}))
    assert _value(reg, W + "events_rejected_total", reason="not_json") == 0.0  # pre-created
    _drive(worker, 120)
    preq, learner = worker.preq, worker.preq.learner
    assert _value(reg, W + "events_consumed_total") == 122
    assert _value(reg, W + "events_rejected_total", reason="not_json") == 1
    assert _value(reg, W + "events_rejected_total", reason="non_finite") == 1
    assert _value(reg, W + "events_trained_total") == preq.seen == 120
    assert _value(reg, W + "train_steps_total") == learner.steps > 0
    assert _value(reg, W + "step_duration_seconds_count") == worker.stats.batches
    assert _value(reg, W + "batch_records_sum") == 122
    assert _value(reg, W + "batch_records_bucket", le="8.0") == worker.stats.batches
    assert _value(reg, W + "learning_rate") == pytest.approx(learner.lr)
    assert _value(reg, W + "replay_rows") == len(learner.replay) > 0
    assert _value(reg, W + "replay_capacity_rows") == learner.replay.capacity
    assert preq.memory is not None  # on by default
    assert _value(reg, W + "error_memory_rows") == len(preq.memory.memory) > 0
    assert _value(reg, W + "error_memory_capacity_rows") == preq.memory.settings.size
    assert _value(reg, W + "error_memory_weight") == preq.memory.weight
    assert preq.linear is not None  # on by default for a classifier
    assert _value(reg, W + "linear_share") == preq.linear.share
    assert _value(reg, W + "linear_slow_share") == preq.linear.model.slow_share
    assert preq.linear.model.slow_share == preq.linear.model.shares[1] > 0.0
    assert preq.neighbours is not None  # on by default for a classifier
    assert _value(reg, W + "neighbour_share") == preq.neighbours.share
    assert 0.0 < _value(reg, W + "prequential_loss") < 5.0
    assert 0.0 <= _value(reg, W + "prequential_accuracy") <= 1.0
    assert _value(reg, W + "broker_up") == 1.0
    assert _value(reg, W + "drifts_total") == 0.0
    assert _value(reg, W + "build_info", version="0.1.0") == 1.0


def test_expert_pool_size_and_switches_are_reported(tmp_path):
    """A → B → A: the return to A switches the live model to A's past model."""

    def flipped(i: int) -> bytes:
        doc = json.loads(event(i))
        return json.dumps(doc | {"y": 1 - doc["y"]}).encode()

    values = [event(i) for i in range(600)] + [flipped(i) for i in range(600, 1200)]
    values += [event(i) for i in range(1200, 1800)]
    s = _settings(tmp_path, drift={"min_samples": 100, "window": 100, "cooldown": 100})
    worker, reg = _worker(s, FakeReader({(TOPIC, 0): values}))
    assert _value(reg, W + "expert_switches_total") == 0.0
    _drive(worker, 1800)
    preq = worker.preq
    assert preq.experts is not None and preq.expert_switches >= 1
    assert _value(reg, W + "expert_switches_total") == preq.expert_switches
    assert _value(reg, W + "expert_pool_size") == len(preq.experts) >= 2


def test_a_fresh_models_share_is_reported_while_it_learns(tmp_path):
    """A → B: after the flip's detection a fresh model learns B and earns its share."""

    def flipped(i: int) -> bytes:
        doc = json.loads(event(i))
        return json.dumps(doc | {"y": 1 - doc["y"]}).encode()

    values = [event(i) for i in range(600)] + [flipped(i) for i in range(600, 1200)]
    s = _settings(tmp_path, drift={"min_samples": 100, "window": 100, "cooldown": 100})
    worker, reg = _worker(s, FakeReader({(TOPIC, 0): values}))
    _drive(worker, 600)
    assert _value(reg, W + "fresh_model_share") == 0.0  # none learning before the flip
    _drive(worker, 800)
    pool = worker.preq.experts
    assert pool is not None and pool.fresh is not None and pool.fresh.learning
    assert _value(reg, W + "fresh_model_share") == pool.fresh_share > 0.5


def test_regression_reports_the_mean_absolute_error(tmp_path):
    rows = [json.dumps({"id": f"r{i}", "x": {"a": i % 7}, "y": 2.0 * (i % 7)}) for i in range(64)]
    s = _settings(tmp_path, learner={"task": "regression"})
    worker, reg = _worker(s, FakeReader({(TOPIC, 0): [r.encode() for r in rows]}))
    _drive(worker, 64)
    assert _value(reg, W + "prequential_mae") > 0.0
    assert _value(reg, W + "prequential_accuracy") is None


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_smoothed_scores_average_the_learned_rows_and_the_loss_its_finite_values(task):
    """The first batch's loss is the mean over learned rows with a finite loss; the score is
    over learned rows (an unlearned row's NaN and a learned row's inf are left out)."""
    s = load_settings(learner={"task": task})
    metrics = WorkerMetrics(CollectorRegistry(), s.metrics.smoothing)
    learned = np.array([True, False, True, True])
    if task == "regression":
        prediction, target = np.array([1.0, 9.0, 2.0, 4.0]), np.array([1.5, 2.0, 1.0])
        name, expected = "prequential_mae", (0.5 + 0.0 + 3.0) / 3
    else:
        prediction = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
        target, name, expected = np.array([0, 1, 1]), "prequential_accuracy", 2 / 3
    loss = np.array([0.5, np.nan, np.inf, 1.5])
    outcome = BatchOutcome(prediction, loss, learned, [], target)
    metrics.watch_loop(Prequential.from_settings(s), WorkerStats())
    metrics.observe_batch(4, 0.01, outcome, {})
    assert _value(metrics.registry, W + "prequential_loss") == pytest.approx(1.0)
    assert _value(metrics.registry, W + name) == pytest.approx(expected)


def test_nonfinite_steps_drifts_late_labels_and_predictions_are_counted(tmp_path):
    flip = [json.loads(event(i)) | {"y": 1 - json.loads(event(i))["y"]} for i in range(400, 800)]
    values = [event(i) for i in range(400)] + [json.dumps(e).encode() for e in flip]
    unlabelled = json.dumps({"id": "late-1", "x": {"a": 0.5, "c": "r"}}).encode()
    label = json.dumps({"id": "late-1", "y": 1}).encode()
    s = _settings(
        tmp_path,
        kafka={"labels_topic": "labels", "output_topic": "predictions"},
        drift={"min_samples": 100, "window": 100, "cooldown": 100},
    )
    log = {(TOPIC, 0): [unlabelled, *values], ("labels", 0): [label]}
    worker, reg = _worker(s, FakeReader(log))
    _drive(worker, 801)
    assert worker.preq.drifts, "the flipped concept must be detected"
    assert _value(reg, W + "drifts_total") == len(worker.preq.drifts)
    assert _value(reg, W + "late_labels_joined_total") == worker.stats.late_learned == 1
    assert _value(reg, W + "predictions_sent_total") == worker.stats.published == 801
    with torch.no_grad():  # a poisoned weight: every further step is skipped
        worker.preq.learner.model.head.weight.fill_(float("nan"))
    worker.reader.log[(TOPIC, 0)] += [event(i) for i in range(900, 916)]
    _drive(worker, 817)
    skipped = worker.preq.learner.skipped_nonfinite
    assert skipped > 0 and _value(reg, W + "train_steps_skipped_nonfinite_total") == skipped


def test_dropped_feature_values_and_unknown_labels_are_counted(tmp_path):
    """Input the decoder accepts but the model cannot use: counted, not learned from."""

    def raw(i: int, x: dict, y: object) -> bytes:
        return json.dumps({"id": f"d-{i}", "x": x, "y": y}).encode()

    values = [event(i) for i in range(40)] + [
        raw(40, {"a": "high", "c": "r"}, 1),  # a string for the numeric feature a
        raw(41, {"a": 1.0, "n1": 1, "n2": 2, "n3": 3, "n4": 4}, 0),  # 4 numeric slots: n4 none
        raw(42, {"a": 1e300, "c": "b"}, 1),  # its square overflows the running variance
        raw(43, {"a": 0.5, "c": "r"}, "maybe"),  # a third label in a binary task
    ]
    values += [event(i) for i in range(44, 60)]
    worker, reg = _worker(_settings(tmp_path), FakeReader({(TOPIC, 0): values}))
    assert _value(reg, W + "feature_values_dropped_total", reason="non_finite") == 0.0
    _drive(worker, 59)
    encoder = worker.preq.encoder
    assert (encoder.mismatched, encoder.ignored, encoder.overflowed) == (1, 1, 1)
    assert _value(reg, W + "feature_values_dropped_total", reason="not_a_number") == 1
    assert _value(reg, W + "feature_values_dropped_total", reason="no_slot") == 1
    assert _value(reg, W + "feature_statistics_skipped_total") == 1
    assert _value(reg, W + "labels_unknown_total") == worker.preq.unknown_labels == 1
    assert _value(reg, W + "events_trained_total") == 59  # the unknown label is not learned


def test_consumer_lag_per_partition_is_clamped_and_follows_the_assignment(tmp_path):
    log = {(TOPIC, 0): [event(i) for i in range(100)], (TOPIC, 1): [event(i) for i in range(50)]}
    reader = FakeReader(log, max_per_poll=4)
    worker, reg = _worker(_settings(tmp_path), reader)
    _drive(worker, 40)
    for partition, size in ((0, 100), (1, 50)):
        position = worker.positions[(TOPIC, partition)]
        labels = {"topic": TOPIC, "partition": str(partition)}
        assert _value(reg, W + "consumer_lag_messages", **labels) == size - position > 0
        assert _value(reg, W + "consumer_offset", **labels) == position
    reader.end_offset_error = -1_000  # a broker answering "latest" too low (tansu)
    worker.step()
    assert _value(reg, W + "consumer_lag_messages", topic=TOPIC, partition="0") == 0.0
    reader.revoke_all()
    reader.log = {}  # and nothing assigned again
    worker.step()  # nothing owned any more: the partitions' series are gone
    assert _value(reg, W + "consumer_lag_messages", topic=TOPIC, partition="0") is None
    reader.log, reader.end_offset_error = log, 0  # assigned again: the series come back
    _drive(worker, worker.preq.seen + 8)
    labels = {"topic": TOPIC, "partition": "0"}
    assert _value(reg, W + "consumer_offset", **labels) == worker.positions[(TOPIC, 0)]
    assert _value(reg, W + "consumer_lag_messages", **labels) == 100 - worker.positions[(TOPIC, 0)]


def test_scrapes_while_the_loop_learns_read_its_totals_then(tmp_path):
    """Totals and state are read at scrape time (decision 0034): scrapes on another thread
    while the loop learns never fail, and each one shows the loop as it was then."""

    worker, reg = _worker(
        _settings(tmp_path), FakeReader({(TOPIC, 0): [event(i) for i in range(400)]})
    )
    seen: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            try:
                generate_latest(reg)
                seen.append(_value(reg, W + "events_trained_total"))
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        _drive(worker, 400)
    finally:
        done.set()
        scraper.join(10)
    assert not errors and len(seen) > 1 and seen == sorted(seen)  # counters only go up
    assert _value(reg, W + "events_trained_total") == worker.preq.seen == 400
    assert _value(reg, W + "events_consumed_total") == 400
    assert _value(reg, W + "train_steps_total") == worker.preq.learner.steps
    assert _value(reg, W + "consumer_offset", topic=TOPIC, partition="0") == 400


def test_checkpoints_and_restores_produce_the_checkpoint_families(tmp_path):
    s = _settings(tmp_path)
    log = {(TOPIC, 0): [event(i) for i in range(80)]}
    before = time.time()
    worker, reg = _worker(s, FakeReader(log))
    _drive(worker, 80)
    worker.checkpoints.written(worker.owned, wait=True)  # the newest file, written on a thread
    assert worker.store.saved >= 2
    assert _value(reg, W + "checkpoint_duration_seconds_count") == worker.store.saved
    newest = worker.store.checkpoints()[-1][1]
    assert _value(reg, W + "checkpoint_size_bytes") == newest.stat().st_size
    assert _value(reg, W + "checkpoint_last_success_timestamp_seconds") >= before

    damaged = worker.store.checkpoints()[-1][1]
    damaged.write_bytes(b"torn")
    restarted, reg2 = _worker(s, FakeReader(log))
    loaded = CheckpointStore(s.checkpoint.dir).load_latest()
    assert loaded is not None
    assert _value(reg2, W + "checkpoints_corrupt_total") == 1
    created = _value(reg2, W + "checkpoint_last_success_timestamp_seconds")
    assert created == pytest.approx(loaded.state["created"])
    assert restarted.preq.seen > 0  # restored history is a baseline, not new events
    assert _value(reg2, W + "events_trained_total") == 0.0
    _drive(restarted, 80)
    assert (
        _value(reg2, W + "events_trained_total")
        == 80 - loaded.state["prequential"]["counters"]["seen"]
    )


def test_export_hook_counts_publish_results_versions_and_memory_pushes(tmp_path):
    s = _settings(
        tmp_path,
        registry={"kind": "filesystem", "path": tmp_path / "registry"},
        export={"every_steps": 10, "min_rows": 16, "gate_margin": 10.0, "memory_push_s": 0.001},
    )
    publisher = build_publisher(s, build_registry(s))
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    hook = build_export_hook(publisher, metrics)
    worker, _ = _worker(s, FakeReader({(TOPIC, 0): [event(i) for i in range(400)]}), hook, metrics)
    _drive(worker, 400)
    assert publisher.published >= 2
    assert _value(registry, W + "publish_total", result="published") == publisher.published
    assert _value(registry, W + "publish_total", result="gated") == publisher.gated
    assert _value(registry, W + "publish_total", result="waiting_for_rows") >= 1
    assert all(_value(registry, W + "publish_total", result=r) is not None for r in PUBLISH_RESULTS)
    assert _value(registry, W + "publish_duration_seconds_count") >= publisher.published
    assert _value(registry, W + "model_version") == publisher.last_version
    assert _value(registry, W + "last_publish_timestamp_seconds") > 0
    assert _value(registry, W + "error_memory_pushes_total") == publisher.memory_pushes > 0


def test_worker_metrics_port_serves_the_registry(tmp_path):
    off = start_metrics_server(_settings(tmp_path), CollectorRegistry(), Heartbeat(60))
    assert off is None
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    s = _settings(tmp_path, metrics={"port": 0, "host": "127.0.0.1"})
    server = start_metrics_server(s, registry, Heartbeat(60))
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert 'streamlearn_worker_events_consumed_total{rank="0"} 0.0' in text
    finally:
        server.shutdown()
        server.server_close()
    args = _parser().parse_args(["worker", "--metrics-port", "9100"])
    assert _kafka_overrides(args)["metrics"] == {"port": 9100}


def test_nothing_is_registered_at_import_and_registries_are_independent():
    first, second = CollectorRegistry(), CollectorRegistry()
    WorkerMetrics(first).consumed.inc(3)
    WorkerMetrics(second)
    ServeMetrics(second)  # worker and server families can share a registry (one process)
    assert _value(first, W + "events_consumed_total") == 3
    assert _value(second, W + "events_consumed_total") == 0


def test_process_metrics_once_per_registry_and_no_created_series():
    shared = CollectorRegistry()
    WorkerMetrics(shared).consumed.inc()
    ServeMetrics(shared)
    text = generate_latest(shared).decode()
    assert shared.get_sample_value("process_resident_memory_bytes") > 0
    assert text.count("\nprocess_resident_memory_bytes ") == 1
    assert shared.get_sample_value("process_start_time_seconds") > 0
    assert "_created" not in text


# -- server -------------------------------------------------------------------------------------
class _FailingFetch(FilesystemRegistry):
    def fetch(self, version: int):
        raise RegistryError("storage away")


def test_server_requests_swaps_refusals_and_compensation(tmp_path):
    preq = trained("binary", n=600, memory={"enabled": True, "size": 64})
    registry = FilesystemRegistry(tmp_path / "registry")
    metrics = CollectorRegistry()
    app, runtime = build_server(small_settings(), registry, metrics, watch=False)
    with TestClient(app) as client:
        assert client.get("/v2/health/ready").status_code == 503
        assert _value(metrics, S + "ready") == 0.0
        registry.publish(export(preq))
        assert runtime.refresh_model()
        body = {"instances": [{"a": 1.0, "color": "red"}, {"a": -1.0}]}
        assert client.post("/v1/models/streamlearn:predict", json=body).status_code == 200
        assert client.post("/v1/models/streamlearn:predict", content=b"{").status_code == 400
        assert client.post("/v1/models/other:predict", json=body).status_code == 404
        registry.push_memory(encode_memory(preq.memory, 1))
        assert runtime.refresh_memory()
        assert client.post("/v1/models/streamlearn:predict", json=body).status_code == 200
        text = client.get("/metrics").text
    assert "streamlearn_serve_request_duration_seconds_bucket" in text
    ok = {"endpoint": "v1_predict", "code": "200"}
    assert _value(metrics, S + "requests_total", **ok) == 2
    assert _value(metrics, S + "requests_total", endpoint="v1_predict", code="400") == 1
    assert _value(metrics, S + "requests_total", endpoint="v1_predict", code="404") == 1
    assert _value(metrics, S + "requests_total", endpoint="ready", code="503") == 1
    assert _value(metrics, S + "request_duration_seconds_count", endpoint="v1_predict") == 4
    assert _value(metrics, S + "swaps_total", result="swapped") == 1
    assert _value(metrics, S + "swap_duration_seconds_count") == 1
    assert _value(metrics, S + "model_version") == 1 and _value(metrics, S + "ready") == 1
    assert _value(metrics, S + "predicted_rows_total", compensated="false") == 2
    assert _value(metrics, S + "predicted_rows_total", compensated="true") == 2
    assert _value(metrics, S + "memory_updates_total") == 1
    assert _value(metrics, S + "memory_pushed_timestamp_seconds") > 0
    assert _value(metrics, S + "memory_weight") == preq.memory.weight
    assert _value(metrics, S + "build_info", version="0.1.0") == 1

    registry.publish(export(trained("binary", n=300)))
    (tmp_path / "registry" / "versions" / "00000002" / "model.onnx").write_bytes(b"junk")
    assert not runtime.refresh_model()
    assert _value(metrics, S + "swaps_total", result="refused") == 1
    assert _value(metrics, S + "artifacts_refused_total", reason="sha256_mismatch") == 1
    registry.push_memory(b"PK torn")
    assert not runtime.refresh_memory()
    assert _value(metrics, S + "memory_refused_total", reason="bad_memory") == 1


def test_server_counts_registry_errors_as_failed_fetches(tmp_path):
    writer = FilesystemRegistry(tmp_path)
    writer.publish(export(trained("binary", n=300)))
    metrics = CollectorRegistry()
    _, runtime = build_server(small_settings(), _FailingFetch(tmp_path), metrics, watch=False)
    assert not runtime.refresh_model()
    assert _value(metrics, S + "swaps_total", result="fetch_failed") == 1
    assert _value(metrics, S + "registry_errors_total") == 1
    assert _value(metrics, S + "model_version") == 0
