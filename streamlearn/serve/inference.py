"""The one inference path every transport shares (HTTP JSON, HTTP binary, gRPC).

A transport turns its wire format into :class:`TensorIn` values and calls
:func:`build_request`, then :func:`infer`, then encodes the :class:`InferenceResult`. Checks
live here once: inputs against the model (tensors.decode_tensor), options, and outputs that are
not finite (a client's inputs near the float32 limit can overflow the network): those are a
422 naming the cause, never a 500 from a JSON encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.export.artifact import ModelBundle
from streamlearn.serve.runtime import Served, ServingRuntime
from streamlearn.serve.tensors import ApiError, TensorIn, decode_tensor

__all__ = [
    "OUTPUTS",
    "InferenceRequest",
    "InferenceResult",
    "build_request",
    "check_finite",
    "infer",
]

OUTPUTS = ("prediction", "hidden")  # the ONNX graph's outputs, in order


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A checked request: model inputs, the outputs asked for (name, binary?), options."""

    num: np.ndarray  # float32 [N, numeric_slots]
    cat: np.ndarray  # int64 [N, categorical_slots]
    outputs: tuple[tuple[str, bool], ...]
    compensate: bool
    id: str | None


@dataclass(frozen=True, slots=True)
class InferenceResult:
    """What the served model answered, and which version answered it."""

    prediction: np.ndarray
    hidden: np.ndarray
    compensated: bool
    version: int

    def output(self, name: str) -> np.ndarray:
        return self.prediction if name == "prediction" else self.hidden


def build_request(
    tensors: Sequence[TensorIn],
    outputs: tuple[tuple[str, bool], ...],
    compensate: Any,
    request_id: Any,
    bundle: ModelBundle,
    max_batch: int,
) -> InferenceRequest:
    """Check a transport's inputs and options against the served model."""
    given: dict[str, TensorIn] = {}
    for i, tensor in enumerate(tensors):
        if tensor.name not in ("num", "cat"):
            raise ApiError(
                400, f"inputs[{i}]: unknown input {tensor.name!r}; the model takes num, cat"
            )
        if tensor.name in given:
            raise ApiError(400, f"input {tensor.name} given twice")
        given[tensor.name] = tensor
    missing = [n for n in ("num", "cat") if n not in given]
    if missing:
        raise ApiError(400, f"missing input {', '.join(missing)}; the model takes num and cat")
    num = decode_tensor(given["num"], bundle.numeric_slots, max_batch)
    cat = decode_tensor(given["cat"], bundle.categorical_slots, max_batch)
    if len(num) != len(cat):
        raise ApiError(400, f"inputs num and cat have {len(num)} and {len(cat)} rows")
    if cat.min() < 0 or cat.max() >= bundle.hash_buckets:
        raise ApiError(400, f"input cat: bucket ids must be in 0..{bundle.hash_buckets - 1}")
    if not isinstance(compensate, bool):
        raise ApiError(400, "parameters.compensate must be true or false")
    if request_id is not None and not isinstance(request_id, str):
        raise ApiError(400, "id must be a string")
    return InferenceRequest(num, cat, outputs, compensate, request_id)


def infer(runtime: ServingRuntime, served: Served, request: InferenceRequest) -> InferenceResult:
    """Run ``request`` on the ``served`` pair (one consistent version and error memory)."""
    bundle = served.bundle
    assert bundle is not None
    if request.compensate:
        prediction, hidden, compensated = runtime.predict(served, request.num, request.cat)
    else:
        (prediction, hidden), compensated = bundle.run(request.num, request.cat), False
    check_finite(prediction, hidden)
    return InferenceResult(prediction, hidden, compensated, bundle.version)


def check_finite(*outputs: np.ndarray) -> None:
    """422 when an output is not finite: the inputs drove the network past float32."""
    if not all(np.isfinite(o).all() for o in outputs):
        raise ApiError(
            422,
            "the model's output is not finite for these inputs (values too large for float32 "
            "arithmetic); send standardised inputs",
        )
