"""Why streamlearn's events/s is where it is, measured in the benchmark's run.

- Arithmetic ceiling: one learned event costs ``updates × (1 + replay_ratio)`` training rows,
  each about three times the forward pass's multiply-adds (forward, input gradient, weight
  gradient). Divided into this machine's measured matrix-product rate (one thread per core,
  all cores), that bounds events/s whatever the software does.
- Where a micro-batch's time goes: a warmed-up Prequential processes further batches with its
  stages timed (exclusive time: a stage's own calls, less the stages it calls), so a target's
  time budget per batch can be set against what each part costs.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings

__all__ = ["STAGES", "SpeedBounds", "matmul_gmacs", "measure_bounds"]

Columns = dict[str, Any]

# (stage, attribute path on Prequential, methods timed); a missing object (no error memory,
# the torch step) leaves its stage at zero
STAGES = (
    ("compiled training", "learner.step_kernel.binding", ("update", "begin", "wait")),
    ("learner, rest", "learner", ("begin_step", "_account")),
    ("error memory", "memory", ("compensate", "store", "refresh")),
    ("drift detector", "detector", ("update",)),
    ("features", "encoder", ("encode_columns", "standardize", "observe")),
    ("labels", "labels", ("add_many",)),
    ("expert pool", "experts", ("learn", "observe")),
    ("linear model", "linear", ("mix", "learn")),
)
OTHER = "other (Prequential's own code)"


@dataclass(frozen=True)
class SpeedBounds:
    """The arithmetic ceiling and the measured cost of a batch, per stage, for one stream."""

    stream: str
    batch_size: int
    macs_per_event: float  # multiply-adds of learning one event (all updates, replay rows)
    matmul_gmacs: float  # measured, one thread, 64×64 by 64×64 float32 products
    cores: int
    warmup_batches: int  # batches learned before the timed ones
    batches: int  # batches timed for the breakdown
    stage_us: dict[str, float]  # µs per batch in each stage (STAGES, then OTHER)

    @property
    def arithmetic_events_per_s(self) -> float:
        return self.matmul_gmacs * 1e9 * self.cores / self.macs_per_event

    @property
    def batch_us(self) -> float:
        return sum(self.stage_us.values())

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "arithmetic_events_per_s": self.arithmetic_events_per_s,
            "batch_us": self.batch_us,
        }


def _best_of(fn: Callable[[], object], repeats: int, rounds: int = 5) -> float:
    """Seconds per call: the fastest of a few rounds (other work only ever slows a round)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def matmul_gmacs() -> float:
    """Giga multiply-adds/s of a 64×64 by 64×64 float32 product on this thread."""
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    return 64**3 / _best_of(lambda: torch.mm(a, b), 2000) / 1e9


class _StageTimer:
    """Wraps methods of one Prequential instance; adds each call's exclusive seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._children: list[float] = []  # per open call: seconds spent in timed callees

    def wrap(self, owner: object, method: str, stage: str) -> None:
        original = getattr(owner, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._children.append(0.0)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.seconds[stage] += elapsed - self._children.pop()
                if self._children:
                    self._children[-1] += elapsed

        setattr(owner, method, timed)


def _resolve(root: object, path: str) -> object | None:
    for name in path.split("."):
        root = getattr(root, name, None)
        if root is None:
            return None
    return root


def _macs_per_event(preq: Prequential) -> float:
    """Training multiply-adds per learned event over the part of the model actually computed."""
    learner = preq.learner
    trainer, s = learner.trainer, learner.settings
    widths = [  # layer 0 reads each active numeric slot's periodic features too
        trainer.active_num * trainer.input_width + trainer.active_cat * trainer.table.shape[1],
        *s.hidden,
        learner.outputs,
    ]
    forward = sum(a * b for a, b in itertools.pairwise(widths))
    return 3.0 * forward * s.updates * (1.0 + learner.replay_ratio)


def measure_bounds(
    stream: str,
    settings: Settings,
    warmup: Sequence[tuple[Columns, list[Any]]],
    timed: Sequence[tuple[Columns, list[Any]]],
    *,
    gmacs: float,
) -> SpeedBounds:
    """Warm a fresh Prequential on ``warmup``, then time its stages over ``timed``."""
    preq = Prequential.from_settings(settings)
    for columns, ys in warmup:
        preq.process_columns(columns, ys)
    timer = _StageTimer()
    for stage, path, methods in STAGES:
        owner = _resolve(preq, path)
        for method in methods if owner is not None else ():
            timer.wrap(owner, method, stage)
    start = time.perf_counter()
    for columns, ys in timed:
        preq.process_columns(columns, ys)
    total = time.perf_counter() - start
    per_batch = {stage: timer.seconds[stage] * 1e6 / len(timed) for stage, _, _ in STAGES}
    per_batch[OTHER] = total * 1e6 / len(timed) - sum(per_batch.values())
    return SpeedBounds(
        stream=stream,
        batch_size=settings.source.batch_size,
        macs_per_event=_macs_per_event(preq),
        matmul_gmacs=gmacs,
        cores=os.cpu_count() or 1,
        warmup_batches=len(warmup),
        batches=len(timed),
        stage_us=per_batch,
    )
