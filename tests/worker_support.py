"""In-memory stand-ins for the Kafka client halves the worker drives (importable: tests/ is on
sys.path because of tests/conftest.py). Used by tests/unit/test_worker.py, the metrics tests and
the Prometheus integration test."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from streamlearn.events import FeatureValue, Label
from streamlearn.worker.kafka.client import Outbox, RebalanceHandler, Record, TopicPartition
from streamlearn.worker.late_labels import Home, LabelJoin, LateLabel

TOPIC = "events"


class FakeReader:
    """One consumer over in-memory partitions; assigns everything on the first poll."""

    thread_safe = False  # the lag lookup on the loop's thread: deterministic tests

    def __init__(self, log: dict[TopicPartition, list[bytes]], max_per_poll: int = 7) -> None:
        self.log = log
        self.max_per_poll = max_per_poll
        self.position: dict[TopicPartition, int] = {}
        self.handler: RebalanceHandler | None = None
        self.commits: list[dict[TopicPartition, int]] = []
        self.on_commit = lambda offsets: None
        self.end_offset_error = 0  # what end_offsets adds to the truth (tansu answers low)

    def subscribe(self, topics: Sequence[str], handler: RebalanceHandler) -> None:
        self.handler = handler

    def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        assert self.handler is not None
        if not self.position:
            starts = self.handler.assigned(sorted(self.log))
            self.position = {tp: starts.get(tp, 0) for tp in self.log}
        out = []
        for tp in sorted(self.log):
            start = self.position[tp]
            values = self.log[tp][start : start + min(max_records, self.max_per_poll)]
            out += [Record(tp[0], tp[1], start + i, v) for i, v in enumerate(values)]
            self.position[tp] = start + len(values)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.position)

    def commit(self, offsets: Mapping[TopicPartition, int], timeout_s: float | None = None) -> None:
        self.on_commit(offsets)
        self.commits.append(dict(offsets))

    def probe(self, timeout_s: float) -> None:
        return None

    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int]:
        return {tp: len(self.log[tp]) + self.end_offset_error for tp in partitions}

    def close(self, timeout_s: float = 10.0) -> None:
        return None

    def revoke_all(self) -> Mapping[TopicPartition, int]:
        assert self.handler is not None
        offsets = self.handler.revoked(sorted(self.position))
        self.position = {}
        return offsets


class FakeWriter(Outbox):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple] = []
        self.acknowledge = True

    def _submit(self, message):
        self.sent.append(message)
        return message

    def _state(self, handle) -> str:
        return "ok" if self.acknowledge else "pending"

    def _flush(self, timeout_s: float) -> None:
        return None

    def close(self, timeout_s: float = 10.0) -> None:
        return None


def event(i: int, labelled: bool = True) -> bytes:
    """Event ``e-{i}``; its label (``label(i)`` for the labels topic) is y = (a > 0)."""
    a = ((i * 37) % 101 - 50) / 25.0
    doc: dict[str, Any] = {"id": f"e-{i}", "x": {"a": a, "c": "r" if i % 2 else "b"}}
    if labelled:
        doc["y"] = int(a > 0)
    return json.dumps(doc).encode()


def label(i: int) -> bytes:
    """The late label of ``event(i, labelled=False)``."""
    return json.dumps({"id": f"e-{i}", "y": int(json.loads(event(i))["y"])}).encode()


class CountingJoin(LabelJoin):
    """A LabelJoin that also counts, per event id, the pairs it completed, in its checkpointed
    state: after crashes and restarts, the restored counts say how often each id was learned
    from its late label in the history the final model descends from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.completed: dict[str, int] = {}

    def event(
        self, event_id: str, x: Mapping[str, FeatureValue], home: Home = None
    ) -> Label | None:
        y = super().event(event_id, x, home)
        if y is not None:
            self.completed[event_id] = self.completed.get(event_id, 0) + 1
        return y

    def label(self, label: LateLabel, home: Home = None) -> dict[str, FeatureValue] | None:
        x = super().label(label, home)
        if x is not None:
            self.completed[label.id] = self.completed.get(label.id, 0) + 1
        return x

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "completed": dict(self.completed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.completed = {str(k): int(v) for k, v in state["completed"].items()}
