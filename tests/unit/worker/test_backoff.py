import logging
import threading

from streamlearn.errors import KafkaUnavailable
from streamlearn.worker.backoff import Backoff, BrokerHealth, retry


def test_health_logs_once_per_state_change(caplog):
    caplog.set_level(logging.INFO)
    now = [0.0]
    health = BrokerHealth(Backoff(0.5, 4.0), logging.getLogger("t"), clock=lambda: now[0])
    delays = [health.failed("poll", "refused") for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    now[0] = 12.0
    health.ok()
    health.ok()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "unreachable (poll: refused)" in messages[0]
    assert "reachable again after 12.0 s (4 retries)" in messages[1]
    assert health.failed("poll", "again") == 0.5  # back-off restarts after recovery
    assert health.outages == 2


def test_retry_until_success_or_stop():
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise KafkaUnavailable("down")
        return "up"

    health = BrokerHealth(Backoff(0.001, 0.001), logging.getLogger("t"))
    assert retry(flaky, health, threading.Event(), "connect") == "up"
    stop = threading.Event()
    stop.set()
    assert retry(flaky, health, stop, "connect") is None
