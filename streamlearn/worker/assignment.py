"""Assignment: the partitions a worker holds now, and what makes a worker without any visible.

A worker without partitions learns nothing, and nothing fails: its group has more consumers
than partitions, or is stuck rebalancing. So the count is a gauge per subscribed topic
(``streamlearn_worker_assigned_partitions``) and the readiness probe's (``/readyz``), and a
WARNING is logged once none has been assigned for ``worker.no_partitions_warn_s``, then at
most every ``worker.log_every_s`` while that lasts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence

from streamlearn.metrics.worker import WorkerMetrics
from streamlearn.settings import Settings
from streamlearn.worker.health import Heartbeat
from streamlearn.worker.kafka.client import TopicPartition

__all__ = ["Assignment"]

log = logging.getLogger(__name__)


class Assignment:
    """The partitions assigned to one worker (``owned``), kept by its rebalance callbacks."""

    def __init__(
        self,
        topics: Sequence[str],
        settings: Settings,
        metrics: WorkerMetrics,
        heartbeat: Heartbeat,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics, self.settings = topics, settings
        self.metrics, self.heartbeat, self._clock = metrics, heartbeat, clock
        self.owned: set[TopicPartition] = set()
        self._unassigned_since: float | None = None  # no partition assigned since then
        self._warn_at = 0.0
        self._changed()  # none yet

    def add(self, partitions: Collection[TopicPartition]) -> None:
        self.owned |= set(partitions)
        self._changed()

    def remove(self, partitions: Collection[TopicPartition]) -> None:
        self.owned -= set(partitions)
        self._changed()

    def warn_if_none(self) -> None:
        """The WARNING once no partition has been assigned for ``no_partitions_warn_s``, then
        at most every ``log_every_s`` while that lasts (called when the loop is idle)."""
        now = self._clock()
        if self._unassigned_since is None or now < self._warn_at:
            return
        self._warn_at = now + self.settings.worker.log_every_s
        group = self.settings.kafka.group_id
        log.warning(
            "no partition assigned for %.0f s: group %r has more consumers than partitions in "
            "%s, or it is stuck rebalancing; this worker learns nothing meanwhile. Check the "
            "partition count and the members (kafka-consumer-groups.sh --describe --group %s "
            "--members); run at most as many workers as partitions",
            now - self._unassigned_since, group, " and ".join(self.topics), group,
        )  # fmt: skip

    def _changed(self) -> None:
        """The gauge and the readiness count; when none is left, the no-partitions clock starts
        (it keeps running through rebalances that assign nothing)."""
        self.metrics.observe_assignment(self.topics, self.owned)
        self.heartbeat.partitions = len(self.owned)
        if self.owned:
            self._unassigned_since = None
        elif self._unassigned_since is None:
            self._unassigned_since = self._clock()
            self._warn_at = self._unassigned_since + self.settings.worker.no_partitions_warn_s
