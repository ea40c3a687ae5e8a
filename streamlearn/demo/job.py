"""The embedded main job: a drifting stream through the learner, with a summary and a plot.

Needs no Kafka or Redis: events come from a synthetic stream (or a JSONL file), are scored and
then learned in micro-batches, drift detections are printed as they happen, and at the end a
summary table and a PNG of prequential accuracy with the drift points are written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from streamlearn.app import build_prequential, build_source
from streamlearn.core.evaluation import DriftWindow, PrequentialScore
from streamlearn.core.learner import OnlineLearner
from streamlearn.events import Event, Rejection
from streamlearn.settings import Settings
from streamlearn.sources import SyntheticSource

__all__ = ["DemoReport", "run_demo"]


@dataclass
class DemoReport:
    """What the demo measured; printed as the summary."""

    events: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # end to end: reading the source (e.g. generating it) included
    process_seconds: float = 0.0  # in Prequential.process only (encode, score, learn)
    metric: str = "accuracy"
    overall: float = float("nan")
    detected: list[int] = field(default_factory=list)
    true_drifts: list[int] = field(default_factory=list)
    segments: list[tuple[int, int, float]] = field(default_factory=list)  # start, stop, value
    around: list[DriftWindow] = field(default_factory=list)  # 1,000 events each side
    plot: Path | None = None
    training_step: str = ""  # which training step ran: compiled kernels or torch ops
    linear_share: float | None = None  # the linear model's share at the end (None: no model)
    neighbour_share: float | None = None  # the neighbour vote's share at the end (None: off)
    switches: tuple[int, int] | None = None  # to past models, to fresh ones (None: no pool)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def process_events_per_second(self) -> float:
        return self.events / self.process_seconds if self.process_seconds > 0 else float("nan")

    def render(self) -> str:
        lines = [
            f"events learned    {self.events:,}",
            f"events/s          {self.events_per_second:,.0f} end to end (reading the source "
            f"included), {self.process_events_per_second:,.0f} in Prequential.process",
            f"training step     {self.training_step}",
            f"prequential {self.metric:<6} {self.overall:.4f}",
            "linear model      "
            + (
                "none (regression, or linear.enabled: false)"
                if self.linear_share is None
                else f"{self.linear_share:.2f} of the prediction, the network the rest"
            ),
            "neighbour vote    "
            + (
                "none (regression, or neighbours.enabled: false)"
                if self.neighbour_share is None
                else f"{self.neighbour_share:.2f} of the prediction (0: retired or losing)"
            ),
            "model switches    "
            + (
                "none (experts.enabled: false)"
                if self.switches is None
                else f"{self.switches[0]} to past models, {self.switches[1]} to fresh ones"
            ),
            f"drifts detected   {self.detected or 'none'}",
        ]
        if self.true_drifts:
            lines.append(f"true drifts       {self.true_drifts}")
        if self.rejected:
            lines.append(f"rejected          {self.rejected}")
        if self.around:
            lines.append(f"{self.metric} in the 1,000 events before → after each drift:")
            lines += [f"  at {w.position:>7,}: {w.before:.4f} → {w.after:.4f}" for w in self.around]
        lines.append(f"{self.metric} between detected drifts:")
        lines += [f"  events {a:>7,} – {b:>7,}: {v:.4f}" for a, b, v in self.segments]
        if self.plot:
            lines.append(f"plot              {self.plot}")
        return "\n".join(lines)


def run_demo(settings: Settings, out_dir: Path | None, stream: TextIO | None = None) -> DemoReport:
    """Run the configured source through a fresh learner; write the plot into ``out_dir``."""
    source = build_source(settings)
    preq = build_prequential(settings)
    score = PrequentialScore(regression=preq.regression)
    learner = preq.learner
    report = DemoReport(
        metric=score.metric,
        training_step=_training_step(learner),
    )
    if isinstance(source, SyntheticSource):
        report.true_drifts = source.drift_positions
    total = settings.source.n_events if isinstance(source, SyntheticSource) else None
    bar = tqdm(total=total, unit="ev", file=stream, dynamic_ncols=True, mininterval=0.5)
    start = time.perf_counter()
    for batch in source.batches(settings.source.batch_size):
        events = [e for e in batch if isinstance(e, Event)]
        for rejection in (r for r in batch if isinstance(r, Rejection)):
            report.rejected[rejection.reason] = report.rejected.get(rejection.reason, 0) + 1
        if events:
            ys = [e.y for e in events]
            began = time.perf_counter()
            outcome = preq.process([e.x for e in events], ys)
            report.process_seconds += time.perf_counter() - began
            score.update(outcome.prediction, ys, preq.classes())
            for position in outcome.drifts:
                bar.write(f"drift detected at event {position:,} (lr → {preq.learner.lr:.2e})")
        bar.update(len(batch))
    report.seconds = time.perf_counter() - start
    bar.close()
    report.events = preq.seen
    report.overall = score.overall()
    report.linear_share = None if preq.linear is None else preq.linear.share
    report.neighbour_share = None if preq.neighbours is None else preq.neighbours.share
    pool = preq.experts
    if pool is not None:
        fresh = 0 if pool.fresh is None else pool.fresh.switches
        report.switches = (pool.switches - fresh, fresh)
    report.detected = list(preq.drifts)
    bounds = [0, *report.detected, len(score)]
    report.segments = [(a, b, score.between(a, b)) for a, b in pairwise(bounds) if b > a]
    report.around = score.around(report.true_drifts or report.detected, 1000)
    if out_dir is not None and len(score):
        from streamlearn.plots import plot_curves  # matplotlib: the plots extra, not --no-plot

        name = settings.source.stream if settings.source.kind == "synthetic" else "file"
        report.plot = plot_curves(
            out_dir / f"demo-{name}.png",
            {"streamlearn": score.curve(window=500)},
            title=f"streamlearn demo: {name} (rolling 500 events)",
            ylabel=f"prequential {score.metric} (rolling)",
            true_drifts=report.true_drifts,
            detected={"streamlearn": report.detected},
        )
    return report


def _training_step(learner: OnlineLearner) -> str:
    """Which training step runs, for the summary."""
    if learner.step_kernel.name == "torch":
        return f"torch ops, {learner.device}"
    step = "compiled C kernels (learner.kernel), cpu"
    return f"{step}, updates on a second thread (learner.overlap)" if learner.overlapping else step
