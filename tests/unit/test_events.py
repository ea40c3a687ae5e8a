import json

import pytest

from streamlearn.events import MAX_EVENT_BYTES, Event, Rejection, decode


def ok(raw: bytes) -> Event:
    result = decode(raw)
    assert isinstance(result, Event), result
    return result


def rejected(raw: bytes, reason: str, **kwargs) -> Rejection:
    result = decode(raw, **kwargs)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, (result.reason, result.detail)
    assert result.raw == raw  # the original bytes travel to the dead-letter topic
    assert result.detail
    return result


def test_wire_format_example():
    raw = b'{"id": "e-42", "ts": 1732400000.5, "x": {"age": 31.5, "country": "DE"}, "y": 1}'
    assert ok(raw) == Event("e-42", {"age": 31.5, "country": "DE"}, 1, 1732400000.5)


def test_integer_id_becomes_string_and_y_optional():
    event = ok(b'{"id": 42, "x": {}}')
    assert event.id == "42"
    assert event.y is None
    assert event.ts is None


def test_labels_keep_their_type():
    assert ok(b'{"id": "a", "x": {}, "y": "cat"}').y == "cat"
    assert ok(b'{"id": "a", "x": {}, "y": 2.5}').y == 2.5
    y_true = ok(b'{"id": "a", "x": {}, "y": true}').y
    assert y_true is True
    y_int = ok(b'{"id": "a", "x": {}, "y": 1}').y
    assert y_int == 1 and type(y_int) is int


def test_null_feature_is_missing():
    assert ok(b'{"id": "a", "x": {"a": null, "b": 2}}').x == {"b": 2.0}


def test_bool_and_int_features_become_numbers():
    x = ok(b'{"id": "a", "x": {"t": true, "f": false, "i": 3}}').x
    assert x == {"t": 1.0, "f": 0.0, "i": 3.0}
    assert all(type(v) is float for v in x.values())


def test_integer_and_odd_feature_names_survive():
    x = ok(json.dumps({"id": "a", "x": {"1": 1.0, "ü ñ": "é"}}).encode()).x
    assert x == {"1": 1.0, "ü ñ": "é"}


def test_oversized():
    raw = b'{"id": "a", "x": {"pad": "' + b"z" * MAX_EVENT_BYTES + b'"}}'
    rejected(raw, "oversized")
    rejected(b'{"id": "a", "x": {}}', "oversized", max_bytes=10)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b'{"id": "a", "x": {}',
        b"\xff\xfe\xfa{}",  # invalid UTF-8
        b'{"id": "a", "x": {"c": "\xc3\x28"}}',  # invalid UTF-8 inside a string
        b'{"id": "a", "x": {"a": 1' + b"0" * 5000 + b"}}",  # beyond int parsing limits
    ],
)
def test_not_json(raw):
    rejected(raw, "not_json")


def test_deep_nesting_is_rejected_not_raised():
    raw = b'{"id": "a", "x": {}, "y": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    result = decode(raw, max_bytes=len(raw))
    assert isinstance(result, Rejection)
    assert result.reason in ("not_json", "wrong_type")


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"3", b"null"])
def test_not_object(raw):
    rejected(raw, "not_object")


@pytest.mark.parametrize(("raw", "field"), [(b'{"x": {}}', "id"), (b'{"id": "a"}', "x")])
def test_missing_field(raw, field):
    assert field in rejected(raw, "missing_field").detail


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "a", "x": [1, 2]}',
        b'{"id": "a", "x": "age=3"}',
        b'{"id": "a", "x": {"a": [1]}}',
        b'{"id": "a", "x": {"a": {"b": 1}}}',
        b'{"id": "a", "x": {}, "y": [1]}',
        b'{"id": "a", "x": {}, "y": {"k": 1}}',
        b'{"id": 1.5, "x": {}}',
        b'{"id": true, "x": {}}',
        b'{"id": null, "x": {}}',
        b'{"id": ["a"], "x": {}}',
        b'{"id": "a", "x": {}, "ts": "yesterday"}',
    ],
)
def test_wrong_type(raw):
    rejected(raw, "wrong_type")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id": "a", "x": {"a": NaN}}',
        b'{"id": "a", "x": {"a": Infinity}}',
        b'{"id": "a", "x": {"a": -Infinity}}',
        b'{"id": "a", "x": {"a": 1e999}}',  # parses to inf
        b'{"id": "a", "x": {"a": 1' + b"0" * 400 + b"}}",  # int beyond float range
        b'{"id": "a", "x": {}, "y": NaN}',
        b'{"id": "a", "x": {}, "y": -1e999}',
        b'{"id": "a", "x": {}, "y": 1' + b"0" * 400 + b"}",
        b'{"id": "a", "x": {}, "ts": NaN}',
        b'{"id": "a", "x": {}, "ts": 1e999}',
        b'{"id": "a", "x": {}, "ts": 1' + b"0" * 400 + b"}",
    ],
)
def test_non_finite(raw):
    rejected(raw, "non_finite")


def test_too_many_features():
    x = {f"f{i}": i for i in range(11)}
    raw = json.dumps({"id": "a", "x": x}).encode()
    rejected(raw, "too_many_features", max_features=10)
    assert isinstance(decode(raw, max_features=11), Event)


def test_lone_surrogate_decodes_to_a_string():
    # valid JSON escape; downstream hashing must cope (see test_features)
    assert ok(b'{"id": "a", "x": {"c": "\\ud800"}}').x == {"c": "\ud800"}


def test_rejection_repr_hides_raw_bytes():
    result = decode(b"secret-bytes")
    assert isinstance(result, Rejection)
    assert "secret-bytes" not in repr(result)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_json_in_any_encoding_json_loads_accepts(encoding):
    """Bytes are decoded as json.loads decodes them (UTF-8/16/32, with or without a BOM)."""
    raw = '{"id": "é", "x": {"a": 1.5, "b": "ü"}, "y": 1}'.encode(encoding)
    assert decode(raw) == Event("é", {"a": 1.5, "b": "ü"}, 1)
