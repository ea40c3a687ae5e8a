import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from streamlearn.core.features import FeatureEncoder, stable_bucket
from streamlearn.kernels.compiled import CompiledStatistics
from streamlearn.kernels.reference.statistics import NumpyStatistics

ROWS = [
    {"age": 31.5, "country": "DE", "vip": True},
    {"age": 40.0, "country": "FR"},
    {"country": "DE", "income": 1200},
    {"age": None, "country": None, "income": 900, "vip": False},
]


def statistics_for(library):
    """The feature statistics' kernel: numpy (library None) or the compiled one."""
    return NumpyStatistics() if library is None else CompiledStatistics(library)


def test_stable_bucket_is_crc32_in_range():
    assert stable_bucket("country", "DE", 4096) == zlib.crc32(b"country=DE") % 4095 + 1
    buckets = [stable_bucket("c", str(i), 16) for i in range(2000)]
    assert min(buckets) == 1  # 0 is reserved for "missing"
    assert max(buckets) == 15
    assert len(set(buckets)) == 15


def test_stable_bucket_is_pinned():
    # fixed values: a change here breaks every saved model's categorical embeddings
    assert stable_bucket("country", "DE", 4096) == 101
    assert [stable_bucket("city", c, 1024) for c in ("Berlin", "Paris", "")] == [
        zlib.crc32(f"city={c}".encode()) % 1023 + 1 for c in ("Berlin", "Paris", "")
    ]


_SUBPROCESS = """
import json
from streamlearn.core.features import FeatureEncoder, stable_bucket
rows = [{"z": "a", "b": 1.0, "m": "q"}, {"m": "r", "a": 2.0, "k": "s"}]
enc = FeatureEncoder(numeric_slots=4, categorical_slots=4, hash_buckets=512)
out = enc.encode(rows)
print(json.dumps({
    "bucket": stable_bucket("country", "DE", 4096),
    "cat": out.cat.tolist(),
    "numeric": enc.numeric_names,
    "categorical": enc.categorical_names,
}))
"""


def _run_with_hashseed(seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_hashing_and_slots_independent_of_pythonhashseed():
    a, b = _run_with_hashseed("1"), _run_with_hashseed("4242")
    assert a == b
    assert a["bucket"] == 101
    assert a["numeric"] == ["b", "a"]  # row 1 first, then row 2's new name
    assert a["categorical"] == ["m", "z", "k"]


def test_slot_assignment_independent_of_feature_order():
    forward = {"b": 1.0, "a": 2.0, "c": "x", "d": 3.0}
    backward = dict(reversed(list(forward.items())))
    e1, e2 = FeatureEncoder(8, 4, 64), FeatureEncoder(8, 4, 64)
    o1, o2 = e1.encode([forward]), e2.encode([backward])
    assert e1.numeric_names == e2.numeric_names == ["a", "b", "d"]
    assert e1.categorical_names == ["c"]
    np.testing.assert_array_equal(o1.num, o2.num)
    np.testing.assert_array_equal(o1.cat, o2.cat)


def test_encode_shapes_values_and_missing():
    enc = FeatureEncoder(numeric_slots=5, categorical_slots=3, hash_buckets=128)
    out = enc.encode(ROWS)
    assert len(out) == 4
    assert out.num.shape == (4, 5) and out.num.dtype == np.float64
    assert out.cat.shape == (4, 3) and out.cat.dtype == np.int64
    assert enc.numeric_names == ["age", "vip", "income"]
    assert enc.categorical_names == ["country"]
    age, vip, income = 0, 1, 2
    assert out.num[0, age] == 31.5 and out.num[0, vip] == 1.0
    assert np.isnan(out.num[1, vip])  # absent -> NaN
    assert np.isnan(out.num[3, age])  # None -> NaN
    assert out.num[3, vip] == 0.0
    assert out.num[2, income] == 1200.0
    assert np.isnan(out.num[:, 3:]).all()  # unused slots stay missing
    assert out.cat[0, 0] == out.cat[2, 0] == stable_bucket("country", "DE", 128)
    assert out.cat[1, 0] == stable_bucket("country", "FR", 128)
    assert out.cat[3, 0] == 0  # missing category
    assert (out.cat[:, 1:] == 0).all()
    assert enc.ignored == 0 and enc.mismatched == 0


def test_integer_keys_and_values():
    enc = FeatureEncoder(4, 2, 64)
    out = enc.encode([{0: 5, 1: "x"}, {0: 7, 1: 3}])
    assert enc.numeric_names == ["0"] and enc.categorical_names == ["1"]
    assert out.num[:, 0].tolist() == [5.0, 7.0]
    # a number sent to a categorical slot is hashed as its text
    assert out.cat[1, 0] == stable_bucket("1", "3", 64)


def test_capacity_overflow_counted_as_ignored():
    enc = FeatureEncoder(numeric_slots=2, categorical_slots=1, hash_buckets=64)
    out = enc.encode([{"a": 1.0, "b": 2.0, "c": 3.0, "s": "x", "t": "y"}, {"c": 4.0, "t": "z"}])
    assert enc.numeric_names == ["a", "b"]
    assert enc.categorical_names == ["s"]
    assert enc.ignored == 4  # c, t in row 0 and row 1
    assert out.num.shape == (2, 2)
    assert out.num[0].tolist() == [1.0, 2.0]


def test_explicit_schema_ignores_unknown_names():
    enc = FeatureEncoder(4, 2, 64, numeric=["age"], categorical=["country"])
    assert not enc.auto
    out = enc.encode([{"age": 3.0, "country": "DE", "other": 1.0, "city": "Rome"}])
    assert enc.numeric_names == ["age"] and enc.categorical_names == ["country"]
    assert enc.ignored == 2
    assert out.num[0, 0] == 3.0 and np.isnan(out.num[0, 1:]).all()


def test_explicit_schema_wider_than_slots_refused():
    with pytest.raises(ValueError, match="slots"):
        FeatureEncoder(1, 1, 64, numeric=["a", "b"])


def test_string_sent_to_numeric_slot_is_mismatched():
    enc = FeatureEncoder(4, 2, 64)
    enc.encode([{"age": 3.0}])
    out = enc.encode([{"age": "old"}, {"age": 5.0}])
    assert enc.mismatched == 1
    assert np.isnan(out.num[0, 0]) and out.num[1, 0] == 5.0
    assert enc.categorical_names == []  # the string did not open a categorical slot
    enc.encode_columns({"age": np.array(["young", None, 2.0], dtype=object)})
    assert enc.mismatched == 2


def test_lone_surrogate_is_hashed_not_raised():
    enc = FeatureEncoder(2, 2, 64)
    out = enc.encode([{"c": "\ud800"}])  # decode() lets this JSON escape through
    assert 1 <= out.cat[0, 0] < 64


def _with_nans(rng, n, d, frac=0.2):
    data = rng.normal(3.0, 2.0, size=(n, d)) * rng.uniform(0.1, 10, size=d)
    data[rng.random((n, d)) < frac] = np.nan
    return data


def test_chan_batch_statistics_match_numpy():
    rng = np.random.default_rng(11)
    names = [f"x{i}" for i in range(6)]  # statistics are kept for named slots only
    enc = FeatureEncoder(numeric_slots=6, categorical_slots=1, hash_buckets=16, numeric=names)
    chunks = [_with_nans(rng, n, 6) for n in (1, 7, 50, 3, 200, 1)]
    chunks[1][:, 4] = np.nan  # a column absent from a whole batch
    chunks[0][:, 5] = np.nan  # ...and from the very first one
    for chunk in chunks:
        enc.observe(chunk)
    data = np.concatenate(chunks)
    np.testing.assert_array_equal(enc.count, (~np.isnan(data)).sum(axis=0))
    np.testing.assert_allclose(enc.mean, np.nanmean(data, axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        enc.m2 / (enc.count - 1), np.nanvar(data, axis=0, ddof=1), rtol=1e-10
    )


def test_observe_all_missing_is_a_no_op():
    enc = FeatureEncoder(3, 1, 16)
    enc.observe(np.full((4, 3), np.nan))
    assert enc.count.sum() == 0 and enc.mean.sum() == 0 and enc.m2.sum() == 0


def test_standardize_uses_statistics_clips_and_imputes_zero(library):
    rng = np.random.default_rng(5)
    enc = FeatureEncoder(3, 1, 16, numeric=["a", "b", "c"], statistics=statistics_for(library))
    data = rng.normal([10.0, -4.0, 0.0], [2.0, 0.5, 1.0], size=(500, 3))
    data[:, 2] = 7.0  # constant column: std 0 must not divide by zero
    enc.observe(data)
    query = np.array([[12.0, -4.0, 7.0], [np.nan, 1e9, 8.0], [10.0, -1e9, np.nan]])
    z = enc.standardize(query)
    assert z.dtype == np.float32
    mean, std = np.mean(data[:, 0]), np.std(data[:, 0], ddof=1)
    assert z[0, 0] == pytest.approx((12.0 - mean) / std, rel=1e-5)
    assert z[1, 0] == 0.0 and z[2, 2] == 0.0  # missing -> the mean
    assert z[1, 1] == 8.0 and z[2, 1] == -8.0  # clipped
    assert z[0, 2] == 0.0 and z[1, 2] == pytest.approx(1.0)  # constant column: std treated as 1
    assert np.isfinite(z).all()


def test_standardize_before_any_statistics_is_identity_with_imputation(library):
    enc = FeatureEncoder(2, 1, 16, numeric=["a", "b"], statistics=statistics_for(library))
    z = enc.standardize(np.array([[1.5, np.nan]]))
    assert z.tolist() == [[1.5, 0.0]]


def test_slots_without_a_name_are_neither_observed_nor_standardised(library):
    """The encoder's own output holds NaN there; statistics cover the named slots only."""
    enc = FeatureEncoder(3, 1, 16, statistics=statistics_for(library))
    feats = enc.encode([{"a": 2.0}, {"a": 4.0}])
    enc.observe(feats.num)
    assert enc.count.tolist() == [2.0, 0.0, 0.0] and enc.mean[0] == 3.0
    stray = np.array([[5.0, 9.0, -9.0]])  # values in unnamed slots: not from this encoder
    enc.observe(stray)
    assert enc.count.tolist() == [3.0, 0.0, 0.0]
    z = enc.standardize(stray)
    seen = np.array([2.0, 4.0, 5.0])
    expected = (5.0 - seen.mean()) / seen.std(ddof=1)
    assert z[0, 1:].tolist() == [0.0, 0.0] and z[0, 0] == pytest.approx(expected, rel=1e-6)


def test_compiled_standardize_equals_numpys_bit_for_bit(compiled):
    """70 named of 80 slots (more than the C side's block of 64), NaN, ±inf, huge values,
    a constant column, integer input."""
    rng = np.random.default_rng(21)
    encoders = [
        FeatureEncoder(80, 1, 16, statistics=statistics_for(library))
        for library in (None, compiled)
    ]
    data = rng.normal(rng.normal(0, 50, 70), rng.uniform(0.01, 30, 70), size=(300, 70))
    data[:, 5] = 3.0
    rows = [{f"x{j:02d}": float(v) for j, v in enumerate(row)} for row in data]
    for encoder in encoders:
        encoder.observe(encoder.encode(rows).num)
    query = encoders[0].encode(rows[:40]).num * rng.choice([0.5, 1.0, 40.0], size=(40, 80))
    query[rng.random(query.shape) < 0.05] = np.nan
    query[0, :3] = [np.inf, -np.inf, 1e308]
    numpy_z, compiled_z = (encoder.standardize(query) for encoder in encoders)
    assert compiled_z.dtype == np.float32 and np.array_equal(compiled_z, numpy_z)
    assert not compiled_z[:, 70:].any() and (np.abs(compiled_z) == 8.0).any()
    as_ints = np.arange(160).reshape(2, 80)
    assert np.array_equal(encoders[1].standardize(as_ints), encoders[0].standardize(as_ints))


@pytest.mark.parametrize("gaps", [False, True])
def test_compiled_observe_equals_numpys(compiled, gaps):
    """Bit for bit when every value is present (the usual batch); with gaps numpy sums the
    masked columns in another order, so to rounding. A column never present, values that
    overflow the variance (counted, statistics kept), 70 named slots of 80."""
    rng = np.random.default_rng(23)
    encoders = [
        FeatureEncoder(80, 1, 16, statistics=statistics_for(library))
        for library in (None, compiled)
    ]
    names = [{f"x{j:02d}": 0.0 for j in range(70)}]
    for encoder in encoders:
        encoder.encode(names)  # name the 70 slots
    for step in range(12):
        data = rng.normal(rng.normal(0, 50, 80), rng.uniform(0.01, 30, 80), size=(33, 80))
        data[:, 70:] = np.nan  # unnamed slots are missing in the encoder's own output
        if gaps and step % 3:
            data[rng.random(data.shape) < 0.2] = np.nan
            data[:, 7] = np.nan  # never present in this batch
        if step == 8:
            data[0, 4] = 1e300  # the variance overflows: kept, counted
        for encoder in encoders:
            encoder.observe(data)
    numpy_form, compiled_form = encoders
    assert np.array_equal(compiled_form.count, numpy_form.count)
    for name in ("mean", "m2"):
        got, want = getattr(compiled_form, name), getattr(numpy_form, name)
        if gaps:
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=name)
        else:
            assert np.array_equal(got, want), name
    assert compiled_form.overflowed == numpy_form.overflowed == 1


def test_a_state_of_another_width_is_refused():
    state = FeatureEncoder(4, 1, 16).state_dict()
    with pytest.raises(ValueError, match="another width"):
        FeatureEncoder.from_state_dict({**state, "mean": [0.0] * 3})


def test_encode_and_encode_columns_agree():
    rng = np.random.default_rng(3)
    n = 40
    rows = []
    for i in range(n):
        row = {"a": float(rng.normal()), "b": int(rng.integers(0, 5)), "c": f"v{i % 7}"}
        row["flag"] = bool(i % 2)
        if i % 5 == 1:  # missing values in later rows
            row["a"] = None
            del row["c"]
        rows.append(row)
    columns = {
        "a": np.array([np.nan if r["a"] is None else r["a"] for r in rows]),
        "b": np.array([r["b"] for r in rows]),
        "c": np.array([r.get("c") for r in rows], dtype=object),
        "flag": np.array([r["flag"] for r in rows]),
    }
    e1, e2 = FeatureEncoder(6, 3, 256), FeatureEncoder(6, 3, 256)
    o1, o2 = e1.encode(rows), e2.encode_columns(columns)
    assert e1.numeric_names == e2.numeric_names
    assert e1.categorical_names == e2.categorical_names
    np.testing.assert_array_equal(o1.num, o2.num)
    np.testing.assert_array_equal(o1.cat, o2.cat)
    # and on a second batch with an unknown column, both count it as ignored
    full1, full2 = FeatureEncoder(1, 1, 64), FeatureEncoder(1, 1, 64)
    full1.encode([{"a": 1.0}])
    full2.encode_columns({"a": [1.0]})
    full1.encode([{"a": 2.0, "z": 3.0}, {"z": None}])
    full2.encode_columns({"a": [2.0, np.nan], "z": [3.0, None]})
    assert full1.ignored == full2.ignored == 1


def test_encode_columns_empty_and_numpy_scalars():
    enc = FeatureEncoder(2, 1, 16)
    out = enc.encode_columns({})
    assert out.num.shape == (0, 2)
    out = enc.encode_columns({"x": np.array([np.float32(1.5), np.float32(2.5)])})
    assert out.num[:, 0].tolist() == [1.5, 2.5]


def test_state_dict_round_trip_through_json():
    rng = np.random.default_rng(9)
    enc = FeatureEncoder(numeric_slots=4, categorical_slots=2, hash_buckets=64)
    first = enc.encode([*ROWS, {"extra": 1.0, "more": 2.0, "x": "y", "w": "v"}])
    enc.observe(first.num)
    enc.observe(_with_nans(rng, 30, 4))
    state = json.loads(json.dumps(enc.state_dict()))  # JSON-serialisable
    restored = FeatureEncoder.from_state_dict(state)
    assert restored.numeric_names == enc.numeric_names
    assert restored.categorical_names == enc.categorical_names
    assert (restored.ignored, restored.mismatched) == (enc.ignored, enc.mismatched)
    batch = [{"age": 50.0, "country": "IT", "new": 1.0}, {"income": 5.0, "vip": True}]
    a, b = enc.encode(batch), restored.encode(batch)
    np.testing.assert_array_equal(a.num, b.num)
    np.testing.assert_array_equal(a.cat, b.cat)
    np.testing.assert_array_equal(enc.standardize(a.num), restored.standardize(b.num))
    assert restored.ignored == enc.ignored


def test_explicit_schema_survives_state_round_trip():
    enc = FeatureEncoder(4, 2, 64, numeric=["age"], categorical=["country"])
    restored = FeatureEncoder.from_state_dict(json.loads(json.dumps(enc.state_dict())))
    assert not restored.auto
    restored.encode([{"newcomer": 1.0}])
    assert restored.numeric_names == ["age"] and restored.ignored == 1


def test_encode_and_encode_columns_agree_when_names_appear_in_later_rows():
    rows = [{"m": 1.0}, {"z": "a", "b": 2.0}, {"a": 3.0, "c": "q"}, {"m": 4.0}]
    names = ["m", "z", "b", "a", "c"]
    columns = {n: np.array([r.get(n) for r in rows], dtype=object) for n in names}
    e1, e2 = FeatureEncoder(3, 1, 64), FeatureEncoder(3, 1, 64)
    o1, o2 = e1.encode(rows), e2.encode_columns(columns)
    assert e1.numeric_names == e2.numeric_names == ["m", "b", "a"]  # by first row, then name
    assert e1.categorical_names == e2.categorical_names == ["z"]
    assert e1.ignored == e2.ignored == 1  # "c": no categorical slot left
    np.testing.assert_array_equal(o1.num, o2.num)
    np.testing.assert_array_equal(o1.cat, o2.cat)


def test_a_numeric_name_first_seen_mid_batch_pads_the_rows_before_it():
    enc = FeatureEncoder(3, 1, 16)
    out = enc.encode([{"a": 1.0}, {"a": 2.0, "b": 5}, {"a": None, "b": True}, {"a": 4.0}])
    assert enc.numeric_names == ["a", "b"]
    np.testing.assert_array_equal(
        out.num[:, :2], [[1.0, np.nan], [2.0, 5.0], [np.nan, 1.0], [4.0, np.nan]]
    )
    assert np.isnan(out.num[:, 2]).all()


def test_rows_with_settled_keys_still_count_names_without_a_slot():
    enc = FeatureEncoder(1, 1, 16)  # one numeric slot: "b" never gets one
    enc.encode([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}, {"a": 5.0, "b": 6.0}])
    assert enc.numeric_names == ["a"] and enc.ignored == 3


def test_infinite_values_are_missing_and_counted_on_both_paths():
    rows = [{"a": 1.0, "b": float("inf")}, {"a": float("-inf"), "b": 2.0}]
    by_rows = FeatureEncoder(3, 1, 16)
    num = by_rows.encode(rows).num
    assert np.isnan(num[0, 1]) and np.isnan(num[1, 0]) and by_rows.non_finite == 2
    by_columns = FeatureEncoder(3, 1, 16)
    columns = {"a": np.array([1.0, -np.inf]), "b": np.array([np.inf, 2.0])}
    np.testing.assert_array_equal(by_columns.encode_columns(columns).num, num)
    assert by_columns.non_finite == 2
    by_rows.observe(num)
    assert np.isfinite(by_rows.mean).all() and by_rows.count[:2].tolist() == [1.0, 1.0]


def test_values_that_overflow_the_variance_leave_the_statistics_finite():
    enc = FeatureEncoder(2, 1, 16, numeric=["a", "b"])
    enc.observe(np.array([[1.0, 10.0], [3.0, 30.0]]))
    before = enc.mean.copy(), enc.m2.copy(), enc.count.copy()
    enc.observe(np.array([[1e200, 20.0], [2.0, 20.0]]))  # (1e200)² is beyond float64
    assert enc.overflowed == 1
    assert enc.mean[0] == before[0][0] and enc.m2[0] == before[1][0]  # column a: unchanged
    assert enc.count.tolist() == [2.0, 4.0]  # column b learned as usual
    assert np.isfinite(enc.mean).all() and np.isfinite(enc.m2).all()
    z = enc.standardize(np.array([[1e200, 20.0]]))
    assert z[0, 0] == 8.0  # clipped, as any far-out value
    state = FeatureEncoder.from_state_dict(enc.state_dict())
    assert (state.overflowed, state.non_finite) == (1, 0)


def test_one_absurd_value_does_not_wreck_the_learner():
    from streamlearn.core.prequential import Prequential
    from streamlearn.settings import load_settings

    preq = Prequential.from_settings(load_settings(learner={"task": "binary"}))
    batch = [{"a": float(j % 8), "b": 1.0} for j in range(32)]
    labels = [int(j % 8 > 3) for j in range(32)]
    for _ in range(3):
        preq.process(batch, labels)
    preq.process([{"a": 1e300, "b": float("inf")}, *batch[1:]], labels)
    after = preq.process(batch, labels)
    assert np.isfinite(preq.encoder.mean).all() and np.isfinite(preq.encoder.m2).all()
    assert np.isfinite(after.loss).all() and np.isfinite(after.prediction).all()
    assert preq.encoder.non_finite == 1 and preq.encoder.overflowed == 1


def test_an_int_beyond_float64_is_missing_and_counted_on_both_paths():
    huge = 10**400
    by_rows = FeatureEncoder(2, 1, 16)
    num = by_rows.encode([{"a": 1, "b": huge}, {"a": huge, "b": 2}]).num
    assert num[0, 0] == 1.0 and num[1, 1] == 2.0 and np.isnan([num[0, 1], num[1, 0]]).all()
    assert by_rows.non_finite == 2
    by_columns = FeatureEncoder(2, 1, 16)
    columns = {"a": np.array([1, huge], dtype=object), "b": np.array([huge, 2], dtype=object)}
    np.testing.assert_array_equal(by_columns.encode_columns(columns).num, num)
    assert by_columns.non_finite == 2
