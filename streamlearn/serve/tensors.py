"""KServe v2 tensors: datatypes, and one checked decoder for every transport.

A tensor arrives as JSON ``data`` (HTTP), as raw little-endian bytes (HTTP's binary tensor data
extension, gRPC's ``raw_input_contents``) or as typed gRPC contents; all of them end in
:func:`decode_tensor`, which checks the shape against the model's, the declared datatype against
what the input accepts, and every value against the declared datatype (an INT8 of 300 is an
error, not a silent wrap), before converting to what the ONNX graph takes (``num`` float32,
``cat`` int64). Every failure is an :class:`ApiError` (4xx), never an exception from numpy or
onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DATATYPES", "ApiError", "TensorIn", "decode_tensor", "input_datatypes"]

# v2 datatype → numpy dtype (little-endian, as the binary extension and gRPC raw contents are)
DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code).newbyteorder("<")
    for name, code in (
        ("BOOL", "?"), ("UINT8", "u1"), ("UINT16", "u2"), ("UINT32", "u4"), ("UINT64", "u8"),
        ("INT8", "i1"), ("INT16", "i2"), ("INT32", "i4"), ("INT64", "i8"),
        ("FP16", "f2"), ("FP32", "f4"), ("FP64", "f8"),
    )
}  # fmt: skip
_FLOATS = ("FP16", "FP32", "FP64")
_INTEGERS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_ACCEPTED = {"num": _FLOATS, "cat": _INTEGERS}  # what each ONNX input can take
_MODEL_DTYPE = {"num": np.float32, "cat": np.int64}


class ApiError(Exception):
    """A client error: HTTP ``status`` and a message saying what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class TensorIn:
    """One input as a transport gave it: ``data`` (JSON values) or ``raw`` (bytes), not both."""

    name: str
    datatype: Any
    shape: Any
    data: Any = None
    raw: bytes | None = None


def input_datatypes(name: str) -> tuple[str, ...]:
    """The datatypes an input accepts (the model's own first: FP32 for num, INT64 for cat)."""
    accepted = _ACCEPTED[name]
    own = "FP32" if name == "num" else "INT64"
    return (own, *(d for d in accepted if d != own))


def _shape(tensor: TensorIn, width: int, max_batch: int) -> tuple[int, int]:
    shape = tensor.shape
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str)
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise ApiError(400, f"input {tensor.name}: shape must be a list of non-negative integers")
    if len(shape) != 2 or shape[1] != width:
        raise ApiError(
            400, f"input {tensor.name}: shape {list(shape)} does not match the model's [N, {width}]"
        )
    if not 1 <= shape[0] <= max_batch:
        status = 400 if shape[0] < 1 else 413
        raise ApiError(status, f"input {tensor.name}: batch {shape[0]} not in 1..{max_batch}")
    return int(shape[0]), int(shape[1])


def decode_tensor(tensor: TensorIn, width: int, max_batch: int) -> np.ndarray:
    """The checked array for ONNX input ``tensor.name`` (``num`` [N, width] float32 or ``cat``
    [N, width] int64)."""
    rows, cols = _shape(tensor, width, max_batch)
    accepted = _ACCEPTED[tensor.name]
    if tensor.datatype not in accepted:
        raise ApiError(
            400,
            f"input {tensor.name}: datatype {tensor.datatype!r} not one of {list(accepted)}",
        )
    dtype = DATATYPES[tensor.datatype]
    if tensor.raw is not None:
        values = _from_raw(tensor, dtype, rows * cols)
    else:
        values = _from_json(tensor, dtype, rows * cols)
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are refused below
            out = values.astype(dtype).astype(np.float32)  # must fit the declared type too
        if not np.isfinite(out).all():
            raise ApiError(400, f"input {tensor.name}: values must be finite float32 numbers")
        return out.reshape(rows, cols)
    if dtype == DATATYPES["UINT64"] and values.size and values.max() > np.iinfo(np.int64).max:
        raise ApiError(400, f"input {tensor.name}: value beyond the int64 range")
    return values.astype(_MODEL_DTYPE[tensor.name]).reshape(rows, cols)


def _from_raw(tensor: TensorIn, dtype: np.dtype[Any], count: int) -> np.ndarray:
    raw = tensor.raw or b""
    if len(raw) != count * dtype.itemsize:
        raise ApiError(
            400,
            f"input {tensor.name}: {len(raw)} bytes of {tensor.datatype}, its shape needs "
            f"{count * dtype.itemsize}",
        )
    return np.frombuffer(raw, dtype=dtype)


def _from_json(tensor: TensorIn, dtype: np.dtype[Any], count: int) -> np.ndarray:
    data = tensor.data
    if not isinstance(data, list):
        raise ApiError(400, f"input {tensor.name}: data must be a list (flat or nested)")
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError, RecursionError):
        raise ApiError(
            400, f"input {tensor.name}: data is ragged; nest it evenly or flatten it"
        ) from None
    if array.size != count:
        raise ApiError(400, f"input {tensor.name}: {array.size} values, its shape needs {count}")
    array = array.ravel()
    if dtype.kind == "f":
        if array.dtype.kind not in "iuf":
            raise ApiError(400, f"input {tensor.name}: data must hold numbers")
        return array
    if array.dtype.kind not in "iu":
        raise ApiError(400, f"input {tensor.name}: data must hold integers (bucket ids)")
    limits = np.iinfo(dtype)
    if array.size and (array.min() < limits.min or array.max() > limits.max):
        raise ApiError(
            400,
            f"input {tensor.name}: values must fit {tensor.datatype} ({limits.min}..{limits.max})",
        )
    return array
