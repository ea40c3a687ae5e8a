"""In-memory stand-ins for the Kafka client halves the worker drives (importable: tests/ is on
sys.path because of tests/conftest.py). Used by tests/unit/test_worker.py, the metrics tests and
the Prometheus integration test."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from streamlearn.worker.kafka.client import Outbox, RebalanceHandler, Record, TopicPartition

TOPIC = "events"


class FakeReader:
    """One consumer over in-memory partitions; assigns everything on the first poll."""

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

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.on_commit(offsets)
        self.commits.append(dict(offsets))

    def probe(self, timeout_s: float) -> None:
        return None

    def end_offsets(
        self, partitions: Sequence[TopicPartition], timeout_s: float
    ) -> dict[TopicPartition, int]:
        return {tp: len(self.log[tp]) + self.end_offset_error for tp in partitions}

    def close(self) -> None:
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


def event(i: int) -> bytes:
    a = ((i * 37) % 101 - 50) / 25.0
    return json.dumps(
        {"id": f"e-{i}", "x": {"a": a, "c": "r" if i % 2 else "b"}, "y": int(a > 0)}
    ).encode()
