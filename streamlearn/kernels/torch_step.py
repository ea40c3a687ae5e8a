"""The training step's compute in torch: the reference form, on a CPU or a CUDA device.

:class:`TorchStep` runs a batch's updates one after another, each over [batch ‖ its share of
the replay rows], as the trainer's torch ops (FusedTrainer in core/training_step.py: forward,
hand-derived backward, global-norm clipping, AdamW, lazy sparse Adam); the first update's
forward pass also scores the batch. The compiled form (``CompiledTraining`` in
kernels/compiled.py, step.c) runs each update in one call, and is tested against this one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from streamlearn.kernels.backend import Inputs, Into, Scored, Shown
from streamlearn.kernels.cpu.binding import APPLIED, SKIPPED, Replay, Target
from streamlearn.kernels.device import to_device
from streamlearn.kernels.torch_memory import unit_rows

if TYPE_CHECKING:
    from streamlearn.core.training_step import FusedTrainer, Pass

__all__ = ["TorchStep"]

# a batch's rows on the trainer's device: numeric, bucket ids, targets (float32 or int64)
Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class TorchStep:
    """:class:`~streamlearn.kernels.backend.StepKernel` in torch ops on the trainer's device;
    never overlaps."""

    name = "torch"
    overlaps = False

    def __init__(self, trainer: FusedTrainer | None = None) -> None:
        self._trainer = trainer

    def bind(self, trainer: FusedTrainer) -> TorchStep:
        return TorchStep(trainer)

    def check(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray, outputs: int) -> Rows:
        trainer = self._trainer
        assert trainer is not None, "an unbound step kernel: bind it to a trainer"
        trainer.observe_inputs(num, cat)
        device = trainer.flat.device
        targets = y.astype(np.float32 if trainer.regression else np.int64)
        return to_device(num, device), to_device(cat, device), to_device(targets, device)

    def begin(
        self, rows: Rows, replay: Replay | None, outputs: int, lrs: list[float], target: Target
    ) -> None:
        return None  # no worker thread: run() the step

    def run(
        self, rows: Rows, replay: Replay | None, outputs: int, lrs: list[float], target: Target
    ) -> Scored:
        trainer = self._trainer
        assert trainer is not None, "an unbound step kernel: bind it to a trainer"
        num, cat, y = rows
        batch = y.shape[0]
        per_update, replayed = 0, None
        if replay is not None:  # one gather serves every update's share
            r_num, r_cat, r_y, drawn = replay
            idx = torch.from_numpy(drawn).to(r_num.device)
            replayed = (
                r_num.index_select(0, idx),
                r_cat.index_select(0, idx),
                r_y.index_select(0, idx),
            )
            per_update = len(drawn) // len(lrs)

        def mixed(update: int) -> Rows:
            """The batch followed by this update's share of the replay rows."""
            if replayed is None:
                return num, cat, y
            share = slice(update * per_update, (update + 1) * per_update)
            r_num, r_cat, r_y = replayed
            return (
                torch.cat([num, r_num[share]]),
                torch.cat([cat, r_cat[share]]),
                torch.cat([y, r_y[share]]),
            )

        x_num, x_cat, y_all = mixed(0)
        first = trainer.forward(x_num, x_cat, outputs)
        prediction = trainer.prediction(first, batch, target[2:])
        losses = trainer.losses(first, y_all)  # training loss and prequential loss
        pre_loss, total = losses[:batch], float(losses.sum())
        codes = [self._learn(first, y_all, total, lrs[0])]
        for update in range(1, len(lrs)):
            x_num, x_cat, y_all = mixed(update)
            again = trainer.forward(x_num, x_cat, outputs)
            loss = float(trainer.losses(again, y_all).sum())
            codes.append(self._learn(again, y_all, loss, lrs[codes.count(APPLIED)]))
        return Scored(  # the fused step is float32 throughout
            prediction.cpu().numpy(),
            pre_loss.cpu().numpy(),
            first.hidden[-1][:batch].cpu().numpy(),
            pre_loss,
            total,
            codes,
            None,
        )

    def _learn(self, p: Pass, y: torch.Tensor, loss: float, lr: float) -> int:
        """One update, SKIPPED (nothing changed) where the summed loss or the gradient is not
        finite."""
        assert self._trainer is not None
        return APPLIED if math.isfinite(loss) and self._trainer.learn(p, y, lr) else SKIPPED

    def wait(self) -> list[int]:
        return []  # nothing is ever left running

    def forward_into(
        self, inputs: Inputs, outputs: int, into: Into, shown: Shown, overlap: bool = False
    ) -> bool:
        trainer = self._trainer
        assert trainer is not None, "an unbound step kernel: bind it to a trainer"
        p = trainer.forward(*inputs, outputs)
        pred = trainer.prediction(p, len(inputs[0]), shown)
        prediction, keys = into
        unit_rows(p.hidden[-1].float(), out=keys)
        prediction.copy_(pred.float().view_as(prediction))
        return False
