"""ExpertPool: past models saved at detected drifts, switched back in when their concept recurs.

After TAME (task-agnostic continual learning with multiple experts, see seed-abstracts): a loss
deviation marks a new concept; a model of an earlier concept may serve it better than the live
model, which has just begun to adapt. The pool keeps at most ``size`` such models (experts):

- **Save**, at every detection: the live model's last copy (:meth:`OnlineLearner.weights`:
  parameters and optimizer moments, taken every ``snapshot_every`` micro-batches, a fast
  start's sub-batches of one counted once) goes into the slot of the expert it was switched
  from, if any (it kept learning that concept since), else into a new slot; a full pool
  evicts the least recently used one (saved or switched to). A copy, not the model at the
  detection: the batch that shows the change has already been learned then,
  and a sudden rise of the loss makes Adam's next steps large on every parameter (the first
  moment grows faster than the second), which costs the old concept's model accuracy.
- **Trial**: the next ``trial_rows`` learned rows after the detection are kept with the live
  model's prequential base prediction of them (made before it learned them); rows before the
  detection are left out: the detector fires some events after a change (its smoothed loss
  must rise first), so the rows just before it belong mostly to the concept that ended.
- **Switch**: every other expert scores the trial rows (``mean_loss``: log loss or squared
  error). If the best one's loss ≤ the live model's × (1 − ``margin``), its parameters and
  moments replace the live ones (:meth:`OnlineLearner.load_weights`), the learning rate's
  re-warm ends (the expert knows the concept) and the live model learns on from there. The
  served and exported model is the live one, so the next export carries the switch.
- **Early switch** (``early_ratio``): the same scoring on the detection batch's rows from the
  detector's firing on, and after each batch of the trial on its rows so far, switches at once
  to an expert whose loss is at most ``early_ratio`` × the live model's: a concept that recurs
  is served by its model from the batch after the detection. A ratio that strict, because the
  evidence is a few rows (decision 0046).

- **Fresh model** (``fresh``, core/fresh.py): a detection also starts a new model learning
  beside the live one, mixed into what is served in the share its accuracy earns; when it is
  clearly better it replaces the live weights, counted as a switch; the live model then learns
  a new concept (no origin), as after a detection.

The reservoir and the error memory are not part of an expert: by default both are emptied on a
detection and refill from the current concept, so after a switch they hold its rows already
(the memory is re-keyed with the new weights at once; after a switch at the detection itself
it is emptied again, as the rows it holds then came mostly from the concept that ended). The live
model's buffers (class mask, target statistics) and active widths stay: they describe the
stream, not a concept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamlearn.core.evaluation import mean_loss
from streamlearn.core.fresh import FreshModel
from streamlearn.core.learner import OnlineLearner
from streamlearn.settings import ExpertSettings

__all__ = ["Expert", "ExpertPool", "Trial"]

EARLY_MIN_ROWS = 8  # the fewest rows an early switch is judged on (one row switched wrongly)
_TRIAL = ("num", "cat", "target", "prediction")  # a trial batch's arrays, in observe's order


@dataclass(slots=True)
class Expert:
    """One past model: :meth:`OnlineLearner.weights` and when it was last saved or used."""

    weights: dict[str, Any]
    used: int  # the pool's clock at its last save or switch (least recently used goes)


@dataclass(frozen=True, slots=True)
class Trial:
    """The outcome of one trial's last judgement (early or at ``trial_rows``): the live
    model's and each expert's loss on the same rows."""

    rows: int
    live_loss: float
    expert_losses: tuple[float, ...]
    chosen: int | None  # the expert switched to, or None


class ExpertPool:
    """A bounded pool of past models; tried after every detection, switched to when better."""

    def __init__(
        self, learner: OnlineLearner, settings: ExpertSettings, fresh: FreshModel | None = None
    ) -> None:
        """``fresh``: the fresh model started at each detection (None: past models only)."""
        self.learner = learner
        self.settings = settings
        self.fresh = fresh
        self.experts: list[Expert] = []
        self.origin: int | None = None  # the expert the live model was switched from
        self.clock = 0
        self.switches = 0
        self.last_trial: Trial | None = None
        self._rows: list[tuple[np.ndarray, ...]] | None = None  # the open trial's batches
        self._fresh = -1  # the slot saved at the last detection
        self.batches = 0  # learned micro-batches observed (a fast start's sub-batches: one)
        self._standby: dict[str, Any] | None = None  # the live model's last copy

    def __len__(self) -> int:
        return len(self.experts)

    @property
    def trying(self) -> bool:
        """Whether a trial is collecting rows."""
        return self._rows is not None

    @property
    def fresh_share(self) -> float:
        """The fresh model's share in what is served (0 while none learns)."""
        return 0.0 if self.fresh is None else self.fresh.share

    def learn(
        self, num: np.ndarray, cat: np.ndarray, target: np.ndarray, prediction: np.ndarray
    ) -> np.ndarray:
        """A learned batch without a detection, with the live model's base ``prediction``,
        before its updates are done (they may run on the worker thread meanwhile): the fresh
        model, if one learns, learns it. Returns the network's prediction to serve (the live
        one, mixed with a fresh model's: :meth:`FreshModel.learn`)."""
        if self.fresh is None:
            return prediction
        return self.fresh.learn(num, cat, target, prediction)

    def mixed(self, prediction: np.ndarray, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Score-only rows' prediction to serve: the live model's ``prediction``, mixed with
        a fresh model's in its share while one learns (:meth:`FreshModel.mixed`)."""
        return prediction if self.fresh is None else self.fresh.mixed(prediction, num, cat)

    def observe(
        self,
        num: np.ndarray,
        cat: np.ndarray,
        target: np.ndarray,
        prediction: np.ndarray,
        drifted: bool,
        detected_at: int = 0,
        ends_batch: bool = True,
    ) -> bool:
        """After a learned batch (its updates done, :meth:`learn` called on it): on a
        detection (at row ``detected_at`` of the batch) save the live model's last copy, open
        a trial, start a fresh model and try an early switch on the rows from there on; else
        judge the fresh model, copy the live model when due, add the rows to an open trial and
        judge it (early while it fills, at the margin once full). Returns whether the live
        model was switched to an expert or to the fresh model.

        ``ends_batch``: False for a fast-start sub-batch before the last of its micro-batch.
        Copies are due every ``snapshot_every`` micro-batches, not sub-batches: a young model's
        first micro-batches pass in dozens of sub-batches, which would make a copy every few
        rows (each a copy of every weight and moment)."""
        self.batches += ends_batch
        if drifted:
            self._fresh = self._save()
            self._rows = [] if len(self.experts) > 1 else None  # none but the one just saved
            if self.fresh is not None:
                self.fresh.start()
            if self._rows is None or not self.settings.early_ratio:
                return False
            if len(target) - detected_at < EARLY_MIN_ROWS:  # too few rows to judge by
                return False
            new = slice(detected_at, None)  # the rows from the detection on: the new concept's
            return self._try(
                num[new], cat[new], target[new], prediction[new], self.settings.early_ratio
            )
        if self.fresh is not None and self.fresh.judge():
            self.switches += 1
            self._standby = None  # a copy of the weights replaced must not be saved
            self.origin = None  # a new concept's model: a new slot at the next detection
            return True
        due = ends_batch and self.batches % self.settings.snapshot_every == 0
        if self._standby is None or due:
            self._standby = self.learner.weights()
        if self._rows is None:
            return False
        # copies: the caller's arrays may be buffers that the next batch reuses
        self._rows.append(tuple(np.array(a) for a in (num, cat, target, prediction)))
        full = sum(len(rows[2]) for rows in self._rows) >= self.settings.trial_rows
        if not full and not self.settings.early_ratio:
            return False
        return self._decide(full)

    def _save(self) -> int:
        """The last copy of the live model into its origin's slot, a new one or the least
        recently used one; returns that slot."""
        self.clock += 1
        expert = Expert(self._standby or self.learner.weights(), self.clock)
        self._standby = None  # taken over by the expert: the next batch makes a new copy
        if self.origin is not None:
            slot = self.origin
        elif len(self.experts) < self.settings.size:
            slot = len(self.experts)
            self.experts.append(expert)
        else:
            slot = min(range(len(self.experts)), key=lambda i: self.experts[i].used)
        self.experts[slot] = expert
        self.origin = None  # the live model now learns whatever concept comes next
        return slot

    def _decide(self, full: bool) -> bool:
        """Judge the open trial's rows: once ``full``, switch at the margin and close the
        trial; before, only to an expert far ahead (``early_ratio``)."""
        rows = self._rows
        assert rows is not None
        num, cat, target, live = (np.concatenate(part) for part in zip(*rows, strict=True))
        if full:
            self._rows = None
            return self._try(num, cat, target, live, 1.0 - self.settings.margin)
        return self._try(num, cat, target, live, self.settings.early_ratio)

    def _try(
        self, num: np.ndarray, cat: np.ndarray, target: np.ndarray, live: np.ndarray, ratio: float
    ) -> bool:
        """Score every expert on the rows (the live model's prediction of them: ``live``) and
        switch to the best one if its loss is at most ``ratio`` × the live model's. A switch
        closes the trial."""
        if not len(target):
            return False
        live_loss = mean_loss(live, target, self.learner.regression)
        own = self.learner.weights()
        # the expert saved at this detection is the live model of then: no candidate
        losses = tuple(
            np.inf if i == self._fresh else self._score(expert, num, cat, target)
            for i, expert in enumerate(self.experts)
        )
        best = int(np.argmin(losses))
        switch = bool(losses[best] <= live_loss * ratio)
        self.last_trial = Trial(len(target), live_loss, losses, best if switch else None)
        if not switch:
            self.learner.load_weights(own)
            return False
        self._rows = None
        self.clock += 1
        self.experts[best].used = self.clock
        self.learner.load_weights(self.experts[best].weights)
        self.learner.schedule.end_rewarm()
        self._standby = None  # a copy from before the switch must not overwrite the expert
        self.origin = best
        self.switches += 1
        return True

    def _score(self, expert: Expert, num: np.ndarray, cat: np.ndarray, target: np.ndarray) -> float:
        """The expert's mean loss on the rows as it would predict after a switch: its weights
        lent to the live model (whose buffers, class mask and target statistics, stay) for one
        scoring pass through the step kernel. The caller puts the live weights back."""
        self.learner.load_weights(expert.weights)
        return mean_loss(self.learner.predict(num, cat), target, self.learner.regression)

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors: the experts, the clock, counters and an open trial."""
        trial = None
        if self._rows is not None:
            trial = [dict(zip(_TRIAL, rows, strict=True)) for rows in self._rows]
        return {
            "experts": [{"weights": e.weights, "used": e.used} for e in self.experts],
            "origin": self.origin,
            "fresh": self._fresh,
            "batches": self.batches,
            "standby": self._standby,
            "clock": self.clock,
            "switches": self.switches,
            "trial": trial,
            **({} if self.fresh is None else {"fresh_model": self.fresh.state_dict()}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        device = self.learner.device
        self.experts = [Expert(_on(e["weights"], device), int(e["used"])) for e in state["experts"]]
        self.origin = None if state["origin"] is None else int(state["origin"])
        self._fresh, self.batches = int(state["fresh"]), int(state["batches"])
        standby = state["standby"]
        self._standby = None if standby is None else _on(standby, device)
        self.clock, self.switches = int(state["clock"]), int(state["switches"])
        trial = state["trial"]
        self._rows = None
        if trial is not None:
            self._rows = [tuple(np.asarray(rows[name]) for name in _TRIAL) for rows in trial]
        if self.fresh is not None and "fresh_model" in state:  # absent: saved before it
            self.fresh.load_state_dict(state["fresh_model"])


def _on(weights: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Nested tensors of a checkpoint moved to the model's device."""
    return {
        part: {name: torch.as_tensor(t).to(device) for name, t in tensors.items()}
        for part, tensors in weights.items()
    }
