import pytest

from streamlearn.errors import ConfigError
from streamlearn.settings import load_settings
from streamlearn.worker.health import Heartbeat


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_alive_while_starting_then_by_the_age_of_the_last_turn():
    clock = Clock()
    beat = Heartbeat(5.0, clock)
    clock.now += 1000
    assert beat.live()[0]  # restoring or connecting: not judged yet
    beat.beat()
    clock.now += 4.9
    assert beat.live()[0]
    clock.now += 0.2
    alive, why = beat.live()
    assert not alive and "5.1 s" in why


def test_ready_once_restored_and_assigned():
    beat = Heartbeat(5.0)
    assert beat.ready() == (False, "restoring the checkpoint")
    beat.restored = True
    assert beat.ready() == (False, "no partition assigned")
    beat.partitions = 3
    assert beat.ready()[0]


def test_the_liveness_limit_must_outlast_the_longest_back_off():
    with pytest.raises(ConfigError, match="liveness_timeout_s"):
        load_settings(worker={"liveness_timeout_s": 30, "backoff_max_s": 30})
