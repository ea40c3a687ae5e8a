"""Prequential: the stages every consumer shares — encode → score → loss → drift → learn.

The worker, the demo, the river estimators and the benchmarks all drive this one object, so
"predict first, then learn" and the drift response are written once. It works on micro-batches
of feature dicts or of columns; labels may be missing (score only) or unknown (counted, not
learned).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamlearn.core.drift import DriftDetector, build_detector
from streamlearn.core.experts import ExpertPool
from streamlearn.core.features import EncodedFeatures, FeatureEncoder
from streamlearn.core.fresh import FreshModel, LearnerBuild, fast_start_slices
from streamlearn.core.labels import LabelMap
from streamlearn.core.learner import OnlineLearner
from streamlearn.core.linear import LinearMixture
from streamlearn.core.memory.compensation import gated
from streamlearn.core.memory.stage import MemoryStage
from streamlearn.core.neighbours import NeighbourVote
from streamlearn.kernels.backend import Backend, LinearRows
from streamlearn.settings import Settings

__all__ = ["BatchObserver", "BatchOutcome", "Prequential"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)

# (raw numeric [B, d_num], buckets [B, d_cat], targets [B], base predictions before learning)
BatchObserver = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Per-row results of one micro-batch, in input order."""

    prediction: np.ndarray  # [B, C] class probabilities (rows sum to 1, or 0 if no class yet)
    #                         or [B] regression values
    loss: np.ndarray  # [B] prequential loss; NaN for rows not learned
    learned: np.ndarray  # [B] bool: the row was trained on
    drifts: list[int]  # global positions (labelled-event count) where drift fired
    target: np.ndarray  # [learned rows] their class slots or target values


class Prequential:
    """Runs encoder, label map, learner, drift detector and error memory over micro-batches.

    The stages are passed in (:meth:`from_settings` builds them as settings describe); they
    must agree on widths (the encoder's slots are the learner's inputs).
    """

    def __init__(
        self,
        encoder: FeatureEncoder,
        labels: LabelMap,
        learner: OnlineLearner,
        detector: DriftDetector,
        memory: MemoryStage | None = None,
        experts: ExpertPool | None = None,
        fast_start: int = 0,
        linear: LinearMixture | None = None,
        neighbours: NeighbourVote | None = None,
    ) -> None:
        """``fast_start``: learner.fast_start, the young model's sub-batch divisor (0: off);
        ``linear``: a classifier's linear model, mixed into the base prediction;
        ``neighbours``: a classifier's vote of the nearest recent rows, mixed in after it."""
        self.encoder = encoder
        self.labels = labels
        self.learner = learner
        self.detector = detector
        self.memory = memory  # error memory (ReLoop2): compensates the base prediction
        self.experts = experts  # past models (TAME): tried after a detection, switched to
        self.linear = linear  # a linear model beside the network, mixed in by its accuracy
        self.neighbours = neighbours  # the nearest recent rows' vote, mixed in by its accuracy
        self.fast_start = fast_start
        self.regression = learner.regression
        self.learner.set_classes(self._class_mask())
        self.seen = 0  # labelled events learned from
        self.unknown_labels = 0
        self.drifts: list[int] = []
        # called with every learned batch, e.g. the publisher's quality gate (export/gate.py)
        self.observers: list[BatchObserver] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Chains pickled before the linear model or the neighbour vote have none, and keep
        none."""
        state.setdefault("linear", None)
        state.setdefault("neighbours", None)
        self.__dict__.update(state)

    @classmethod
    def from_settings(cls, settings: Settings, backend: Backend | None = None) -> Prequential:
        """The chain ``settings`` describe, every stage computing on ``backend`` (chosen once
        by the caller, the composition root; by default the one ``learner.kernel`` selects)."""
        f, lrn = settings.features, settings.learner
        learner = OnlineLearner.from_settings(lrn, f, backend)
        backend = learner.backend
        encoder = FeatureEncoder(
            f.numeric_slots,
            f.categorical_slots,
            f.hash_buckets,
            f.numeric,
            f.categorical,
            statistics=backend.statistics,
        )
        labels = LabelMap(
            2 if lrn.task == "binary" else lrn.max_classes, lrn.classes, fixed=bool(lrn.classes)
        )
        detector = build_detector(settings.drift, backend.drift)
        m = settings.memory
        memory = MemoryStage.from_settings(m, learner) if m.enabled else None
        experts = None
        if settings.experts.enabled:
            fresh = None
            if settings.experts.fresh:
                fresh = FreshModel(learner, settings.experts, LearnerBuild(lrn, f, backend))
            experts = ExpertPool(learner, settings.experts, fresh)
        linear = None
        if settings.linear.enabled and not learner.regression:
            width = int(learner.model.class_mask.shape[0])
            linear = LinearMixture.from_settings(
                settings.linear, f.numeric_slots, f.hash_buckets, width, backend.linear
            )
        neighbours = None
        if settings.neighbours.enabled and not learner.regression:
            width = int(learner.model.class_mask.shape[0])
            neighbours = NeighbourVote(settings.neighbours, width)
        return cls(
            encoder, labels, learner, detector, memory, experts, lrn.fast_start, linear, neighbours
        )

    @property
    def expert_switches(self) -> int:
        """Switches of the live model to a past one (0 with the expert pool off)."""
        return 0 if self.experts is None else self.experts.switches

    @property
    def backend(self) -> Backend:
        """The compute backend the stages run on (the learner's)."""
        return self.learner.backend

    def _class_mask(self) -> np.ndarray:
        mask = np.zeros(self.learner.model.class_mask.shape[0], dtype=bool)
        mask[: len(self.labels)] = True
        return mask

    # -- scoring only ---------------------------------------------------------------------
    def predict(self, xs: Sequence[Mapping[Any, Any]]) -> np.ndarray:
        return self._predict(self.encoder.encode(xs))

    def predict_columns(self, columns: Mapping[Any, Any]) -> np.ndarray:
        return self._predict(self.encoder.encode_columns(columns))

    def _predict(self, feats: EncodedFeatures) -> np.ndarray:
        return self._score(self.encoder.standardize(feats.num), feats.cat)

    def base_prediction(
        self, z: np.ndarray, cat: np.ndarray, served: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Standardised rows' base prediction and the network's hidden rows: the network's
        prediction, mixed with the linear model's where there is one (what the export
        serves); ``served``: with a fresh model's share mixed in first while one learns (what
        the chain itself serves; an export carries the live model)."""
        network, hidden = self.learner.predict_hidden(z, cat)
        if served and self.experts is not None:
            network = self.experts.mixed(network, z, cat)
        if self.linear is None:
            return network, hidden
        base, _ = self.linear.mix(network, self._linear_inputs(z, cat), len(self.labels))
        return base, hidden

    def _score(self, z: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """Score-only rows: the base prediction as served, compensated by the error memory
        when on."""
        base, hidden = self.base_prediction(z, cat, served=True)
        if self.neighbours is not None:
            base = self.neighbours.mix(base, self.neighbours.vote(self._numeric(z), base))
        return base if self.memory is None else self.memory.compensate(hidden, base)

    def _linear_inputs(self, z: np.ndarray, cat: np.ndarray) -> LinearRows:
        """The input slots the linear model reads: those some row has set (the network's
        active widths; every later column is zero, no evidence either way)."""
        num_slots, cat_slots = self.learner.active_slots
        return z[:, :num_slots], cat[:, :cat_slots]

    def _numeric(self, z: np.ndarray) -> np.ndarray:
        """The numeric slots some row has set (the neighbour vote's space)."""
        return z[:, : self.learner.active_slots[0]]

    # -- prequential step -----------------------------------------------------------------
    def process(
        self, xs: Sequence[Mapping[Any, Any]], ys: Sequence[Hashable | None]
    ) -> BatchOutcome:
        """Score every row, then learn from the labelled ones."""
        return self.process_encoded(self.encoder.encode(xs), ys)

    def process_columns(
        self, columns: Mapping[Any, Any], ys: Sequence[Hashable | None]
    ) -> BatchOutcome:
        return self.process_encoded(self.encoder.encode_columns(columns), ys)

    def _targets(self, ys: Sequence[Hashable | None]) -> tuple[np.ndarray, np.ndarray, bool]:
        """(rows to learn, their targets, whether that is every row); unknown classes are
        counted and not learned."""
        if self.regression:
            target = np.array([_target(y) for y in ys], dtype=np.float64)
            # the model trains in float32: a target beyond its range (or NaN, inf, a string) is
            # not one; it is counted, and not learned
            ok = np.abs(target) <= _FLOAT32_MAX
        else:
            target = self.labels.add_many(ys)
            ok = target >= 0
        if ok.all():  # the usual batch: every row labelled with something learnable
            return ok, target, True
        labelled = np.array([y is not None for y in ys], dtype=bool)
        self.unknown_labels += int((labelled & ~ok).sum())
        return ok, target[ok], False

    def fast_starting(self, rows: int) -> bool:
        """Whether a batch of ``rows`` rows would pass in the fast start's sub-batches now
        (the model is still young): what a benchmark times apart, as a cost paid once per
        model."""
        return bool(self.fast_start) and self.seen < self.fast_start * rows

    def process_encoded(
        self, feats: EncodedFeatures, ys: Sequence[Hashable | None]
    ) -> BatchOutcome:
        """Score every row, then learn from the labelled ones (encoded features).

        Fast start: while the model is young, the batch is scored and learned in consecutive
        sub-batches of ``events // fast_start`` rows (at least one; ``events`` counts the
        events learned before and the rows of this batch already passed), so the first events
        are predicted by a model that has already learned from their predecessors and take many
        small steps; once that size reaches the batch's, batches pass whole.
        """
        n, parts, seen = len(feats), [], self.seen
        known_before = len(self.labels)
        if not self.fast_starting(n):
            return self._process_batch(feats, ys, known_before)  # grown up (or off): whole
        # the batch's classes switched on at once, as for a whole batch (in order of first
        # appearance); a sub-batch predicts those first labelled in the rows before it
        slots = np.zeros(n, np.int64) if self.regression else self.labels.add_many(ys)
        for rows in fast_start_slices(seen, n, self.fast_start):
            known = max(known_before, int(slots[: rows.start].max(initial=-1)) + 1)
            part = EncodedFeatures(feats.num[rows], feats.cat[rows])
            ends = rows.stop == n
            parts.append(self._process_batch(part, ys[rows], known, young=True, ends_batch=ends))
        return _joined(parts)

    def _process_batch(
        self,
        feats: EncodedFeatures,
        ys: Sequence[Hashable | None],
        known_before: int,
        young: bool = False,
        ends_batch: bool = True,
    ) -> BatchOutcome:
        """One (sub-)batch through the chain; predictions renormalised over the first
        ``known_before`` classes (those whose first label came before its rows); ``young``:
        a fast-start sub-batch (its updates replay at least learner.replay_floor rows);
        ``ends_batch``: False for a sub-batch before the last of its micro-batch."""
        n = len(feats)
        ok, target, every = self._targets(ys)
        z = self.encoder.standardize(feats.num)
        if len(self.labels) != known_before:
            self.learner.set_classes(self._class_mask())
        drifts: list[int] = []
        first = self.seen  # the global position of the batch's first learned row
        rows = slice(None) if every else ok  # a slice views the usual, fully labelled batch
        if rows is ok or not n:  # some rows not learned: filled in row by row
            prediction = np.zeros((n, *self.learner.row_shape), dtype=np.float32)
            loss = np.full(n, np.nan)
        if rows is ok:  # score-only rows are scored first too: batch-mates' labels unseen
            prediction[~ok] = self._score(z[~ok], feats.cat[~ok])
        if (every and n) or ok.any():  # an empty batch learns nothing
            raw, cat, z = feats.num[rows], feats.cat[rows], z[rows]
            # the batch's updates may run on the learner's worker thread until step.wait():
            # nothing here reads or changes the learner before that
            step = self.learner.begin_step(z, cat, target, young)
            try:
                live = network = step.prediction
                for offset in self.detector.update(step.loss):
                    drifts.append(self.seen + offset)
                if self.experts is not None and not drifts:  # beside the live updates
                    network = self.experts.learn(z, cat, target, live)  # a fresh model mixed in
                base, exported = network, live  # exported: the base as the export computes it
                if self.linear is not None:
                    inputs = self._linear_inputs(z, cat)
                    base, linear = self.linear.mix(network, inputs, len(self.labels))
                    exported = (
                        base if network is live else gated(live, linear.mixed, self.linear.share)
                    )
                if self.neighbours is not None:  # judged against the prediction without it
                    near, unvoted = self._numeric(z), base  # the slots the step scored
                    vote = self.neighbours.vote(near, base)
                    base = self.neighbours.mix(base, vote)
                scored = base if self.memory is None else self.memory.compensate(step.hidden, base)
                if rows is ok:
                    prediction[rows], loss[rows] = scored, step.loss
                else:  # every row learned: the arrays as they come, the outcome's own
                    # prediction (the base one goes on to the memory and the observers)
                    prediction = scored.copy() if scored is live else scored
                    loss = step.loss.astype(np.float64)
                if drifts:
                    step.wait()  # the response changes the schedule and the reservoir
                    self.learner.on_drift()
                if self.neighbours is not None:  # a detection brings a retired vote back
                    if drifts:
                        self.neighbours.on_drift()
                    self.neighbours.learn(near, target, unvoted, vote)
                if self.memory is not None:  # stores the live model's, as the detector sees
                    self.memory.store(z, cat, step.hidden, target, live, bool(drifts))
                if self.linear is not None:
                    self.linear.learn(inputs, target, network, linear, len(self.labels))
                self.seen += len(target)
                self.encoder.observe(raw)
            finally:
                step.wait()
            switched = self.experts is not None and self.experts.observe(
                z,
                cat,
                target,
                step.prediction,
                bool(drifts),
                drifts[-1] - first if drifts else 0,
                ends_batch,
            )
            if self.memory is not None:  # re-keyed by the model that learned this batch
                if switched and drifts:  # at the detection: rows mostly of the concept that ended
                    self.memory.on_drift()
                if switched:  # its keys and base values came from the weights replaced
                    self.memory.rekey()
                self.memory.refresh()
            for observe in self.observers:  # the base prediction, as exported
                observe(raw, cat, target, exported)
        if not self.regression and len(self.labels) != known_before:
            prediction = _without_new_classes(prediction, known_before)
        self.drifts.extend(drifts)
        return BatchOutcome(prediction, loss, ok, drifts, target)

    def respond_to_drift(self) -> None:
        """The drift response for a drift detected elsewhere (another rank of a scaled-out
        worker): re-warm and replay reset, memory reset, a retired neighbour vote brought back,
        and a drift recorded at this point."""
        self.learner.on_drift()
        if self.memory is not None:
            self.memory.on_drift()
        if self.neighbours is not None:
            self.neighbours.on_drift()
        self.drifts.append(self.seen)

    def classes(self) -> list[Hashable]:
        return list(self.labels.classes)

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything this chain owns, so a restored one continues the stream bit for bit.

        Plain values and tensors (numpy arrays from the error memory included); see
        streamlearn/worker/checkpoint.py for how they are written.
        """
        return {
            "encoder": self.encoder.state_dict(),
            "labels": self.labels.state_dict(),
            "learner": self.learner.state_dict(),
            "detector": self.detector.state_dict(),
            "memory": None if self.memory is None else self.memory.state_dict(),
            **({} if self.experts is None else {"experts": self.experts.state_dict()}),
            **({} if self.linear is None else {"linear": self.linear.state_dict()}),
            **({} if self.neighbours is None else {"neighbours": self.neighbours.state_dict()}),
            "counters": {
                "seen": self.seen,
                "unknown_labels": self.unknown_labels,
                "drifts": list(self.drifts),
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the settings must build the same model."""
        self.encoder = FeatureEncoder.from_state_dict(state["encoder"], self.backend.statistics)
        self.labels = LabelMap.from_state_dict(state["labels"])
        self.learner.load_state_dict(state["learner"])
        self.learner.set_classes(self._class_mask())
        self.detector.load_state_dict(state["detector"])
        if self.memory is not None and state.get("memory") is not None:
            self.memory.load_state_dict(state["memory"])
        if self.experts is not None and state.get("experts") is not None:
            self.experts.load_state_dict(state["experts"])
        if self.linear is not None and state.get("linear") is not None:  # absent: saved before
            self.linear.load_state_dict(state["linear"])
        if self.neighbours is not None and state.get("neighbours") is not None:
            self.neighbours.load_state_dict(state["neighbours"])
        counters = state["counters"]
        self.seen = int(counters["seen"])
        self.unknown_labels = int(counters["unknown_labels"])
        self.drifts = [int(d) for d in counters["drifts"]]


def _target(y: Hashable | None) -> float:
    """A regression target; NaN (not learned) when missing or not a number."""
    try:
        return np.nan if y is None else float(y)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return np.nan


def _joined(parts: Sequence[BatchOutcome]) -> BatchOutcome:
    """The outcomes of consecutive sub-batches as the outcome of their whole batch."""
    return BatchOutcome(
        np.concatenate([p.prediction for p in parts]),
        np.concatenate([p.loss for p in parts]),
        np.concatenate([p.learned for p in parts]),
        [d for p in parts for d in p.drifts],
        np.concatenate([p.target for p in parts]),
    )


def _without_new_classes(prediction: np.ndarray, known: int) -> np.ndarray:
    """Renormalise over classes known before this batch: its labels stay unseen."""
    prediction[:, known:] = 0.0
    total = prediction.sum(axis=1, keepdims=True)
    return np.divide(prediction, total, out=np.zeros_like(prediction), where=total > 0)
