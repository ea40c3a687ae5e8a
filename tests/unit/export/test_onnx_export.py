"""ONNX export: parity with torch for every task, with and without categorical features; the
metadata contract; refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from serving_support import make_rows, small_settings, train, trained

import streamlearn.export.onnx as onnx_export
from streamlearn.core.prequential import Prequential
from streamlearn.errors import ArtifactError, ExportError
from streamlearn.export.artifact import FORMAT, load_bundle, sha256_hex
from streamlearn.export.onnx import export_prequential


def _export(preq, **kwargs):
    return export_prequential(preq, **kwargs)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("categorical", [True, False])
def test_onnxruntime_matches_torch_and_the_learner(task, categorical):
    preq = trained(task, n=800, categorical=categorical)
    artifact = _export(preq)
    assert artifact.meta["parity_error"] <= 1e-4
    bundle = load_bundle(1, artifact.onnx, artifact.with_version(1).meta_bytes())
    rows, _ = make_rows(50, 9, task, categorical)
    num, cat = bundle.encode(rows)  # serving's encoding: meta.json stats + standardize
    if categorical:
        assert (cat[:, 0] > 0).all()
    else:
        assert (cat == 0).all()
    onnx_pred, onnx_hidden = bundle.run(num, cat)
    torch_pred, torch_hidden = preq.base_prediction(num, cat)
    np.testing.assert_allclose(onnx_pred, torch_pred, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(onnx_hidden, torch_hidden, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(onnx_pred, preq.predict(rows), rtol=1e-4, atol=1e-5)


def test_dynamic_batch_and_signature():
    preq = trained("binary", n=300)
    model = onnx.load_from_string(_export(preq).onnx)
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert set(inputs) == {"num", "cat"}
    assert inputs["num"].elem_type == onnx.TensorProto.FLOAT
    assert inputs["cat"].elem_type == onnx.TensorProto.INT64
    assert inputs["num"].shape.dim[0].dim_param  # symbolic batch dimension
    assert [o.name for o in model.graph.output] == ["prediction", "hidden"]
    bundle = load_bundle(1, _export(preq).onnx, _export(preq).with_version(1).meta_bytes())
    for n in (1, 7, 300):
        pred, hidden = bundle.run(np.zeros((n, 8), np.float32), np.zeros((n, 4), np.int64))
        assert pred.shape == (n, 4) and hidden.shape == (n, 16)


def test_metadata_describes_the_artifact():
    preq = trained("multiclass", n=600)
    artifact = _export(preq, extra={"learner_step": preq.learner.steps})
    meta = json.loads(artifact.meta_bytes())
    assert meta["format"] == FORMAT
    assert meta["version"] is None  # the registry stamps it
    assert meta["sha256"] == sha256_hex(artifact.onnx)
    assert meta["task"] == "multiclass"
    assert meta["classes"] == preq.classes()
    assert meta["features"] == json.loads(json.dumps(preq.encoder.state_dict()))
    assert meta["hash_buckets"] == 256
    assert meta["n_outputs"] == 4 and meta["hidden_dim"] == 16
    assert meta["inputs"]["num"] == {"datatype": "FP32", "shape": [-1, 8]}
    assert 0 <= meta["parity_error"] <= meta["parity"]["tolerance"]
    assert meta["onnx"]["opset"] == 17 and "dynamo=False" in meta["onnx"]["exporter"]
    assert meta["learner_step"] == preq.learner.steps
    assert meta["created"].endswith("+00:00")


def test_export_leaves_the_training_model_alone():
    preq = trained("binary", n=300)
    model = preq.learner.model
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _export(preq)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_parity_beyond_tolerance_is_refused(monkeypatch):
    preq = trained("binary", n=300)
    monkeypatch.setattr(onnx_export, "parity_error", lambda *args: 0.5)
    with pytest.raises(ExportError, match=r"parity error 0\.5 > tolerance"):
        _export(preq, tolerance=1e-4)


def test_nan_parity_is_refused(monkeypatch):
    preq = trained("binary", n=300)
    monkeypatch.setattr(onnx_export, "parity_error", lambda *args: float("nan"))
    with pytest.raises(ExportError):
        _export(preq)


def test_checker_failure_is_refused(monkeypatch):
    preq = trained("binary", n=300)

    def reject(model, full_check=False):
        raise onnx.checker.ValidationError("broken graph")

    monkeypatch.setattr(onnx.checker, "check_model", reject)
    with pytest.raises(ExportError, match=r"onnx\.checker rejected"):
        _export(preq)


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda onnx_bytes, meta: (onnx_bytes[: len(onnx_bytes) // 2], meta), "sha256_mismatch"),
        (lambda onnx_bytes, meta: (b"\x00" + onnx_bytes[1:], meta), "sha256_mismatch"),
        (lambda onnx_bytes, meta: (onnx_bytes, meta[: len(meta) // 2]), "bad_meta"),
        (lambda onnx_bytes, meta: (onnx_bytes, b"[1, 2]"), "bad_meta"),
    ],
)
def test_load_refuses_damaged_artifacts(mangle, reason):
    preq = trained("binary", n=300)
    artifact = _export(preq).with_version(3)
    onnx_bytes, meta = mangle(artifact.onnx, artifact.meta_bytes())
    with pytest.raises(ArtifactError) as info:
        load_bundle(3, onnx_bytes, meta)
    assert info.value.reason == reason


def test_load_refuses_garbage_with_a_matching_sha():
    preq = trained("binary", n=300)
    garbage = b"not an onnx graph at all"
    artifact = _export(preq)
    meta = {**artifact.meta, "version": 2, "sha256": sha256_hex(garbage)}
    with pytest.raises(ArtifactError) as info:
        load_bundle(2, garbage, json.dumps(meta).encode())
    assert info.value.reason == "unloadable"


def test_load_refuses_a_version_mismatch():
    preq = trained("binary", n=300)
    artifact = _export(preq).with_version(4)
    with pytest.raises(ArtifactError) as info:
        load_bundle(5, artifact.onnx, artifact.meta_bytes())
    assert info.value.reason == "version_mismatch"


@pytest.mark.gpu
def test_export_of_a_cuda_trained_model():
    preq = trained("binary", n=600, learner={"device": "cuda"})
    artifact = _export(preq)
    assert artifact.meta["parity_error"] <= 1e-4
    assert next(preq.learner.model.parameters()).is_cuda  # the live model stays on the GPU
    bundle = load_bundle(1, artifact.onnx, artifact.with_version(1).meta_bytes())
    rows, _ = make_rows(20, 4)
    num, cat = bundle.encode(rows)
    onnx_pred, _ = bundle.run(num, cat)
    np.testing.assert_allclose(onnx_pred, preq.learner.predict(num, cat), atol=2e-2)  # bf16


def test_regression_export_predicts_in_the_targets_units():
    """The learner trains on a running-standardised target; the graph de-standardises, so a
    replica serves values in the target's units (here around 1000), not standardised ones."""
    preq = Prequential.from_settings(small_settings("regression"))
    rows, ys = make_rows(800, 4, "regression")
    targets = [1000.0 + 50.0 * y for y in ys]
    train(preq, rows, targets)
    assert float(preq.learner.model.target_loc) == pytest.approx(np.mean(targets), rel=1e-5)
    bundle = load_bundle(1, _export(preq).onnx, _export(preq).with_version(1).meta_bytes())
    num, cat = bundle.encode(rows[-100:])
    onnx_pred, _ = bundle.run(num, cat)
    np.testing.assert_allclose(onnx_pred, preq.predict(rows[-100:]), rtol=1e-4, atol=1e-3)
    assert abs(float(np.mean(onnx_pred)) - float(np.mean(targets[-100:]))) < 100.0
