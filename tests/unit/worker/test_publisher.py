"""Publisher: schedule, drift-recovery export, the quality gate, failures that never stop the
worker."""

from __future__ import annotations

import math

import numpy as np
import pytest
from serving_support import make_rows, small_settings, train

import streamlearn.worker.publisher as publisher_module
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ExportError, RegistryError
from streamlearn.export.artifact import load_bundle
from streamlearn.export.gate import QualityGate
from streamlearn.export.memory import decode_memory
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.worker.publisher import Publisher


def _setup(tmp_path, **export):
    settings = small_settings(
        export={"every_steps": 5, "min_rows": 64, "after_drift_steps": 3, **export}
    )
    registry = FilesystemRegistry(tmp_path / "registry")
    return Prequential.from_settings(settings), Publisher(registry, settings.export), registry


def _run(preq, publisher, rows, ys, start_step=0, batch=32):
    results = []
    for i, begin in enumerate(range(0, len(rows), batch)):
        preq.process(rows[begin : begin + batch], ys[begin : begin + batch])
        results.append(publisher.maybe_publish(preq, start_step + i))
    return results


def test_first_publish_waits_for_rows_then_follows_the_schedule(tmp_path):
    preq, publisher, registry = _setup(tmp_path)
    publisher.attach(preq)
    rows, ys = make_rows(32 * 20, 1)
    results = _run(preq, publisher, rows, ys)
    reasons = [r.reason for r in results]
    assert reasons[0] == "waiting_for_rows"  # 32 < min_rows=64
    assert reasons[1] == "published" and results[1].version == 1
    published = [i for i, r in enumerate(results) if r.published]
    gated = [i for i, r in enumerate(results) if r.reason == "gated"]
    assert sorted(published + gated) == [1, 6, 11, 16]  # every 5 steps after the first
    assert registry.current() == len(published)
    assert publisher.published == len(published) and publisher.gated == len(gated)
    meta = load_bundle(1, *_stored(registry, 1)).meta
    assert meta["trigger"] == "schedule" and meta["worker_step"] == 1


def _stored(registry, version):
    stored = registry.fetch(version)
    return stored.onnx, stored.meta


def test_gate_skips_a_worse_candidate_and_counts_it(tmp_path):
    preq, publisher, registry = _setup(tmp_path, gate_margin=0.0)
    rows, ys = make_rows(32 * 40, 1)
    _run(preq, publisher, rows, ys)  # a good model gets published
    good = registry.current()
    assert good is not None
    # sabotage the candidate: scramble its weights, then let it see a few batches
    with np.errstate(all="ignore"):
        for param in preq.learner.model.parameters():
            param.data.normal_(0.0, 5.0)
    rows, ys = make_rows(32 * 6, 2)
    results = _run(preq, publisher, rows, ys, start_step=1000)
    gated = [r for r in results if r.reason == "gated"]
    assert gated and publisher.gated >= 1
    assert gated[0].candidate_loss > gated[0].published_loss
    assert registry.current() == good  # the published model stays


def test_drift_triggers_a_recovery_export(tmp_path):
    settings = small_settings(
        export={"every_steps": 10_000, "min_rows": 64, "after_drift_steps": 6},
        drift={"detector": "none"},  # the test says when the drift is detected
    )
    registry = FilesystemRegistry(tmp_path / "registry")
    preq, publisher = Prequential.from_settings(settings), Publisher(registry, settings.export)
    publisher.attach(preq)
    _run(preq, publisher, *make_rows(32 * 30, 1))
    assert publisher.maybe_publish(preq, 29, force=True).published  # a well-trained model
    assert registry.current() == 2
    preq.drifts.append(preq.seen)  # what the detector does when it fires
    results = _run(preq, publisher, *make_rows(32 * 10, 3, flip=True), start_step=30)
    triggers = [(i, r.trigger) for i, r in enumerate(results) if r.trigger]
    assert triggers[0] == (6, "drift_recovery")  # after_drift_steps batches, not before
    recovery = results[6]
    assert recovery.published, recovery  # the old concept's model loses on the new rows
    assert recovery.candidate_loss < recovery.published_loss
    assert load_bundle(3, *_stored(registry, 3)).meta["trigger"] == "drift_recovery"


def test_a_switch_to_a_past_model_is_exported_once_the_gate_has_its_rows(tmp_path):
    settings = small_settings(
        # gate_margin: the switch is faked on one concept, so the candidate is about as good as
        # the published model; the test is about when the export is tried, not the gate's call
        export={"every_steps": 10_000, "min_rows": 64, "after_drift_steps": 50, "gate_margin": 0.5},
        drift={"detector": "none"},  # the test says when the drift and the switch happen
    )
    registry = FilesystemRegistry(tmp_path / "registry")
    preq, publisher = Prequential.from_settings(settings), Publisher(registry, settings.export)
    publisher.attach(preq)
    _run(preq, publisher, *make_rows(32 * 20, 1))
    assert publisher.maybe_publish(preq, 19, force=True).published
    preq.drifts.append(preq.seen)  # a detection, then the pool's switch a batch later
    _run(preq, publisher, *make_rows(32, 3), start_step=20)
    assert preq.experts is not None
    preq.experts.switches += 1
    results = _run(preq, publisher, *make_rows(32 * 4, 4), start_step=21)
    assert [r.reason for r in results[:2]] == ["waiting_for_rows", "published"]  # 64 rows
    assert results[1].trigger == "expert_switch"
    assert (
        load_bundle(registry.current(), *_stored(registry, registry.current())).meta["trigger"]
        == "expert_switch"
    )
    assert [r.reason for r in results[2:]] == ["not_due", "not_due"]  # once, then the plan


def test_export_failure_is_counted_and_the_worker_goes_on(tmp_path, monkeypatch):
    preq, publisher, registry = _setup(tmp_path)

    def refuse(*args, **kwargs):
        raise ExportError("parity error 1 > tolerance 0.0001")

    monkeypatch.setattr(publisher_module, "export_prequential", refuse)
    rows, ys = make_rows(32 * 8, 1)
    results = _run(preq, publisher, rows, ys)
    assert "export_failed" in {r.reason for r in results}
    assert publisher.export_failures >= 1 and registry.current() is None


def test_registry_outage_is_counted_not_raised(tmp_path):
    class Down(FilesystemRegistry):
        def current(self):
            raise RegistryError("connection refused")

    settings = small_settings(export={"every_steps": 5, "min_rows": 32})
    preq = Prequential.from_settings(settings)
    publisher = Publisher(Down(tmp_path / "r"), settings.export)
    rows, ys = make_rows(32 * 12, 1)
    results = _run(preq, publisher, rows, ys)
    failed = [i for i, r in enumerate(results) if r.reason == "registry_error"]
    assert failed == [1, 6, 11]  # retried on the schedule, not on every batch
    assert publisher.registry_errors == 3


def test_memory_push_is_rate_limited(tmp_path):
    settings = small_settings(memory={"enabled": True}, export={"memory_push_s": 2.0})
    now = [100.0]
    registry = FilesystemRegistry(tmp_path / "r")
    publisher = Publisher(registry, settings.export, clock=lambda: now[0])
    preq = Prequential.from_settings(settings)
    train(preq, *make_rows(64, 1))
    assert publisher.push_memory(preq)
    now[0] += 1.0
    assert not publisher.push_memory(preq)
    assert publisher.push_memory(preq, force=True)
    now[0] += 2.5
    assert publisher.push_memory(preq)
    assert publisher.memory_pushes == 3 and registry.pull_memory()


def test_no_memory_and_no_vote_means_no_push(tmp_path):
    settings = small_settings()
    publisher = Publisher(FilesystemRegistry(tmp_path / "r"), settings.export)
    assert not publisher.push_memory(Prequential.from_settings(settings), force=True)
    voting = small_settings(neighbours={"enabled": True})  # the vote alone is pushed
    assert publisher.push_memory(Prequential.from_settings(voting), force=True)


@pytest.mark.parametrize("regression", [False, True])
def test_gate_without_a_published_model_passes(regression):
    gate = QualityGate(window=10, margin=0.0, regression=regression)
    pred = np.array([1.0, 2.0]) if regression else np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    gate.observe(np.zeros((2, 3)), np.zeros((2, 1), np.int64), np.array([1, 1]), pred)
    verdict = gate.judge(None)
    assert verdict.passed and math.isnan(verdict.published_loss) and verdict.rows == 2
    expected = (0.0 + 1.0) / 2 if regression else -(np.log(0.1) + np.log(0.8)) / 2
    assert verdict.candidate_loss == pytest.approx(expected, rel=1e-5)


def test_gate_window_keeps_the_newest_rows():
    gate = QualityGate(window=4, margin=0.0, regression=True)
    for value in range(6):
        gate.observe(
            np.zeros((1, 2)), np.zeros((1, 1), np.int64), np.array([0.0]), np.array([value])
        )
    assert gate.rows == 4
    assert gate.judge(None).candidate_loss == pytest.approx((4 + 9 + 16 + 25) / 4)


def test_memory_pushed_after_a_publish_is_keyed_by_that_version(tmp_path):
    settings = small_settings(memory={"enabled": True}, export={"every_steps": 5, "min_rows": 64})
    registry = FilesystemRegistry(tmp_path / "r")
    publisher = Publisher(registry, settings.export)
    preq = Prequential.from_settings(settings)
    assert publisher.push_memory(preq, force=True)  # nothing published yet: the live keys
    assert decode_memory(registry.pull_memory()).keyed_by_version is None
    rows, ys = make_rows(32 * 8, 3)
    results = _run(preq, publisher, rows, ys)
    assert any(r.published for r in results)
    assert publisher.push_memory(preq, force=True)
    snapshot = decode_memory(registry.pull_memory())
    assert snapshot.keyed_by_version == snapshot.model_version == publisher.last_version
