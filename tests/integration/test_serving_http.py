"""The HTTP serving tier on a real uvicorn (loopback): v2, v1, health, metrics, admin, and
clear 4xx answers — never a 500 — for every kind of bad request."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from serving_support import make_rows, published_and_served, serving, small_settings

from streamlearn.registry.filesystem import FilesystemRegistry

NAME = "streamlearn"
V1 = f"/v1/models/{NAME}:predict"
V2 = f"/v2/models/{NAME}/infer"
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained model with error memory, published with its memory, and a server on it."""
    with published_and_served(tmp_path_factory.mktemp("registry"), admin_token=TOKEN) as world:
        yield world


def _wait_ready(client, version="1"):
    for _ in range(200):
        r = client.get("/v2/health/ready")
        if r.status_code == 200 and r.json()["model_version"] == version:
            return
        time.sleep(0.05)
    raise AssertionError("server never became ready")


def _tensor(name, rows, width, dtype, data=None):
    values = data if data is not None else [0] * (rows * width)
    return {"name": name, "shape": [rows, width], "datatype": dtype, "data": values}


def _v2_body(rows=2, **overrides):
    body = {"inputs": [_tensor("num", rows, 8, "FP32"), _tensor("cat", rows, 4, "INT64")]}
    body.update(overrides)
    return body


# -- good requests -----------------------------------------------------------------------------
def test_health_and_metadata(world):
    client = world["client"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True, "model_version": "1"}
    assert client.get(f"/v2/models/{NAME}/ready").json()["ready"] is True
    meta = client.get(f"/v2/models/{NAME}").json()
    assert meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert {i["name"]: i["shape"] for i in meta["inputs"]} == {"num": [-1, 8], "cat": [-1, 4]}
    assert meta["parameters"]["classes"] == world["preq"].classes()
    assert client.get("/v2").json()["name"] == "streamlearn"


def test_v1_predict_matches_the_learner_with_its_error_memory(world):
    client, preq = world["client"], world["preq"]
    rows, _ = make_rows(20, 11)
    r = client.post(V1, json={"instances": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == "1" and body["compensated"] is True
    assert body["classes"] == preq.classes()
    served = np.array(body["predictions"])
    learner = preq.predict(rows)[:, : len(preq.classes())]  # base model + memory, in torch
    np.testing.assert_allclose(served, learner, atol=1e-4)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)


def test_v1_takes_missing_unknown_and_mistyped_features(world):
    rows = [{}, {"a": None, "unknown": 3}, {"a": "text-for-a-number"}, {"color": 5, "b": True}]
    r = world["client"].post(V1, json={"instances": rows})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 4


def test_v2_infer_returns_both_outputs_and_honours_options(world):
    client, runtime = world["client"], world["runtime"]
    rng = np.random.default_rng(0)
    num = rng.normal(size=(3, 8)).astype(np.float32)
    cat = rng.integers(0, 256, size=(3, 4))
    body = {
        "id": "req-1",
        "inputs": [
            _tensor("num", 3, 8, "FP32", num.tolist()),  # nested data is accepted
            _tensor("cat", 3, 4, "INT64", cat.ravel().tolist()),
        ],
    }
    out = client.post(V2, json=body).json()
    assert out["id"] == "req-1" and out["model_version"] == "1"
    shapes = {o["name"]: o["shape"] for o in out["outputs"]}
    assert shapes == {"prediction": [3, 4], "hidden": [3, 16]}
    assert out["parameters"]["compensated"] is True
    raw = client.post(V2, json={**body, "parameters": {"compensate": False}}).json()
    bundle = runtime.state.bundle
    expected, _ = bundle.run(num, cat.astype(np.int64))
    got = np.array(raw["outputs"][0]["data"]).reshape(3, 4)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    only = client.post(V2, json={**body, "outputs": [{"name": "hidden"}]}).json()
    assert [o["name"] for o in only["outputs"]] == ["hidden"]


def test_metrics_endpoint(world):
    world["client"].post(V1, json={"instances": [{"a": 1.0}]})
    text = world["client"].get("/metrics").text
    assert 'streamlearn_serve_requests_total{code="200",endpoint="v1_predict"}' in text
    assert "streamlearn_serve_model_version 1.0" in text
    assert "streamlearn_serve_memory_updates_total 1.0" in text


# -- bad requests ------------------------------------------------------------------------------
BAD_V1 = [
    (b"", 400, "empty"),
    (b"{", 400, "not valid JSON"),
    (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
    (b'{"instances": [{"a": NaN}]}', 400, "not valid JSON"),
    (b'{"instances": [{"a": 1e400}]}', 400, "out of range"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"rows": []}', 400, '"instances"'),
    (b'{"instances": []}', 400, "non-empty"),
    (b'{"instances": {"a": 1}}', 400, '"instances"'),
    (b'{"instances": [1, 2]}', 400, "instances[0] must be an object"),
    (b'{"instances": [{"a": [1, 2]}]}', 400, "instances[0].a"),
    (b'{"instances": [{"a": {"b": 1}}]}', 400, "instances[0].a"),
    (json.dumps({"instances": [{"a": 1}] * 51}).encode(), 413, "exceed the limit of 50"),
    (b'{"instances": [{"a": "' + b"x" * 70_000 + b'"}]}', 413, "over 65536 bytes"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_V1)
def test_v1_bad_requests_get_clear_4xx(world, body, status, message):
    r = world["client"].post(V1, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def _num(**kw):
    return {**_tensor("num", 2, 8, "FP32"), **kw}


def _cat(**kw):
    return {**_tensor("cat", 2, 4, "INT64"), **kw}


BAD_V2 = [
    ({}, 400, '"inputs"'),
    ({"inputs": "num"}, 400, '"inputs"'),
    ({"inputs": [1]}, 400, "inputs[0] must be a JSON object"),
    ({"inputs": [_num(name="x"), _cat()]}, 400, "unknown input 'x'"),
    ({"inputs": [_num(), _num()]}, 400, "given twice"),
    ({"inputs": [_num()]}, 400, "missing input cat"),
    ({"inputs": [_num(shape=[2, 7]), _cat()]}, 400, "does not match the model's [N, 8]"),
    ({"inputs": [_num(shape=[16]), _cat()]}, 400, "does not match"),
    ({"inputs": [_num(shape="2x8"), _cat()]}, 400, "shape must be a list"),
    ({"inputs": [_num(shape=[-2, 8]), _cat()]}, 400, "non-negative"),
    ({"inputs": [_num(shape=[0, 8], data=[]), _cat()]}, 400, "batch 0"),
    ({"inputs": [_num(shape=[51, 8], data=[0] * 408), _cat()]}, 413, "not in 1..50"),
    ({"inputs": [_num(datatype="BYTES"), _cat()]}, 400, "datatype 'BYTES'"),
    ({"inputs": [_num(), _cat(datatype="FP32")]}, 400, "datatype 'FP32'"),
    ({"inputs": [_num(data="0,0"), _cat()]}, 400, "data must be a list"),
    ({"inputs": [_num(data=[[0] * 8, [0] * 7]), _cat()]}, 400, "ragged"),
    ({"inputs": [_num(data=[0] * 15), _cat()]}, 400, "15 values"),
    ({"inputs": [_num(data=["a"] * 16), _cat()]}, 400, "must hold numbers"),
    ({"inputs": [_num(data=[None] * 16), _cat()]}, 400, "must hold numbers"),
    ({"inputs": [_num(data=[1e39] * 16), _cat()]}, 400, "finite float32"),
    ({"inputs": [_num(), _cat(data=[1.5] * 8)]}, 400, "must hold integers"),
    ({"inputs": [_num(), _cat(data=[2**70] * 8)]}, 400, "must hold integers"),
    ({"inputs": [_num(), _cat(data=[-1] * 8)]}, 400, "bucket ids must be in 0..255"),
    ({"inputs": [_num(), _cat(data=[256] * 8)]}, 400, "bucket ids must be in 0..255"),
    ({"inputs": [_num(), _cat(shape=[1, 4], data=[0] * 4)]}, 400, "have 2 and 1 rows"),
    ({**_v2_body(), "outputs": [{"name": "logits"}]}, 400, "unknown output 'logits'"),
    ({**_v2_body(), "outputs": "prediction"}, 400, "outputs must be a list"),
    ({**_v2_body(), "parameters": {"compensate": "yes"}}, 400, "compensate must be"),
    ({**_v2_body(), "parameters": [1]}, 400, "parameters must be a JSON object"),
    ({**_v2_body(), "id": 5}, 400, "id must be a string"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_V2)
def test_v2_bad_requests_get_clear_4xx(world, body, status, message):
    r = world["client"].post(V2, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("post", "/v1/models/other:predict", 404),
        ("post", "/v2/models/other/infer", 404),
        ("get", "/v2/models/other", 404),
        ("get", V1, 405),
        ("get", "/nowhere", 404),
        ("post", "/v2/health/live", 405),
    ],
)
def test_routing_errors_are_json(world, method, path, status):
    r = getattr(world["client"], method)(path)
    assert r.status_code == status
    assert isinstance(r.json()["error"], str)


def test_no_bad_request_ever_produced_a_500(world):
    text = world["client"].get("/metrics").text
    assert 'code="500"' not in text


# -- admin -------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer"])
def test_admin_needs_the_token(world, header):
    headers = {} if header is None else {"authorization": header}
    r = world["client"].post("/admin/reload", headers=headers)
    assert r.status_code == 401 and "Bearer" in r.json()["error"]


def test_admin_reload_and_bad_rollbacks(world):
    auth = {"authorization": f"Bearer {TOKEN}"}
    client = world["client"]
    r = client.post("/admin/reload", headers=auth)
    assert r.status_code == 200 and r.json()["model_version"] == 1
    r = client.post("/admin/rollback", headers=auth, json={"version": "one"})
    assert r.status_code == 400
    r = client.post("/admin/rollback", headers=auth, json={"version": 42})
    assert r.status_code == 409 and "not stored" in r.json()["error"]
    r = client.post("/admin/rollback", headers=auth)  # nothing older than version 1
    assert r.status_code == 409


def test_not_ready_without_a_model_and_admin_disabled_without_a_token(tmp_path):
    settings = small_settings(registry={"path": str(tmp_path), "poll_s": 0.1})
    registry = FilesystemRegistry(tmp_path)
    with serving(settings, registry) as (url, _, _), httpx.Client(base_url=url) as client:
        assert client.get("/v2/health/live").status_code == 200
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json()["ready"] is False
        for path in (f"/v2/models/{NAME}", f"/v2/models/{NAME}/ready"):
            assert client.get(path).status_code == 503
        r = client.post(V1, json={"instances": [{"a": 1}]})
        assert r.status_code == 503 and "no model loaded" in r.json()["error"]
        r = client.post("/admin/reload", headers={"authorization": "Bearer x"})
        assert r.status_code == 403 and "disabled" in r.json()["error"]
