"""The v2 protocol as third-party clients speak it: Triton's own HTTP client with its defaults
(binary tensor data both ways), versioned routes, datatypes checked against the model, and no
5xx for anything a client can send (deep nesting, overflowing inputs, a disconnect mid-body,
and a hundred malformed requests)."""

from __future__ import annotations

import json
import random
import socket
import time
from urllib.parse import urlparse

import numpy as np
import pytest
import tritonclient.http as triton
from serving_support import published_and_served
from tritonclient.utils import InferenceServerException

NAME = "streamlearn"
V2 = f"/v2/models/{NAME}/infer"
V1 = f"/v1/models/{NAME}:predict"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with published_and_served(tmp_path_factory.mktemp("registry")) as world:
        yield world


@pytest.fixture
def triton_client(world):
    client = triton.InferenceServerClient(urlparse(world["url"]).netloc)
    yield client
    client.close()


def arrays(seed: int, rows: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 8)).astype(np.float32), rng.integers(0, 256, (rows, 4))


def inputs(num: np.ndarray, cat: np.ndarray, binary: bool = True) -> list:
    tensors = []
    for name, data, datatype in (("num", num, "FP32"), ("cat", cat, "INT64")):
        tensor = triton.InferInput(name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data, binary_data=binary)
        tensors.append(tensor)
    return tensors


def test_health_metadata_and_versioned_readiness(world, triton_client):
    served = str(world["runtime"].state.bundle.version)
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready(NAME)
    assert triton_client.is_model_ready(NAME, served)
    assert not triton_client.is_model_ready(NAME, str(int(served) + 1))
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]
    meta = triton_client.get_model_metadata(NAME, served)
    assert meta["versions"] == [served]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"num": "FP32", "cat": "INT64"}


def test_triton_defaults_binary_both_ways_equal_the_json_path(world, triton_client):
    num, cat = arrays(0)
    result = triton_client.infer(NAME, inputs(num, cat))  # binary inputs, all outputs binary
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] > 0
    got = result.as_numpy("prediction")

    as_json = [
        {"name": n, "datatype": t, "shape": list(d.shape), "data": d.ravel().tolist()}
        for n, t, d in (("num", "FP32", num), ("cat", "INT64", cat))
    ]
    body = world["client"].post(V2, json={"inputs": as_json}).json()
    want = np.asarray(body["outputs"][0]["data"], dtype=np.float32).reshape(got.shape)
    np.testing.assert_array_equal(got, want)
    hidden = result.as_numpy("hidden")
    assert hidden is not None and hidden.shape[0] == 3

    json_out = triton_client.infer(
        NAME, inputs(num, cat, binary=False),
        outputs=[triton.InferRequestedOutput("prediction", binary_data=False)],
        model_version=str(world["runtime"].state.bundle.version),
    )  # fmt: skip
    np.testing.assert_array_equal(json_out.as_numpy("prediction"), got)


@pytest.mark.parametrize(
    ("datatype", "values", "message"),
    [
        ("INT8", [300] * 12, "must fit INT8"),
        ("UINT8", [-1] * 12, "must fit UINT8"),
        ("INT8", [1.5] * 12, "must hold integers"),
        ("FP32", [0] * 12, "not one of"),
    ],
)
def test_declared_datatypes_are_enforced(world, datatype, values, message):
    body = {
        "inputs": [
            {"name": "num", "datatype": "FP32", "shape": [3, 8], "data": [0.0] * 24},
            {"name": "cat", "datatype": datatype, "shape": [3, 4], "data": values},
        ]
    }
    r = world["client"].post(V2, json=body)
    assert r.status_code == 400 and message in r.json()["error"], r.text


def test_a_triton_client_error_is_a_4xx_with_the_reason(world, triton_client):
    num = triton.InferInput("num", [2, 8], "FP16")
    num.set_data_from_numpy(np.full((2, 8), 0.5, dtype=np.float32).astype(np.float16))
    cat = triton.InferInput("cat", [2, 4], "INT8")
    cat.set_data_from_numpy(np.zeros((2, 4), dtype=np.int8))
    ok = triton_client.infer(NAME, [num, cat])  # other declared types are converted
    assert ok.as_numpy("prediction").shape[0] == 2
    with pytest.raises(InferenceServerException) as err:
        triton_client.infer(NAME, [num, cat], model_version="999")
    assert err.value.status() == "404" and "not served" in err.value.message()


def test_deep_nesting_and_overflowing_outputs_are_4xx(world):
    client = world["client"]
    deep = b"[" * 30_000 + b"]" * 30_000  # far past the parser's recursion limit
    for path, body in ((V2, deep), (V1, b'{"instances": ' + deep + b"}")):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["error"], r.text

    big = _overflowing_input(world["runtime"])
    body = {
        "inputs": [
            {"name": "num", "datatype": "FP32", "shape": [2, 8], "data": big.ravel().tolist()},
            {"name": "cat", "datatype": "INT64", "shape": [2, 4], "data": [0] * 8},
        ]
    }
    r = client.post(V2, json=body)
    assert r.status_code == 422 and "not finite" in r.json()["error"], r.text


def _overflowing_input(runtime) -> np.ndarray:
    """Finite float32 inputs (±3.4e38, signs searched) whose outputs overflow the model."""
    rng = np.random.default_rng(0)
    cat = np.zeros((2, 4), np.int64)
    with np.errstate(all="ignore"):
        for _ in range(500):
            big = (np.float32(3.4e38) * rng.choice([-1, 1], (1, 8))).astype(np.float32)
            big = big.repeat(2, axis=0)
            prediction, hidden, _ = runtime.predict(runtime.state, big, cat)
            if not (np.isfinite(prediction).all() and np.isfinite(hidden).all()):
                return big
    raise AssertionError("no sign pattern overflows this model")  # precondition


def _send_raw(url: str, data: bytes, read: bool = True) -> bytes:
    host, port = urlparse(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        if not read:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_a_disconnect_mid_body_is_counted_as_such_not_as_an_error(world):
    before = _count(world, "v2_infer", "499")
    head = (
        f"POST {V2} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 5000\r\n\r\n"
    ).encode()
    for _ in range(5):
        _send_raw(world["url"], head + b'{"inputs": [', read=False)  # then hang up
    deadline = time.monotonic() + 10
    while _count(world, "v2_infer", "499") < before + 5:
        assert time.monotonic() < deadline, world["client"].get("/metrics").text
        time.sleep(0.05)
    assert world["client"].get("/v2/health/live").status_code == 200


def _count(world, endpoint: str, code: str) -> float:
    value = world["metrics"].get_sample_value(
        "streamlearn_serve_requests_total", {"endpoint": endpoint, "code": code}
    )
    return value or 0.0


def _malformed(rng: random.Random) -> list[tuple[bytes, dict[str, str]]]:
    """A hundred and more bodies (with headers) that are wrong in different ways."""
    good = json.dumps(
        {"inputs": [
            {"name": "num", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8},
            {"name": "cat", "datatype": "INT64", "shape": [1, 4], "data": [1] * 4},
        ]}
    ).encode()  # fmt: skip
    out: list[tuple[bytes, dict[str, str]]] = []
    for cut in range(1, len(good), max(1, len(good) // 40)):  # truncated JSON
        out.append((good[:cut], {}))
    for _ in range(40):  # random bytes and bit flips
        flipped = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        out.append((bytes(flipped), {}))
        out.append((rng.randbytes(rng.randint(1, 300)), {}))
    for n in ("-1", "x", "99999999", str(len(good) + 1), "0", "3"):  # binary header lies
        out.append((good, {"inference-header-content-length": n}))
    binary = json.dumps(
        {"inputs": [
            {"name": "num", "datatype": "FP32", "shape": [1, 8],
             "parameters": {"binary_data_size": 32}},
            {"name": "cat", "datatype": "INT64", "shape": [1, 4],
             "parameters": {"binary_data_size": 32}},
        ]}
    ).encode()  # fmt: skip
    for tail in (b"", b"\0" * 31, b"\0" * 63, b"\0" * 65, b"\xff" * 64):
        out.append((binary + tail, {"inference-header-content-length": str(len(binary))}))
    for value in ("1e309", "-1e309", "1e38", "true", '"a"', "null", "[]", "{}"):
        body = good.replace(b"0.5", value.encode(), 1)
        out.append((body, {}))
    return out


def test_a_hundred_malformed_requests_get_4xx_and_the_server_lives(world):
    client = world["client"]
    cases = _malformed(random.Random(5))
    assert len(cases) >= 100
    statuses = []
    for body, headers in cases:
        r = client.post(V2, content=body, headers={"content-type": "application/json", **headers})
        statuses.append(r.status_code)
        assert r.status_code < 500, (body[:200], headers, r.text)
    assert statuses.count(200) < len(cases) // 10  # most were refused, as they should be
    assert client.get("/v2/health/live").status_code == 200
    assert 'code="500"' not in client.get("/metrics").text
