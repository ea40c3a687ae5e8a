import numpy as np
import pytest

from streamlearn.core.drift import RiverDriftDetector
from streamlearn.core.drift.river import RIVER_DETECTORS
from streamlearn.errors import ConfigError

PARAMS = {
    "adwin": {"delta": 0.002},
    "page_hinkley": {"min_instances": 30, "delta": 0.005, "threshold": 20.0, "alpha": 0.9999},
    "kswin": {"alpha": 0.0001, "window_size": 100, "stat_size": 30, "seed": 7},
}

GOLDEN = {
    "adwin": [1535, 3039, 4511],
    "page_hinkley": [1533, 3037, 4523],
    "kswin": [1512, 3015, 4515],
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_detections(name, losses, changes, feed):
    fired = feed(RiverDriftDetector(name, PARAMS[name], cooldown=100), losses)
    assert fired == GOLDEN[name]
    # sensible: one detection shortly after each change (up or down), none before
    assert all(0 <= f - c < 50 for f, c in zip(fired, changes, strict=True))


@pytest.mark.parametrize("name", ["adwin", "page_hinkley"])
def test_detections_do_not_depend_on_batching(name, losses, feed):
    det = RiverDriftDetector(name, PARAMS[name], cooldown=100)
    assert feed(det, losses, batch=len(losses)) == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_quiet_stream_stays_quiet(name):
    rng = np.random.default_rng(3)
    det = RiverDriftDetector(name, PARAMS[name], cooldown=100)
    assert det.update(np.abs(rng.normal(0.4, 0.1, 3000))) == []


@pytest.mark.parametrize("name", ["adwin", "page_hinkley"])
def test_cooldown_respected(name, stairs):
    params = {"adwin": {"delta": 0.002}, "page_hinkley": {"threshold": 20.0, "min_instances": 30}}
    assert len(RiverDriftDetector(name, params[name], cooldown=0).update(stairs)) == 11
    fired = RiverDriftDetector(name, params[name], cooldown=1000).update(stairs)
    assert len(fired) == 3
    assert (np.diff(fired) > 1000).all()


def test_non_finite_losses_are_ignored(losses, feed):
    dirty = np.insert(losses, [5, 1000, 3100], [np.nan, np.inf, -np.inf])
    det = RiverDriftDetector("adwin", PARAMS["adwin"], cooldown=100)
    fired = feed(det, dirty)
    assert fired == [1535 + 2, 3039 + 2, 4511 + 3]
    assert det.seen == len(losses)


def test_state_keeps_count_and_cooldown_and_restarts_the_river_detector(losses, feed):
    det = RiverDriftDetector("adwin", PARAMS["adwin"], cooldown=1000)
    assert feed(det, losses[:1600]) == [1535]
    state = det.state_dict()
    assert state == {"seen": 1600, "quiet": 1000 - 64}
    restored = RiverDriftDetector("adwin", PARAMS["adwin"], cooldown=1000)
    restored.load_state_dict(state)
    assert restored.seen == 1600
    # the remaining cooldown holds across the restore: a change right away is not reported
    assert restored.update(np.full(400, 5.0)) == []
    assert restored.state_dict()["quiet"] == 1000 - 64 - 400


@pytest.mark.parametrize("name", sorted(RIVER_DETECTORS))
def test_defaults_build(name):
    det = RiverDriftDetector(name)
    assert det.update(np.zeros(10)) == []


def test_unknown_detector_is_config_error():
    with pytest.raises(ConfigError, match="ddm"):
        RiverDriftDetector("ddm")


def test_bad_params_are_config_error():
    with pytest.raises(ConfigError, match=r"drift\.params"):
        RiverDriftDetector("adwin", {"no_such_parameter": 1})
