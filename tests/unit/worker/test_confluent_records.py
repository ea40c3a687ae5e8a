"""confluent-kafka's Messages as Records: records.c's ``messages`` against confluent.py's loop
(the same Records, in order), and the loop's handling of messages that carry an error."""

from __future__ import annotations

import logging

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

from streamlearn.errors import KafkaUnavailable  # noqa: E402
from streamlearn.worker.kafka import confluent, native_records  # noqa: E402
from streamlearn.worker.kafka.client import Record  # noqa: E402

Message, KafkaError = confluent_kafka.Message, confluent_kafka.KafkaError
native = pytest.mark.skipif(
    native_records.parser() is None, reason="the record parser (records.c) is not built"
)


def messages() -> list[object]:
    """Messages with every shape of key, value and headers a consumer hands out."""
    return [
        Message(topic="events", partition=0, offset=7, key=b"k", value=b'{"x": 1}'),
        Message(topic="events", partition=2, offset=0, key=None, value=None),
        Message(topic="labels", partition=1, offset=9, value=b"", headers=[]),
        Message(
            topic="events",
            partition=0,
            offset=8,
            value=b"v",
            headers=[("trace", b"abc"), ("empty", None), ("blank", b""), ("trace", b"2")],
        ),
    ]


def test_the_loop_builds_each_messages_fields_in_order():
    records = confluent._records(messages())
    assert all(type(r) is Record for r in records)
    assert records == [
        ("events", 0, 7, b'{"x": 1}', b"k", ()),
        ("events", 2, 0, None, None, ()),
        ("labels", 1, 9, b"", None, ()),
        ("events", 0, 8, b"v", None, (("trace", b"abc"), ("empty", b""), ("blank", b""),
                                       ("trace", b"2"))),
    ]  # fmt: skip


@native
def test_records_c_builds_what_the_loop_builds():
    batch = messages()
    built = native_records.parser().messages(Record, batch)
    assert built == confluent._records(batch)
    assert all(type(r) is Record for r in built)
    assert built[3].headers[1] == ("empty", b"") and built[0].tp == ("events", 0)
    assert native_records.parser().messages(Record, []) == []


@native
def test_a_message_with_an_error_leaves_it_to_the_loop():
    notice = Message(topic="events", partition=0, error=KafkaError(KafkaError._PARTITION_EOF))
    assert native_records.parser().messages(Record, [*messages(), notice]) is None


@native
@pytest.mark.parametrize(
    "bad, error",
    [
        ("not a list", TypeError),
        ([object()], AttributeError),  # not a Message: no error() method
    ],
)
def test_records_c_refuses_what_is_not_a_list_of_messages(bad, error):
    with pytest.raises(error):
        native_records.parser().messages(Record, bad)


def test_notices_are_logged_and_left_out(caplog):
    notice = Message(topic="events", partition=0, error=KafkaError(KafkaError._PARTITION_EOF))
    batch = [*messages()[:2], notice, *messages()[2:]]
    with caplog.at_level(logging.DEBUG, logger=confluent.__name__):
        assert confluent._records(batch) == confluent._records(messages())
    assert "consumer notice" in caplog.text


def test_a_fatal_error_stops_the_reader():
    fatal = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    with pytest.raises(KafkaUnavailable, match="fatal consumer error"):
        confluent._records([*messages(), Message(topic="events", error=fatal)])


class _Consumer:
    """What ConfluentReader.poll calls of librdkafka's consumer: ``consume``, here one poll's
    messages once."""

    def __init__(self, polled: list[object]) -> None:
        self.polled = polled

    def consume(self, num_messages: int, timeout: float) -> list[object]:
        polled, self.polled = self.polled[:num_messages], self.polled[num_messages:]
        return polled


@pytest.mark.parametrize("with_notice", [False, True])
def test_poll_hands_out_the_records_either_way(monkeypatch, with_notice):
    from streamlearn.settings import load_settings

    monkeypatch.setattr(confluent, "Consumer", lambda config: None)
    reader = confluent.ConfluentReader(load_settings(kafka={"client": "confluent"}).kafka)
    notice = Message(topic="events", partition=0, error=KafkaError(KafkaError._PARTITION_EOF))
    reader.consumer = _Consumer([*messages(), *([notice] if with_notice else [])])
    assert reader.poll(0.0, 500) == confluent._records(messages())
