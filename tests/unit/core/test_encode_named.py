"""FeatureEncoder.encode_named: values handed over by slot give the arrays encode() makes of
the same rows as dicts, and leave the encoder as encode() leaves it."""

from __future__ import annotations

import numpy as np

from streamlearn.core.features import FeatureEncoder


def test_named_slots_encode_as_dicts_do():
    rows = [
        {"a": 1.5, "b": True, "c": "p", "d": "q\x00"},
        {"b": -2.0, "d": "é"},
        {},
        {"a": 1e308, "c": "p"},
    ]
    by_dicts, by_slots = FeatureEncoder(5, 3, 64), FeatureEncoder(5, 3, 64)
    by_dicts.encode(rows[:1])  # names the slots: a, b numeric; c, d categorical
    by_slots.encode(rows[:1])
    expected = by_dicts.encode(rows)

    names = by_slots.numeric_names
    numeric = np.array([[r.get(n, np.nan) for n in names] for r in rows], dtype=np.float64)
    categorical = {n: [r.get(n) for r in rows] for n in by_slots.categorical_names}
    got = by_slots.encode_named(numeric, categorical)

    np.testing.assert_array_equal(got.num, expected.num)
    np.testing.assert_array_equal(got.cat, expected.cat)
    assert by_slots.state_dict() == by_dicts.state_dict()
