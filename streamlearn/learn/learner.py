"""OnlineLearner: score a micro-batch with the current weights, then learn from it.

One forward pass over [new batch ‖ replay sample] gives both the prequential predictions for
the new rows (made before any update, so a prediction never sees its own label) and the
training loss. Steps with a non-finite loss or gradient are skipped and counted, gradients are
clipped, and the LR follows a warm-up/re-warm schedule. CUDA with bfloat16 autocast when
present, else CPU float32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from streamlearn.device import autocast_dtype, configure_threads, resolve_device, to_device
from streamlearn.learn.replay import ReservoirBuffer
from streamlearn.learn.schedule import RewarmSchedule
from streamlearn.model import TabularNet
from streamlearn.settings import FeatureSettings, LearnerSettings

__all__ = ["OnlineLearner", "StepResult"]


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one prequential step saw before it learned."""

    prediction: np.ndarray  # [B, C] probabilities or [B] values, from pre-update weights
    loss: np.ndarray  # [B] per-row loss of those predictions
    hidden: np.ndarray  # [B, H] hidden representation (the error-memory key)
    learned: bool  # False when the step was skipped as non-finite


class OnlineLearner:
    """Owns the model, optimizer, schedule and replay buffer; works on encoded arrays."""

    def __init__(self, learner: LearnerSettings, features: FeatureSettings) -> None:
        self.settings = learner
        self.regression = learner.task == "regression"
        self.device = resolve_device(learner.device)
        self._autocast = autocast_dtype(self.device, learner.amp)
        configure_threads(learner.threads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(learner.seed)
            self.model = TabularNet(
                features.numeric_slots,
                features.categorical_slots,
                features.hash_buckets,
                features.embedding_dim,
                learner.hidden,
                learner.max_classes,
                regression=self.regression,
            ).to(self.device)
        # Dense layers: AdamW. The embedding table has sparse gradients and its own lazy Adam,
        # so a step's cost does not grow with the number of hash buckets.
        embedding = self.model.embedding.weight
        self._dense = [p for p in self.model.parameters() if p is not embedding]
        self.optimizer = torch.optim.AdamW(
            self._dense, lr=learner.lr, weight_decay=learner.weight_decay, fused=True
        )
        self.sparse_optimizer = torch.optim.SparseAdam([embedding], lr=learner.lr)
        self.schedule = RewarmSchedule(
            learner.lr,
            learner.warmup_steps,
            learner.rewarm_factor,
            learner.rewarm_steps,
            learner.redecay_steps,
        )
        self.replay = ReservoirBuffer(
            learner.replay_size,
            features.numeric_slots,
            features.categorical_slots,
            torch.float32 if self.regression else torch.long,
            self.device,
            seed=learner.seed,
        )
        self.steps = 0
        self.skipped_nonfinite = 0
        self._y_count = 0.0
        self._y_mean = 0.0
        self._y_m2 = 0.0

    # -- inference ------------------------------------------------------------------------
    def _amp(self) -> contextlib.AbstractContextManager[Any]:
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast)

    @torch.no_grad()
    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Probabilities [N, C] or values [N] for standardised numeric + bucket inputs."""
        with self._amp():
            pred, _ = self.model(to_device(num, self.device), to_device(cat, self.device))
        return pred.float().cpu().numpy()

    @torch.no_grad()
    def predict_hidden(self, num: np.ndarray, cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`predict`, plus the hidden representation [N, H] (error-memory key)."""
        with self._amp():
            pred, hidden = self.model(to_device(num, self.device), to_device(cat, self.device))
        return pred.float().cpu().numpy(), hidden.float().cpu().numpy()

    def set_classes(self, mask: np.ndarray) -> None:
        """Switch on the output slots of the classes seen so far."""
        if not self.regression:
            self.model.class_mask.copy_(torch.from_numpy(mask))

    # -- learning -------------------------------------------------------------------------
    def _observe_targets(self, y: np.ndarray) -> None:
        """Running mean/std of a regression target (Chan's update), mirrored in the model."""
        n_b, mean_b = float(len(y)), float(y.mean())
        m2_b = float(((y - mean_b) ** 2).sum())
        total = self._y_count + n_b
        delta = mean_b - self._y_mean
        self._y_mean += delta * n_b / total
        self._y_m2 += m2_b + delta**2 * self._y_count * n_b / total
        self._y_count = total
        std = (self._y_m2 / max(total - 1, 1)) ** 0.5
        self.model.target_loc.fill_(self._y_mean)
        self.model.target_scale.fill_(std if std > 1e-12 else 1.0)

    def _losses(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.regression:
            z = (y - self.model.target_loc) / self.model.target_scale
            return (out.float() - z) ** 2
        return F.cross_entropy(out.float(), y, reduction="none")

    def _replay_mix(
        self, num: torch.Tensor, cat: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch followed by a fresh replay sample of replay_ratio × its size."""
        n_replay = round(self.settings.replay_ratio * len(y)) if len(self.replay) else 0
        if not n_replay:
            return num, cat, y
        r_num, r_cat, r_y = self.replay.sample(n_replay)
        return torch.cat([num, r_num]), torch.cat([cat, r_cat]), torch.cat([y, r_y])

    def step(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray) -> StepResult:
        """Predict the labelled batch with the current weights, then learn from it.

        ``y`` holds class slots (int) or target values (float). The first update shares its
        forward pass with the prequential prediction; ``updates`` > 1 takes further steps on
        the same batch, each with a fresh replay sample.
        """
        batch = len(y)
        num_t, cat_t = to_device(num, self.device), to_device(cat, self.device)
        y_t = to_device(y.astype(np.float32 if self.regression else np.int64), self.device)
        x_num, x_cat, y_all = self._replay_mix(num_t, cat_t, y_t)

        with self._amp():
            out, hidden = self.model.raw(x_num, x_cat)
        with torch.no_grad():
            pre_out = out[:batch].float()
            if self.regression:
                prediction = pre_out * self.model.target_scale + self.model.target_loc
            else:
                prediction = torch.softmax(pre_out, dim=1)
        if self.regression and np.isfinite(y).all():  # a non-finite batch is skipped below
            self._observe_targets(y.astype(np.float64))
        losses = self._losses(out, y_all)  # one pass: training loss and prequential loss
        pre_loss = losses[:batch].detach()
        learned = self._apply(losses.mean())
        for _ in range(self.settings.updates - 1):
            x_num, x_cat, y_all = self._replay_mix(num_t, cat_t, y_t)
            with self._amp():
                out, _ = self.model.raw(x_num, x_cat)
            learned = self._apply(self._losses(out, y_all).mean()) and learned
        finite = torch.isfinite(pre_loss)  # a NaN/inf row must not poison later replay
        if finite.all():
            self.replay.add(num_t, cat_t, y_t)
        elif finite.any():
            self.replay.add(num_t[finite], cat_t[finite], y_t[finite])
        return StepResult(
            prediction.cpu().numpy(),
            pre_loss.cpu().numpy(),
            hidden[:batch].detach().float().cpu().numpy(),
            learned,
        )

    def _zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.sparse_optimizer.zero_grad(set_to_none=True)

    def _clip(self) -> bool:
        """Clip all gradients (dense and sparse) to one global norm; False if non-finite."""
        grads = [p.grad for p in self._dense if p.grad is not None]
        embedding = self.model.embedding.weight
        if embedding.grad is not None:
            embedding.grad = embedding.grad.coalesce()
            grads.append(embedding.grad.values())
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if not torch.isfinite(norm):
            return False
        scale = (self.settings.clip_norm / (norm + 1e-6)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(scale)
        return True

    def _apply(self, loss: torch.Tensor) -> bool:
        """Backward, clip and step unless the loss or gradient is non-finite."""
        self._zero_grad()
        if not torch.isfinite(loss):
            self.skipped_nonfinite += 1
            return False
        loss.backward()
        if not self._clip():
            self._zero_grad()
            self.skipped_nonfinite += 1
            return False
        lr = self.schedule.value(self.steps)
        for optimizer in (self.optimizer, self.sparse_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        self.steps += 1
        return True

    def on_drift(self) -> None:
        """Drift response: re-warm the learning rate; optionally restart the replay sample."""
        self.schedule.on_drift(self.steps)
        if self.settings.replay_reset_on_drift:
            self.replay.clear()

    @property
    def lr(self) -> float:
        return self.schedule.value(self.steps)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sparse_optimizer": self.sparse_optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "replay": self.replay.state_dict(),
            "counters": {
                "steps": self.steps,
                "skipped_nonfinite": self.skipped_nonfinite,
                "y": [self._y_count, self._y_mean, self._y_m2],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sparse_optimizer.load_state_dict(state["sparse_optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.replay.load_state_dict(state["replay"])
        counters = state["counters"]
        self.steps = int(counters["steps"])
        self.skipped_nonfinite = int(counters["skipped_nonfinite"])
        self._y_count, self._y_mean, self._y_m2 = (float(v) for v in counters["y"])
