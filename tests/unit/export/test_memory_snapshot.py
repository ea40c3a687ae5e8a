"""Error-memory snapshots: what serving rebuilds (numpy only) compensates like the learner."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from serving_support import make_rows, train, trained

from streamlearn.errors import ArtifactError
from streamlearn.export.memory import decode_memory, encode_memory


@pytest.mark.parametrize("kind", ["topk", "lsh"])
@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_serving_compensation_equals_the_learner(kind, task):
    # fast start off: its extra early steps leave this tiny model (binary) with a third of the
    # stored rows on one unit key, and top-k implementations break such ties differently;
    # the gate off: the whole compensation (the gate's share: the test after this one); the
    # periodic features off: with them this tiny model ties unit keys alike (binary)
    memory = {"enabled": True, "kind": kind, "size": 128, "gate": False}
    preq = trained(task, n=800, memory=memory, learner={"fast_start": 0}, features={"periodic": 0})
    assert preq.memory is not None and len(preq.memory.memory) > 0
    snapshot = decode_memory(encode_memory(preq.memory, model_version=7))
    assert snapshot.model_version == 7
    assert snapshot.learner_step == preq.learner.steps
    assert snapshot.hidden_dim == 16
    rows, _ = make_rows(40, 5, task)
    feats = preq.encoder.encode(rows)
    base, hidden = preq.learner.predict_hidden(preq.encoder.standardize(feats.num), feats.cat)
    learner = preq.memory.compensate(hidden, base)
    serving = snapshot.error_memory.compensate(hidden, base)
    assert np.abs(learner - base).max() > 1e-3  # the memory does change predictions
    np.testing.assert_allclose(serving, learner, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_serving_applies_the_gate_weight_of_the_learner(weight):
    """The served compensation is the one in use: the gate's share travels in the snapshot."""
    preq = trained("multiclass", n=600, memory={"enabled": True}, learner={"fast_start": 0})
    stage = preq.memory
    stage.gate.weight = weight  # as if learned: compensation reads only the weight
    snapshot = decode_memory(encode_memory(stage, model_version=3))
    assert snapshot.error_memory.weight == weight
    rows, _ = make_rows(40, 5, "multiclass")
    feats = preq.encoder.encode(rows)
    base, hidden = preq.learner.predict_hidden(preq.encoder.standardize(feats.num), feats.cat)
    learner = stage.compensate(hidden, base)
    full = stage.memory.compensate(hidden, base)
    np.testing.assert_allclose(learner, (1 - weight) * base + weight * full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        snapshot.error_memory.compensate(hidden, base), learner, rtol=1e-5, atol=1e-6
    )


def test_a_snapshot_without_a_weight_compensates_in_full():
    """Snapshots pushed before the gate carry no weight: they applied the whole compensation."""
    preq = trained("binary", n=300, memory={"enabled": True, "gate": False})
    snapshot = decode_memory(encode_memory(preq.memory, None))
    assert snapshot.error_memory.weight == 1.0


@pytest.mark.parametrize(
    "blob", [b"", b"garbage", b"PK\x03\x04 truncated zip", b"\x93NUMPY not a zip"]
)
def test_damaged_snapshots_are_refused(blob):
    with pytest.raises(ArtifactError) as info:
        decode_memory(blob)
    assert info.value.reason == "bad_memory"


def test_truncated_snapshot_is_refused():
    preq = trained("binary", n=300, memory={"enabled": True})
    blob = encode_memory(preq.memory, None)
    with pytest.raises(ArtifactError):
        decode_memory(blob[: len(blob) // 2])


def test_snapshot_is_rekeyed_with_the_published_model():
    """A replica serves the exported model: the pushed keys must be in its hidden space."""
    preq = trained("binary", n=600, memory={"enabled": True, "size": 64})
    published = copy.deepcopy(preq.learner.model)
    rows, ys = make_rows(320, 9)
    train(preq, rows, ys)  # the live model moves on after the export
    live = decode_memory(encode_memory(preq.memory, model_version=4))
    pushed = decode_memory(encode_memory(preq.memory, model_version=4, model=published))
    assert (live.keyed_by_version, pushed.keyed_by_version) == (None, 4)
    stage = preq.memory
    order = stage._ring.order()
    with torch.no_grad():
        pred, hidden = published(published.inputs(stage._num[order]), stage._cat[order])
    expected = torch.nn.functional.normalize(hidden, dim=1, eps=1e-8)
    pushed_ring, live_ring, w = pushed.error_memory.lookup, live.error_memory.lookup, pushed.width
    np.testing.assert_allclose(pushed_ring.keys, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pushed_ring.values[:, w:], pred.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pushed_ring.values[:, :w], live_ring.values[:, :w])  # labels
    assert np.abs(pushed_ring.keys - live_ring.keys).max() > 1e-3  # it did re-key
    np.testing.assert_array_equal(live_ring.keys, stage.memory.state_dict()["keys"])


def test_lsh_snapshot_cannot_be_rekeyed_and_says_so():
    preq = trained("binary", n=300, memory={"enabled": True, "kind": "lsh"})
    model = copy.deepcopy(preq.learner.model)
    assert decode_memory(encode_memory(preq.memory, 2, model=model)).keyed_by_version is None


def neighbour_chain(memory: bool):
    """A classifier trained with the neighbour vote on (and the error memory on or off), its
    vote given a share of 0.4 (as if learned: mixing reads only the share)."""
    preq = trained(
        "multiclass", n=600, memory={"enabled": memory}, learner={"fast_start": 0},
        neighbours={"enabled": True, "window": 256},
    )  # fmt: skip
    assert preq.neighbours is not None and preq.neighbours.filled == 256
    preq.neighbours.hedge.weight = 0.4
    return preq


@pytest.mark.parametrize("memory", [True, False])
def test_serving_mixes_in_the_neighbour_vote_as_the_worker(tmp_path, memory):
    from prometheus_client import CollectorRegistry
    from serving_support import export

    from streamlearn.metrics.serve import ServeMetrics
    from streamlearn.registry.filesystem import FilesystemRegistry
    from streamlearn.serve.runtime import ServingRuntime

    preq = neighbour_chain(memory)
    registry = FilesystemRegistry(tmp_path)
    registry.publish(export(preq))
    blob = encode_memory(preq.memory, 1, neighbours=preq.neighbours, learner=preq.learner)
    registry.push_memory(blob)
    snapshot = decode_memory(blob)
    assert (snapshot.error_memory is None) is not memory
    assert snapshot.neighbours is not None and snapshot.neighbours.weight == pytest.approx(0.4)
    runtime = ServingRuntime(registry, ServeMetrics(CollectorRegistry()))
    assert runtime.refresh_model() and runtime.refresh_memory()
    rows, _ = make_rows(40, 5, "multiclass")
    feats = preq.encoder.encode(rows)
    z = preq.encoder.standardize(feats.num)
    served, _, compensated = runtime.predict(runtime.state, z, feats.cat)
    assert compensated
    # the worker's own chain scores these rows the same way (the live model is the exported)
    worker = preq.predict(rows)
    base, _ = preq.base_prediction(z, feats.cat)
    assert np.abs(worker - base).max() > 1e-3  # the vote (and the memory) change predictions
    np.testing.assert_allclose(served, worker, rtol=1e-4, atol=1e-5)
    registry.close()


def test_a_retired_vote_is_left_out_of_the_snapshot():
    preq = neighbour_chain(True)
    preq.neighbours.retired = True
    snapshot = decode_memory(encode_memory(preq.memory, 1, neighbours=preq.neighbours))
    assert snapshot.neighbours is None and snapshot.neighbour_slots == 0
