"""Late labels: unlabelled events wait (bounded, TTL'd) for ``{"id": ..., "y": ...}`` by id.

An event without ``y`` is scored when it arrives and kept here; a label that arrives later on
the labels topic takes it out again and the pair is learned from — once, since an entry leaves
the cache when it is joined. Entries older than the TTL, or pushed out because the cache is
full, are counted as ``expired``; labels whose event is not (or no longer) here as
``unmatched``. The cache travels in the checkpoint (wall-clock times, so a TTL spans restarts).
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from streamlearn.events import FeatureValue, Label, Rejection

__all__ = ["LabelCache", "LateLabel", "decode_label"]


@dataclass(frozen=True, slots=True)
class LateLabel:
    """A label for an event seen earlier."""

    id: str
    y: Label


def decode_label(raw: bytes, max_bytes: int = 64 * 1024) -> LateLabel | Rejection:
    """Decode a labels-topic message.

    >>> decode_label(b'{"id": "e-1", "y": 1}')
    LateLabel(id='e-1', y=1)
    >>> decode_label(b'{"id": "e-1"}').reason
    'missing_field'
    """
    if len(raw) > max_bytes:
        return Rejection("oversized", f"{len(raw)} bytes, limit {max_bytes}", raw)
    try:
        doc = json.loads(raw, parse_constant=_no_constants)
    except ValueError as exc:
        return Rejection("not_json", str(exc), raw)
    except _NonFinite as exc:
        return Rejection("non_finite", str(exc), raw)
    if not isinstance(doc, dict):
        return Rejection("not_object", f"top level is {type(doc).__name__}", raw)
    for key in ("id", "y"):
        if doc.get(key) is None:
            return Rejection("missing_field", f"'{key}' is required", raw)
    event_id, y = doc["id"], doc["y"]
    if not isinstance(event_id, str | int) or isinstance(event_id, bool):
        return Rejection("wrong_type", "'id' must be a string or integer", raw)
    if not isinstance(y, str | int | float | bool):
        return Rejection("wrong_type", f"'y' must be a label, got {type(y).__name__}", raw)
    if isinstance(y, float) and not math.isfinite(y):
        return Rejection("non_finite", f"'y' is {y}", raw)
    return LateLabel(str(event_id), y)


class _NonFinite(Exception):
    pass


def _no_constants(token: str) -> float:
    raise _NonFinite(f"JSON constant {token} is not a finite number")


class LabelCache:
    """id → (features, time seen), oldest first, at most ``capacity`` entries."""

    def __init__(self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[dict[str, FeatureValue], float]] = OrderedDict()
        self.joined = 0
        self.unmatched = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, event_id: str, x: Mapping[str, FeatureValue]) -> None:
        """Keep an unlabelled event; the oldest is pushed out when full (counted expired)."""
        if self.capacity == 0:
            return
        self._entries.pop(event_id, None)
        self._entries[event_id] = (dict(x), self._clock())
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.expired += 1

    def join(self, event_id: str) -> dict[str, FeatureValue] | None:
        """The event's features if it is still here (it leaves the cache), else None."""
        self.expire()
        entry = self._entries.pop(event_id, None)
        if entry is None:
            self.unmatched += 1
            return None
        self.joined += 1
        return entry[0]

    def expire(self) -> int:
        """Drop entries older than the TTL; returns how many."""
        horizon = self._clock() - self.ttl_s
        dropped = 0
        while self._entries:
            _, (_, seen) = next(iter(self._entries.items()))
            if seen >= horizon:
                break
            self._entries.popitem(last=False)
            dropped += 1
        self.expired += dropped
        return dropped

    def state_dict(self) -> dict[str, Any]:
        return {
            "entries": [[i, x, t] for i, (x, t) in self._entries.items()],
            "joined": self.joined,
            "unmatched": self.unmatched,
            "expired": self.expired,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._entries = OrderedDict((str(i), (dict(x), float(t))) for i, x, t in state["entries"])
        self.joined = int(state["joined"])
        self.unmatched = int(state["unmatched"])
        self.expired = int(state["expired"])
