"""streamlearn.river: river's own estimator checks, learning quality, batching and classes."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from river import base, checks, datasets, evaluate, metrics

from streamlearn.errors import ConfigError
from streamlearn.river import Classifier, Regressor
from streamlearn.sources.synthetic import stream_rows


def _river_checks() -> list:
    params = []
    for model in (Classifier(), Regressor()):
        skips = model._unit_test_skips()
        for i, check in enumerate(checks.yield_checks(model)):
            if check.__name__ not in skips:
                name = f"{type(model).__name__}-{i:02d}-{check.__name__}"
                params.append(pytest.param(model, check, id=name))
    return params


@pytest.mark.parametrize(("model", "check"), _river_checks())
def test_river_check(model: base.Estimator, check) -> None:
    # What river.checks.check_estimator does, one check per test so a failure names itself.
    check(model.clone())


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(cls(**params), id=f"{cls.__name__}-{i}")
        for cls in (Classifier, Regressor)
        for i, params in enumerate(cls._unit_test_params())
    ],
)
def test_check_estimator_with_unit_test_params(model: base.Estimator) -> None:
    # river runs its whole check suite against every _unit_test_params configuration.
    checks.check_estimator(model)


def test_progressive_val_score_learns_sea() -> None:
    # Majority class scores ~0.61 and a no-change baseline ~0.53 on this stream; the noise
    # ceiling is 0.9. A learner that never trains (or trains on shuffled labels) stays near 0.6.
    metric = evaluate.progressive_val_score(
        stream_rows("sea-drift", 4000, 42), Classifier(seed=42), metrics.Accuracy()
    )
    assert metric.get() > 0.8


def test_progressive_val_score_regressor_beats_running_mean() -> None:
    metric = evaluate.progressive_val_score(
        datasets.TrumpApproval(), Regressor(seed=42), metrics.MAE()
    )
    assert metric.get() < 1.3  # running mean: 1.57


def _mixed_rows() -> tuple[list[dict], list]:
    """Features that first appear at different rows, a string feature, a class arriving late."""
    rng = np.random.default_rng(0)
    rows, ys = [], []
    for i in range(53):
        a = float(rng.uniform(0, 3))
        x: dict = {"c": float(rng.normal())}
        if i >= 3:
            x["a"] = a
        if i >= 7:
            x["b"] = "hi" if a > 1 else "lo"
        rows.append(x)
        ys.append(min(int(a), 1) if i < 20 else int(a))  # class 2 first appears mid-stream
    return rows, ys


def test_learn_many_matches_learn_one_loop() -> None:
    rows, ys = _mixed_rows()
    one = Classifier(seed=3, batch_size=8)
    many = Classifier(seed=3, batch_size=8)
    for x, y in zip(rows, ys, strict=True):
        one.learn_one(x, y)
    for start in range(0, len(rows), 13):  # chunks that straddle micro-batch boundaries
        frame = pd.DataFrame(rows[start : start + 13])
        many.learn_many(frame, pd.Series(ys[start : start + 13]))
    p_one, p_many = one.prequential, many.prequential
    assert p_one.encoder.numeric_names == p_many.encoder.numeric_names
    assert p_one.encoder.categorical_names == p_many.encoder.categorical_names
    assert p_one.classes() == p_many.classes()
    assert sorted(p_one.classes()) == [0, 1, 2]
    updates = p_one.learner.settings.updates  # optimizer steps per micro-batch
    # at least one step per micro-batch (the fast start splits the young model's batches)
    assert p_one.learner.steps == p_many.learner.steps >= len(rows) // 8 * updates
    assert one.n_buffered == many.n_buffered == len(rows) % 8
    for x in rows[:10]:
        assert one.predict_proba_one(x) == many.predict_proba_one(x)


def test_predict_many_matches_predict_one_and_keeps_the_index() -> None:
    rows, ys = _mixed_rows()
    model = Classifier(seed=1, batch_size=8)
    for x, y in zip(rows, ys, strict=True):
        model.learn_one(x, y)
    frame = pd.DataFrame(rows[-10:], index=range(100, 110))
    proba = model.predict_proba_many(frame)
    labels = model.predict_many(frame)
    assert list(proba.index) == list(labels.index) == list(range(100, 110))
    assert list(proba.columns) == model.prequential.classes()
    for i, x in enumerate(rows[-10:]):
        one = model.predict_proba_one(x)
        assert one == pytest.approx(proba.iloc[i].to_dict(), abs=1e-6)
        assert labels.iloc[i] == model.predict_one(x)


def test_nothing_is_learned_until_a_micro_batch_fills() -> None:
    model = Classifier(seed=0, batch_size=4)
    x = {"u": 1.0, "v": 2.0}
    model.learn_one(x, "a")
    before = model.predict_proba_one(x)
    for y in ("b", "a"):
        model.learn_one(x, y)
    assert model.prequential.learner.steps == 0
    assert model.n_buffered == 3
    # Buffered labels are known as classes but have not moved the weights.
    assert set(model.predict_proba_one(x)) == {"a", "b"}
    assert before == {"a": 1.0}
    model.learn_one(x, "b")
    assert model.prequential.learner.steps >= model.prequential.learner.settings.updates
    assert model.n_buffered == 0
    assert model.prequential.seen == 4


def test_predict_before_any_learn() -> None:
    clf = Classifier(seed=0)
    assert clf.predict_proba_one({"x": 1.0}) == {}
    assert clf.predict_one({"x": 1.0}) is None
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    assert clf.predict_proba_many(frame).shape == (2, 0)
    assert clf.predict_many(frame).tolist() == [None, None]
    reg = Regressor(seed=0)
    assert np.isfinite(reg.predict_one({"x": 1.0}))
    assert reg.predict_many(frame).shape == (2,)


def test_a_class_first_seen_mid_stream_is_predicted() -> None:
    rng = np.random.default_rng(1)
    model = Classifier(seed=0, batch_size=8)
    for _ in range(400):
        a = float(rng.uniform(0, 2))
        model.learn_one({"a": a}, int(a))
    assert set(model.predict_proba_one({"a": 2.5})) == {0, 1}
    model.learn_one({"a": 2.5}, 2)
    proba = model.predict_proba_one({"a": 2.5})
    assert set(proba) == {0, 1, 2}
    assert sum(proba.values()) == pytest.approx(1.0)
    for _ in range(1200):
        a = float(rng.uniform(0, 3))
        model.learn_one({"a": a}, int(a))
    assert model.predict_one({"a": 2.7}) == 2
    assert model.predict_one({"a": 0.3}) == 0


def test_classes_beyond_capacity_are_counted_not_learned() -> None:
    model = Classifier(seed=0, batch_size=3, max_classes=2)
    for y in ("a", "b", "c"):
        model.learn_one({"u": 1.0}, y)
    assert set(model.predict_proba_one({"u": 1.0})) == {"a", "b"}
    assert model.prequential.unknown_labels == 1
    assert model.prequential.seen == 2


def test_integer_and_bool_keys_and_values() -> None:
    model = Classifier(seed=0, batch_size=2)
    rows = [({1: 0.5, 2: True, "s": "x"}, True), ({1: 1.5, 2: False, "s": "y"}, False)] * 4
    for x, y in rows:
        model.learn_one(x, y)
    assert model.prequential.encoder.numeric_names == ["1", "2"]
    assert model.prequential.encoder.categorical_names == ["s"]
    assert set(model.predict_proba_one({1: 0.5, 2: True})) == {False, True}


def test_pickled_model_resumes_identically() -> None:
    rows, ys = _mixed_rows()
    model = Classifier(seed=5, batch_size=8)
    for x, y in zip(rows[:30], ys[:30], strict=True):
        model.learn_one(x, y)
    copy = pickle.loads(pickle.dumps(model))
    for m in (model, copy):
        for x, y in zip(rows[30:], ys[30:], strict=True):
            m.learn_one(x, y)
    assert model.predict_proba_one(rows[0]) == copy.predict_proba_one(rows[0])


def test_constructor_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMLEARN_LEARNER__LR", "0.5")
    assert Classifier(lr=0.02).prequential.learner.settings.lr == 0.02


def test_the_regressors_replay_ratio_is_the_one_it_replays_with() -> None:
    """The estimators have one replay_ratio; a regressor's is its learner's regression ratio."""
    settings = Regressor(replay_ratio=0.75).prequential.learner.settings
    assert settings.replay_ratio_regression == settings.replay_ratio == 0.75


@pytest.mark.parametrize("params", [{"lr": -1.0}, {"batch_size": 0}, {"max_classes": 1}])
def test_invalid_arguments_raise_config_error(params: dict) -> None:
    with pytest.raises(ConfigError):
        Classifier(**params)


def test_module_does_not_shadow_the_river_package() -> None:
    import river

    import streamlearn.river

    assert river.__name__ == "river"
    assert hasattr(river, "evaluate")
    assert streamlearn.river.base is base
