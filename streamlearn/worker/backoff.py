"""Broker outages: exponential back-off, and one log line per state change, not per retry.

Kafka clients reconnect on their own and log every failed attempt; a worker that runs for
months should say "unreachable since …" once and "reachable again after …" once, and space its
own retries (probes, commits, publishing) exponentially up to a cap. Any failure starts an
outage; only a round trip the worker made itself ends it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from streamlearn.errors import KafkaUnavailable

__all__ = ["Backoff", "BrokerHealth", "retry"]

T = TypeVar("T")


class Backoff:
    """Delays initial, 2·initial, 4·initial, … capped at ``maximum``.

    >>> b = Backoff(0.5, 3.0)
    >>> [b.next() for _ in range(5)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    """

    def __init__(self, initial: float, maximum: float, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * self.factor**self.attempt)
        if delay < self.maximum:  # no further: factor**attempt would overflow in long outages
            self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class BrokerHealth:
    """Up or down, with the transitions logged once and the retry delay to use while down."""

    def __init__(
        self,
        backoff: Backoff,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff = backoff
        self.log = log
        self._clock = clock
        self.up = True
        self.outages = 0
        self.retries = 0
        self._down_since = 0.0
        self._retry_at = 0.0

    def ok(self) -> None:
        """A request just made went to the broker and back: leave the outage state (logged
        once, with the time since the first failure and the retries since).

        Only a real round trip counts (a probe, a connect): records a poll returns may have been
        fetched before the outage, acknowledgements a settle collects may predate it."""
        if not self.up:
            self.log.info(
                "Kafka reachable again after %.1f s (%d retries)",
                self._clock() - self._down_since,
                self.retries,
            )
            self.up = True
        self.backoff.reset()

    def failed(self, what: str, error: BaseException | str) -> float:
        """Something did not reach the broker; returns how long to wait before retrying."""
        now = self._clock()
        if self.up:
            self.up = False
            self.outages += 1
            self.retries = 0
            self._down_since = now
            self.log.warning(
                "Kafka unreachable (%s: %s); retrying with back-off up to %.0f s",
                what,
                error,
                self.backoff.maximum,
            )
        else:
            self.retries += 1
        delay = self.backoff.next()
        self._retry_at = now + delay
        return delay

    def retry_due(self) -> bool:
        """While down: whether the back-off delay since the last failure has passed."""
        return self.up or self._clock() >= self._retry_at


def retry(
    call: Callable[[], T], health: BrokerHealth, stop: threading.Event, what: str
) -> T | None:
    """``call()`` until it does not raise KafkaUnavailable; None if ``stop`` is set first."""
    while not stop.is_set():
        try:
            result = call()
        except KafkaUnavailable as exc:
            stop.wait(health.failed(what, exc))
            continue
        health.ok()
        return result
    return None
