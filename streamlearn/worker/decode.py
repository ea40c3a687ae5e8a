"""The worker's decoder: the event wire format at msgspec's speed, straight into a batch's columns.

:func:`streamlearn.events.decode` defines the wire format with the standard library, at ≈7 µs a
message in Python. Here msgspec checks the types while it decodes, in C, into typed structs:

- :meth:`EventDecoder.event`: an :class:`~streamlearn.events.Event` with its features in a dict
  (the dict path: late labels, events with features that have no slot yet);
- :meth:`EventDecoder.rows`: a :class:`Row` whose features are a struct with one field per
  feature the encoder has a slot for (numbers in numeric slots, strings in categorical ones);
  :meth:`EventDecoder.features` puts a batch of them straight into the encoder's slots
  (``FeatureEncoder.encode_named``), with no dict per event.

Whatever msgspec does not take as it stands (a rejection, a bool or a string where the schema
has a number, a feature without a slot) goes down a step: row → event → ``events.decode``. So
every rejection, with its reason and detail, is ``events.decode``'s own, and an accepted event
carries the values ``events.decode`` gives. The few messages msgspec would accept where the
standard library does not (invalid UTF-8 or an over-long integer in a field nobody reads, nesting
near the recursion limit) never reach msgspec (:meth:`EventDecoder._plain`).
"""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from streamlearn.core.features import EncodedFeatures, FeatureEncoder
from streamlearn.events import MAX_EVENT_BYTES, MAX_FEATURES, Event, Rejection, decode

__all__ = ["Decoded", "EventDecoder", "Row"]

# Python's limit on an integer's digits (sys.set_int_max_str_digits; 0 = none): json.loads
# rejects a longer integer anywhere in a message, msgspec skips one in a field it does not read
_DIGIT_LIMIT: int = getattr(sys, "get_int_max_str_digits", lambda: 0)()
_LONG_INTEGER = re.compile(rb"[0-9]{%d}" % (_DIGIT_LIMIT + 1)) if _DIGIT_LIMIT else None
# brackets beyond which a message may nest deep enough for json.loads to hit the recursion
# limit (at a depth that depends on the caller's stack): such messages take events.decode
_NESTING = sys.getrecursionlimit() // 2


class Row(msgspec.Struct, gc=False):
    """An event whose features all have a slot; ``x`` is its schema's struct (missing = None).

    ``id`` is always a string once decoded (an integer id is converted, as events.decode does).
    """

    id: str | int
    x: Any
    y: int | float | str | bool | None = None
    ts: float | None = None


Decoded = Event | Row


class _Wire(msgspec.Struct, gc=False):
    """An event with its features in a dict (None = missing, dropped afterwards)."""

    id: str | int
    x: dict[str, float | str | None]
    y: int | float | str | bool | None = None
    ts: float | None = None


class _Schema:
    """The encoder's named slots as a Row type: one optional field per name, numbers (bools
    read as 1.0/0.0, as events.decode reads them) in numeric slots, strings in categorical
    ones; a name without a slot fails the decode."""

    def __init__(self, numeric: list[str], categorical: list[str]) -> None:
        self.slots = (numeric, categorical)  # as the encoder names them
        numeric_set = set(numeric)
        categorical = [name for name in categorical if name not in numeric_set]  # numeric first
        fields = [
            (f"n{i}", float | bool | None, msgspec.field(default=None, name=name))
            for i, name in enumerate(numeric)
        ] + [
            (f"c{i}", str | None, msgspec.field(default=None, name=name))
            for i, name in enumerate(categorical)
        ]
        features = msgspec.defstruct("Features", fields, forbid_unknown_fields=True, gc=False)
        self.row = msgspec.defstruct("Row", [("x", features)], bases=(Row,), gc=False)
        self.decoder = msgspec.json.Decoder(self.row)
        self.width = len(fields)
        self._width_numeric = len(numeric)
        attributes = [f[0] for f in fields]
        # one call per row gets every number (a tuple; a single number for a single name)
        self._numbers = operator.attrgetter(*attributes[: len(numeric)]) if numeric else None
        getters = map(operator.attrgetter, attributes[len(numeric) :])
        self._strings = list(zip(categorical, getters, strict=True))

    def encode(self, rows: Sequence[Row], encoder: FeatureEncoder) -> EncodedFeatures:
        """The rows' values in the encoder's slots: numbers one row per call (None → NaN)."""
        numbers = [self._numbers(r.x) for r in rows] if self._numbers else []
        values = np.array(numbers, dtype=np.float64).reshape(len(rows), self._width_numeric)
        strings = {name: [get(r.x) for r in rows] for name, get in self._strings}
        return encoder.encode_named(values, strings)


def _as_dict(row: Row) -> dict[str, Any]:
    """A row's features as events.decode's dict would hold them (bools stay bools: the encoder
    reads them as 1.0/0.0 either way)."""
    names = type(row.x).__struct_encode_fields__
    values = msgspec.structs.astuple(row.x)
    return {name: v for name, v in zip(names, values, strict=True) if v is not None}


def _label_fits(y: object) -> bool:
    """msgspec keeps an integer label of any size; events.decode rejects one past float's range."""
    if type(y) is int:
        try:
            float(y)
        except OverflowError:
            return False
    return True


class EventDecoder:
    """Decodes message values with msgspec into what ``events.decode`` would return."""

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES, max_features: int = MAX_FEATURES) -> None:
        self.max_bytes = max_bytes
        self.max_features = max_features
        self._events = msgspec.json.Decoder(_Wire)
        self._schema: _Schema | None = None

    def _plain(self, raw: bytes) -> bool:
        """Whether msgspec may judge ``raw``: not oversized, UTF-8 throughout (msgspec checks
        only the strings it reads), no integer past Python's digit limit and no nesting near
        the recursion limit (json.loads rejects both anywhere in a message)."""
        size = len(raw)
        if size > self.max_bytes:
            return False
        if not raw.isascii():
            try:
                raw.decode()
            except UnicodeDecodeError:
                return False
        if size >= _NESTING and raw.count(b"[") + raw.count(b"{") >= _NESTING:
            return False
        if _LONG_INTEGER is not None and size > _DIGIT_LIMIT:
            return _LONG_INTEGER.search(raw) is None
        return True

    def event(self, raw: bytes) -> Event | Rejection:
        """``events.decode(raw)``: the same Event or the same Rejection (the dict path)."""
        if self._plain(raw):
            try:
                wire = self._events.decode(raw)
            except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
                pass
            else:
                x = wire.x
                if len(x) <= self.max_features and _label_fits(wire.y):
                    if None in x.values():
                        x = {name: value for name, value in x.items() if value is not None}
                    return Event(str(wire.id), x, wire.y, wire.ts)
        return decode(raw, max_bytes=self.max_bytes, max_features=self.max_features)

    def rows(self, encoder: FeatureEncoder) -> Callable[[bytes], Decoded | Rejection]:
        """A decoder for one batch: a Row where every feature of the event has a slot in
        ``encoder`` now, else :meth:`event`'s answer. Slots do not change until the batch is
        learned, so the schema is looked up once per batch."""
        names = (encoder.numeric_names, encoder.categorical_names)
        if self._schema is None or self._schema.slots != names:
            self._schema = _Schema(*names)
        schema = self._schema
        if not schema.width or schema.width > self.max_features:  # nothing to fill; unchecked
            return self.event

        def row(raw: bytes) -> Decoded | Rejection:
            if self._plain(raw):
                try:
                    decoded = schema.decoder.decode(raw)
                except (ValueError, RecursionError):
                    pass
                else:
                    if _label_fits(decoded.y):
                        if type(decoded.id) is not str:
                            decoded.id = str(decoded.id)
                        return decoded
            return self.event(raw)

        return row

    def features(
        self, events: Sequence[Decoded], encoder: FeatureEncoder
    ) -> EncodedFeatures | list[dict[str, Any]]:
        """The batch's features: encoded straight from the rows (for
        ``Prequential.process_encoded``) when every event is a row of the schema
        :meth:`rows` saw ``encoder`` name, else one dict per event (``Prequential.process``).
        Both give the model the same values, so it learns the same either way."""
        schema = self._schema
        if schema is not None and all(type(e) is schema.row for e in events):
            return schema.encode(events, encoder)
        return [e.x if isinstance(e, Event) else _as_dict(e) for e in events]
