"""The event wire format: decode and validate bytes into an Event, or say why not.

A Rejection never raises: a long-running consumer turns it into a dead-letter record and a
counter. Decoding is strict about types so nothing malformed can reach the model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "MAX_EVENT_BYTES",
    "Event",
    "FeatureValue",
    "Label",
    "Rejection",
    "RejectionReason",
    "decode",
]

MAX_EVENT_BYTES = 64 * 1024
MAX_FEATURES = 4096

FeatureValue = float | str
Label = int | float | str | bool

RejectionReason = Literal[
    "oversized",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "non_finite",
    "too_many_features",
    "unknown_class",
]


@dataclass(frozen=True, slots=True)
class Event:
    """One labelled (or unlabelled) observation, already validated."""

    id: str
    x: dict[str, FeatureValue]
    y: Label | None = None
    ts: float | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message could not become an Event; travels to the dead-letter topic."""

    reason: RejectionReason
    detail: str
    raw: bytes = field(default=b"", repr=False)


class _Invalid(Exception):
    def __init__(self, reason: RejectionReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _reject_constant(token: str) -> float:
    raise _Invalid("non_finite", f"JSON constant {token} is not a finite number")


# made once: json.loads(raw, parse_constant=...) builds a decoder on every call
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _json(raw: bytes) -> object:
    """``json.loads(raw, parse_constant=_reject_constant)``: the same encoding detection
    (UTF-8/16/32, surrogates passed through) with one shared decoder."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def _number(value: object, where: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise _Invalid("non_finite", f"{where} is beyond the float range") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid("non_finite", f"{where} is {value}")
        return value
    raise _Invalid("wrong_type", f"{where} must be a number, got {type(value).__name__}")


def _features(raw_x: object, max_features: int) -> dict[str, FeatureValue]:
    if not isinstance(raw_x, dict):
        raise _Invalid("wrong_type", f"'x' must be an object, got {type(raw_x).__name__}")
    if len(raw_x) > max_features:
        raise _Invalid("too_many_features", f"{len(raw_x)} features, limit {max_features}")
    x: dict[str, FeatureValue] = {}
    for name, value in raw_x.items():
        kind = type(value)  # JSON gives exact types; the usual values are kept as they are,
        if kind is str or (kind is float and math.isfinite(value)):  # no call per feature
            x[name] = value
        elif value is None:
            continue  # explicit null = missing, imputed downstream
        elif kind is int or kind is bool or kind is float:
            x[name] = _number(value, f"x.{name}")
        else:
            raise _Invalid(
                "wrong_type", f"x.{name} must be a number or string, got {kind.__name__}"
            )
    return x


def _label(value: object) -> Label | None:
    if isinstance(value, int) and not isinstance(value, bool):
        _number(value, "y")  # a class index or target must fit a float
        return value
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, float):
        return _number(value, "y")
    raise _Invalid(
        "wrong_type", f"'y' must be a number, string or bool, got {type(value).__name__}"
    )


def _parse(raw: bytes, max_bytes: int, max_features: int) -> Event:
    if len(raw) > max_bytes:
        raise _Invalid("oversized", f"{len(raw)} bytes, limit {max_bytes}")
    try:
        doc = _json(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise _Invalid("not_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise _Invalid("not_object", f"top level is {type(doc).__name__}, expected an object")
    for key in ("id", "x"):
        if key not in doc:
            raise _Invalid("missing_field", f"'{key}' is required")
    event_id = doc["id"]
    if not isinstance(event_id, str | int) or isinstance(event_id, bool):
        raise _Invalid("wrong_type", "'id' must be a string or integer")
    ts = doc.get("ts")
    ts = None if ts is None else _number(ts, "ts")
    return Event(str(event_id), _features(doc["x"], max_features), _label(doc.get("y")), ts)


def decode(
    raw: bytes, *, max_bytes: int = MAX_EVENT_BYTES, max_features: int = MAX_FEATURES
) -> Event | Rejection:
    """Decode one message value.

    >>> decode(b'{"id": "e-1", "x": {"age": 31.5, "country": "DE"}, "y": 1}')
    Event(id='e-1', x={'age': 31.5, 'country': 'DE'}, y=1, ts=None)
    >>> decode(b'{"id": "e-2", "x": {"age": NaN}}').reason
    'non_finite'
    """
    try:
        return _parse(raw, max_bytes, max_features)
    except _Invalid as exc:
        return Rejection(exc.reason, exc.detail, raw)
    except RecursionError:
        return Rejection("not_json", "nesting too deep", raw)
