"""Lockstep: what the worker loop does differently when it is one rank of several.

The loop calls it at four points: restore (rank 0 reads the cut and sends it to the others),
start (wait until Kafka has given every rank its partitions: the fence), every turn (the
round of :mod:`~streamlearn.worker.distributed.sync`) and shutdown (a final cut unless the group
is broken). The rules it enforces:

- every rank runs the same number of rounds, and leaves the loop after the same one (a stop
  request on any rank stops all of them, after that round);
- learning starts only once the assignment is settled: every rank owns partitions and no two
  own the same one (so start-up rebalances, while ranks join one by one, move nothing that was
  learned);
- partitions that move after that (a member left or joined: a crash, a scale change, a session
  timeout) stop every rank with :class:`GroupBroken` at the next round: torchrun or Kubernetes
  restarts the group, which resumes from the last consistent cut with whatever assignment Kafka
  makes then. A cut needs every rank, so it cannot be taken from one rank's rebalance callback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from streamlearn.core.memory.stage import MemoryStage
from streamlearn.core.prequential import Prequential
from streamlearn.worker.checkpoint import CheckpointStore, Loaded
from streamlearn.worker.distributed.cut import CutCheckpoint
from streamlearn.worker.distributed.group import GroupBroken, RankGroup
from streamlearn.worker.distributed.memory import gathered_memory
from streamlearn.worker.distributed.sync import RoundOutcome, Rounds
from streamlearn.worker.kafka.client import TopicPartition

if TYPE_CHECKING:
    from streamlearn.worker.batching import Batcher

__all__ = ["Lockstep"]

log = logging.getLogger(__name__)

FENCE_LOG_S = 10.0  # how often a rank waiting for its partitions says so


class MemoryPusher(Protocol):
    """Rank 0's publisher, as far as the error-memory push goes (``Publisher``)."""

    def memory_due(self) -> bool: ...

    def push_memory(
        self, prequential: Prequential, *, force: bool = False, stage: MemoryStage | None = None
    ) -> bool: ...


class Lockstep:
    """One rank's side of the lockstep over ``group`` (module docstring)."""

    def __init__(
        self, group: RankGroup, poll_timeout_s: float, pusher: MemoryPusher | None = None
    ) -> None:
        """``pusher``: rank 0's publisher, which pushes every rank's error memory (gathered
        when it is due)."""
        self.group = group
        self.pusher = pusher
        self.rounds = Rounds(group)
        self.poll_timeout_s = poll_timeout_s
        self.fenced = False
        self.last: RoundOutcome | None = None

    @property
    def stopped(self) -> bool:
        """The ranks agreed to stop (the loop's exit condition)."""
        return self.rounds.stopped

    def checkpoint(self, *args: Any, **kwargs: Any) -> CutCheckpoint:
        """The commit sequence as a consistent cut (Checkpoint's arguments)."""
        return CutCheckpoint(self.group, *args, **kwargs)

    def load_latest(self, store: CheckpointStore) -> Loaded | None:
        """The newest readable cut, read by rank 0 alone (it sets damaged files aside) and sent
        to every rank."""
        loaded = store.load_latest() if self.group.leader else None
        return self.group.broadcast_object(loaded)

    def restored(self, preq: Prequential, reset_counters: Callable[[], None]) -> None:
        """After the restore: the chain is the shared starting point; the cut's counters are
        the group's totals, so rank 0 keeps them and the others count from zero."""
        if not self.group.leader:
            preq.seen = preq.unknown_labels = 0
            reset_counters()
        self.rounds.start(preq)

    def fence(
        self, fill: Callable[[], None], owned: Callable[[], set[TopicPartition]],
        stop: threading.Event,
    ) -> None:  # fmt: skip
        """Poll (buffering, learning nothing) until every rank owns partitions, none twice."""
        next_log = time.monotonic() + FENCE_LOG_S
        while True:
            fill()
            parts = self.group.all_gather_object((sorted(owned()), stop.is_set()))
            if any(stopping for _, stopping in parts):
                self.rounds.stopped = True
                return
            sets = [set(tps) for tps, _ in parts]
            if all(sets) and sum(map(len, sets)) == len(set().union(*sets)):
                self.fenced = True
                log.info("rank %d of %d: partitions settled: %s", self.group.rank,
                         self.group.world_size, [sorted(s) for s in sets])  # fmt: skip
                return
            if time.monotonic() >= next_log:
                next_log = time.monotonic() + FENCE_LOG_S
                log.warning(
                    "rank %d: waiting for Kafka to give every rank partitions (now %s); run at "
                    "most as many ranks as partitions", self.group.rank, [sorted(s) for s in sets],
                )  # fmt: skip

    def turn(
        self, preq: Prequential, batcher: Batcher, *, drifted: bool, stop: bool, due: bool,
        reassigned: bool,
    ) -> bool:  # fmt: skip
        """The round after a turn; whether a checkpoint (cut) is due on every rank. A drift
        detected elsewhere gets this rank's response here; while some rank learns, the next
        poll does not block (a quiet rank then holds the others up only for a poll)."""
        push = self.pusher is not None and preq.memory is not None and self.pusher.memory_due()
        outcome = self.rounds.turn(
            preq, drifted=drifted, stop=stop, due=due, reassigned=reassigned, push=push
        )
        self.last = outcome
        if outcome.reassigned:
            self.group.broken = True  # no final cut: the last one is where the group resumes
            raise GroupBroken(
                "partitions moved between ranks after the start (a member left or joined): "
                "restarting the group from the last consistent cut"
            )
        if outcome.drifts and not drifted:
            preq.respond_to_drift()
        if outcome.push:
            stage = gathered_memory(self.group, preq)
            if self.pusher is not None:
                self.pusher.push_memory(preq, force=True, stage=stage)
        batcher.poll_timeout_s = 0.0 if outcome.learned else self.poll_timeout_s
        return outcome.checkpoint
