"""The KServe v2 gRPC service as third-party clients speak it: Triton's own gRPC client with its
defaults (raw contents both ways), typed contents, versioned readiness, metadata, the answers of
the HTTP path on the same tensors, errors with the right codes, a hundred and more malformed
requests with no INTERNAL or UNKNOWN status, and ``streamlearn serve`` running both servers."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pb2
from serving_support import (
    free_port,
    publish_trained,
    published_and_served,
    serving,
    small_settings,
)
from tritonclient.grpc import service_pb2 as tpb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from streamlearn.cli import main
from streamlearn.registry.filesystem import FilesystemRegistry
from streamlearn.serve import grpc_protocol
from streamlearn.serve.grpc_server import GrpcServer

NAME = "streamlearn"
REPO = Path(__file__).resolve().parents[2]
INFER = "/inference.GRPCInferenceService/ModelInfer"
CLIENT_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with published_and_served(tmp_path_factory.mktemp("registry")) as world:
        yield world


@pytest.fixture(scope="module")
def client(world):
    client = triton.InferenceServerClient(world["grpc"])
    yield client
    client.close()


@pytest.fixture(scope="module")
def channel(world):
    with grpc.insecure_channel(world["grpc"]) as channel:
        yield channel


def arrays(seed: int, rows: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 8)).astype(np.float32), rng.integers(0, 256, (rows, 4))


def inputs(num: np.ndarray, cat: np.ndarray, cat_type: str = "INT64") -> list:
    tensors = [triton.InferInput("num", list(num.shape), "FP32"),
               triton.InferInput("cat", list(cat.shape), cat_type)]  # fmt: skip
    tensors[0].set_data_from_numpy(num)
    tensors[1].set_data_from_numpy(cat)
    return tensors


def typed_request(num: np.ndarray, cat: np.ndarray, **fields) -> tpb.ModelInferRequest:
    """A request with typed contents (fp32_contents, int64_contents), as Triton's generated
    classes write it."""
    request = tpb.ModelInferRequest(model_name=NAME, **fields)
    t = request.inputs.add(name="num", datatype="FP32", shape=num.shape)
    t.contents.fp32_contents.extend(num.ravel().tolist())
    t = request.inputs.add(name="cat", datatype="INT64", shape=cat.shape)
    t.contents.int64_contents.extend(cat.ravel().tolist())
    return request


def raw_request(num: np.ndarray, cat: np.ndarray) -> tpb.ModelInferRequest:
    """What Triton's client sends by default: raw_input_contents, one per input."""
    request = tpb.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="num", datatype="FP32", shape=num.shape)
    request.inputs.add(name="cat", datatype="INT64", shape=cat.shape)
    request.raw_input_contents.extend([num.astype("<f4").tobytes(), cat.astype("<i8").tobytes()])
    return request


def retyped(index: int, datatype: str, field: str, values: list):
    """A change to a request: input ``index`` declared ``datatype``, ``values`` in ``field``
    of its contents (and nothing else)."""

    def change(request: tpb.ModelInferRequest) -> None:
        tensor = request.inputs[index]
        tensor.datatype = datatype
        tensor.contents.Clear()
        getattr(tensor.contents, field).extend(values)

    return change


def _as_proto(descriptor) -> descriptor_pb2.DescriptorProto:
    """The message's definition, nested messages (map entries too) and oneofs included; in a
    form that leaves out what is not on the wire (protoc's JSON names, declaration order)."""
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)

    def normalise(message: descriptor_pb2.DescriptorProto) -> None:
        for field in message.field:
            field.ClearField("json_name")
        nested = sorted(message.nested_type, key=lambda n: n.name)
        for inner in nested:
            normalise(inner)
        del message.nested_type[:]
        message.nested_type.extend(nested)

    normalise(proto)
    return proto


def test_the_messages_are_the_protocols_as_triton_compiles_them():
    """Same names, numbers, types, labels, nested types, maps and oneofs as Triton's generated
    grpc_service.proto, which has every field of these messages but one: the protocol's
    ``ModelMetadataResponse.properties`` (field 6)."""
    names = [name for name in grpc_protocol.PROTO if "." not in name]  # nested: below
    assert len(names) == 14
    for name in names:
        ours = _as_proto(grpc_protocol.ModelInferRequest.DESCRIPTOR.file.pool
                         .FindMessageTypeByName(f"inference.{name}"))  # fmt: skip
        theirs = _as_proto(tpb.DESCRIPTOR.message_types_by_name[name])
        if name == "ModelMetadataResponse":
            assert [(f.name, f.number) for f in ours.field][-1] == ("properties", 6)
            del ours.field[-1]
            (entry,) = [n for n in ours.nested_type if n.name == "PropertiesEntry"]
            ours.nested_type.remove(entry)
        for message in (ours, theirs):
            for field in [*message.field, *(f for n in message.nested_type for f in n.field)]:
                field.ClearField("json_name")  # protoc's JSON names; not on the wire
        assert ours == theirs, name


def test_health_metadata_and_versioned_readiness(world, client, channel):
    served = str(world["runtime"].state.bundle.version)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(NAME) and client.is_model_ready(NAME, served)
    assert not client.is_model_ready(NAME, str(int(served) + 1))
    assert not client.is_model_ready("other")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "streamlearn" and "extensions" not in server  # none over gRPC
    meta = client.get_model_metadata(NAME, served, as_json=True)
    http = world["client"].get(f"/v2/models/{NAME}").json()
    assert meta["versions"] == [served] and meta["platform"] == http["platform"]
    for key in ("inputs", "outputs"):
        assert meta[key] == [{**t, "shape": [str(d) for d in t["shape"]]} for t in http[key]]
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    raw = stub.ModelMetadata(tpb.ModelMetadataRequest(name=NAME), timeout=5)
    # the protocol's properties (field 6, not in Triton's messages): our parameters, as text
    properties = grpc_protocol.ModelMetadataResponse.FromString(raw.SerializeToString())
    assert properties.properties["sha256"] == http["parameters"]["sha256"]
    assert json.loads(properties.properties["classes"]) == http["parameters"]["classes"]


def test_triton_defaults_equal_the_http_json_answer(world, client):
    num, cat = arrays(0)
    result = client.infer(NAME, inputs(num, cat))  # raw in, raw out: the client's defaults
    response = result.get_response()
    assert response.model_version == "1" and len(response.raw_output_contents) == 2
    assert response.parameters["compensated"].bool_param is True
    body = world["client"].post(
        f"/v2/models/{NAME}/infer",
        json={"inputs": [
            {"name": n, "datatype": t, "shape": list(d.shape), "data": d.ravel().tolist()}
            for n, t, d in (("num", "FP32", num), ("cat", "INT64", cat))
        ]},
    ).json()  # fmt: skip
    assert body["parameters"]["compensated"] is True
    for output in body["outputs"]:
        got = result.as_numpy(output["name"])
        want = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        np.testing.assert_array_equal(got, want)

    other_types = client.infer(NAME, inputs(num, cat.astype(np.int16), "INT16"), model_version="1")
    np.testing.assert_array_equal(other_types.as_numpy("prediction"), result.as_numpy("prediction"))
    plain = client.infer(
        NAME, inputs(num, cat), outputs=[triton.InferRequestedOutput("prediction")],
        parameters={"compensate": False}, request_id="r-7",
    )  # fmt: skip
    assert [o.name for o in plain.get_response().outputs] == ["prediction"]
    assert plain.get_response().id == "r-7"
    assert plain.get_response().parameters["compensated"].bool_param is False


def test_typed_contents_come_back_typed(client, channel):
    num, cat = arrays(1, rows=2)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    typed = stub.ModelInfer(typed_request(num, cat), timeout=5)
    assert not typed.raw_output_contents
    raw = client.infer(NAME, inputs(num, cat))
    for output in typed.outputs:
        values = np.asarray(output.contents.fp32_contents, dtype=np.float32).reshape(output.shape)
        np.testing.assert_array_equal(values, raw.as_numpy(output.name))


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (lambda r: setattr(r, "model_name", "other"), "NOT_FOUND", "unknown model 'other'"),
        (lambda r: setattr(r, "model_version", "2"), "NOT_FOUND", "version '2' of"),
        (lambda r: setattr(r.inputs[1], "datatype", "FP32"), "INVALID_ARGUMENT", "not one of"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 7), "INVALID_ARGUMENT", "does not match"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 51), "INVALID_ARGUMENT", "not in 1..50"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 23), "INVALID_ARGUMENT",
         "23 bytes of FP32"),
        (lambda r: r.outputs.add(name="logits"), "INVALID_ARGUMENT", "unknown output"),
        (lambda r: r.parameters["compensate"].MergeFrom(tpb.InferParameter(string_param="yes")),
         "INVALID_ARGUMENT", "compensate must be true or false"),
    ],
)  # fmt: skip
def test_errors_have_their_codes(channel, change, code, message):
    request = raw_request(*arrays(2, rows=2))
    change(request)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=5)
    assert err.value.code() == getattr(grpc.StatusCode, code)
    assert message in err.value.details()


@pytest.mark.parametrize(
    ("datatype", "field", "values", "message"),
    [
        ("INT8", "int_contents", [300] * 8, "must fit INT8"),
        ("UINT8", "uint_contents", [256] * 8, "must fit UINT8"),
        ("INT64", "int64_contents", [256] * 8, "bucket ids must be in 0..255"),
        ("INT64", "fp32_contents", [1.0] * 8, "values go in contents.int64_contents"),
    ],
)
def test_values_must_fit_the_declared_type(channel, datatype, field, values, message):
    request = typed_request(*arrays(3, rows=2))
    retyped(1, datatype, field, values)(request)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()


def test_a_triton_client_error_carries_the_code_and_the_reason(client):
    num, cat = arrays(4)
    with pytest.raises(InferenceServerException) as err:
        client.infer(NAME, inputs(num, cat), model_version="999")
    assert err.value.status() == "StatusCode.NOT_FOUND" and "not served" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata(NAME, "999")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_requests_are_counted_with_http_statuses(world, client):
    def count(endpoint: str, code: str) -> float:
        labels = {"endpoint": endpoint, "code": code}
        return world["metrics"].get_sample_value("streamlearn_serve_requests_total", labels) or 0

    before = count("grpc_infer", "200"), count("grpc_infer", "404"), count("grpc_live", "200")
    client.infer(NAME, inputs(*arrays(5)))
    with pytest.raises(InferenceServerException):
        client.infer("other", inputs(*arrays(5)))
    client.is_server_live()
    after = count("grpc_infer", "200"), count("grpc_infer", "404"), count("grpc_live", "200")
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


def test_not_ready_before_a_model_is_published(tmp_path):
    settings = small_settings(registry={"path": str(tmp_path)}, serve={"grpc_port": 0})
    registry = FilesystemRegistry(tmp_path)
    with serving(settings, registry) as (_, runtime, _):
        server = GrpcServer(runtime, settings.serve)
        client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            assert client.is_server_live() and not client.is_server_ready()
            assert not client.is_model_ready(NAME)
            with pytest.raises(InferenceServerException) as err:
                client.infer(NAME, inputs(*arrays(6)))
            assert err.value.status() == "StatusCode.UNAVAILABLE"
        finally:
            client.close()
            server.stop(0)
    registry.close()


def _malformed(rng: random.Random) -> list[tuple[str, bytes, bool]]:
    """(what, serialized request, must it be refused?): truncated, bit-flipped and random
    bytes (some stay valid), and requests that are well-formed messages but wrong tensors."""
    num, cat = arrays(7, rows=1)
    good = raw_request(num, cat).SerializeToString()
    out = [(f"cut {n}", good[:n], False) for n in range(1, len(good), max(1, len(good) // 30))]
    for i in range(40):
        flipped = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        out.append((f"flip {i}", bytes(flipped), False))
        out.append((f"random {i}", rng.randbytes(rng.randint(1, 200)), False))

    def raw(change) -> None:
        request = raw_request(num, cat)
        change(request)
        out.append((f"raw {len(out)}", request.SerializeToString(), True))

    def typed(change) -> None:
        request = typed_request(num, cat)
        change(request)
        out.append((f"typed {len(out)}", request.SerializeToString(), True))

    for size in (0, 1, 31, 33, 36, 64):  # num needs 32 bytes
        raw(lambda r, n=size: r.raw_input_contents.__setitem__(0, b"\1" * n))
    raw(lambda r: r.raw_input_contents.__setitem__(1, b"\1" * 31))
    raw(lambda r: r.raw_input_contents.__setitem__(0, b"\xff" * 32))  # NaN
    raw(lambda r: r.raw_input_contents.pop())
    raw(lambda r: r.raw_input_contents.append(b"\0" * 8))
    raw(lambda r: r.inputs[0].contents.fp32_contents.extend([0.0] * 8))  # raw and typed
    raw(lambda r: r.inputs.pop())
    raw(lambda r: r.inputs.add(name="num", datatype="FP32", shape=[1, 8]))
    for shape in ([2**62, 8], [1, 2**40], [-1, 8], [1, -8], [1], [1, 8, 1], [], [0, 8],
                  [-(2**63), 8], [2**31, 2**31]):  # fmt: skip
        raw(lambda r, s=shape: (r.inputs[0].ClearField("shape"), r.inputs[0].shape.extend(s)))
    for datatype in ("BYTES", "", "fp32", "FP32 ", "BF16", "BOOL", "FP16", "INT64"):
        raw(lambda r, d=datatype: setattr(r.inputs[0], "datatype", d))
    for name in ("", "nums", "cat", "NUM"):
        raw(lambda r, n=name: setattr(r.inputs[0], "name", n))
    for model, version in (("", ""), ("other", ""), (NAME, "0"), (NAME, "abc"), (NAME, "1 ")):
        raw(lambda r, m=model, v=version: (setattr(r, "model_name", m),
                                           setattr(r, "model_version", v)))  # fmt: skip
    raw(lambda r: r.outputs.add(name=""))
    raw(lambda r: r.parameters["compensate"].MergeFrom(tpb.InferParameter(int64_param=1)))
    raw(lambda r: r.parameters["compensate"].SetInParent())  # set, with no value
    raw(lambda r: r.ClearField("inputs"))
    for values in ([float("nan")] * 8, [float("inf")] * 8, [0.0] * 7, [0.0] * 9, []):
        typed(retyped(0, "FP32", "fp32_contents", values))
    for datatype, field, values in (
        ("FP64", "fp64_contents", [1e300] * 8),
        ("FP16", "fp32_contents", [0.0] * 8),
        ("FP64", "fp32_contents", [0.0] * 8),
        ("BOOL", "bool_contents", [True] * 8),
        ("INT32", "int_contents", [0] * 8),
    ):
        typed(retyped(0, datatype, field, values))
    for datatype, field, values in (
        ("UINT64", "uint64_contents", [2**64 - 1] * 4),
        ("INT64", "int64_contents", [-1] * 4),
        ("UINT16", "uint_contents", [70_000] * 4),
        ("INT16", "int_contents", [-40_000] * 4),
        ("INT64", "int64_contents", [1, 2]),
        ("INT64", "bytes_contents", [b"1"] * 4),
    ):
        typed(retyped(1, datatype, field, values))
    typed(lambda r: r.inputs[1].contents.fp32_contents.append(1.0))  # two fields given
    return out


def test_a_hundred_malformed_requests_and_the_server_lives(world, channel, client):
    send = channel.unary_unary(INFER)  # bytes as they are
    cases = _malformed(random.Random(11))
    assert len(cases) >= 100
    refused = 0
    for what, payload, must_refuse in cases:
        code = _code(lambda p=payload: send(p, timeout=5))
        assert code not in CLIENT_FAULTS, (what, payload[:80])
        assert code != grpc.StatusCode.OK or not must_refuse, (what, payload[:80])
        refused += code != grpc.StatusCode.OK
    assert refused > len(cases) * 0.8
    huge = raw_request(*arrays(8)).SerializeToString() + b"\x3a\x83\x80\x04" + b"\0" * 65_539
    assert _code(lambda: send(huge, timeout=5)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.is_server_live()
    assert client.infer(NAME, inputs(*arrays(9))).as_numpy("prediction").shape[0] == 3
    assert 'code="500"' not in world["client"].get("/metrics").text


def test_a_busy_grpc_port_is_a_one_line_startup_error(tmp_path, monkeypatch, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        monkeypatch.setenv("STREAMLEARN_SERVE__GRPC_PORT", str(busy.getsockname()[1]))
        argv = ["serve", "--registry", str(tmp_path), "--port", str(free_port())]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "serve.grpc_port (STREAMLEARN_SERVE__GRPC_PORT): cannot listen on" in err


def test_streamlearn_serve_runs_both_servers_and_stops_both(tmp_path):
    publish_trained(tmp_path)
    http, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMLEARN_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["STREAMLEARN_SERVE__GRPC_PORT"] = str(grpc_port)
    command = [sys.executable, "-m", "streamlearn", "serve", "--registry", str(tmp_path),
               "--port", str(http)]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=stderr)
    client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        deadline = time.monotonic() + 60
        while not _ready(client):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert client.infer(NAME, inputs(*arrays(10))).as_numpy("hidden").shape == (3, 16)
        assert httpx.get(f"http://127.0.0.1:{http}/v2/health/ready").json()["ready"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    for port in (http, grpc_port):  # both closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)


def _ready(client) -> bool:
    try:
        return client.is_server_ready()
    except InferenceServerException:  # not listening yet
        return False
