import json

import numpy as np
import pytest

from streamlearn.core.prequential import Prequential
from streamlearn.events import Rejection, decode
from streamlearn.settings import load_settings
from streamlearn.worker.intake import (
    dead_letter_headers,
    events_and_labels,
    label_check,
    prediction_messages,
    split,
)
from streamlearn.worker.kafka.client import Record


def preq(**learner) -> Prequential:
    return Prequential.from_settings(
        load_settings(learner={"device": "cpu", "hidden": [8], **learner})
    )


def test_split_sorts_events_labels_and_rejections_in_order():
    records = [
        Record("ev", 0, 0, b'{"id": "a", "x": {"f": 1}, "y": "yes"}'),
        Record("lab", 0, 0, b'{"id": "a", "y": "no"}'),
        Record("ev", 0, 1, b'{"id": "b", "x": {"f": 1}, "y": "maybe"}'),
        Record("lab", 0, 1, b'{"id": "a", "y": "maybe"}'),
        Record("ev", 0, 2, None),
    ]
    intake = split(records, "lab", 1024, label_check(preq(classes=["no", "yes"])))
    assert [e.id for _, e in intake.events] == ["a"]
    assert [(label.id, label.y) for _, label in intake.labels] == [("a", "no")]
    assert [(r.offset, j.reason) for r, j in intake.rejected] == [
        (1, "unknown_class"),
        (1, "unknown_class"),
        (2, "not_json"),
    ]


def test_label_check_regression_and_open_classes():
    assert label_check(preq(task="regression"))("3") == "wrong_type"
    assert label_check(preq(task="regression"))(3.5) is None
    assert label_check(preq(task="multiclass"))("anything") is None  # classes learned


def test_dead_letter_headers_keep_the_originals_and_say_why():
    record = Record("events", 3, 42, b"{", headers=(("trace", b"t-1"),))
    headers = dict(dead_letter_headers(record, Rejection("not_json", "Expecting value", b"{")))
    assert headers == {
        "trace": b"t-1",
        "dlq.reason": b"not_json",
        "dlq.detail": b"Expecting value",
        "dlq.topic": b"events",
        "dlq.partition": b"3",
        "dlq.offset": b"42",
    }


def test_prediction_messages():
    rows = np.array([[0.2, 0.8, 0.0], [0.9, 0.1, 0.0]])
    docs = [json.loads(m) for m in prediction_messages(["a", "b"], rows, ["no", "yes"], 7)]
    assert docs == [
        {"id": "a", "prediction": "yes", "model_step": 7},
        {"id": "b", "prediction": "no", "model_step": 7},
    ]
    nothing_known = prediction_messages(["c"], np.zeros((1, 3)), [], 0)
    assert json.loads(nothing_known[0])["prediction"] is None
    values = prediction_messages(["r"], np.array([2.5], dtype=np.float32), [], 1)
    assert json.loads(values[0])["prediction"] == 2.5


@pytest.mark.parametrize(
    ("ids", "rows", "classes"),
    [
        (['q"uote', "ünï\u2603", "tab\there", "\x00nul"], np.eye(4, 3), [True, 7, "naïve"]),
        (["a", "b"], np.zeros((2, 2)), []),  # nothing known yet: null
        (["r1", "r2", "r3"], np.array([1e300, float("nan"), -0.0]), []),  # regression
        (["x"], np.array([-float("inf")]), []),
    ],
)
def test_prediction_messages_are_json_dumps_byte_for_byte(ids, rows, classes):
    """Assembled from parts, the messages equal what json.dumps writes for the same dict."""
    step = np.int64(12)  # a numpy step count is written like an int
    got = prediction_messages(ids, rows, classes, int(step))
    if rows.ndim == 1:
        values = [float(v) for v in rows]
    else:
        values = [
            classes[int(r[: len(classes)].argmax())] if len(classes) and r.sum() > 0 else None
            for r in rows
        ]
    expected = [
        json.dumps({"id": i, "prediction": v, "model_step": 12}, separators=(",", ":")).encode()
        for i, v in zip(ids, values, strict=True)
    ]
    assert got == expected


@pytest.mark.parametrize(
    "values",
    [
        [b'{"id": "a", "x": {"f": 1}, "y": "yes"}', b'{"id": 7, "x": {"f": 2}}'],  # every one in
        [b'{"id": "a", "x": {"f": 1}, "y": "yes"}', b"{", b'{"id": "c", "x": {"f": 3}}'],
        [b'{"id": "a", "x": {"f": 1}, "y": "maybe"}', b'{"id": "b", "x": {"f": 1}, "y": "no"}'],
        [None, b'{"id": "b", "x": {"f": 1}, "y": "no"}'],  # a tombstone
        [],
    ],
)
def test_split_without_labels_topic_matches_the_record_by_record_path(values):
    """The batch decoded in one pass gives what the record-by-record path gives (that path
    runs wherever a labels topic is set: here one no record is on), each record decoded once."""
    records = [Record("ev", 0, i, value) for i, value in enumerate(values)]
    check = label_check(preq(classes=["no", "yes"]))
    calls: list[bytes] = []

    def counted(raw: bytes):
        calls.append(raw)
        return decode(raw, max_bytes=1024)

    whole = split(records, None, 1024, check, counted)
    assert calls == [value or b"" for value in values]
    by_record = split(records, "labels", 1024, check)
    assert whole == by_record
    events, ys = events_and_labels(whole)
    assert events == [event for _, event in by_record.events]
    assert ys == [event.y for event in events]
