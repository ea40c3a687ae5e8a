"""FreshModel: after a detection, a newly initialised model learns beside the live one and
takes over when it is clearly better on the new concept.

After the background learners of Adaptive Random Forest (Gomes et al., 2017: a tree started at
a drift warning replaces its forest member at the drift): a model of the old concepts may adapt
slowly to a very different new one (a new nonlinear boundary), while a model that starts from
scratch learns it in few events. One such model at a time:

- **Start**, at a detection when none is learning: a model built as the live one was (its own
  seed: the live seed + the number started), with the live model's class slots.
- **Learn**, each later learned batch, while the live model's updates of it run (it reads
  only the live model's class slots): prequentially (each row predicted before it is learned)
  in the fast start's sub-batches (``fast_start_slices`` at ``learner.fast_start``): it starts
  as fast as the first model did, and is served meanwhile (below).
- **Mix** (``fresh_mix``), while it learns: what the chain serves is the live model's base
  prediction mixed with the fresh model's by a :class:`~streamlearn.core.hedge.Hedge` on both
  models' 0/1 losses (evidence over ~64 rows, restarted at each start at a share of 0.27),
  updated after each of the fast start's sub-batches, so a fresh model that learns the new
  concept faster is served from within its first batch, long before the decision below has
  its evidence. The live model alone is still what the detector watches, the memory stores
  and an export carries (the mix lasts a few hundred rows). A fresh model whose share has
  fallen below ``DROP_SHARE`` once it has learned ``DROP_AFTER`` rows lost the new concept to
  the live model and is dropped (backing off as below): its fine early steps are paid only
  where they are served (decision 0047).
- **Decide**, after ``fresh_rows`` learned rows: over the second half of them (the first half
  is its own fast start), the per-row loss of the live model's base prediction minus the fresh
  model's; if the paired t-statistic of that difference is at least ``fresh_t``, the fresh
  model's parameters and optimizer moments replace the live ones (``OnlineLearner.load_weights``)
  and it is dropped. A t-statistic, not a ratio of means: on a stream with few errors a
  handful of rows moves the ratio far (measured: switches that lost).
- **Judge again** while it is ahead but not clearly (0 < t < ``fresh_t``): it learns on and is
  judged at each doubling of its rows, on their second half, up to ``fresh_max_rows``; else it
  is dropped. A live model that adapts slowly to the new concept is ahead early and clearly
  behind only later (benchmarks/results/sweep-experts-fresh-max-rows.md).
- **Back off**: after k fresh models in a row were dropped, none starts before ``fresh_rows``
  × 2^k rows (k ≤ ``MAX_BACKOFF``) have been learned since the last was: a stream that drifts
  all the time (incremental drift, false alarms) would otherwise keep one learning for good,
  at the cost of a second model's steps, where it does not win.

The exported model is the live one, so the next export carries a switch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.core.evaluation import row_losses
from streamlearn.core.hedge import Hedge
from streamlearn.core.learner import OnlineLearner
from streamlearn.core.memory.compensation import gated
from streamlearn.kernels.backend import Backend
from streamlearn.settings import ExpertSettings, FeatureSettings, LearnerSettings

__all__ = ["FreshModel", "LearnerBuild", "fast_start_slices"]

MAX_BACKOFF = 4  # at most fresh_rows × 2^4 rows between a dropped fresh model and the next
# the mix's Hedge (fresh_mix): evidence over ~64 rows, kept within ±8 net wins, starting at 1
# net loss (a share of 0.27); 16-256 rows and ±2-16 measured alike (decision 0046)
MIX_HORIZON, MIX_LIMIT, MIX_PRIOR = 64, 8.0, -1.0
# a mixed fresh model is dropped once its share is below 0.1 after 32 rows: it lost the new
# concept to the live model (measured: streams of false alarms then pay little for it)
DROP_SHARE, DROP_AFTER = 0.1, 32


@dataclass(frozen=True, slots=True)
class LearnerBuild:
    """Builds a learner as the live one was built, with another seed and ``overlap`` off (a
    class, not a closure: a chain is pickled with its parts, as river's estimators are).

    Overlap off: a fresh model waits for each of its steps at once, so handing them to the
    process's worker thread would only add a hand-off between threads to every step (results
    equal either way)."""

    learner: LearnerSettings
    features: FeatureSettings
    backend: Backend

    def __call__(self, seed: int) -> OnlineLearner:
        settings = self.learner.model_copy(update={"seed": seed, "overlap": "off"})
        return OnlineLearner.from_settings(settings, self.features, self.backend)


def fast_start_slices(seen: int, n: int, fast_start: int) -> Iterator[slice]:
    """A batch of ``n`` rows as the fast start splits it for a model that has learned ``seen``
    rows: consecutive sub-batches of ``(seen + rows before it) // fast_start`` rows (at least
    one), or the whole batch once that reaches ``n`` (or with the fast start off, 0).

    >>> [(s.start, s.stop) for s in fast_start_slices(2, 5, 1)]
    [(0, 2), (2, 5)]
    >>> [(s.start, s.stop) for s in fast_start_slices(64, 32, 2)]
    [(0, 32)]
    """
    if not fast_start or seen >= fast_start * n:
        yield slice(0, n)
        return
    start = 0
    while start < n:
        stop = min(n, start + max((seen + start) // fast_start, 1))
        yield slice(start, stop)
        start = stop


class FreshModel:
    """One fresh model at a time, started at a detection, switched in when clearly better."""

    def __init__(self, live: OnlineLearner, settings: ExpertSettings, build: LearnerBuild) -> None:
        self.live = live
        self.settings = settings
        self._build = build
        self.model: OnlineLearner | None = None  # the fresh model while it learns
        self.started = 0
        self.switches = 0
        self.seen = 0  # rows the fresh model has learned
        self.due = settings.fresh_rows  # rows it will have learned at its next judgement
        self.dropped = 0  # fresh models dropped in a row (reset by a switch)
        self._steps_before = 0  # updates applied by the fresh models of the past
        self.idle = 0  # rows learned since the last fresh model was dropped
        self._losses: list[tuple[np.ndarray, np.ndarray]] = []  # (live, fresh) per batch
        self.mix: Hedge | None = None  # the fresh model's share in what is served
        if settings.fresh_mix:
            self.mix = Hedge(1.0 - 1.0 / MIX_HORIZON, 1.0, (-MIX_LIMIT, MIX_LIMIT), MIX_PRIOR)

    @property
    def learning(self) -> bool:
        return self.model is not None

    @property
    def steps(self) -> int:
        """Updates applied by every fresh model so far: the cost beside the live model's."""
        return self._steps_before + (0 if self.model is None else self.model.steps)

    def start(self) -> None:
        """A new fresh model, unless one is learning already or the back-off holds it."""
        if self.model is not None:
            return
        if self.dropped and self.idle < self.settings.fresh_rows << min(self.dropped, MAX_BACKOFF):
            return
        self.started += 1
        self.model = self._new(self.started)
        self.seen, self.due, self._losses = 0, self.settings.fresh_rows, []
        if self.mix is not None:
            self.mix.restart()

    @property
    def share(self) -> float:
        """The fresh model's weight in the served prediction (0 while none learns)."""
        return 0.0 if self.model is None or self.mix is None else self.mix.weight

    def _new(self, started: int) -> OnlineLearner:
        model = self._build(self.live.settings.seed + started)
        if self.live.regression:
            model.share_target_statistics(self.live)
        else:
            model.set_classes(self.live.model.class_mask.cpu().numpy())
        return model

    def learn(
        self, z: np.ndarray, cat: np.ndarray, target: np.ndarray, live_prediction: np.ndarray
    ) -> np.ndarray:
        """The fresh model predicts and learns a learned batch; returns the prediction to
        serve: the live model's, mixed with the fresh model's in its share (each of the fast
        start's sub-batches at the share the rows before it earned: every row is predicted
        before its label is used). Reads nothing of the live
        model but its class slots, so it may run while the live model's updates do."""
        model = self.model
        if model is None:
            self.idle += len(target)
            return live_prediction
        if not len(target):
            return live_prediction
        if model.outputs != self.live.outputs:  # a class switched on since
            model.set_classes(self.live.model.class_mask.cpu().numpy())
        mix = self.mix
        prediction = np.empty_like(live_prediction)
        served = live_prediction if mix is None else np.empty_like(live_prediction)
        for part in fast_start_slices(self.seen, len(target), self.live.settings.fast_start):
            step = model.begin_step(z[part], cat[part], target[part], young=True)
            prediction[part] = step.prediction
            if mix is not None:  # the share as of the rows before, then these rows' evidence
                served[part] = gated(live_prediction[part], step.prediction, mix.weight)
                mix.update(target[part], live_prediction[part], step.prediction)
            step.wait()
        self.seen += len(target)
        regression = self.live.regression
        fresh = row_losses(prediction, target, regression)
        self._losses.append((row_losses(live_prediction, target, regression), fresh))
        return served

    def mixed(self, live_prediction: np.ndarray, z: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Score-only rows: the live model's prediction mixed with the fresh model's in its
        share (the live one alone while none learns, or at a share of 0)."""
        share = self.share
        if share <= 0.0 or self.model is None or not len(z):
            return live_prediction
        return gated(live_prediction, self.model.predict(z, cat), share)

    def judge(self) -> bool:
        """Judge the fresh model once it has learned the rows due; returns whether the live
        model took over its weights (the live model's own updates must be done)."""
        if self.model is None:
            return False
        if self.mix is not None and self.seen >= DROP_AFTER and self.mix.weight < DROP_SHARE:
            self._drop()
            return False
        if self.seen < self.due:
            return False
        return self._decide()

    def _drop(self) -> None:
        """Drop the fresh model (it lost): the next one backs off."""
        assert self.model is not None
        model, self.model, self._losses = self.model, None, []
        self._steps_before += model.steps
        self.dropped, self.idle = self.dropped + 1, 0

    def _decide(self) -> bool:
        live, fresh = (np.concatenate(part) for part in zip(*self._losses, strict=True))
        half = len(live) // 2
        difference = (live - fresh)[half:]
        t = paired_t(difference[np.isfinite(difference)])
        if 0.0 < t < self.settings.fresh_t and 2 * self.seen <= self.settings.fresh_max_rows:
            self.due = 2 * self.seen
            return False
        assert self.model is not None
        if t < self.settings.fresh_t:
            self._drop()
            return False
        model, self.model, self._losses = self.model, None, []
        self._steps_before += model.steps
        self.live.load_weights(model.weights())
        self.switches, self.dropped = self.switches + 1, 0
        return True

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        losses = None
        if self._losses:
            live, fresh = (np.concatenate(part) for part in zip(*self._losses, strict=True))
            losses = {"live": live, "fresh": fresh}
        return {
            "model": None if self.model is None else self.model.state_dict(),
            "started": self.started,
            "switches": self.switches,
            "seen": self.seen,
            "due": self.due,
            "dropped": self.dropped,
            "idle": self.idle,
            "steps_before": self._steps_before,
            "losses": losses,
            **({} if self.mix is None else {"mix": self.mix.state_dict()}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.started, self.switches = int(state["started"]), int(state["switches"])
        self.seen = int(state["seen"])
        self.due = int(state.get("due", self.settings.fresh_rows))  # absent: saved before it
        self.dropped, self.idle = int(state["dropped"]), int(state["idle"])
        self._steps_before = int(state["steps_before"])
        self.model = None
        if state["model"] is not None:
            self.model = self._new(self.started)
            self.model.load_state_dict(state["model"])
        if self.mix is not None and "mix" in state:  # absent: saved before the mix
            self.mix.load_state_dict(state["mix"])
        losses = state["losses"]
        self._losses = []
        if losses is not None:
            self._losses = [(np.asarray(losses["live"]), np.asarray(losses["fresh"]))]


def paired_t(difference: np.ndarray) -> float:
    """The t-statistic of a mean difference over paired rows (0 with fewer than two rows or
    none of them differing)."""
    n = len(difference)
    if n < 2:
        return 0.0
    spread = float(difference.std(ddof=1))
    mean = float(difference.mean())
    if spread == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / (spread / math.sqrt(n))
