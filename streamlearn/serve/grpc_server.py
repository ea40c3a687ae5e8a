"""The KServe v2 gRPC service: the Open Inference Protocol's ``inference.GRPCInferenceService``.

ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer, on their own
port (``serve.grpc_port``) next to the HTTP server, on the same runtime and the same inference
path: the model is looked up by :func:`~streamlearn.serve.app.served_model` (the served state
read once per request), a request's tensors, typed ``contents`` or ``raw_input_contents`` (what
Triton's client sends), become :class:`TensorIn` values for
:func:`~streamlearn.serve.inference.build_request` and
:func:`~streamlearn.serve.inference.infer`, with HTTP's checks and ``parameters["compensate"]``.
Outputs go back in ``raw_output_contents`` when the inputs came raw (Triton's client reads only
those), as typed ``fp32_contents`` when they came typed (readable by grpcurl and the like).

Errors: an :class:`ApiError`'s status becomes a gRPC code (404 NOT_FOUND, 503 UNAVAILABLE, any
other 4xx INVALID_ARGUMENT), bytes that are no message of the RPC's type are INVALID_ARGUMENT
too (grpcio itself would answer INTERNAL), and only a bug is INTERNAL (logged). Every RPC is
counted in ``streamlearn_serve_requests_total`` under a ``grpc_*`` endpoint with the status
the same request gets over HTTP, so the 5xx alert and the dashboards cover both transports.
grpcio refuses a message over ``serve.max_body_bytes``, and RPCs beyond ``serve.max_in_flight``
at once, with RESOURCE_EXHAUSTED (uncounted: they never reach a handler).

Handlers run on a small thread pool; the model call releases the GIL, and grpcio's core reads
and writes the connections, so a slow client holds no thread.
"""

from __future__ import annotations

import json
import logging
import operator
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from streamlearn import __version__
from streamlearn.serve import grpc_protocol as pb
from streamlearn.serve.app import describe_model, served_model
from streamlearn.serve.inference import (
    OUTPUTS,
    InferenceRequest,
    InferenceResult,
    build_request,
    infer,
)
from streamlearn.serve.runtime import ServingRuntime
from streamlearn.serve.tensors import DATATYPES, ApiError, TensorIn
from streamlearn.settings import ServeSettings

__all__ = ["GrpcServer"]

log = logging.getLogger(__name__)

GRACE_S = 5.0  # in-flight RPCs get this long to finish when the server stops
_WORKERS = 4  # handler threads: the work is short and mostly under the GIL
_CODES = {404: grpc.StatusCode.NOT_FOUND, 503: grpc.StatusCode.UNAVAILABLE}  # else 4xx: INVALID
_CONTENTS = {  # datatype → its typed field in InferTensorContents (FP16 has none: raw only)
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}  # fmt: skip
Handler = Callable[[Any], tuple[Message, int]]  # request → (response, HTTP-equivalent status)


class _Undecodable:
    """What bytes that are no message of an RPC's type deserialize to. Not None: grpcio
    answers INTERNAL to a deserializer that fails or returns None."""


class GrpcServer:
    """The service on ``serve.host:serve.grpc_port`` (0: any free port; :attr:`port` says
    which), bound and started at construction; OSError if the port cannot be bound.
    ``shared``: bound with ``SO_REUSEPORT`` beside the other server processes on ``port``
    (serve/processes.py holds it), instead of refusing a port in use."""

    def __init__(
        self,
        runtime: ServingRuntime,
        settings: ServeSettings,
        *,
        port: int | None = None,
        shared: bool = False,
    ) -> None:
        port = settings.grpc_port if port is None else port
        assert port is not None, "serve.grpc_port is off"
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="streamlearn-grpc")
        self._server = grpc.server(
            self._pool,
            handlers=[_service(runtime, settings)],
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.so_reuseport", int(shared)),  # alone: a port in use is an error
            ],
            maximum_concurrent_rpcs=settings.max_in_flight,
        )
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        try:
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpcio >= 1.5x raises where older ones returned 0
            self.port = 0
        if not self.port:
            raise OSError("the port is in use, or the address is not one of this machine's")
        self._server.start()

    def stop(self, grace_s: float = GRACE_S) -> None:
        """Refuse new RPCs, let in-flight ones finish within ``grace_s``, then close."""
        self._server.stop(grace_s).wait()
        self._pool.shutdown()


def _service(runtime: ServingRuntime, settings: ServeSettings) -> grpc.GenericRpcHandler:
    metrics, name = runtime.metrics, settings.model_name

    def rpc(label: str, request_type: type[Message], handler: Handler) -> grpc.RpcMethodHandler:
        """``handler`` timed and counted, its ApiError turned into the status's gRPC code."""

        def run(request: Message | _Undecodable, context: grpc.ServicerContext) -> Message:
            start, status = time.perf_counter(), 500
            try:
                if isinstance(request, _Undecodable):
                    raise ApiError(400, f"not a valid {request_type.DESCRIPTOR.full_name}")
                response, status = handler(request)
                return response
            except ApiError as exc:
                status = exc.status
                context.abort(_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT), exc.message)
            except Exception:
                log.exception("unhandled error in gRPC %s", label)
                context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            finally:
                metrics.observe_request(label, status, time.perf_counter() - start)

        def parse(data: bytes) -> Message | _Undecodable:
            try:
                return request_type.FromString(data)
            except DecodeError:
                return _Undecodable()

        return grpc.unary_unary_rpc_method_handler(
            run,
            request_deserializer=parse,
            response_serializer=operator.methodcaller("SerializeToString"),
        )

    def live(request: Message) -> tuple[Message, int]:
        return pb.ServerLiveResponse(live=True), 200

    def ready(request: Message) -> tuple[Message, int]:
        loaded = runtime.state.bundle is not None
        return pb.ServerReadyResponse(ready=loaded), 200 if loaded else 503

    def model_ready(request: Any) -> tuple[Message, int]:
        """Not ready (and no error: clients ask this as a yes/no) for another name or
        version, or before a model is loaded; counted with HTTP's 404 or 503."""
        try:
            served_model(runtime, name, request.name, request.version or None)
        except ApiError as exc:
            return pb.ModelReadyResponse(ready=False), exc.status
        return pb.ModelReadyResponse(ready=True), 200

    def server_metadata(request: Message) -> tuple[Message, int]:
        # no extensions: binary_tensor_data is HTTP's; raw contents are core gRPC protocol
        return pb.ServerMetadataResponse(name="streamlearn", version=__version__), 200

    def model_metadata(request: Any) -> tuple[Message, int]:
        bundle = served_model(runtime, name, request.name, request.version or None).bundle
        assert bundle is not None
        doc = describe_model(name, bundle)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        response = pb.ModelMetadataResponse(
            name=doc["name"],
            versions=doc["versions"],
            platform=doc["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                    for t in doc["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                     for t in doc["outputs"]],
            properties={k: v if isinstance(v, str) else json.dumps(v)
                        for k, v in doc["parameters"].items() if v is not None},
        )  # fmt: skip
        return response, 200

    def model_infer(request: Any) -> tuple[Message, int]:
        served = served_model(runtime, name, request.model_name, request.model_version or None)
        assert served.bundle is not None
        tensors, raw = _tensors(request)
        req = build_request(
            tensors,
            _outputs(request, raw),
            _parameter(request.parameters, "compensate", True),
            request.id or None,
            served.bundle,
            settings.max_batch,
        )
        return _response(name, req, infer(runtime, served, req)), 200

    return grpc.method_handlers_generic_handler(
        pb.SERVICE,
        {
            "ServerLive": rpc("grpc_live", pb.ServerLiveRequest, live),
            "ServerReady": rpc("grpc_ready", pb.ServerReadyRequest, ready),
            "ModelReady": rpc("grpc_model_ready", pb.ModelReadyRequest, model_ready),
            "ServerMetadata": rpc(
                "grpc_server_metadata", pb.ServerMetadataRequest, server_metadata
            ),
            "ModelMetadata": rpc("grpc_model_metadata", pb.ModelMetadataRequest, model_metadata),
            "ModelInfer": rpc("grpc_infer", pb.ModelInferRequest, model_infer),
        },
    )


def _tensors(request: Any) -> tuple[list[TensorIn], bool]:
    """The request's inputs as transport-neutral tensors, and whether they came raw: raw
    contents for every input (one each, in order) or typed contents, never both."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ApiError(
            400,
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; give one per "
            "input, in the order of inputs",
        )
    tensors = []
    for i, tensor in enumerate(request.inputs):
        given = [field.name for field, _ in tensor.contents.ListFields()]
        shape = list(tensor.shape)
        if raw:
            if given:
                raise ApiError(
                    400, f"inputs[{i}]: contents and raw_input_contents both given; use one"
                )
            tensors.append(TensorIn(tensor.name, tensor.datatype, shape, raw=raw[i]))
            continue
        field = _CONTENTS.get(tensor.datatype)
        if field is None and tensor.datatype in DATATYPES:
            raise ApiError(
                400, f"inputs[{i}]: {tensor.datatype} has no typed contents; send it raw"
            )
        if field is not None and given and given != [field]:
            raise ApiError(
                400,
                f"inputs[{i}]: {tensor.datatype} values go in contents.{field}, not "
                f"{', '.join(given)}",
            )
        values = list(getattr(tensor.contents, field)) if field else []  # else: bad datatype
        tensors.append(TensorIn(tensor.name, tensor.datatype, shape, data=values))
    return tensors, bool(raw)


def _outputs(request: Any, raw: bool) -> tuple[tuple[str, bool], ...]:
    """(name, raw?) per requested output, all of them when none is named."""
    names = [output.name for output in request.outputs] or list(OUTPUTS)
    for output in names:
        if output not in OUTPUTS:
            raise ApiError(400, f"unknown output {output!r}; the model gives prediction, hidden")
    return tuple((output, raw) for output in names)


def _parameter(parameters: Any, key: str, default: Any) -> Any:
    """A request parameter's value, ``default`` when absent, None when set to no value (which
    build_request refuses as it refuses a mistyped one)."""
    if key not in parameters:
        return default
    choice = parameters[key].WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameters[key], choice)


def _response(name: str, request: InferenceRequest, result: InferenceResult) -> Message:
    response = pb.ModelInferResponse(
        model_name=name, model_version=str(result.version), id=request.id or ""
    )
    response.parameters["compensated"].bool_param = result.compensated
    for output, raw in request.outputs:
        array = result.output(output)
        tensor = response.outputs.add(name=output, datatype="FP32", shape=array.shape)
        if raw:
            response.raw_output_contents.append(array.astype("<f4", copy=False).tobytes())
        else:
            tensor.contents.fp32_contents.extend(array.ravel().tolist())
    return response
