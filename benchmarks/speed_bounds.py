"""Why streamlearn's events/s is where it is: two ceilings, measured in the benchmark's run.

- Arithmetic: one learned event costs ``updates × (1 + replay_ratio)`` training rows, each
  about three times the forward pass's multiply-adds (forward, input gradient, weight
  gradient). Divided into this machine's measured matrix-product rate (one thread per core,
  all cores), that bounds events/s whatever the software does.
- Framework overhead: the torch operations one micro-batch dispatches (counted with a
  ``TorchDispatchMode``) times the measured cost of one small operation bound events/s from
  below the arithmetic; numpy and Python work come on top.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from streamlearn.prequential import Prequential
from streamlearn.settings import Settings

__all__ = ["SpeedBounds", "matmul_gmacs", "measure_bounds", "op_microseconds"]

Columns = dict[str, Any]


@dataclass(frozen=True)
class SpeedBounds:
    """The two ceilings for one stream, and what they are made of."""

    stream: str
    batch_size: int
    macs_per_event: float  # multiply-adds of learning one event (all updates, replay rows)
    matmul_gmacs: float  # measured, one thread, 64×64 by 64×64 float32 products
    cores: int
    ops_per_batch: int  # torch operations one micro-batch of Prequential dispatches
    op_us: float  # measured cost of one small torch operation

    @property
    def arithmetic_events_per_s(self) -> float:
        return self.matmul_gmacs * 1e9 * self.cores / self.macs_per_event

    @property
    def overhead_us_per_batch(self) -> float:
        return self.ops_per_batch * self.op_us

    @property
    def overhead_events_per_s(self) -> float:
        return self.batch_size / (self.overhead_us_per_batch * 1e-6)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "arithmetic_events_per_s": self.arithmetic_events_per_s,
            "overhead_us_per_batch": self.overhead_us_per_batch,
            "overhead_events_per_s": self.overhead_events_per_s,
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


def op_microseconds() -> float:
    """µs of one small elementwise torch operation (a [32, 64] add): dispatch, not math."""
    a, b = torch.randn(32, 64), torch.randn(32, 64)
    return _best_of(lambda: torch.add(a, b), 5000) * 1e6


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.count += 1
        return func(*args, **(kwargs or {}))


def _macs_per_event(preq: Prequential) -> float:
    """Training multiply-adds per learned event over the part of the model actually computed."""
    learner = preq.learner
    trainer, s = learner.trainer, learner.settings
    widths = [
        trainer.active_num + trainer.active_cat * trainer.table.shape[1],
        *s.hidden,
        learner.outputs,
    ]
    forward = sum(a * b for a, b in itertools.pairwise(widths))
    return 3.0 * forward * s.updates * (1.0 + s.replay_ratio)


def measure_bounds(
    stream: str,
    settings: Settings,
    batches: Sequence[tuple[Columns, list[Any]]],
    *,
    gmacs: float,
    op_us: float,
) -> SpeedBounds:
    """Warm a fresh Prequential on all but the last batch, then count the last one's ops."""
    preq = Prequential(settings)
    for columns, ys in batches[:-1]:
        preq.process_columns(columns, ys)
    counter = _OpCounter()
    with counter:
        preq.process_columns(*batches[-1])
    return SpeedBounds(
        stream=stream,
        batch_size=settings.source.batch_size,
        macs_per_event=_macs_per_event(preq),
        matmul_gmacs=gmacs,
        cores=os.cpu_count() or 1,
        ops_per_batch=counter.count,
        op_us=op_us,
    )
