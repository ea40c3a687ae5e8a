"""Intake: a polled batch split into events, late labels and rejections; what goes back out.

Validation is strict so nothing malformed reaches the model: a message that does not decode,
or whose label the model cannot take (a class outside fixed classes, a string as a regression
target), becomes a dead-letter record carrying the original bytes, the original headers and
``dlq.*`` headers saying why and where it came from.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from streamlearn.core.prequential import Prequential
from streamlearn.events import Label, Rejection, RejectionReason, decode
from streamlearn.worker.decode import Decoded
from streamlearn.worker.kafka.client import KafkaWriter, Record
from streamlearn.worker.late_labels import LateLabel, decode_label

_ENCODE_ASCII = json.encoder.encode_basestring_ascii  # C-accelerated, as json.dumps uses

__all__ = [
    "Intake",
    "LabelCheck",
    "dead_letter_headers",
    "events_and_labels",
    "label_check",
    "prediction_messages",
    "send_dead_letters",
    "send_predictions",
    "split",
]

# a label the model cannot take → the rejection reason; None when it is fine
LabelCheck = Callable[[Label], RejectionReason | None]

_MAX_DETAIL = 512
_UNCHECKED = "unchecked"  # no verdict on a label yet (a verdict is a reason or None)
_VALUE = operator.attrgetter("value")
_LABEL = operator.attrgetter("y")  # a Decoded's label
_EVENT = operator.itemgetter(1)  # an (event's record, event) pair's event
_REJECTED = Rejection.__instancecheck__  # isinstance(·, Rejection), to map over a batch


@dataclass
class Intake:
    """One batch, sorted: events (with their record), late labels, and rejections."""

    events: list[tuple[Record, Decoded]] = field(default_factory=list)
    labels: list[tuple[Record, LateLabel]] = field(default_factory=list)
    rejected: list[tuple[Record, Rejection]] = field(default_factory=list)


def label_check(preq: Prequential) -> LabelCheck:
    """What the model refuses: strings as regression targets, classes outside fixed ones."""

    def check(y: Label) -> RejectionReason | None:
        if preq.regression:
            return "wrong_type" if isinstance(y, str) else None
        labels = preq.labels  # read each time: a restore replaces the map
        if labels.fixed and labels.lookup(y) is None:
            return "unknown_class"
        return None

    return check


def split(
    records: Sequence[Record],
    labels_topic: str | None,
    max_bytes: int,
    check: LabelCheck,
    decode_event: Callable[[bytes], Decoded | Rejection] | None = None,
) -> Intake:
    """Decode every record of a batch, keeping stream order within each kind. Events are
    decoded by ``decode_event`` (the worker's EventDecoder; by default ``events.decode``).

    Without a labels topic the batch is decoded in one pass, and the usual batch (no
    rejection, every distinct label accepted) becomes the intake's events at once; otherwise,
    and where that batch holds a refusal, record by record."""
    decode_event = decode_event or partial(decode, max_bytes=max_bytes)
    decoded: list[Decoded | Rejection] | None = None
    verdicts: dict[Label, RejectionReason | None] = {}  # a batch holds few distinct labels
    if labels_topic is None:
        values = list(map(_VALUE, records))
        if None in values:  # a tombstone: an empty message
            values = [value or b"" for value in values]
        decoded = list(map(decode_event, values))
        if not any(map(_REJECTED, decoded)):
            labels = set(map(_LABEL, decoded))
            labels.discard(None)
            verdicts = {y: check(y) for y in labels}
            if not any(verdicts.values()):  # a verdict is a reason (a string) or None
                return Intake(events=list(zip(records, decoded, strict=True)))  # type: ignore[arg-type]
    intake = Intake()
    for i, record in enumerate(records):
        raw = record.value or b""
        if labels_topic is not None and record.topic == labels_topic:
            label = decode_label(raw, max_bytes)
            if isinstance(label, LateLabel) and (reason := check(label.y)) is not None:
                label = Rejection(reason, f"label {label.y!r} not accepted", raw)
            if isinstance(label, Rejection):
                intake.rejected.append((record, label))
            else:
                intake.labels.append((record, label))
            continue
        event = decode_event(raw) if decoded is None else decoded[i]
        if not isinstance(event, Rejection) and (y := event.y) is not None:
            if (reason := verdicts.get(y, _UNCHECKED)) is _UNCHECKED:
                reason = verdicts[y] = check(y)
            if reason is not None:
                event = Rejection(reason, f"label {y!r} not accepted", raw)
        if isinstance(event, Rejection):
            intake.rejected.append((record, event))
        else:
            intake.events.append((record, event))
    return intake


def events_and_labels(intake: Intake) -> tuple[list[Decoded], list[Label | None]]:
    """The intake's events and their labels, in stream order."""
    events = list(map(_EVENT, intake.events))
    return events, list(map(_LABEL, events))


def dead_letter_headers(record: Record, rejection: Rejection) -> list[tuple[str, bytes]]:
    """The original headers, then why and where: dlq.reason/detail/topic/partition/offset."""
    return [
        *record.headers,
        ("dlq.reason", rejection.reason.encode()),
        ("dlq.detail", rejection.detail[:_MAX_DETAIL].encode("utf-8", "replace")),
        ("dlq.topic", record.topic.encode()),
        ("dlq.partition", str(record.partition).encode()),
        ("dlq.offset", str(record.offset).encode()),
    ]


def send_dead_letters(
    writer: KafkaWriter, topic: str | None, intake: Intake, counts: dict[str, int]
) -> None:
    """Each rejection counted by reason in ``counts``, and dead-lettered to ``topic`` (if one
    is set) with its original bytes, key and headers."""
    for record, rejection in intake.rejected:
        counts[rejection.reason] = counts.get(rejection.reason, 0) + 1
        if topic is not None:
            headers = dead_letter_headers(record, rejection)
            writer.send(topic, record.value or b"", record.key, headers)


def send_predictions(
    writer: KafkaWriter,
    topic: str,
    intake: Intake,
    prediction: np.ndarray,
    classes: Sequence[Hashable],
    step: int,
) -> int:
    """One prediction message per event of the batch to ``topic``, keyed by the event's key
    (else its id); the number sent. ``prediction``'s first rows are the events' (late-labelled
    rows may follow)."""
    ids = [event.id for _, event in intake.events]
    messages = prediction_messages(ids, prediction[: len(ids)], classes, step)
    for (record, event), message in zip(intake.events, messages, strict=True):
        writer.send(topic, message, record.key or event.id.encode())
    return len(ids)


def prediction_messages(
    ids: Sequence[str], prediction: np.ndarray, classes: Sequence[Hashable], step: int
) -> list[bytes]:
    """``{"id", "prediction", "model_step"}`` per row: the most probable known class (None
    before any class is known) or the regression value, and the learner step that made it.

    The bytes are those of ``json.dumps(..., separators=(",", ":"))``, assembled from parts
    each JSON-encoded once (a class label once per batch, not once per row), which matters
    when every event gets a message."""
    if prediction.ndim == 1:
        values = [_json_number(v) for v in prediction.astype(float).tolist()]
    else:
        known = prediction[: len(ids), : len(classes)]
        best = known.argmax(axis=1) if len(classes) else np.zeros(len(ids), dtype=np.int64)
        found = known.sum(axis=1) > 0 if len(classes) else np.zeros(len(ids), dtype=bool)
        labels = [json.dumps(c) for c in classes]
        pairs = zip(best.tolist(), found.tolist(), strict=True)
        values = [labels[j] if ok else "null" for j, ok in pairs]
    tail = f',"model_step":{json.dumps(step)}}}'
    return [
        f'{{"id":{_json_string(i)},"prediction":{v}{tail}'.encode()
        for i, v in zip(ids, values, strict=True)
    ]


def _json_string(value: object) -> str:
    """``json.dumps(value)``; a str (every event id) by the C escaper json.dumps itself uses."""
    return _ENCODE_ASCII(value) if type(value) is str else json.dumps(value)


def _json_number(value: float) -> str:
    """``json.dumps(value)`` for a float: its repr, or NaN / Infinity / -Infinity."""
    return float.__repr__(value) if math.isfinite(value) else json.dumps(value)
