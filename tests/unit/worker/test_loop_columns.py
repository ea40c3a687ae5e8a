"""The worker's column path end to end, against an in-memory Kafka stand-in: the model it learns
is bit for bit the one Prequential.process learns from events.decode's dicts on the same
batches, and its dead letters are byte for byte those events.decode's rejections make."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from worker_support import TOPIC, FakeReader, FakeWriter

from streamlearn.core.prequential import Prequential
from streamlearn.events import Event, Rejection, decode
from streamlearn.settings import Settings, load_settings
from streamlearn.worker.checkpoint import CheckpointStore
from streamlearn.worker.intake import dead_letter_headers
from streamlearn.worker.kafka.client import Record
from streamlearn.worker.loop import Worker

BAD = [
    b"this is not json {",
    b'{"id": "w", "x": {"a": [1, 2]}, "y": 1}',
    b'{"id": "nan", "x": {"a": NaN}, "y": 1}',
    b'{"id": "m", "y": 1}',
    b"[1, 2, 3]",
    b'{"id": "u", "x": {"a": 1.0}, "y": "maybe"}',  # a class outside the fixed ones
    b'{"id": "big", "x": {"a": 1}, "pad": "' + b"z" * 600 + b'"}',
    b'{"id": "e", "x": {}, "extra": "\xc3\x28"}',
    b'{"id": "d", "x": {}, "extra": 1' + b"0" * 5000 + b"}",
]


def settings(tmp_path: Path) -> Settings:
    return load_settings(
        kafka={"topic": TOPIC, "dead_letter_topic": "dlq"},
        learner={"hidden": [16], "device": "cpu", "classes": [0, 1]},
        features={"numeric_slots": 5, "categorical_slots": 2, "hash_buckets": 64},
        source={"batch_size": 8},
        worker={"max_wait_s": 0.01, "poll_timeout_s": 0.01, "max_event_bytes": 512},
        checkpoint={"dir": tmp_path, "every_batches": 7, "every_s": 0},
    )


def stream(n: int) -> list[bytes]:
    """Mostly settled events, with a feature appearing late, strings and bools now and then,
    unlabelled events and malformed messages among them."""
    rng = random.Random(3)
    values = []
    for i in range(n):
        if i % 50 == 7:
            values.append(BAD[i // 50 % len(BAD)])
            continue
        x: dict = {"a": rng.gauss(0, 1), "b": rng.randint(0, 9), "c": rng.choice("pq")}
        if i > n // 2 and rng.random() < 0.5:
            x["late"] = rng.random()
        if rng.random() < 0.02:
            x["b"] = rng.choice(["text", True, None])
        y = int(x["a"] > 0) if rng.random() < 0.9 else None
        values.append(json.dumps({"id": i, "x": x, "y": y}).encode())
    return values


def test_the_worker_learns_what_events_decode_and_dicts_teach(tmp_path: Path):
    values = stream(600)
    s = settings(tmp_path)
    writer = FakeWriter()
    worker = Worker(
        s, Prequential.from_settings(s), FakeReader({(TOPIC, 0): values}), writer,
        CheckpointStore(s.checkpoint.dir),
    )  # fmt: skip
    by_dicts = []
    process = worker.preq.process

    def counted(xs, ys):  # the dict path (the other one calls process_encoded directly)
        by_dicts.append(len(ys))
        return process(xs, ys)

    worker.preq.process = counted
    worker.restore()
    worker.reader.subscribe(worker.topics, worker)
    while worker.positions.get((TOPIC, 0)) != len(values):
        worker.step()
    assert 0 < len(by_dicts) < 10  # of 75 batches: most took the column path, not all

    reference = Prequential.from_settings(s)
    dead = []
    for start in range(0, len(values), 8):  # the worker's batches: 8 records each
        events = []
        for offset in range(start, min(start + 8, len(values))):
            decoded = decode(values[offset], max_bytes=512)
            if isinstance(decoded, Event) and decoded.y not in (None, 0, 1):
                decoded = Rejection("unknown_class", f"label {decoded.y!r} not accepted", b"")
            if isinstance(decoded, Event):
                events.append(decoded)
            else:
                headers = dead_letter_headers(Record(TOPIC, 0, offset, values[offset]), decoded)
                dead.append(("dlq", values[offset], None, tuple(headers)))
        if events:
            reference.process([e.x for e in events], [e.y for e in events])

    assert writer.sent == dead  # the same dead letters, byte for byte
    assert {h[1] for *_, headers in dead for h in headers if h[0] == "dlq.reason"} == {
        b"not_json", b"wrong_type", b"non_finite", b"missing_field", b"not_object",
        b"unknown_class", b"oversized",
    }  # fmt: skip
    assert worker.preq.seen == reference.seen > 500
    assert worker.preq.encoder.state_dict() == reference.encoder.state_dict()
    expected = reference.learner.model.state_dict()
    for name, tensor in worker.preq.learner.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
