"""Late labels: an unlabelled event and its ``{"id", "y"}`` meet by id, in either order.

Two waiting sets, one per side. An event without ``y`` is scored when it arrives; if its label
came first (a backlog read labels-first, a labels partition ahead of its events partition) the
pair is complete at once, else the event waits. A label takes its event out of the waiting
events, or waits itself. Whichever comes second completes the pair, which is then learned
once: an entry leaves its set when it is joined.

Each set is bounded by count and by age (settings ``worker.label_cache_size``/``label_ttl_s``
for events, ``early_label_cache_size``/``early_label_ttl_s`` for labels); what leaves without
a partner is counted as an eviction by side and cause. Both sets travel in the checkpoint with
the offsets of both topics, so after a crash each pair is completed exactly once: a partner
read before the checkpoint is in a set, one read after is read again. Ages are wall-clock
seconds since the entry arrived at the worker, so a wait spans restarts. Each entry remembers
the partition it was read from (its home): a scaled-out worker's cut holds every rank's
entries, and after a restart each rank keeps those of the partitions Kafka gave it
(:meth:`LabelJoin.keep`), since only its owner reads the partner.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from streamlearn.events import FeatureValue, Label, Rejection

__all__ = ["Home", "LabelJoin", "LateLabel", "Waiting", "decode_label"]


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


V = TypeVar("V")
Home = tuple[str, int] | None  # (topic, partition) an entry was read from

Side = Literal["event", "label"]
Cause = Literal["age", "count"]
EVICTIONS: tuple[tuple[Side, Cause], ...] = (
    ("event", "age"), ("event", "count"), ("label", "age"), ("label", "count"),
)  # fmt: skip


class Waiting(Generic[V]):
    """id → (value, arrival time, home partition), oldest first; at most ``capacity`` entries,
    none older than ``ttl_s`` once :meth:`expire` ran. Evictions are counted by cause."""

    def __init__(self, capacity: int, ttl_s: float) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[V, float, Home]] = OrderedDict()
        self.evicted: dict[Cause, int] = {"age": 0, "count": 0}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[str, V, float]]:
        return ((key, value, t) for key, (value, t, _) in self._entries.items())

    def homes(self) -> list[list[Any]]:
        """``[id, topic, partition]`` of the entries whose partition is known."""
        return [[key, *home] for key, (_, _, home) in self._entries.items() if home]

    def keep(self, partitions: set[tuple[str, int]]) -> None:
        """Forget the entries read from other partitions (not an eviction: their owner has
        them)."""
        for key in [k for k, (_, _, h) in self._entries.items() if h and h not in partitions]:
            del self._entries[key]

    def put(self, key: str, value: V, now: float, home: Home = None) -> None:
        """Keep ``value`` (a second one for ``key`` replaces the first and counts as newest);
        the oldest entries are pushed out past ``capacity``."""
        if self.capacity == 0:
            self.evicted["count"] += 1
            return
        self._entries.pop(key, None)
        self._entries[key] = (value, now, home)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evicted["count"] += 1

    def take(self, key: str) -> V | None:
        """The value waiting under ``key`` (it leaves), else None."""
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[0]

    def expire(self, now: float) -> int:
        """Drop entries older than ``ttl_s``; returns how many."""
        horizon = now - self.ttl_s
        dropped = 0
        while self._entries:
            _, (_, arrived, _) = next(iter(self._entries.items()))
            if arrived >= horizon:
                break
            self._entries.popitem(last=False)
            dropped += 1
        self.evicted["age"] += dropped
        return dropped

    def load(
        self, entries: list[tuple[str, V, float]], evicted: Mapping[str, int],
        homes: list[list[Any]] = (),  # type: ignore[assignment]
    ) -> None:  # fmt: skip
        where = {str(k): (str(t), int(p)) for k, t, p in homes}
        self._entries = OrderedDict(
            (str(k), (v, float(t), where.get(str(k)))) for k, v, t in entries
        )
        self.evicted = {"age": int(evicted["age"]), "count": int(evicted["count"])}


class LabelJoin:
    """Events waiting for labels and labels waiting for events; :meth:`event` and :meth:`label`
    complete a pair whichever side comes second (module docstring)."""

    def __init__(
        self,
        events: tuple[int, float],
        labels: tuple[int, float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.events: Waiting[dict[str, FeatureValue]] = Waiting(*events)
        self.labels: Waiting[Label] = Waiting(*labels)
        self._clock = clock
        self.joined = 0  # pairs completed
        self.early = 0  # of which the label came first

    def event(
        self, event_id: str, x: Mapping[str, FeatureValue], home: Home = None
    ) -> Label | None:
        """An unlabelled event (read from ``home``): its label if one waits (the pair is
        complete), else it waits."""
        now = self.expire()
        y = self.labels.take(event_id)
        if y is None:
            self.events.put(event_id, dict(x), now, home)
            return None
        self.joined += 1
        self.early += 1
        return y

    def label(self, label: LateLabel, home: Home = None) -> dict[str, FeatureValue] | None:
        """A label (read from ``home``): its event's features if the event waits (the pair is
        complete), else the label waits for its event."""
        now = self.expire()
        x = self.events.take(label.id)
        if x is None:
            self.labels.put(label.id, label.y, now, home)
            return None
        self.joined += 1
        return x

    def expire(self) -> float:
        """Evict entries past their age on both sides; returns the time it used."""
        now = self._clock()
        self.events.expire(now)
        self.labels.expire(now)
        return now

    def keep(self, partitions: set[tuple[str, int]]) -> None:
        """Only the entries read from ``partitions`` (and those of unknown home) stay."""
        self.events.keep(partitions)
        self.labels.keep(partitions)

    def evictions(self) -> dict[tuple[Side, Cause], int]:
        """Entries that left without a partner, by side and cause."""
        return {(side, cause): self._side(side).evicted[cause] for side, cause in EVICTIONS}

    def _side(self, side: Side) -> Waiting[Any]:
        return self.events if side == "event" else self.labels

    def state_dict(self) -> dict[str, Any]:
        return {
            "events": [[k, x, t] for k, x, t in self.events],
            "labels": [[k, y, t] for k, y, t in self.labels],
            "homes": {"events": self.events.homes(), "labels": self.labels.homes()},
            "evicted": {side: dict(self._side(side).evicted) for side in ("event", "label")},
            "joined": self.joined,
            "early": self.early,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "entries" in state:  # written before labels could wait: events only
            state = {
                "events": state["entries"], "labels": [], "joined": state["joined"], "early": 0,
                "evicted": {"event": {"age": state["expired"], "count": 0},
                            "label": {"age": 0, "count": 0}},
            }  # fmt: skip
        evicted, homes = state["evicted"], state.get("homes", {})  # homes: since scale-out
        events = [(k, dict(x), t) for k, x, t in state["events"]]
        self.events.load(events, evicted["event"], homes.get("events", []))
        self.labels.load([(k, y, t) for k, y, t in state["labels"]], evicted["label"],
                         homes.get("labels", []))  # fmt: skip
        self.joined = int(state["joined"])
        self.early = int(state["early"])
