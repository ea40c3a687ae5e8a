"""EventDecoder returns what events.decode returns, message for message, and its columns teach
the model exactly what the dicts teach it.

The decoder's promise is an equality with the standard-library definition of the wire format:
the same Event (same values, same types) or the same Rejection (same reason, same detail, same
bytes), whichever path (row, event, fallback) a message takes. Checked on hand-picked messages
at the edges of both parsers and on a seeded fuzz of valid, odd and damaged messages.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from streamlearn.core.features import FeatureEncoder
from streamlearn.core.prequential import Prequential
from streamlearn.events import Event, Rejection, decode
from streamlearn.settings import load_settings
from streamlearn.worker.decode import EventDecoder, Row

NAMES = ["a", "b", "c", "ü ñ", "1"]

EDGES = [
    b'{"id": "e-42", "ts": 1732400000.5, "x": {"a": 31.5, "c": "DE"}, "y": 1}',
    b'{"id": 42, "x": {}}',
    b'{"id": -0, "x": {"a": -0, "b": -0.0}, "y": -0}',
    b'{"id": "a", "x": {"a": 1, "b": 9007199254740993, "c": "q"}}',
    b'{"id": "a", "x": {"a": 18446744073709551615, "b": -9223372036854775809}}',
    b'{"id": "a", "x": {"a": 100000000000000000000, "b": 1e308, "c": "x"}}',
    b'{"id": "a", "x": {"a": 5e-324, "b": 2.4703282292062328e-324, "c": "z"}}',
    b'{"id": "a", "x": {"a": 1e-400, "b": 1.0E+2}}',
    b'{"id": "a", "x": {"a": true, "b": false}}',
    b'{"id": "a", "x": {"a": null, "b": 2}}',
    b'{"id": "a", "x": {"a": 1.5, "a": 2.5}}',
    b'{"id": "a", "x": {"a": [1], "a": 2}}',
    b'{"id": "a", "x": {"a": 2, "a": [1]}}',
    b'{"id": "a", "id": 7, "x": {}}',
    b'{"id": "a", "x": [1], "x": {"a": 1}}',
    b'{"id": "a", "x": {"a": "text in a numeric slot", "c": 3}}',
    b'{"id": "a", "x": {"new": 1.0}}',
    b'{"id": "a", "x": {"c": "\\ud800"}}',
    b'{"id": "a", "x": {"c": "\\uDE00\\uD83D"}}',
    b'{"id": "a", "x": {"c": "\\uD83D\\uDE00 \\u00e9 \\n \\" \\\\ \\/"}}',
    b'{"id": "a", "x": {"c": "nul at the end\\u0000"}}',
    b'{"id": "a", "x": {"\\u0061": 1}}',
    b'{"id": "\xc3\xa9", "x": {"c": "\xc3\xbc", "\xc3\xbc \xc3\xb1": 1}}',
    b'{"id": "\xed\xa0\x80", "x": {}}',
    b'{"id": "a", "x": {}, "extra": "\xed\xa0\x80"}',
    b'{"id": "a", "x": {}, "extra": "\xc3\x28"}',
    b'{"id": "a", "x": {}, "\xff": 1}',
    b'{"id": "a", "x": {"c": "\xc3\x28"}}',
    b'\xef\xbb\xbf{"id": "a", "x": {}}',
    '{"id": "é", "x": {"a": 1.5, "c": "ü"}, "y": 1}'.encode("utf-16"),
    '{"id": "é", "x": {"a": 1.5}, "y": 1}'.encode("utf-32-le"),
    b' \r\n\t{"id": "a", "x": {}} \n',
    b'{"id": "a",\x0c"x": {}}',
    b'{"id": "a", "x": {"c": "\t"}}',
    b'{"id": "a", "x": {"c": "\x7f"}}',
    b'{"id": "a", "x": {}}\x00',
    b'{"id": "a", "x": {}, "extra": NaN}',
    b'{"id": "a", "x": {}, "extra": 1e999}',
    b'{"id": "a", "x": {}, "extra": 1' + b"0" * 5000 + b"}",
    b'{"id": "a", "x": {}, "extra": -1' + b"1" * 4300 + b"}",
    b'{"id": "a", "x": {}, "extra": 1' + b"1" * 4300 + b".5}",
    b'{"id": "a", "x": {"a": 1' + b"0" * 5000 + b"}}",
    b'{"id": 1' + b"0" * 4000 + b', "x": {}}',
    b'{"id": "a", "x": {}, "extra": ' + b"[" * 600 + b"]" * 600 + b"}",
    b'{"id": "a", "x": {}, "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"id": "a", "x": {}, "y": 1' + b"0" * 30 + b"}",
    b'{"id": "a", "x": {}, "y": 1' + b"0" * 400 + b"}",
    b'{"id": "a", "x": {}, "y": 1.5e308}',
    b'{"id": "a", "x": {}, "y": true}',
    b'{"id": "a", "x": {}, "y": "cat"}',
    b'{"id": "a", "x": {}, "y": 2.0}',
    b'{"id": "a", "x": {}, "ts": true}',
    b'{"id": "a", "x": {}, "ts": 17}',
    b'{"id": "a", "x": {"a": 1e999}}',
    b'{"id": "a", "x": {"a": NaN}}',
    b'{"id": "a", "x": {}, "y": -Infinity}',
    b'{"id": "a", "x": {}, "ts": 1' + b"0" * 400 + b"}",
    b'{"id": "a", "x": {"a": 01}}',
    b'{"id": "a", "x": {"a": .5}}',
    b'{"id": "a", "x": {"a": 1.}}',
    b'{"id": "a", "x": {},}',
    b'{"id": "a", "x": {}, "e": [1,]}',
    b"",
    b"not json",
    b"[1, 2]",
    b'"text"',
    b"null",
    b'{"x": {}}',
    b'{"id": "a"}',
    b'{"id": true, "x": {}}',
    b'{"id": 1.5, "x": {}}',
    b'{"id": "a", "x": "age=3"}',
    b'{"id": "a", "x": {"a": {"b": 1}}}',
    b'{"id": "a", "x": {}, "y": [1]}',
    b'{"id": "a", "x": {"pad": "' + b"z" * 70_000 + b'"}}',
]


def as_event(decoded: Event | Row | Rejection) -> Event | Rejection:
    """A row as the Event it stands for (events.decode reads a bool feature as a float)."""
    if not isinstance(decoded, Row):
        return decoded
    x = {}
    for name, value in zip(
        type(decoded.x).__struct_encode_fields__, type(decoded.x).__struct_fields__, strict=True
    ):
        v = getattr(decoded.x, value)
        if v is not None:
            x[name] = float(v) if isinstance(v, bool) else v
    return Event(decoded.id, x, decoded.y, decoded.ts)


def encoder_with(numeric: list[str], categorical: list[str]) -> FeatureEncoder:
    return FeatureEncoder(8, 4, 64, numeric=numeric, categorical=categorical)


def check_same(raw: bytes, decoder: EventDecoder, row) -> None:
    expected = decode(raw, max_bytes=decoder.max_bytes, max_features=decoder.max_features)
    event = decoder.event(raw)
    assert event == expected, raw[:200]
    if isinstance(event, Event):  # the dict path keeps the order of the names, too
        assert list(event.x) == list(expected.x)
    from_row = as_event(row(raw))
    assert from_row == expected, raw[:200]
    for got in (event, from_row):
        if isinstance(got, Event):  # the same types too (1 is not 1.0, True is not 1)
            assert type(got.id) is str and type(got.y) is type(expected.y)
            types = {name: type(value) for name, value in got.x.items()}
            assert types == {name: type(value) for name, value in expected.x.items()}


@pytest.mark.parametrize("raw", EDGES)
def test_edges_decode_as_events_decode_does(raw: bytes):
    decoder = EventDecoder()
    check_same(raw, decoder, decoder.rows(encoder_with(["a", "b", "1"], ["c", "ü ñ"])))


def test_rows_are_taken_where_every_feature_has_a_slot():
    decoder = EventDecoder()
    rows = decoder.rows(encoder_with(["a", "b"], ["c"]))
    assert isinstance(rows(b'{"id": 5, "x": {"a": 1, "b": null, "c": "q"}, "y": 1}'), Row)
    assert rows(b'{"id": 5, "x": {"a": 1}}').id == "5"
    for dict_path in (
        b'{"id": "a", "x": {"a": 1, "new": 2}}',  # a feature without a slot
        b'{"id": "a", "x": {"a": "s"}}',  # a string in a numeric slot
        b'{"id": "a", "x": {"c": 2.5}}',  # a number in a categorical slot
    ):
        assert isinstance(rows(dict_path), Event)


def test_limits_are_those_given():
    decoder = EventDecoder(max_bytes=48, max_features=2)
    rows = decoder.rows(encoder_with(["a", "b", "c"], []))  # more slots than features allowed
    assert isinstance(rows(b'{"id": "a", "x": {"a": 1, "b": 2}}'), Event)
    for raw, reason in (
        (b'{"id": "a", "x": {"a": 1, "b": 2, "c": 3}}', "too_many_features"),
        (b'{"id": "a", "x": {"a": 1}, "padding": 1234567890}', "oversized"),
    ):
        got = rows(raw)
        assert isinstance(got, Rejection) and got.reason == reason
        assert got == decode(raw, max_bytes=48, max_features=2)


def _number(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.randint(-(10**6), 10**6))
    if kind == 1:
        return str(rng.randint(-(2**70), 2**70))
    if kind == 2:
        return repr(rng.uniform(-1e6, 1e6))
    if kind == 3:
        return f"{rng.uniform(-10, 10):.{rng.randint(1, 25)}e}".replace("e", rng.choice("eE"))
    if kind == 4:
        return f"{rng.random()!r}e{rng.randint(-330, 310)}"  # subnormals to near the maximum
    if kind == 5:
        return "1" + "0" * rng.randint(15, 330)
    if kind == 6:
        return f"{rng.randint(0, 99)}.{rng.randint(0, 10**30)}e{rng.randint(-400, 400)}"
    if kind == 7:
        return rng.choice(["-0", "-0.0", "0.0", "1E400", "NaN", "-Infinity", "1e-400"])
    return str(rng.getrandbits(64) * rng.choice([1, -1]))


def _string(rng: random.Random) -> str:
    pieces = ["q", "é", "中", "\\u00e9", "\\ud800", "\\uD83D\\uDE00", "\\n", '\\"', "\\u0000", " "]
    return '"' + "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) + '"'


def _value(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind < 5:
        return _number(rng)
    if kind < 7:
        return _string(rng)
    return rng.choice(["true", "false", "null", "[1]", '{"k": 1}'])


def _message(rng: random.Random) -> bytes:
    names = rng.sample([*NAMES, "new"], rng.randint(0, 5))
    if rng.random() < 0.1 and names:
        names.append(names[0])  # a duplicate key
    x = ", ".join(f'"{n}": {_value(rng)}' for n in names)
    fields = [f'"id": {rng.choice([_string(rng), str(rng.randint(0, 10**20)), "true"])}']
    fields.append(f'"x": {{{x}}}')
    if rng.random() < 0.8:
        fields.append(f'"y": {rng.choice([_number(rng), _string(rng), "true", "null", "[1]"])}')
    if rng.random() < 0.3:
        fields.append(f'"ts": {_value(rng)}')
    if rng.random() < 0.2:
        fields.append(f'"extra": {_value(rng)}')
    rng.shuffle(fields)
    if rng.random() < 0.05:
        fields.pop(rng.randrange(len(fields)))  # a required field may go missing
    raw = ("{" + ", ".join(fields) + "}").encode("utf-8", "surrogatepass")
    if rng.random() < 0.15:  # damage: a byte changed, dropped or doubled
        i = rng.randrange(len(raw))
        action = rng.randrange(3)
        if action == 0:
            raw = raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1 :]
        elif action == 1:
            raw = raw[:i] + raw[i + 1 :]
        else:
            raw = raw[:i] + raw[i : i + 1] + raw[i:]
    return raw


@pytest.mark.parametrize("seed", range(4))
def test_fuzz_decodes_as_events_decode_does(seed: int):
    rng = random.Random(seed)
    decoder = EventDecoder()
    row = decoder.rows(encoder_with(["a", "b", "1"], ["c", "ü ñ"]))
    kinds = set()
    for _ in range(3000):
        raw = _message(rng)
        check_same(raw, decoder, row)
        got = row(raw)
        kinds.add(type(got).__name__ if not isinstance(got, Row) else "Row")
    assert kinds == {"Row", "Event", "Rejection"}  # every path was taken


def _stream(rng: random.Random, n: int) -> list[bytes]:
    """Events whose schema settles, with new features, strings in numeric slots, bools, nulls
    and categorical values now and then, labelled mostly 0/1."""
    out = []
    for i in range(n):
        x: dict = {"a": rng.gauss(0, 1), "b": rng.randint(-5, 5), "c": rng.choice("pqr")}
        if rng.random() < 0.3:
            x["d"] = rng.choice([True, False, None, rng.random()])
        if rng.random() < 0.005:
            x[f"late{rng.randint(0, 3)}"] = rng.random()
        if rng.random() < 0.005:
            x["a"] = "not a number"
        if rng.random() < 0.05:
            x["c"] = rng.choice([None, "p\x00"])
        y = rng.choice([0, 1, 1, None]) if rng.random() < 0.9 else rng.choice(["other", 2])
        out.append(json.dumps({"id": f"e-{i}", "x": x, "y": y}).encode())
    return out


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_the_column_path_learns_the_dict_path_model_bit_for_bit(task: str):
    settings = load_settings(
        learner={"task": task, "hidden": [16], "device": "cpu"},
        features={"numeric_slots": 5, "categorical_slots": 2, "hash_buckets": 64},
    )
    by_dicts, by_columns = Prequential.from_settings(settings), Prequential.from_settings(settings)
    decoder = EventDecoder()
    values = _stream(random.Random(7), 1600)
    taken = {"columns": 0, "dicts": 0}
    for start in range(0, len(values), 32):
        batch = values[start : start + 32]
        events = [decode(v) for v in batch]
        a = by_dicts.process([e.x for e in events], [e.y for e in events])

        row = decoder.rows(by_columns.encoder)
        rows = [row(v) for v in batch]
        assert [as_event(r) for r in rows] == events
        features = decoder.features(rows, by_columns.encoder)
        ys = [r.y for r in rows]
        if isinstance(features, list):
            b = by_columns.process(features, ys)
            taken["dicts"] += 1
        else:
            b = by_columns.process_encoded(features, ys)
            taken["columns"] += 1
        np.testing.assert_array_equal(a.prediction, b.prediction)
        np.testing.assert_array_equal(a.loss, b.loss)
    assert taken["columns"] > 30 and taken["dicts"] > 3  # mostly columns, both paths taken
    assert by_columns.encoder.state_dict() == by_dicts.encoder.state_dict()
    assert by_columns.seen == by_dicts.seen and by_columns.drifts == by_dicts.drifts
    expected = by_dicts.learner.model.state_dict()
    for name, tensor in by_columns.learner.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
