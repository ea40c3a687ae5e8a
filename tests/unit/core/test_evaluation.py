import numpy as np
import pytest

from streamlearn.core.evaluation import DriftWindow, PrequentialScore, predicted_labels


def test_predicted_labels_argmax_and_none_for_unknown():
    prediction = np.array([[0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert predicted_labels(prediction, ["a", "b"]) == ["b", "a", None, None]
    assert predicted_labels(prediction, [False, True, 7]) == [True, False, None, 7]


def test_accuracy_on_hand_made_batches():
    score = PrequentialScore()
    assert score.metric == "accuracy"
    assert np.isnan(score.overall()) and len(score) == 0
    classes = ["x", "y"]
    score.update(np.array([[0.9, 0.1], [0.3, 0.7], [0.0, 0.0]]), ["x", "x", "y"], classes)
    score.update(np.array([[0.1, 0.9], [0.8, 0.2]]), ["y", None], classes)  # unlabelled: unscored
    assert len(score) == 4
    assert score.values().tolist() == [1.0, 0.0, 0.0, 1.0]
    assert score.overall() == 0.5


def test_bool_and_int_labels_are_not_confused():
    score = PrequentialScore()
    score.update(np.array([[1.0, 0.0], [0.0, 1.0]]), [True, 1], [True, 1])
    assert score.values().tolist() == [1.0, 1.0]
    score.update(np.array([[0.0, 1.0]]), [True], [True, 1])
    assert score.values().tolist()[-1] == 0.0  # predicted 1, truth True: a miss
    score.update(np.array([[1.0, 0.0], [0.0, 1.0]]), [np.bool_(True), np.int64(1)], [True, 1])
    assert score.values().tolist()[-2:] == [1.0, 1.0]  # numpy labels (pandas) still match


def test_regression_absolute_error():
    score = PrequentialScore(regression=True)
    assert score.metric == "MAE"
    score.update(np.array([1.0, 5.0, 2.0]), [2.0, 1.0, None])
    assert score.values().tolist() == [1.0, 4.0]
    assert score.overall() == 2.5


def test_curve_is_a_rolling_mean():
    score = PrequentialScore(regression=True)
    score.update(np.zeros(6), [0, 1, 2, 3, 4, 5])  # errors 0..5
    ends, values = score.curve(window=3)
    assert ends.tolist() == [1, 2, 3, 4, 5, 6]
    assert values.tolist() == pytest.approx([0.0, 0.5, 1.0, 2.0, 3.0, 4.0])
    _, whole = score.curve(window=100)
    assert whole.tolist() == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    empty = PrequentialScore().curve()
    assert len(empty[0]) == 0 and len(empty[1]) == 0


def test_between_and_around_drift_positions():
    score = PrequentialScore()
    hits = [1.0] * 10 + [0.0] * 5 + [1.0] * 5  # drift at 10, recovery at 15
    for h in hits:
        score.update(np.array([[h, 1.0 - h]]), ["a"], ["a", "b"])
    assert score.between(0, 10) == 1.0
    assert score.between(10, 15) == 0.0
    assert score.between(-5, 2) == 1.0  # clipped at the start
    assert np.isnan(score.between(30, 40))
    windows = score.around([10, 15], span=5)
    assert windows == [DriftWindow(10, 1.0, 0.0), DriftWindow(15, 0.0, 1.0)]
    wide = score.around([10], span=10)[0]
    assert (wide.before, wide.after) == (1.0, 0.5)
