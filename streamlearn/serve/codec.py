"""Request parsing and response shaping for the v2 (KServe) and v1 endpoints.

Every way a request can be wrong ends here as :class:`ApiError` with a 4xx status and a message
that says what to fix, checked *before* anything reaches onnxruntime: a malformed tensor must be
a 400, never a 500 from deep inside the runtime.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.export.artifact import ModelBundle

__all__ = ["ApiError", "V2Request", "parse_body", "parse_instances", "parse_v2", "v2_outputs"]

_FLOAT_TYPES = {"FP32", "FP64", "FP16"}
_INT_TYPES = {"INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32", "UINT16", "UINT8"}
_OUTPUTS = ("prediction", "hidden")


class ApiError(Exception):
    """A client error: HTTP ``status`` and a message for ``{"error": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON (non-finite numbers are not accepted)")


def parse_body(body: bytes) -> Any:
    """Strict JSON: NaN/Infinity literals and invalid UTF-8 are a 400."""
    if not body:
        raise ApiError(400, "request body is empty; send a JSON object")
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


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


# -- v2: encoded tensors -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class V2Request:
    num: np.ndarray  # float32 [N, d_num]
    cat: np.ndarray  # int64 [N, d_cat]
    outputs: tuple[str, ...]
    compensate: bool
    id: str | None


def _shape(spec: Mapping[str, Any], name: str) -> list[int]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ApiError(400, f"input {name}: shape must be a list of non-negative integers")
    return shape


def _tensor(spec: Mapping[str, Any], name: str, width: int, max_batch: int) -> np.ndarray:
    shape = _shape(spec, name)
    if len(shape) != 2 or shape[1] != width:
        raise ApiError(400, f"input {name}: shape {shape} does not match the model's [N, {width}]")
    if not 1 <= shape[0] <= max_batch:
        raise ApiError(
            400 if shape[0] < 1 else 413, f"input {name}: batch {shape[0]} not in 1..{max_batch}"
        )
    datatype = spec.get("datatype")
    allowed = _FLOAT_TYPES if name == "num" else _INT_TYPES
    if datatype not in allowed:
        raise ApiError(400, f"input {name}: datatype {datatype!r} not one of {sorted(allowed)}")
    data = spec.get("data")
    if not isinstance(data, list):
        raise ApiError(400, f"input {name}: data must be a list (flat or nested)")
    try:
        array = np.asarray(data)
    except ValueError:
        raise ApiError(400, f"input {name}: data is ragged; nest it evenly or flatten it") from None
    if array.size != shape[0] * shape[1]:
        raise ApiError(
            400, f"input {name}: {array.size} values, shape {shape} needs {shape[0] * shape[1]}"
        )
    if name == "num":
        if array.dtype.kind not in "iuf":
            raise ApiError(400, "input num: data must hold numbers")
        with np.errstate(over="ignore"):  # overflow to inf is refused just below
            out = array.astype(np.float32).reshape(shape)
        if not np.isfinite(out).all():
            raise ApiError(400, "input num: values must be finite float32 numbers")
        return out
    if array.dtype.kind not in "iu":
        raise ApiError(400, "input cat: data must hold integers (bucket ids)")
    return array.astype(np.int64).reshape(shape)


def parse_v2(payload: Any, bundle: ModelBundle, max_batch: int) -> V2Request:
    """A KServe v2 inference request for the ONNX inputs ``num`` and ``cat``."""
    body = _object(payload, "request body")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, 'body needs "inputs": a list of tensors named num and cat')
    specs: dict[str, Mapping[str, Any]] = {}
    for i, spec in enumerate(inputs):
        spec = _object(spec, f"inputs[{i}]")
        name = spec.get("name")
        if name not in ("num", "cat"):
            raise ApiError(400, f"inputs[{i}]: unknown input {name!r}; the model takes num, cat")
        if name in specs:
            raise ApiError(400, f"input {name} given twice")
        specs[name] = spec
    missing = [n for n in ("num", "cat") if n not in specs]
    if missing:
        raise ApiError(400, f"missing input {', '.join(missing)}; the model takes num and cat")
    num = _tensor(specs["num"], "num", bundle.numeric_slots, max_batch)
    cat = _tensor(specs["cat"], "cat", bundle.categorical_slots, max_batch)
    if len(num) != len(cat):
        raise ApiError(400, f"inputs num and cat have {len(num)} and {len(cat)} rows")
    if cat.min() < 0 or cat.max() >= bundle.hash_buckets:
        raise ApiError(400, f"input cat: bucket ids must be in 0..{bundle.hash_buckets - 1}")
    outputs = _requested_outputs(body.get("outputs"))
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise ApiError(400, "parameters must be an object")
    compensate = params.get("compensate", True)
    if not isinstance(compensate, bool):
        raise ApiError(400, "parameters.compensate must be true or false")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, "id must be a string")
    return V2Request(num, cat, outputs, compensate, request_id)


def _requested_outputs(outputs: Any) -> tuple[str, ...]:
    if outputs is None:
        return _OUTPUTS
    if not isinstance(outputs, list):
        raise ApiError(400, 'outputs must be a list of {"name": ...}')
    names = []
    for item in outputs:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in _OUTPUTS:
            raise ApiError(400, f"unknown output {name!r}; the model gives prediction, hidden")
        names.append(name)
    return tuple(names) or _OUTPUTS


def v2_outputs(
    names: tuple[str, ...], prediction: np.ndarray, hidden: np.ndarray
) -> list[dict[str, Any]]:
    arrays = {"prediction": prediction, "hidden": hidden}
    return [
        {
            "name": name,
            "datatype": "FP32",
            "shape": list(arrays[name].shape),
            "data": arrays[name].astype(np.float32).ravel().tolist(),
        }
        for name in names
    ]
