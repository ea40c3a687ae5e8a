import json
import pickle

import numpy as np
import pytest

from streamlearn.core.drift import LossDeviationDetector
from streamlearn.kernels.compiled import CompiledDrift
from streamlearn.kernels.reference.drift import NumpyDrift


def drift_for(library):
    """The detector's kernel: numpy (library None) or the compiled one."""
    return NumpyDrift() if library is None else CompiledDrift(library)


def make(library, cooldown=200):
    return LossDeviationDetector(
        alpha=0.05, window=300, k=4.0, cooldown=cooldown, min_samples=100, kernel=drift_for(library)
    )


def test_golden_detections(losses, changes, feed, library):
    fired = feed(make(library), losses)
    assert fired == [1502, 4502]
    # sensible: rises in the loss are caught within a few events, the fall at 3000 is not drift
    assert all(0 <= f - c < 20 for f, c in zip(fired, [changes[0], changes[2]], strict=True))


@pytest.mark.parametrize("batch", [1, 7, 64, 6000])
def test_detections_do_not_depend_on_batching(losses, batch, feed, library):
    assert feed(make(library), losses, batch) == [1502, 4502]


def test_smoothed_loss_is_an_ewma(library):
    det = LossDeviationDetector(
        alpha=0.5, window=10, k=4.0, cooldown=0, min_samples=5, kernel=drift_for(library)
    )
    assert det.smoothed is None
    det.update(np.array([1.0, 3.0, 5.0]))
    assert det.smoothed == pytest.approx(0.5 * 5 + 0.5 * (0.5 * 3 + 0.5 * 1))
    assert det.seen == 3


def test_false_alarms_on_a_stationary_loss_are_rare(library):
    # The window's std of an autocorrelated EWMA is itself noisy, so k=4 is not a 4-sigma
    # guarantee; this pins the rate: at most one false alarm per 6000 events on average.
    alarms = [
        len(make(library).update(np.abs(np.random.default_rng(s).normal(0.4, 0.1, 6000))))
        for s in range(8)
    ]
    assert alarms[0] == 0
    assert sum(alarms) <= 8


def test_nothing_fires_before_min_samples(library):
    det = LossDeviationDetector(
        alpha=0.5, window=500, k=1.0, cooldown=0, min_samples=300, kernel=drift_for(library)
    )
    losses = np.concatenate([np.full(100, 0.1), np.full(100, 5.0)])
    assert det.update(losses) == []


def test_cooldown_respected(stairs, feed, library):
    assert len(feed(make(library, cooldown=0), stairs)) == 11  # one per step up
    fired = feed(
        LossDeviationDetector(
            0.05, 200, 4.0, cooldown=1000, min_samples=50, kernel=drift_for(library)
        ),
        stairs,
    )
    assert fired == [300, 1501, 2701]
    assert (np.diff(fired) > 1000).all()


def test_non_finite_losses_are_ignored(losses, feed, library):
    bad = {10: np.nan, 700: np.inf, 2000: -np.inf, 4000: np.nan}
    dirty = losses.copy()
    for offset, (pos, value) in enumerate(sorted(bad.items())):
        dirty = np.insert(dirty, pos + offset, value)
    det = make(library)
    fired = feed(det, dirty)
    # same detections, shifted by the non-finite values inserted before them
    assert fired == [1502 + 2, 4502 + 4]
    assert det.seen == len(losses)
    assert np.isfinite(det.smoothed)


def test_state_round_trip_through_json_continues_identically(losses, feed, library):
    whole = make(library)
    expected = feed(whole, losses)
    first = make(library)
    assert feed(first, losses[:1510]) == [1502]  # stop inside the cooldown
    state = json.loads(json.dumps(first.state_dict()))
    restored = make(library)
    restored.load_state_dict(state)
    rest = [1510 + f for f in feed(restored, losses[1510:])]
    assert [1502, *rest] == expected
    assert restored.state_dict() == whole.state_dict()


def test_min_rise_floor_ignores_small_bumps_on_a_quiet_loss(library):
    # A well-learned concept: the smoothed loss hardly moves, so k·σ is tiny and a small bump
    # would fire; the floor requires a rise of at least min_rise in loss units.
    rng = np.random.default_rng(3)
    quiet = rng.normal(0.05, 0.005, 2000)
    bump = np.concatenate([quiet, rng.normal(0.15, 0.005, 300), rng.normal(0.05, 0.005, 500)])
    drift = np.concatenate([quiet, rng.normal(0.8, 0.05, 300)])
    kwargs = {"alpha": 0.05, "window": 500, "k": 4.0, "cooldown": 500, "min_samples": 200}
    assert LossDeviationDetector(**kwargs, min_rise=0.0, kernel=drift_for(library)).update(
        bump
    )  # fires without a floor
    assert (
        LossDeviationDetector(**kwargs, min_rise=0.3, kernel=drift_for(library)).update(bump) == []
    )
    fired = LossDeviationDetector(**kwargs, min_rise=0.3, kernel=drift_for(library)).update(drift)
    assert len(fired) == 1 and 2000 <= fired[0] < 2050


class _PerEvent:
    """The detector as a plain per-event loop (its original form): the oracle for update."""

    def __init__(self, alpha, window, k, cooldown, min_samples, min_rise):
        self.alpha, self.window, self.k, self.cooldown = alpha, window, k, cooldown
        self.min_samples, self.min_rise = min(min_samples, window), min_rise
        self.ring, self.filled, self.head, self.sum, self.sumsq = np.zeros(window), 0, 0, 0.0, 0.0
        self.smoothed, self.quiet, self.seen = None, 0, 0

    def update(self, losses):
        fired = []
        for i, loss in enumerate(losses.tolist()):
            if not np.isfinite(loss):
                continue
            a, last = self.alpha, self.smoothed
            s = loss if last is None else a * loss + (1 - a) * last
            self.smoothed, self.seen = s, self.seen + 1
            if self.quiet:
                self.quiet -= 1
            elif self.filled >= self.min_samples:
                mean = self.sum / self.filled
                std = max(self.sumsq / self.filled - mean * mean, 0.0) ** 0.5
                if s > mean + max(self.k * std, self.min_rise):
                    fired.append(i)
                    self.quiet, self.filled, self.head = self.cooldown, 0, 0
                    self.sum = self.sumsq = 0.0
                    continue
            if self.filled == self.window:
                old = self.ring[self.head]
                self.sum, self.sumsq = self.sum - old, self.sumsq - old * old
            else:
                self.filled += 1
            self.ring[self.head], self.head = s, (self.head + 1) % self.window
            self.sum, self.sumsq = self.sum + s, self.sumsq + s * s
        return fired

    def state_dict(self):
        keys = ("ring", "filled", "head", "sum", "sumsq", "smoothed", "quiet", "seen")
        return {key: getattr(self, key) for key in keys} | {"ring": self.ring.tolist()}


def _jumpy_losses(seed, n=6000):
    """Abrupt level jumps up and down, with NaN/±inf sprinkled in (the first loss among them)."""
    rng = np.random.default_rng(seed)
    levels = np.repeat(rng.uniform(0.1, 2.0, n // 20), rng.integers(20, 60, n // 20))
    losses = np.abs(levels[:n] + rng.normal(0.0, 0.05, n))
    bad = rng.random(n) < 0.01
    losses[bad] = rng.choice([np.nan, np.inf, -np.inf], bad.sum())
    losses[0] = np.nan
    return losses


def _assert_same_state(state, expected):
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        if key == "ring":
            np.testing.assert_allclose(state[key], value, rtol=1e-9, atol=0)
        else:
            assert state[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_rise", [0.0, 0.3])
@pytest.mark.parametrize(
    "limits", [{"cooldown": 25, "min_samples": 15}, {"cooldown": 8, "min_samples": 20}]
)
def test_batched_update_matches_the_per_event_loop(seed, min_rise, limits, feed, library):
    """Small window and cooldown: several firings and cooldowns fall inside one batch (and in
    the second case min_samples, not the cooldown, decides when testing resumes)."""
    kwargs = {"alpha": 0.2, "window": 40, "k": 3.0, "min_rise": min_rise, **limits}
    losses = _jumpy_losses(seed)
    oracle = _PerEvent(**kwargs)
    expected = oracle.update(losses)
    assert len(expected) >= 30  # many firings, so a wrong window or cooldown shows
    assert max(np.bincount(np.asarray(expected) // 256)) >= 3  # several within a batch of 256
    one_by_one = LossDeviationDetector(**kwargs, kernel=drift_for(library))
    assert [i for i, loss in enumerate(losses) if one_by_one.update(np.array([loss]))] == expected
    _assert_same_state(one_by_one.state_dict(), oracle.state_dict())
    for batch in (7, 32, 256, 3000):
        det = LossDeviationDetector(**kwargs, kernel=drift_for(library))
        assert feed(det, losses, batch) == expected, batch
        _assert_same_state(det.state_dict(), oracle.state_dict())
        assert det.state_dict() == one_by_one.state_dict()  # the EWMA and ring are bit-exact


@pytest.mark.parametrize("seed", range(3))
def test_compiled_form_equals_the_numpy_form(seed, feed, compiled):
    """Same firings and, since the EWMA rounds alike, the same state to the last bit."""
    library = compiled
    kwargs = {"alpha": 0.2, "window": 40, "k": 3.0, "cooldown": 25, "min_samples": 15}
    losses = _jumpy_losses(seed)
    numpy_form = LossDeviationDetector(**kwargs, min_rise=0.1)
    compiled_form = LossDeviationDetector(**kwargs, min_rise=0.1, kernel=drift_for(library))
    assert feed(compiled_form, losses, 32) == feed(numpy_form, losses, 32)
    assert compiled_form.state_dict() == numpy_form.state_dict()


def test_pickled_detector_continues_identically(losses, feed, library):
    det = make(library)
    feed(det, losses[:2000])
    copy = pickle.loads(pickle.dumps(det))
    assert copy.kernel.name == ("numpy" if library is None else "compiled")
    assert feed(copy, losses[2000:]) == feed(det, losses[2000:])
    assert copy.state_dict() == det.state_dict()


def test_a_state_of_another_window_is_refused(library):
    state = make(library).state_dict()
    with pytest.raises(ValueError, match="ring"):
        LossDeviationDetector(window=10, kernel=drift_for(library)).load_state_dict(state)
