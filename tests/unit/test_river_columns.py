"""streamlearn.river's pandas path equals its dict path bit for bit, whatever the frame holds.

The ``*_many`` methods hand a DataFrame's columns to the column encoder; the dict path is the
same rows as dicts (missing values left out, as river's sparse rows do) through
``learn_one`` and through ``Prequential.predict`` in one batch (one-row and batched forward
passes may differ in the last float32 bit, so a batch is compared with a batch).
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from streamlearn.river import Classifier, Regressor


def _canonical(value: Any) -> Any:
    """A state as comparable plain values: arrays and floats as their bytes (NaN included)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        return struct.pack("<d", value)
    return value


def _same_state(a: Classifier | Regressor, b: Classifier | Regressor) -> bool:
    a.prequential.learner._idle()
    b.prequential.learner._idle()
    same = _canonical(a.prequential.state_dict()) == _canonical(b.prequential.state_dict())
    return same and a.n_buffered == b.n_buffered


def _records(X: pd.DataFrame) -> list[dict[Hashable, Any]]:
    """X's rows as river's dicts: a missing value is left out."""
    return [{k: v for k, v in r.items() if not pd.isna(v)} for r in X.to_dict("records")]


def _dict_proba(model: Classifier, X: pd.DataFrame) -> np.ndarray:
    """The dict path's probabilities for X's rows, renormalised in float64 over the known
    classes (the estimator's contract)."""
    k = len(model.prequential.classes())
    p = model.prequential.predict(_records(X))[:, :k].astype(np.float64)
    return p / p.sum(axis=1, keepdims=True)


def _frame(n: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Floats, ints, bools and strings with holes; a column first seen late; class 'c' late."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(0, 3, n)
    X = pd.DataFrame(
        {
            "u": u,
            "n": rng.integers(-5, 5, n),
            "f": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
            "flag": rng.random(n) < 0.5,
            "s": pd.Series(np.where(u > 1.5, "hi", "lo"), dtype=object).where(
                rng.random(n) > 0.15, None
            ),
        }
    )
    X["late"] = np.where(np.arange(n) < n // 2, np.nan, rng.normal(size=n))
    y = pd.Series(np.where(np.arange(n) < n // 3, np.minimum(u, 1.9), u).astype(int))
    return X, y.map({0: "a", 1: "b", 2: "c"})


@pytest.mark.parametrize("chunk", [1, 13, 64])
@pytest.mark.parametrize("numbers_only", [False, True], ids=["mixed", "numbers"])
def test_prequential_pandas_path_equals_dict_path(chunk: int, numbers_only: bool) -> None:
    X, y = _frame(300, seed=0)
    if numbers_only:  # floats and ints only: the frame converts in one call
        X = X.drop(columns=["flag", "s"])
    by_columns, by_dicts = Classifier(seed=4, batch_size=8), Classifier(seed=4, batch_size=8)
    for start in range(0, len(X), chunk):
        Xc, yc = X.iloc[start : start + chunk], y.iloc[start : start + chunk]
        proba = by_columns.predict_proba_many(Xc)
        if by_dicts.prequential.classes():
            expected = _dict_proba(by_dicts, Xc)
            assert proba.to_numpy().tobytes() == expected.tobytes()
        assert list(proba.columns) == by_dicts.prequential.classes()
        assert list(proba.index) == list(Xc.index)
        by_columns.learn_many(Xc, yc)
        for x, label in zip(_records(Xc), yc, strict=True):
            by_dicts.learn_one(x, label)
        assert _same_state(by_columns, by_dicts)
    assert sorted(by_columns.prequential.classes()) == ["a", "b", "c"]
    assert by_columns.prequential.classes()[-1] == "c"  # first seen late
    expected_names = ["f", "n", "u", "late"] if numbers_only else ["f", "flag", "n", "u", "late"]
    assert by_columns.prequential.encoder.numeric_names == expected_names


def test_one_row_frames_equal_the_one_row_api() -> None:
    X, y = _frame(200, seed=1)
    model = Classifier(seed=2, batch_size=8)
    model.learn_many(X, y)
    for i, x in enumerate(_records(X.iloc[:20])):
        row = X.iloc[[i]]
        assert model.predict_proba_many(row).iloc[0].to_dict() == model.predict_proba_one(x)
        assert model.predict_many(row).iloc[0] == model.predict_one(x)


def test_predict_many_is_the_most_probable_class() -> None:
    X, y = _frame(200, seed=2)
    model = Classifier(seed=2, batch_size=8)
    model.learn_many(X, y)
    frame = X.iloc[:50].set_axis(range(100, 150))
    expected = model.predict_proba_many(frame).idxmax(axis="columns")
    pd.testing.assert_series_equal(model.predict_many(frame), expected)


def test_column_order_does_not_matter() -> None:
    X, y = _frame(200, seed=3)
    shuffled = X[["late", "s", "u", "flag", "f", "n"]]
    a, b = Classifier(seed=1, batch_size=8), Classifier(seed=1, batch_size=8)
    for start in range(0, len(X), 40):
        pa = a.predict_proba_many(X.iloc[start : start + 40])
        pb = b.predict_proba_many(shuffled.iloc[start : start + 40])
        pd.testing.assert_frame_equal(pa, pb, check_exact=True)
        a.learn_many(X.iloc[start : start + 40], y.iloc[start : start + 40])
        b.learn_many(shuffled.iloc[start : start + 40], y.iloc[start : start + 40])
    assert _same_state(a, b)


def test_pandas_dtypes_and_their_missing_values() -> None:
    # pandas' nullable and categorical dtypes: pd.NA is missing, like None and NaN
    n = 120
    rng = np.random.default_rng(4)
    hole = rng.random(n) < 0.25
    X = pd.DataFrame(
        {
            "i": pd.array(np.where(hole, None, rng.integers(0, 9, n)), dtype="Int64"),
            "b": pd.array(np.where(hole[::-1], None, rng.random(n) < 0.5), dtype="boolean"),
            "x": pd.array(np.where(hole, None, rng.normal(size=n)), dtype="Float64"),
            "s": pd.array(np.where(rng.random(n) < 0.2, None, rng.choice(["p", "q"], n))),
            "c": pd.Categorical(rng.choice(["k", "l", "m"], n)),
            "o": pd.Series(np.where(hole, None, rng.choice(["e", "f"], n)), dtype=object),
        }
    )
    y = pd.Series(pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 2, n)), "Int64"))
    by_columns, by_dicts = Classifier(seed=3, batch_size=8), Classifier(seed=3, batch_size=8)
    for start in range(0, n, 30):
        Xc, yc = X.iloc[start : start + 30], y.iloc[start : start + 30]
        if start:
            proba = by_columns.predict_proba_many(Xc).to_numpy()
            assert proba.tobytes() == _dict_proba(by_dicts, Xc).tobytes()
        by_columns.learn_many(Xc, yc)
        for x, label in zip(_records(Xc), yc, strict=True):
            by_dicts.learn_one(x, label)  # pd.NA: a missing label, as learn_many has it
    assert _same_state(by_columns, by_dicts)
    assert by_columns.prequential.classes() == [0, 1]
    assert by_columns.prequential.encoder.categorical_names == ["c", "o", "s"]


@pytest.mark.parametrize(
    "labels",
    [
        [1.0, np.nan, 0.0, 1.0],  # float Series: NaN is a missing label
        ["a", None, "b", float("nan")],  # object Series: None and NaN
        [True, False, True, True],
        [3, 1, 3, 2],
    ],
)
def test_learn_many_labels_equal_learn_one(labels: list) -> None:
    X = pd.DataFrame({"u": [0.5, 1.5, 2.5, 3.5]}, index=[10, 11, 12, 13])
    y = pd.Series(labels)  # its own index: rows pair by position
    many, one = Classifier(seed=0, batch_size=2), Classifier(seed=0, batch_size=2)
    many.learn_many(X, y)
    for x, label in zip(_records(X), labels, strict=True):
        one.learn_one(x, label)
    assert _same_state(many, one)
    assert many.prequential.classes() == one.prequential.classes()
    assert None not in many.prequential.classes()


def test_regressor_pandas_path_equals_dict_path() -> None:
    X, _ = _frame(160, seed=5)
    rng = np.random.default_rng(5)
    y = pd.Series(np.where(rng.random(len(X)) < 0.1, np.nan, rng.normal(size=len(X))))
    by_columns, by_dicts = Regressor(seed=2, batch_size=8), Regressor(seed=2, batch_size=8)
    for start in range(0, len(X), 24):
        Xc, yc = X.iloc[start : start + 24], y.iloc[start : start + 24]
        predicted = by_columns.predict_many(Xc)
        expected = by_dicts.prequential.predict(_records(Xc)).astype(np.float64)
        assert predicted.to_numpy().tobytes() == expected.tobytes()
        assert list(predicted.index) == list(Xc.index)
        by_columns.learn_many(Xc, yc)
        for x, target in zip(_records(Xc), yc.tolist(), strict=True):
            by_dicts.learn_one(x, target)
    assert _same_state(by_columns, by_dicts)
    assert by_columns.prequential.unknown_labels > 0  # NaN targets: counted, not learned


def test_unseen_columns_take_slots_as_the_dict_path_gives_them() -> None:
    X, y = _frame(64, seed=6)
    by_columns, by_dicts = Classifier(seed=1, batch_size=8), Classifier(seed=1, batch_size=8)
    by_columns.learn_many(X, y)
    for x, label in zip(_records(X), y, strict=True):
        by_dicts.learn_one(x, label)
    new = pd.DataFrame({"zz": [np.nan, 1.0, 2.0], "aa": ["v", None, "w"], "u": [1.0, 2.0, 3.0]})
    proba = by_columns.predict_proba_many(new).to_numpy()
    assert proba.tobytes() == _dict_proba(by_dicts, new).tobytes()
    names = by_columns.prequential.encoder
    assert names.numeric_names == by_dicts.prequential.encoder.numeric_names
    assert names.categorical_names == by_dicts.prequential.encoder.categorical_names == ["s", "aa"]
    assert _same_state(by_columns, by_dicts)


def test_empty_frames() -> None:
    model = Classifier(seed=0, batch_size=4)
    empty = pd.DataFrame({"u": pd.Series([], dtype=float)})
    assert model.predict_proba_many(empty).shape == (0, 0)
    assert model.predict_many(empty).tolist() == []
    model.learn_many(pd.DataFrame({"u": [1.0, 2.0, 3.0]}), pd.Series(["a", "b", "a"]))
    state = _canonical(model.prequential.state_dict())
    model.learn_many(empty, pd.Series([], dtype=object))  # learns nothing
    assert _canonical(model.prequential.state_dict()) == state and model.n_buffered == 3
    proba = model.predict_proba_many(empty)
    assert proba.shape == (0, 2) and list(proba.columns) == ["a", "b"]
    assert (proba.dtypes == np.float64).all()
    assert model.predict_many(empty).tolist() == []
    no_columns = pd.DataFrame(index=[7, 8])  # rows without features: scored like empty dicts
    expected = model.predict_proba_one({})
    assert model.predict_proba_many(no_columns).to_dict("records") == [expected, expected]
    assert Regressor(seed=0).predict_many(empty).dtype == np.float64


def test_the_pandas_path_builds_no_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = _frame(64, seed=7)
    model = Classifier(seed=0, batch_size=8)

    def refuse(*args: object) -> None:
        raise AssertionError("a DataFrame went through the dict encoder")

    monkeypatch.setattr(model.prequential.encoder, "encode", refuse)
    model.predict_proba_many(X)
    model.learn_many(X, y)
    model.predict_many(X)
    assert model.prequential.seen == 64


def test_probability_columns_follow_a_restored_state() -> None:
    X = pd.DataFrame({"u": [0.0, 1.0, 2.0, 3.0]})
    model, other = Classifier(seed=0, batch_size=2), Classifier(seed=0, batch_size=2)
    model.learn_many(X, pd.Series(["a", "b", "a", "b"]))
    other.learn_many(X, pd.Series(["x", "y", "y", "x"]))
    assert list(model.predict_proba_many(X).columns) == ["a", "b"]
    model.prequential.load_state_dict(other.prequential.state_dict())
    assert list(model.predict_proba_many(X).columns) == ["x", "y"]
    assert model.predict_many(X).isin(["x", "y"]).all()
