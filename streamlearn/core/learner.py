"""OnlineLearner: score a micro-batch with the current weights, then learn from it.

One forward pass over [new batch ‖ replay sample] gives both the prequential predictions for
the new rows (made before any update, so a prediction never sees its own label) and the
training loss. Steps with a non-finite loss or gradient are skipped and counted, gradients are
clipped, and the LR follows a warm-up/re-warm schedule. The learner is state (model, the
trainer's buffers of core/training_step.py, schedule, replay, counters, target statistics);
its step kernel, from the backend (``Backend.step``), computes the hand-fused step in float32:
compiled, one call per update, on a CPU with the compiled backend, else (the torch backend,
CUDA) as torch ops (kernels/torch_step.py). Scoring-only calls use the module (bfloat16
autocast on CUDA). :meth:`begin_step` scores the batch and returns a
:class:`~streamlearn.core.pending.PendingStep`; with the compiled step and ``learner.overlap``
the step's updates are still running on a second thread until the caller waits on it, and the
learner refuses to read or change its state before then.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamlearn.core.model import TabularNet, forward_multiply_adds
from streamlearn.core.pending import Pending, PendingStep, StepPending
from streamlearn.core.replay import PreparedRows, ReservoirBuffer
from streamlearn.core.schedule import RewarmSchedule
from streamlearn.core.training_step import FusedTrainer
from streamlearn.kernels import torch_step
from streamlearn.kernels.backend import Backend, Scored, StepKernel, select_backend
from streamlearn.kernels.compiled import reloaded_step
from streamlearn.kernels.cpu import binding
from streamlearn.kernels.cpus import available_cpus
from streamlearn.kernels.device import autocast_dtype, configure_threads, resolve_device, to_device
from streamlearn.kernels.model_size import is_large
from streamlearn.kernels.torch_reservoir import Row, TorchReservoir
from streamlearn.kernels.torch_step import TorchStep
from streamlearn.settings import FeatureSettings, LearnerSettings

__all__ = ["OnlineLearner", "StepResult", "learner_backend", "learner_device", "model_size"]


def model_size(learner: LearnerSettings, features: FeatureSettings) -> int:
    """Multiply-adds in one event's forward pass through the model these settings describe."""
    return forward_multiply_adds(
        features.numeric_slots,
        features.categorical_slots,
        features.embedding_dim,
        learner.hidden,
        learner.max_classes,
        regression=learner.task == "regression",
        wide=learner.wide,
        periodic=features.periodic,
    )


def learner_device(learner: LearnerSettings, features: FeatureSettings) -> torch.device:
    """Where the model ``learner`` and ``features`` describe runs: ``learner.device``, 'auto'
    decided by the model's size and ``learner.kernel`` (kernels/device.py)."""
    large = is_large(model_size(learner, features))
    return resolve_device(learner.device, large, compiled=learner.kernel == "compiled")


def learner_backend(
    learner: LearnerSettings, features: FeatureSettings, device: torch.device
) -> Backend:
    """The backend ``learner.kernel`` selects for that model on ``device``
    (kernels/backend.py)."""
    large = is_large(model_size(learner, features))
    return select_backend(learner.kernel, device.type, len(learner.hidden), large)


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one prequential step saw before it learned."""

    prediction: np.ndarray  # [B, C] probabilities or [B] values, from pre-update weights
    loss: np.ndarray  # [B] per-row loss of those predictions
    hidden: np.ndarray  # [B, H] hidden representation (the error-memory key)
    learned: bool  # False when the step was skipped as non-finite


class OnlineLearner:
    """Owns the model, optimizer, schedule and replay buffer; works on encoded arrays."""

    def __init__(
        self,
        model: TabularNet,
        schedule: RewarmSchedule,
        replay: ReservoirBuffer,
        step: StepKernel,
        backend: Backend,
        settings: LearnerSettings,
    ) -> None:
        """The learner over ``model`` (on its device), learning at ``schedule``'s rates,
        replaying from ``replay``, with ``step`` (unbound: bound here to the model's trainer)
        from ``backend``; ``settings``: the step's constants (updates, replay ratio, weight
        decay, clipping, overlap, AMP, task). :meth:`from_settings` builds the parts."""
        self.settings = settings
        self.regression = settings.task == "regression"
        self.model = model
        self.device = next(model.parameters()).device
        self._autocast = autocast_dtype(self.device, settings.amp)
        # a row's prediction: class slots, or one value (read once: a buffer's shape is slow)
        self.row_shape = () if self.regression else (int(model.class_mask.shape[0]),)
        # Dense layers: AdamW. The embedding table gets lazy Adam on the rows a batch touches,
        # so a step's cost does not grow with the number of hash buckets.
        self.backend = backend
        self.trainer = FusedTrainer(model, settings.weight_decay, settings.clip_norm)
        self.step_kernel = step.bind(self.trainer)
        # output slots in use: switched-on classes (contiguous from slot 0), or 1 for regression;
        # kept here because reading the mask back would cost device ops on every step
        self.outputs = 1 if self.regression else 0
        self.schedule = schedule
        self.replay = replay
        self.steps = 0
        self.skipped_nonfinite = 0
        self._overlap = self.step_kernel.overlaps and _overlaps(settings.overlap)
        self._step: PendingStep | None = None  # the last step begun, until it is waited on
        self._job: Pending[Any] | None = None  # work on the worker thread, until waited on
        self._y_count = 0.0
        self._y_mean = 0.0
        self._y_m2 = 0.0

    @classmethod
    def from_settings(
        cls, learner: LearnerSettings, features: FeatureSettings, backend: Backend | None = None
    ) -> OnlineLearner:
        """The learner ``learner`` and ``features`` describe: the model seeded and on its
        device, the compute ``backend`` (by default the one ``learner.kernel`` selects for
        that device; the compiled step and inserts take CPU tensors only)."""
        device = learner_device(learner, features)
        configure_threads(learner.threads)
        regression = learner.task == "regression"
        # the CPU generator alone, restored after: the weights are drawn on the CPU, and a
        # learner's build leaves the process's generators (CUDA's included) as they were
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(learner.seed)
            model = TabularNet(
                features.numeric_slots,
                features.categorical_slots,
                features.hash_buckets,
                features.embedding_dim,
                learner.hidden,
                learner.max_classes,
                regression=regression,
                wide=learner.wide,
                periodic=features.periodic,
                periodic_sigma=features.periodic_sigma,
                periodic_sharp_sigma=features.periodic_sharp_sigma,
                periodic_scale=features.periodic_scale,
            ).to(device)
        if backend is None:
            backend = learner_backend(learner, features, device)
        on_cpu = device.type == "cpu"
        schedule = RewarmSchedule(
            learner.lr,
            learner.warmup_steps,
            learner.rewarm_factor,
            learner.rewarm_steps,
            learner.redecay_steps,
        )
        replay = ReservoirBuffer(
            learner.replay_size,
            features.numeric_slots,
            features.categorical_slots,
            torch.float32 if regression else torch.long,
            device,
            seed=learner.seed,
            kernel=backend.reservoir if on_cpu else TorchReservoir(),
        )
        step = backend.step if on_cpu else TorchStep()
        return cls(model, schedule, replay, step, backend, learner)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles and copies of a learner with no step running (a forward pass left running
        reads the weights and writes only its caller's buffers)."""
        self._idle()
        return {**self.__dict__, "_step": None, "_job": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Learners pickled before the step kernel was theirs get one bound to their trainer:
        the compiled one where the trainer ran it and it can be had here."""
        self.__dict__.update(state)
        if "step_kernel" not in state:
            used = self.trainer.__dict__.pop("pickled_compiled", False)
            self.step_kernel = reloaded_step(self.trainer) if used else TorchStep(self.trainer)
        self._overlap = bool(state.get("_overlap")) and self.step_kernel.overlaps

    def _idle(self) -> None:
        """Refuse to go on while a step this learner began has not been waited on."""
        if self._step is not None and not self._step.done:
            raise StepPending("a step's updates still run: wait on its PendingStep first")

    def _drain(self) -> None:
        """Wait for a forward pass left on the worker thread before its buffers or the
        weights it reads change (the learner's own resource: one job at a time)."""
        if self._job is not None:
            self._job.wait()

    # -- inference ------------------------------------------------------------------------
    def _amp(self) -> contextlib.AbstractContextManager[Any]:
        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast)

    def predict(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Probabilities [N, C] or values [N] for standardised numeric + bucket inputs."""
        return self.predict_hidden(num, cat)[0]

    def predict_hidden(self, num: np.ndarray, cat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`predict`, plus the hidden representation [N, H] (error-memory key).

        The step kernel's forward over the slots in use (float32), the module's own forward
        where scoring runs under autocast (bfloat16 on CUDA) or no class is switched on yet."""
        self._idle()
        self._drain()
        if self._autocast is None and self.outputs > 0:
            return self.step_kernel.score(num, cat, self.outputs, self._shown())
        with self._amp():
            num_t, cat_t = to_device(num, self.device), to_device(cat, self.device)
            pred, hidden = self.model.from_values(num_t, cat_t)
        return pred.float().cpu().numpy(), hidden.float().cpu().numpy()

    def forward_seen(
        self, num: torch.Tensor, cat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and hidden [N, H] of rows the learner has trained on (device tensors).

        The training forward: it computes only the input slots and classes seen so far, which
        gives the module's result for such rows at a fraction of the cost.
        """
        self._idle()
        p = torch_step.forward(self.trainer, num, cat, self.outputs)
        return torch_step.prediction(self.trainer, p, len(num)), p.hidden[-1]

    def forward_seen_into(
        self, num: torch.Tensor, cat: torch.Tensor, prediction: torch.Tensor, keys: torch.Tensor
    ) -> None:
        """:meth:`forward_seen` written into ``prediction`` [N, C] (a view; its rows may lie
        further apart than its width) with the hidden rows scaled to unit length into ``keys``
        [N, H]: the error memory's re-keying, straight into its ring. One call into the step
        kernel."""
        self._idle()
        self._drain()
        self.step_kernel.forward_into((num, cat), self.outputs, (prediction, keys), self._shown())

    def begin_forward_seen_into(
        self, num: torch.Tensor, cat: torch.Tensor, prediction: torch.Tensor, keys: torch.Tensor
    ) -> Pending[None]:
        """:meth:`forward_seen_into`, left running on the worker thread where steps overlap.
        Nothing may read or touch the tensors passed until the handle returned is waited on;
        the learner's next step waits for it first (it changes the weights this pass reads)."""
        self._idle()
        self._drain()
        if self._overlap:
            inputs, into, shown = (num, cat), (prediction, keys), self._shown()
            if self.step_kernel.forward_into(inputs, self.outputs, into, shown, overlap=True):
                self._job = Pending(self._finish_forward, None)
                return self._job
            self._overlap = False  # no worker thread here: run everything in this thread
        self.forward_seen_into(num, cat, prediction, keys)
        return Pending(None, None)

    def _finish_forward(self) -> None:
        self._job = None
        self.step_kernel.wait()

    def _shown(self) -> tuple[float, float]:
        """(loc, scale) of the regression values the model shows (its target statistics)."""
        return float(self.model.target_loc), float(self.model.target_scale)

    def set_classes(self, mask: np.ndarray) -> None:
        """Switch on the output slots of the classes seen so far."""
        self._idle()
        if not self.regression:
            self.model.class_mask.copy_(torch.from_numpy(mask))
            self.outputs = int(mask.sum())

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

    def share_target_statistics(self, other: OnlineLearner) -> None:
        """Take ``other``'s running target statistics (regression): a model that learns the
        same targets beside it from now on then has its output scale, so its weights can
        replace ``other``'s (core/fresh.py)."""
        self._idle()
        self._y_count, self._y_mean, self._y_m2 = other._y_count, other._y_mean, other._y_m2
        self.model.target_loc.copy_(other.model.target_loc)
        self.model.target_scale.copy_(other.model.target_scale)

    @property
    def replay_ratio(self) -> float:
        """Replayed rows per new row: ``replay_ratio``, for a regression target
        ``replay_ratio_regression`` (decision 0038)."""
        lrn = self.settings
        return lrn.replay_ratio_regression if self.regression else lrn.replay_ratio

    def _replay_per_update(self, batch: int, young: bool) -> int:
        """Replayed rows mixed into each update of a batch: :attr:`replay_ratio` × ``batch``,
        0 while the reservoir is empty; one uniform draw of that many rows per update serves all
        of the batch's updates. A ``young`` fast-start sub-batch replays ``fast_start_replay``
        times as many (a regression learner ``fast_start_replay_regression`` times: decisions
        0039, 0040), a classifier's at least ``replay_floor`` rows (decision 0035; on
        regression streams the floor was measured to lose)."""
        if not len(self.replay):
            return 0
        lrn, ratio = self.settings, self.replay_ratio
        if not young:
            return round(ratio * batch)
        if self.regression:
            return round(lrn.fast_start_replay_regression * ratio * batch)
        return max(round(lrn.fast_start_replay * ratio * batch), lrn.replay_floor)

    def step(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray) -> StepResult:
        """Predict the labelled batch with the current weights, then learn from it.

        ``y`` holds class slots (int) or target values (float). The first update shares its
        forward pass with the prequential prediction; ``updates`` > 1 takes further steps on
        the same batch, each with its share of one replay draw.
        """
        pending = self.begin_step(num, cat, y)
        return StepResult(pending.prediction, pending.loss, pending.hidden, pending.wait())

    def _account(self, codes: list[int], kept: PreparedRows) -> bool:
        """Count a step's applied and skipped updates, put its rows into the reservoir (after
        the updates, which read replay rows from it)."""
        applied = codes.count(binding.APPLIED)
        self.steps += applied
        self.skipped_nonfinite += len(codes) - applied
        self.replay.insert(kept)
        return applied == len(codes)

    def _kept(
        self, rows: tuple[Row, Row, Row], pre_loss: Row, total: float = math.nan
    ) -> PreparedRows:
        """The batch rows (host arrays or device tensors) for the reservoir, their draws made:
        a NaN/inf row must not poison later replay (its loss, in ``pre_loss``, is not finite;
        losses are ≥ 0, so a finite ``total`` over batch and replay covers the batch too)."""
        if not (math.isfinite(total) or math.isfinite(float(pre_loss.sum()))):
            finite = abs(pre_loss) < math.inf  # array or tensor: False for NaN and ±inf
            rows = (rows[0][finite], rows[1][finite], rows[2][finite])
        return self.replay.prepare(*rows)

    def begin_step(
        self, num: np.ndarray, cat: np.ndarray, y: np.ndarray, young: bool = False
    ) -> PendingStep:
        """:meth:`step`'s prediction of the batch, and its learning as a handle: done at once,
        unless the updates overlap on the worker thread. The caller waits on the handle before
        anything reads or changes the learner (which refuses until then: StepPending).

        The step kernel checks the batch (before any state changes), scores it and runs the
        updates, each over the batch and its share of one replay draw, at the schedule's
        rates; the learner counts them and puts the batch into the reservoir. ``young``: a
        fast-start sub-batch (see :meth:`_replay_per_update`)."""
        self._idle()
        self._drain()
        kernel = self.step_kernel
        rows = kernel.check(num, cat, y, self.outputs)  # widens the active input slots
        updates = self.settings.updates
        per_update = self._replay_per_update(len(y), young)
        drawn = self.replay.draw(per_update * updates) if per_update else None
        replay = None if drawn is None else (self.replay.num, self.replay.cat, self.replay.y, drawn)
        target = _UNUSED
        if self.regression:  # the prediction shows the statistics before this batch's targets
            shown = self._shown()
            if np.isfinite(y).all():  # a non-finite batch is skipped
                self._observe_targets(y.astype(np.float64))
            target = (*self._shown(), *shown)
        lrs = [self.schedule.value(self.steps + applied) for applied in range(updates)]
        scored = kernel.begin(rows, replay, self.outputs, lrs, target) if self._overlap else None
        if scored is None:  # not overlapping, or no worker thread: here, from now on
            self._overlap = False
            scored = kernel.run(rows, replay, self.outputs, lrs, target)
        self._step = self._pending(scored, rows)
        return self._step

    def _pending(self, scored: Scored, rows: tuple[Row, Row, Row]) -> PendingStep:
        """The handle of a step the kernel began: accounted at once where its updates ran, else
        when waited on (the reservoir's draws for the batch are made now, meanwhile)."""
        kept = self._kept(rows, scored.row_loss, scored.total)
        if scored.codes is not None:
            learned = self._account(scored.codes, kept)
            return PendingStep(scored.prediction, scored.loss, scored.hidden, None, learned)
        wait = scored.wait
        assert wait is not None
        finish = lambda: self._account(wait(), kept)  # noqa: E731
        return PendingStep(scored.prediction, scored.loss, scored.hidden, finish)

    def on_drift(self) -> None:
        """Drift response: re-warm the learning rate; optionally restart the replay sample."""
        self._idle()
        self.schedule.on_drift(self.steps)
        if self.settings.replay_reset_on_drift:
            self.replay.clear()

    def weights(self) -> dict[str, Any]:
        """A copy of the parameters and their optimizer moments: what a model of a past concept
        needs to take over again (core/experts.py). Not the buffers (class mask, target
        statistics) nor the active widths: those describe the stream so far, not a concept."""
        self._idle()
        self._drain()
        optimizer = self.trainer.state_dict()
        return {
            "params": {name: p.detach().clone() for name, p in self.model.named_parameters()},
            "optimizer": {name: optimizer[name].clone() for name in _MOMENTS},
        }

    def load_weights(self, weights: dict[str, Any]) -> None:
        """Take over :meth:`weights` (copied in place: the trainer's flat buffer, which the
        dense parameters view and the step kernels read, stays the same tensor)."""
        self._idle()
        self._drain()
        for name, p in self.model.named_parameters():
            p.copy_(weights["params"][name])
        for name in _MOMENTS:
            getattr(self.trainer, name).copy_(weights["optimizer"][name])

    @property
    def active_slots(self) -> tuple[int, int]:
        """(numeric, categorical) input slots some row has set: every later column is zero."""
        return self.trainer.active_num, self.trainer.active_cat

    @property
    def overlapping(self) -> bool:
        """Whether steps leave their updates running on the worker thread (learner.overlap)."""
        return self._overlap

    @property
    def lr(self) -> float:
        return self.schedule.value(self.steps)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._idle()
        return {
            "model": self.model.state_dict(),
            "optimizer": self.trainer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "replay": self.replay.state_dict(),
            "counters": {
                "steps": self.steps,
                "skipped_nonfinite": self.skipped_nonfinite,
                "y": [self._y_count, self._y_mean, self._y_m2],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._idle()
        self._drain()
        model = state["model"]
        if ("frequencies" in model) != (self.model.frequencies is not None):
            raise ValueError(
                "the checkpoint's model and these settings differ in features.periodic (its "
                f"model {'has' if 'frequencies' in model else 'has no'} periodic features): "
                "restore with the settings it was written with"
            )
        frequencies = self.model.frequencies
        if frequencies is not None and not torch.equal(
            model["frequencies"].to(frequencies.device), frequencies
        ):  # trained weights read their own inputs: another draw would be silently wrong
            raise ValueError(
                "the checkpoint's periodic frequencies differ from those these settings draw "
                "(features.periodic, periodic_sigma, periodic_sharp_sigma): restore with the "
                "settings it was written with"
            )
        wide = self.model.wide
        if wide is not None and "wide.weight" not in model:  # saved before the wide term
            model = {**model, "wide.weight": torch.zeros_like(wide.weight)}
        self.model.load_state_dict(model)
        if not self.regression:
            self.outputs = int(self.model.class_mask.sum())
        optimizer = state["optimizer"]
        if "sparse_optimizer" in state:  # a checkpoint of the torch.optim learner before it
            optimizer = self.trainer.from_torch_optim(optimizer, state["sparse_optimizer"])
        self.trainer.load_state_dict(optimizer)
        self.schedule.load_state_dict(state["schedule"])
        self.replay.load_state_dict(state["replay"])
        counters = state["counters"]
        self.steps = int(counters["steps"])
        self.skipped_nonfinite = int(counters["skipped_nonfinite"])
        self._y_count, self._y_mean, self._y_m2 = (float(v) for v in counters["y"])


_UNUSED = (0.0, 1.0, 0.0, 1.0)  # the target statistics a classification step is given
_MOMENTS = ("step", "exp_avg", "exp_avg_sq", "table_moments")  # the trainer's optimizer state


def _overlaps(setting: str) -> bool:
    """``learner.overlap``: "auto" overlaps where this process may keep two CPUs busy (its
    affinity and any container CPU limit allow it: the worker thread spins while it waits)."""
    if setting != "auto":
        return setting == "on"
    return available_cpus() >= 2
