"""Rounds: the one collective exchange every rank makes once per loop turn, in lockstep.

Decision 0027: one model by weighted model averaging after every turn (post-local SGD with a
period of one micro-batch), not a gradient all-reduce inside the step. Each turn a rank has
learned 0 or more labelled rows; the round

1. sums a small float64 vector: rows learned (the rank's weight), local drift detections,
   stop requests, checkpoints due, assignment changes, an error-memory push due, and the
   encoder's new statistics (Welford moments of the rows seen since the last round, shifted
   by the shared mean, so they add up exactly: Chan et al.'s parallel update);
2. if any rank learned: all-reduces the dense parameters and the embedding table weighted by
   those rows, so every rank leaves the round with the same weights and statistics.

A rank whose partitions are quiet still takes part in every round: its turn ends after one
poll (``worker.poll_timeout_s``, shortened to a non-blocking poll while any rank learns), it
contributes weight 0 and receives the average. That bounds how long it holds up the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamlearn.core.prequential import Prequential
from streamlearn.worker.distributed.group import RankGroup

__all__ = ["RoundOutcome", "Rounds"]

_CONTROL = 6  # learned rows, drifts, stops, checkpoints due, assignment changes, memory pushes


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """What the ranks agreed on in one round."""

    learned: int  # labelled rows learned this turn, all ranks together
    drifts: int  # ranks that detected a drift this turn
    stop: bool  # some rank was asked to stop: every rank stops after this round
    checkpoint: bool  # some rank's checkpoint is due: every rank takes part in the cut
    reassigned: bool  # partitions moved after the start: the group restarts from the cut
    push: bool  # rank 0's error-memory push is due: every rank's memory is gathered


class Rounds:
    """Per-turn lockstep over ``group`` for the chain ``preq`` (see the module docstring)."""

    def __init__(self, group: RankGroup) -> None:
        self.group = group
        self.rounds = 0
        self.stopped = False
        self._base: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._seen = 0

    def start(self, preq: Prequential) -> None:
        """Take the (restored, identical on every rank) chain as the shared starting point."""
        enc = preq.encoder
        self._base = (enc.count.copy(), enc.mean.copy(), enc.m2.copy())
        self._seen = preq.seen

    def turn(
        self, preq: Prequential, *, drifted: bool, stop: bool, due: bool, reassigned: bool,
        push: bool = False,
    ) -> RoundOutcome:  # fmt: skip
        """One round (collective); every rank calls it once per turn, learned or not."""
        assert self._base is not None, "Rounds.start first"
        learned = preq.seen - self._seen
        shifted = _shifted_moments(preq, self._base)
        control = [learned, drifted, stop, due, reassigned, push]
        vector = torch.from_numpy(np.concatenate([np.array(control, np.float64), shifted]))
        self.group.all_reduce(vector)
        totals = vector.numpy()
        outcome = RoundOutcome(
            int(totals[0]), int(totals[1]), *(bool(v > 0) for v in totals[2:_CONTROL])
        )
        self._merge_statistics(preq, totals[_CONTROL:])
        if outcome.learned:
            self._average(preq, learned / outcome.learned)
        self._seen = preq.seen
        self.rounds += 1
        self.stopped = outcome.stop
        return outcome

    def _average(self, preq: Prequential, weight: float) -> None:
        """Every rank's weights, weighted by the rows it learned this turn (weights sum to 1),
        once no re-keying of the error memory still reads them; a classifier's linear model,
        its share's evidence and its rates' losses likewise."""
        if preq.memory is not None:
            preq.memory.ring_ready()
        trainer, linear = preq.learner.trainer, preq.linear
        table = trainer.table
        parts = [trainer.flat, table.reshape(-1)]
        if linear is not None:  # its weights, then the share's and the rates' evidence
            evidence = np.array([linear.hedge.advantage, *linear.model.loss], np.float32)
            parts += [torch.from_numpy(linear.model.flat), torch.from_numpy(evidence)]
        flat = torch.cat(parts) * weight
        self.group.all_reduce(flat)
        trainer.flat.copy_(flat[: trainer.flat.numel()])
        end = trainer.flat.numel() + table.numel()
        table.copy_(flat[trainer.flat.numel() : end].view_as(table))
        if linear is not None:
            averaged = flat[end:].numpy()
            weights = linear.model.flat.size
            linear.model.flat[:] = averaged[:weights]
            linear.hedge.set_advantage(float(averaged[weights]))
            linear.model.set_loss(averaged[weights + 1 :])

    def _merge_statistics(self, preq: Prequential, sums: np.ndarray) -> None:
        """The shared statistics: the last round's plus every rank's rows since (exact)."""
        count0, mean0, m2_0 = self._base  # type: ignore[misc]
        a, b, c = sums.reshape(3, -1)
        count = count0 + a
        safe = np.where(count > 0, count, 1.0)
        enc = preq.encoder
        enc.count[:] = count
        enc.mean[:] = mean0 + b / safe
        enc.m2[:] = np.maximum(m2_0 + c - b * b / safe, 0.0)
        self._base = (enc.count.copy(), enc.mean.copy(), enc.m2.copy())


def _shifted_moments(preq: Prequential, base: tuple[np.ndarray, ...]) -> np.ndarray:
    """This rank's rows since the last round as (count, Σ(x−m₀), Σ(x−m₀)²) per numeric slot,
    m₀ the shared mean then: additive over ranks, and small numbers (no cancellation)."""
    count0, mean0, m2_0 = base
    enc = preq.encoder
    shift = enc.mean - mean0
    a = enc.count - count0
    b = enc.count * shift
    c = enc.m2 + enc.count * shift * shift - m2_0
    return np.concatenate([a, b, c])
