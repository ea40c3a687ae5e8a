import numpy as np
import pytest

from streamlearn.core.drift import (
    DriftDetector,
    LossDeviationDetector,
    RiverDriftDetector,
    build_detector,
)
from streamlearn.core.drift.base import NoDrift
from streamlearn.errors import ConfigError
from streamlearn.settings import DriftSettings, load_settings


def test_build_loss_deviation_from_settings():
    settings = DriftSettings(
        detector="loss_deviation", alpha=0.1, window=50, k=2.5, cooldown=7, min_samples=20
    )
    det = build_detector(settings)
    assert isinstance(det, LossDeviationDetector)
    p = det.params
    assert (p.alpha, p.window, p.k, p.cooldown, p.min_samples) == (0.1, 50, 2.5, 7, 20)


def test_min_samples_capped_at_window():
    det = build_detector(DriftSettings(window=50, min_samples=300))
    assert det.params.min_samples == 50


@pytest.mark.parametrize("name", ["adwin", "page_hinkley", "kswin"])
def test_build_river_detectors(name):
    params = {"adwin": {"delta": 0.01}, "page_hinkley": {"threshold": 10.0}, "kswin": {"seed": 1}}
    det = build_detector(DriftSettings(detector=name, cooldown=33, params=params[name]))
    assert isinstance(det, RiverDriftDetector)
    assert det.name == name and det.cooldown == 33 and det.params == params[name]


def test_build_none_never_fires():
    det = build_detector(DriftSettings(detector="none"))
    assert isinstance(det, NoDrift)
    assert det.update(np.concatenate([np.zeros(1000), np.full(1000, 9.0)])) == []
    det.load_state_dict(det.state_dict())


def test_every_detector_satisfies_the_protocol():
    for name in ("loss_deviation", "adwin", "page_hinkley", "kswin", "none"):
        assert isinstance(build_detector(DriftSettings(detector=name)), DriftDetector)


def test_unknown_river_parameters_are_a_config_error():
    with pytest.raises(ConfigError, match="adwin"):
        build_detector(DriftSettings(detector="adwin", params={"threshold": 1.0}))


def test_unknown_detector_name_in_settings_is_a_config_error():
    with pytest.raises(ConfigError, match=r"drift\.detector"):
        load_settings(drift={"detector": "ddm"})
