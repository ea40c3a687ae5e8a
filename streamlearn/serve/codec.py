"""Request parsing and response shaping for the HTTP v2 (KServe) and v1 endpoints.

Every way a request can be wrong ends here as :class:`ApiError` with a 4xx status and a message
that says what to fix, checked *before* anything reaches onnxruntime: a malformed tensor must be
a 400, never a 500 from deep inside the runtime. v2 bodies are JSON, or JSON followed by binary
tensor data (the binary tensor data extension: ``Inference-Header-Content-Length`` gives the
JSON's length, each binary input its ``parameters.binary_data_size``); outputs come back binary
when asked (``parameters.binary_data_output`` on the request, ``parameters.binary_data`` on an
output), as Triton's client asks by default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from streamlearn.export.artifact import ModelBundle
from streamlearn.serve.inference import OUTPUTS, InferenceRequest, InferenceResult, build_request
from streamlearn.serve.tensors import ApiError, TensorIn

__all__ = [
    "HEADER_LENGTH",
    "parse_body",
    "parse_instances",
    "parse_v2",
    "v2_response",
]

HEADER_LENGTH = "inference-header-content-length"  # the binary extension's header


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON (non-finite numbers are not accepted)")


def parse_body(body: bytes) -> Any:
    """Strict JSON: NaN/Infinity literals, invalid UTF-8 and nesting deeper than the parser's
    recursion limit are a 400."""
    if not body:
        raise ApiError(400, "request body is empty; send a JSON object")
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None


def _object(payload: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(payload, dict):
        raise ApiError(400, f"{what} must be a JSON object, got {type(payload).__name__}")
    return payload


# -- v1: raw feature dicts ---------------------------------------------------------------------
def parse_instances(payload: Any, max_batch: int) -> list[dict[str, Any]]:
    """``{"instances": [{feature: value, ...}, ...]}`` → checked feature dicts."""
    instances = _object(payload, "request body").get("instances")
    if not isinstance(instances, list) or not instances:
        raise ApiError(400, 'body needs "instances": a non-empty list of feature objects')
    if len(instances) > max_batch:
        raise ApiError(413, f"{len(instances)} instances exceed the limit of {max_batch}")
    for i, row in enumerate(instances):
        if not isinstance(row, dict):
            raise ApiError(400, f"instances[{i}] must be an object of feature: value")
        for name, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ApiError(400, f"instances[{i}].{name}: number out of range")
            if value is not None and not isinstance(value, (int, float, str)):
                raise ApiError(
                    400,
                    f"instances[{i}].{name}: values must be numbers, booleans, strings or "
                    f"null, got {type(value).__name__}",
                )
    return instances


# -- v2: tensors, JSON or binary ---------------------------------------------------------------
def parse_v2(
    body: bytes, header_length: str | None, bundle: ModelBundle, max_batch: int
) -> InferenceRequest:
    """A v2 inference request: the whole ``body``, and the binary extension's header if sent."""
    json_part, binary = _split(body, header_length)
    payload = _object(parse_body(json_part), "request body")
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, 'body needs "inputs": a list of tensors named num and cat')
    tensors, offset = [], 0
    for i, spec in enumerate(inputs):
        spec = _object(spec, f"inputs[{i}]")
        size = _binary_size(spec.get("parameters"), f"inputs[{i}]")
        if size is None:
            tensors.append(TensorIn(spec.get("name"), spec.get("datatype"), spec.get("shape"),
                                    data=spec.get("data")))  # fmt: skip
            continue
        if "data" in spec:
            raise ApiError(400, f"inputs[{i}]: give data or binary_data_size, not both")
        if offset + size > len(binary):
            raise ApiError(400, f"inputs[{i}]: binary_data_size {size} runs past the body's end")
        raw = binary[offset : offset + size]
        offset += size
        tensors.append(TensorIn(spec.get("name"), spec.get("datatype"), spec.get("shape"), raw=raw))
    if offset != len(binary):
        raise ApiError(400, f"{len(binary) - offset} bytes of binary data belong to no input")
    params = _object(payload.get("parameters") or {}, "parameters")
    default_binary = params.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise ApiError(400, "parameters.binary_data_output must be true or false")
    outputs = _requested_outputs(payload.get("outputs"), default_binary)
    return build_request(
        tensors, outputs, params.get("compensate", True), payload.get("id"), bundle, max_batch
    )


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) by the ``Inference-Header-Content-Length`` header."""
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise ApiError(
            400,
            f"Inference-Header-Content-Length {header_length!r} is not a length within the "
            f"{len(body)}-byte body",
        )
    n = int(header_length)
    return body[:n], body[n:]


def _binary_size(params: Any, where: str) -> int | None:
    if params is None:
        return None
    size = _object(params, f"{where}.parameters").get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ApiError(400, f"{where}: binary_data_size must be a non-negative integer")
    return size


def _requested_outputs(outputs: Any, default_binary: bool) -> tuple[tuple[str, bool], ...]:
    """(name, binary?) per requested output; all of them when none is named."""
    if outputs is None:
        return tuple((name, default_binary) for name in OUTPUTS)
    if not isinstance(outputs, list):
        raise ApiError(400, 'outputs must be a list of {"name": ...}')
    named = []
    for item in outputs:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in OUTPUTS:
            raise ApiError(400, f"unknown output {name!r}; the model gives prediction, hidden")
        params = _object(item.get("parameters") or {}, f"output {name} parameters")
        binary = params.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise ApiError(400, f"output {name}: parameters.binary_data must be true or false")
        named.append((name, binary))
    return tuple(named) or tuple((name, default_binary) for name in OUTPUTS)


def v2_response(
    model_name: str, request: InferenceRequest, result: InferenceResult
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, followed by the binary outputs if any were
    asked for (then ``Inference-Header-Content-Length`` says where the JSON ends)."""
    outputs, blobs = [], []
    for name, binary in request.outputs:
        array = result.output(name)
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if binary:
            blob = array.astype("<f4", copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = array.ravel().tolist()
        outputs.append(tensor)
    doc: dict[str, Any] = {
        "model_name": model_name,
        "model_version": str(result.version),
        "outputs": outputs,
        "parameters": {"compensated": result.compensated},
    }
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return b"".join([head, *blobs]), headers
