import copy
import math

import pytest

from streamlearn.core.schedule import RewarmSchedule


def make(**kw):
    values = {
        "lr": 0.01,
        "warmup_steps": 4,
        "rewarm_factor": 3.0,
        "rewarm_steps": 2,
        "redecay_steps": 4,
        **kw,
    }
    return RewarmSchedule(**values)


def test_linear_warmup_then_constant_forever():
    s = make()
    assert [s.value(t) for t in range(6)] == pytest.approx(
        [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]
    )
    assert s.value(10**9) == 0.01  # "infinite": no horizon, no decay to zero


def test_no_warmup():
    s = make(warmup_steps=0)
    assert s.value(0) == s.value(1) == 0.01


def test_rewarm_to_peak_and_redecay_back_to_lr():
    s = make()
    s.on_drift(100)
    values = [s.value(t) for t in range(100, 108)]
    cos = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    expected = [0.02, 0.03] + [0.01 + 0.02 * c for c in cos] + [0.01, 0.01]
    assert values == pytest.approx(expected)
    assert max(values) == pytest.approx(0.03)  # lr × rewarm_factor
    assert values[-1] == 0.01
    assert values[1:] == sorted(values[1:], reverse=True)  # monotone re-decay
    assert s.value(99) == 0.01  # before the drift: unchanged


def test_drift_during_warmup_starts_from_the_current_lr():
    s = make(warmup_steps=10)
    s.on_drift(1)  # lr is 0.002 here
    assert s.drift_start_lr == pytest.approx(0.002)
    assert s.value(1) == pytest.approx(0.002 + (0.03 - 0.002) / 2)
    assert s.value(2) == pytest.approx(0.03)


def test_repeated_drifts_restart_from_where_the_lr_stands():
    s = make()
    s.on_drift(100)
    lr_at_103 = s.value(103)  # mid re-decay, above lr
    assert 0.01 < lr_at_103 < 0.03
    s.on_drift(103)
    assert s.drift_start_lr == pytest.approx(lr_at_103)
    assert s.value(103) == pytest.approx(lr_at_103 + (0.03 - lr_at_103) / 2)
    assert s.value(104) == pytest.approx(0.03)
    assert s.value(103 + 2 + 4) == 0.01
    s.on_drift(500)  # a later drift after returning to lr
    assert [s.value(t) for t in (500, 501)] == pytest.approx([0.02, 0.03])


def test_zero_rewarm_and_redecay_steps():
    s = make(rewarm_steps=0, redecay_steps=0)
    s.on_drift(50)
    assert s.value(50) == 0.01
    s = make(rewarm_steps=0, redecay_steps=2)
    s.on_drift(50)
    assert s.value(50) == pytest.approx(0.03)  # jumps to the peak, then decays
    assert s.value(52) == 0.01


def test_state_round_trip():
    s = make()
    s.on_drift(100)
    state = copy.deepcopy(s.state_dict())
    restored = make()
    assert restored.value(101) == 0.01
    restored.load_state_dict(state)
    assert [restored.value(t) for t in range(95, 120)] == [s.value(t) for t in range(95, 120)]
    fresh = make()
    fresh.load_state_dict(make().state_dict())
    assert fresh.drift_step is None and fresh.value(2) == pytest.approx(0.0075)
