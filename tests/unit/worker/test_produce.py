import json

import pytest

from streamlearn.errors import SourceError
from streamlearn.events import Event, decode
from streamlearn.worker.kafka.client import Outbox
from streamlearn.worker.kafka.produce import file_messages, produce, synthetic_messages


class Writer(Outbox):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list = []

    def _submit(self, message):
        self.sent.append(message)
        return message

    def _state(self, handle) -> str:
        return "ok"

    def _flush(self, timeout_s: float) -> None:
        return None

    def close(self, timeout_s: float = 10.0) -> None:
        return None


def test_synthetic_messages_are_valid_events_keyed_by_id():
    messages = list(synthetic_messages("sea-drift", 5, 42))
    assert [k for k, _ in messages] == [f"sea-drift-{i}".encode() for i in range(5)]
    for _, value in messages:
        assert isinstance(decode(value), Event)
    assert messages == list(synthetic_messages("sea-drift", 5, 42))  # same seed, same events


def test_file_messages(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"id": "a", "x": {}}\n\nnot json\n')
    assert list(file_messages(path)) == [(b"a", b'{"id": "a", "x": {}}'), (None, b"not json")]
    with pytest.raises(SourceError):
        list(file_messages(tmp_path / "missing.jsonl"))


def test_rate_is_paced_and_everything_is_acknowledged():
    now, sleeps = [0.0], []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    writer = Writer()
    messages = [(None, json.dumps({"id": i}).encode()) for i in range(5)]
    sent = produce(
        writer, "t", messages, rate=10.0, progress=False, clock=lambda: now[0], sleep=sleep
    )
    assert sent == 5 and writer.pending == 0 and writer.delivered == 5
    assert sleeps == pytest.approx([0.1] * 4)  # 5 events at 10/s: 0.4 s
    assert {m[0] for m in writer.sent} == {"t"}
