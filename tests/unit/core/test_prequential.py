import copy

import numpy as np
import pytest

from streamlearn.core.prequential import Prequential
from streamlearn.settings import load_settings

FEATURES = {"numeric_slots": 6, "categorical_slots": 2, "hash_buckets": 64, "embedding_dim": 3}


def make(task="multiclass", drift=None, neighbours=None, **learner):
    """A small chain; the neighbour vote off unless ``neighbours`` says otherwise (it is
    mixed in before a batch's new classes are dropped, so a batch that brings one scores
    against the model before it only up to that renormalisation)."""
    values = {
        "task": task,
        "max_classes": 4,
        "hidden": (16,),
        "lr": 0.02,
        "warmup_steps": 0,
        "replay_size": 256,
        "replay_ratio": 0.5,
        "device": "cpu",
        "amp": "off",
        "seed": 0,
        "fast_start": 0,  # whole batches; the fast start's tests turn it on
        **learner,
    }
    return Prequential.from_settings(
        load_settings(
            features=FEATURES,
            learner=values,
            drift=drift or {"detector": "none"},
            memory={"enabled": False},
            neighbours=neighbours or {"enabled": False},
        )
    )


def rows(rng, n, classes=("a", "b")):
    """Class = which of the first len(classes) features is largest; plus a categorical hint."""
    xs, ys = [], []
    for _ in range(n):
        v = rng.normal(size=len(classes))
        label = classes[int(np.argmax(v))]
        x = {f"f{i}": float(v[i]) for i in range(len(classes))}
        x["colour"] = "red" if label == classes[0] else "blue"
        xs.append(x)
        ys.append(label)
    return xs, ys


def test_the_neighbour_vote_never_sees_the_batchs_labels():
    rng = np.random.default_rng(1)
    p = make(neighbours={"enabled": True})
    for _ in range(6):
        p.process(*rows(rng, 32))
    assert p.neighbours is not None and p.neighbours.share > 0.0
    xs, ys = rows(rng, 32)
    shuffled = list(rng.permutation(ys))  # the same classes, other rows' labels
    first = copy.deepcopy(p).process(xs, ys).prediction
    second = copy.deepcopy(p).process(xs, shuffled).prediction
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, copy.deepcopy(p).predict(xs), rtol=0, atol=1e-6)


def test_predictions_are_made_before_learning():
    rng = np.random.default_rng(0)
    p = make()
    for i in range(12):
        classes = ("a", "b") if i < 6 else ("a", "b", "c")  # "c" first seen mid-stream
        xs, ys = rows(rng, 32, classes)
        if i % 3 == 2:
            ys = [None if j % 2 else y for j, y in enumerate(ys)]  # some rows unlabelled
        expected = copy.deepcopy(p).predict(xs)  # the model as it stood before the batch
        outcome = p.process(xs, ys)
        np.testing.assert_allclose(outcome.prediction, expected, rtol=0, atol=1e-6)


def test_first_batch_of_a_new_class_gets_probability_zero():
    rng = np.random.default_rng(1)
    p = make()
    xs, ys = rows(rng, 16)
    first = p.process(xs, ys)
    assert (first.prediction == 0).all()  # nothing known before the first batch
    assert first.learned.all()
    for _ in range(5):
        p.process(*rows(rng, 32))
    xs, _ = rows(rng, 16)
    outcome = p.process(xs, ["c"] * 16)  # a new class, every row labelled with it
    slot = p.classes().index("c")
    assert slot == 2
    assert (outcome.prediction[:, slot] == 0).all()
    np.testing.assert_allclose(outcome.prediction.sum(1), 1.0, rtol=1e-5)
    assert np.isfinite(outcome.loss).all() and outcome.learned.all()
    later = p.process(*rows(rng, 16, ("a", "b", "c")))
    assert (later.prediction[:, slot] > 0).all()  # switched on once seen


def test_unlabelled_rows_are_predicted_not_learned():
    rng = np.random.default_rng(2)
    p = make()
    for _ in range(3):
        p.process(*rows(rng, 32))
    steps, seen, replay = p.learner.steps, p.seen, p.learner.replay.seen
    count = p.encoder.count.copy()
    xs, _ = rows(rng, 20)
    outcome = p.process(xs, [None] * 20)
    assert not outcome.learned.any()
    assert np.isnan(outcome.loss).all()
    np.testing.assert_allclose(outcome.prediction.sum(1), 1.0, rtol=1e-5)
    assert (p.learner.steps, p.seen, p.learner.replay.seen) == (steps, seen, replay)
    np.testing.assert_array_equal(p.encoder.count, count)  # statistics from labelled rows only
    assert outcome.drifts == []


def test_unknown_labels_counted_not_learned():
    rng = np.random.default_rng(3)
    p = make(task="binary")
    xs, ys = rows(rng, 32)
    p.process(xs, ys)
    xs, _ = rows(rng, 6)
    outcome = p.process(xs, ["a", "third", "b", "third", None, "fourth"])
    assert p.unknown_labels == 3
    assert outcome.learned.tolist() == [True, False, True, False, False, False]
    assert np.isnan(outcome.loss[~outcome.learned]).all()
    assert p.classes() == ["a", "b"]
    np.testing.assert_allclose(outcome.prediction.sum(1), 1.0, rtol=1e-5)  # still scored
    assert p.seen == 34


def test_fixed_classes_from_settings():
    rng = np.random.default_rng(4)
    p = make(task="binary", classes=("no", "yes"))
    xs, _ = rows(rng, 4)
    outcome = p.process(xs, ["yes", 0, "maybe", True])  # int 0 is an index; True is not
    assert outcome.learned.tolist() == [True, True, False, False]
    assert p.unknown_labels == 2
    assert outcome.prediction[:, :2].sum(1) == pytest.approx(np.ones(4), rel=1e-5)


def test_regression_end_to_end_reduces_error():
    rng = np.random.default_rng(5)
    p = make(task="regression", lr=0.01)
    errors = []
    for _ in range(120):
        a, b = rng.normal(size=32), rng.normal(size=32)
        ys = list(50.0 + 8.0 * a - 5.0 * b + rng.normal(0, 0.1, 32))
        xs = [{"a": float(x), "b": float(y)} for x, y in zip(a, b, strict=True)]
        outcome = p.process(xs, ys)
        assert outcome.prediction.shape == (32,)
        errors.append(np.abs(outcome.prediction - np.array(ys)).mean())
    assert np.mean(errors[-10:]) < 0.15 * np.mean(errors[:3])
    assert np.mean(errors[-10:]) < 2.0  # target std is ~9.4
    xs = [{"a": 0.0, "b": 0.0}]
    assert p.predict(xs)[0] == pytest.approx(50.0, abs=2.0)


def test_regression_with_missing_targets():
    p = make(task="regression")
    outcome = p.process([{"a": 1.0}, {"a": 2.0}, {"a": 3.0}], [1.0, None, float("nan")])
    assert outcome.learned.tolist() == [True, False, False]
    assert p.seen == 1


def test_process_columns_matches_process():
    rng = np.random.default_rng(6)
    p1, p2 = make(), make()
    for _ in range(4):
        xs, ys = rows(rng, 24)
        columns = {k: np.array([x[k] for x in xs]) for k in xs[0]}
        a, b = p1.process(xs, ys), p2.process_columns(columns, ys)
        np.testing.assert_array_equal(a.prediction, b.prediction)
        np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(p1.predict(xs), p2.predict_columns(columns))


class ScriptedDetector:
    """Fires at the given offsets on the given call; records what it was fed."""

    def __init__(self, script):
        self.script = script
        self.calls = []

    def update(self, losses):
        self.calls.append(np.asarray(losses).copy())
        return self.script.get(len(self.calls), [])

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        return None


def test_drift_triggers_learner_rewarm():
    rng = np.random.default_rng(7)
    p = make(
        lr=0.01, rewarm_factor=3.0, rewarm_steps=5, redecay_steps=10, replay_size=64, updates=1
    )
    p.detector = ScriptedDetector({3: [5]})
    for _ in range(2):
        assert p.process(*rows(rng, 32)).drifts == []
    assert p.learner.schedule.drift_step is None and p.learner.lr == pytest.approx(0.01)
    xs, ys = rows(rng, 32)
    ys[0] = None  # unlabelled rows do not count towards positions
    outcome = p.process(xs, ys)
    assert outcome.drifts == [64 + 5] and p.drifts == [69]
    np.testing.assert_array_equal(p.detector.calls[-1], outcome.loss[outcome.learned])
    assert p.learner.schedule.drift_step == p.learner.steps == 3
    assert p.learner.lr > 0.01  # re-warming towards 0.03
    for _ in range(5):
        p.process(*rows(rng, 32))
    assert p.learner.lr == pytest.approx(0.03)


def test_real_detector_fires_after_a_concept_flip():
    rng = np.random.default_rng(8)
    drift = {
        "detector": "loss_deviation",
        "alpha": 0.05,
        "window": 300,
        "k": 4.0,
        "cooldown": 500,
        "min_samples": 100,
    }
    p = make(drift=drift)
    for _ in range(40):
        p.process(*rows(rng, 32))
    assert p.drifts == []
    for _ in range(10):
        xs, ys = rows(rng, 32)
        p.process(xs, ["b" if y == "a" else "a" for y in ys])  # labels swapped
    assert len(p.drifts) >= 1
    assert 1280 <= p.drifts[0] < 1280 + 160
    assert p.learner.schedule.drift_step is not None


def test_predict_before_any_class_is_all_zero():
    p = make()
    assert (p.predict([{"a": 1.0}]) == 0).all()


def test_regression_label_that_is_not_a_number_is_counted_not_raised():
    p = make(task="regression")
    outcome = p.process([{"a": 1.0}, {"a": 2.0}, {"a": 3.0}], [1.5, "tall", None])
    assert outcome.learned.tolist() == [True, False, False]
    assert p.unknown_labels == 1
    assert np.isfinite(outcome.prediction).all()


def test_regression_target_beyond_float32_is_counted_not_raised():
    """1e300 is a valid JSON number; learning it overflowed the target statistics (a crash)."""
    p = make(task="regression")
    xs = [{"a": float(i % 4)} for i in range(16)]
    for _ in range(3):
        p.process(xs, [2.0 * (i % 4) for i in range(16)])
    scale = float(p.learner.model.target_scale)
    outcome = p.process(xs[:4], [1e300, -1e39, float("inf"), 3.0])
    assert outcome.learned.tolist() == [False, False, False, True]
    assert p.unknown_labels == 3
    assert float(p.learner.model.target_scale) == pytest.approx(scale, rel=0.2)
    assert np.isfinite(p.process(xs, [1.0] * 16).prediction).all()


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_empty_batch(task):
    p = make(task=task)
    outcome = p.process([], [])
    assert len(outcome.prediction) == 0 and len(outcome.loss) == 0
    assert outcome.drifts == [] and p.seen == 0


def test_fast_start_learns_a_young_batch_in_growing_sub_batches():
    """With fast_start k, a batch of a young chain gives what its sub-batches of
    max(1, events // k) rows give fed one by one with the fast start off: each row is predicted
    by the model that learned the rows before it, never its own label. (Fixed classes: the
    sub-batches of a batch that brings new classes predict them as zero, as the batch would;
    no replay floor or fast-start replay, which only sub-batches get: the next test.)"""
    rng = np.random.default_rng(3)
    fast = make(fast_start=4, classes=("a", "b"), replay_floor=0, fast_start_replay=1.0)
    split = make(classes=("a", "b"), replay_floor=0, fast_start_replay=1.0)
    for _ in range(3):
        xs, ys = rows(rng, 32)
        outcome = fast.process(xs, ys)
        parts, start = [], 0
        while start < len(xs):
            stop = min(len(xs), start + max(1, split.seen // 4))
            parts.append(split.process(xs[start:stop], ys[start:stop]))
            start = stop
        assert len(parts) > 1  # young: the batch was split
        np.testing.assert_array_equal(
            outcome.prediction, np.concatenate([p.prediction for p in parts])
        )
        np.testing.assert_array_equal(outcome.loss, np.concatenate([p.loss for p in parts]))
    assert fast.learner.steps == split.learner.steps


def test_only_the_fast_starts_sub_batches_are_young(monkeypatch):
    """Sub-batches of a young chain's batch are learned as young (their updates replay
    learner.fast_start_replay times as many rows, at least learner.replay_floor); a grown
    chain's whole batches are not."""
    rng = np.random.default_rng(6)
    p = make(fast_start=2)
    young: list[bool] = []
    begin = p.learner.begin_step

    def recording(num, cat, y, is_young=False):
        young.append(is_young)
        return begin(num, cat, y, is_young)

    monkeypatch.setattr(p.learner, "begin_step", recording)
    p.process(*rows(rng, 8))
    assert len(young) > 1 and all(young)
    while p.seen < 2 * 32:
        p.process(*rows(rng, 32))
    young.clear()
    p.process(*rows(rng, 32))
    assert young == [False]


def test_fast_start_passes_a_grown_model_its_batches_whole():
    rng = np.random.default_rng(4)
    p = make(fast_start=2, updates=1)
    assert not make(fast_start=0).fast_starting(32)  # off: never
    p.process(*rows(rng, 1))  # one event learned: the next batch is split
    assert p.fast_starting(4) and p.fast_starting(32) and not p.fast_starting(0)
    steps = p.learner.steps
    p.process(*rows(rng, 4))
    # events // 2 rows at a time (at least one): after 1, 2, 3 and 4 events, one row each
    assert p.learner.steps - steps == 4
    while p.seen < 2 * 32:
        assert p.fast_starting(32)
        p.process(*rows(rng, 32))
    # grown for batches of 32, still young for those of more than half the events learned
    assert not p.fast_starting(32) and p.fast_starting(p.seen // 2 + 1)
    steps = p.learner.steps
    p.process(*rows(rng, 32))
    assert p.learner.steps - steps == 1


def test_fast_start_predicts_a_class_once_a_row_before_brought_it():
    rng = np.random.default_rng(5)
    p = make(fast_start=8)
    xs, ys = rows(rng, 16)
    first = p.process(xs, ys)
    assert (first.prediction[0] == 0).all()  # nothing known before the first row
    seen = {ys[0]}
    for i in range(1, len(ys)):  # the classes of earlier rows only (slots in first-seen order)
        assert (first.prediction[i, len(seen) :] == 0).all()
        assert first.prediction[i].sum() == pytest.approx(1.0, abs=1e-5)
        seen.add(ys[i])
    assert first.learned.all()
