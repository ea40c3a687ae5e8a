"""Summaries, targets, markdown, JSON and plots for ``benchmarks/prequential.py``.

Everything here is computed from the runs of one invocation; no number is hard-coded. The
targets are the ones GitHub issue 2 ("What must be shown") sets for streamlearn, with its speed
target as issue 23 restates it: ≥ 100× deep-river, and faster than river's StandardScaler |
LogisticRegression at equal or better accuracy (the earlier 10× river LR target is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from report import ModelRun, fmt_float, fmt_rate, markdown_table, plot_curves, rolling_window

__all__ = [
    "StreamResult",
    "best_peer",
    "needed_events_per_s",
    "render_markdown",
    "results_json",
    "targets",
    "write_plots",
]

SUBJECT = "streamlearn"  # the batch API row the targets are about
DRIFT_SPAN = 1000  # events after an abrupt drift that the drift column averages
BLOCK = 1000  # block size of the per-block accuracies kept in the JSON
SPEEDUP_TARGETS = (  # (peer key, how the target names it, required speed-up, at its accuracy)
    ("deep-river", "deep-river MLP", 100.0, False),
    ("river-scaled-lr", "river StandardScaler | LogisticRegression", 1.0, True),
)
ACCURACY_SLACK = 0.01


@dataclass
class StreamResult:
    """All model runs on one stream."""

    stream: str
    description: str
    task: str
    drift_positions: list[int]
    runs: list[ModelRun] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why
    settings: dict[str, Any] = field(default_factory=dict)  # streamlearn's, as used
    bounds: dict[str, Any] | None = None  # speed_bounds.SpeedBounds.to_json() of the stream

    def add(self, run: ModelRun) -> None:
        self.runs.append(run)

    def run(self, key: str) -> ModelRun | None:
        return next((r for r in self.runs if r.key == key), None)

    @property
    def n_events(self) -> int:
        return max((r.events for r in self.runs), default=0)

    @property
    def span(self) -> int:
        """The after-drift window, cut short where concepts are shorter (small runs)."""
        segment = self.n_events // (len(self.drift_positions) + 1) if self.drift_positions else 0
        return min(DRIFT_SPAN, segment) if segment else DRIFT_SPAN

    def after_drift(self, run: ModelRun) -> list[float]:
        return [w.after for w in run.score.around(self.drift_positions, self.span)]


def best_peer(result: StreamResult) -> ModelRun | None:
    """The most accurate model on the stream that is not streamlearn (None: no peer ran)."""
    peers = [r for r in result.runs if not r.key.startswith(SUBJECT)]
    return max(peers, key=lambda r: r.score.overall()) if peers else None


def needed_events_per_s(result: StreamResult, key: str) -> float | None:
    """events/s the speed-up target over peer ``key`` asks for on this stream."""
    peer = result.run(key)
    factor = next(f for k, _, f, _ in SPEEDUP_TARGETS if k == key)
    return None if peer is None else factor * peer.events_per_s


# -- numbers ------------------------------------------------------------------------------------
def _blocks(run: ModelRun) -> list[float]:
    values = run.score.values()
    return [float(values[i : i + BLOCK].mean()) for i in range(0, len(values), BLOCK)]


def model_summary(result: StreamResult, run: ModelRun) -> dict[str, Any]:
    windows = run.score.around(result.drift_positions, result.span)
    return {
        "name": run.name,
        "accuracy": run.score.overall(),
        "events": run.events,
        "seconds": run.seconds,
        "events_per_s": run.events_per_s,
        "after_drift": [w.after for w in windows],
        "before_drift": [w.before for w in windows],
        f"accuracy_per_{BLOCK}_events": _blocks(run),
        "notes": run.notes,
        **run.extra,
    }


def overall(results: Sequence[StreamResult]) -> dict[str, dict[str, Any]]:
    """Per model across streams: mean accuracy, total events / total seconds, mean after-drift."""
    out: dict[str, dict[str, Any]] = {}
    for key in _model_order(results):
        runs = [(res, r) for res in results if (r := res.run(key)) is not None]
        drops = [a for res, r in runs for a in res.after_drift(r)]
        seconds = sum(r.seconds for _, r in runs)
        out[key] = {
            "name": runs[0][1].name,
            "streams": [res.stream for res, _ in runs],
            "accuracy": float(np.mean([r.score.overall() for _, r in runs])),
            "events_per_s": sum(r.events for _, r in runs) / seconds if seconds else float("nan"),
            "after_drift": float(np.mean(drops)) if drops else float("nan"),
        }
    return out


def _model_order(results: Sequence[StreamResult]) -> list[str]:
    return list(dict.fromkeys(r.key for res in results for r in res.runs))


def _speed_row(
    target: str, stream: str, pair: tuple[float, float], factor: float, accurate: bool = True
) -> dict:
    """``accurate``: the accuracy condition of the target holds (True where it sets none)."""
    ratio = pair[0] / pair[1]
    detail = f"{fmt_rate(pair[0])} vs {fmt_rate(pair[1])} events/s = {ratio:,.1f}×"
    if not accurate:
        detail += ", less accurate"
    return {
        "target": target,
        "stream": stream,
        "met": bool(ratio >= factor and accurate),
        "value": ratio,
        "detail": detail,
    }


def _speed_targets(results: Sequence[StreamResult]) -> list[dict[str, Any]]:
    """Speed-up of streamlearn's batch API over each named peer, per stream and over all."""
    rows: list[dict[str, Any]] = []
    totals = overall(results)
    for key, label, factor, at_accuracy in SPEEDUP_TARGETS:
        target = f"{SUBJECT} events/s ≥ {factor:g}× {label}"
        if at_accuracy:
            target += " at equal or better accuracy"
        for res in results:
            subject, peer = res.run(SUBJECT), res.run(key)
            if subject is None or peer is None:
                why = res.skipped.get(key, "not run")
                rows.append({"target": target, "stream": res.stream, "met": None, "detail": why})
            else:
                pair = (subject.events_per_s, peer.events_per_s)
                accurate = not at_accuracy or subject.score.overall() >= peer.score.overall()
                rows.append(_speed_row(target, res.stream, pair, factor, accurate))
        if len(results) > 1 and SUBJECT in totals and key in totals:
            pair = (totals[SUBJECT]["events_per_s"], totals[key]["events_per_s"])
            accurate = not at_accuracy or totals[SUBJECT]["accuracy"] >= totals[key]["accuracy"]
            rows.append(_speed_row(target, "all streams", pair, factor, accurate))
    return rows


def _accuracy_targets(results: Sequence[StreamResult]) -> list[dict[str, Any]]:
    """streamlearn's accuracy against the best peer on each stream (within the slack)."""
    rows: list[dict[str, Any]] = []
    target = f"{SUBJECT} accuracy ≥ best peer − {ACCURACY_SLACK:g}"
    for res in results:
        subject, best = res.run(SUBJECT), best_peer(res)
        if subject is None or best is None:
            rows.append({"target": target, "stream": res.stream, "met": None, "detail": "no peer"})
            continue
        ours, theirs = subject.score.overall(), best.score.overall()
        margin = ours - theirs
        detail = f"{fmt_float(ours)} vs {fmt_float(theirs)} ({best.name}), margin {margin:+.3f}"
        rows.append(
            {
                "target": target,
                "stream": res.stream,
                "met": bool(margin >= -ACCURACY_SLACK),
                "value": margin,
                "best_peer": best.key,
                "detail": detail,
            }
        )
    return rows


def targets(results: Sequence[StreamResult]) -> list[dict[str, Any]]:
    """Each target of issue 2 per stream, with the measured value and met / NOT met / None."""
    return _speed_targets(results) + _accuracy_targets(results)


# -- markdown -----------------------------------------------------------------------------------
def _drift_cell(result: StreamResult, run: ModelRun) -> str:
    if not result.drift_positions:
        return "— (no abrupt drift)"
    return " / ".join(fmt_float(a) for a in result.after_drift(run))


def stream_section(result: StreamResult) -> str:
    rows = [
        [r.name, fmt_float(r.score.overall()), fmt_rate(r.events_per_s), _drift_cell(result, r)]
        for r in result.runs
    ]
    span = f"acc. {result.span:,} events after each drift"
    lines = [
        f"## {result.stream}",
        "",
        f"{result.description}; {result.n_events:,} events, task {result.task}"
        + (
            f", abrupt drifts at {', '.join(f'{p:,}' for p in result.drift_positions)}."
            if result.drift_positions
            else "."
        ),
        "",
        markdown_table(["model", "accuracy", "events/s", span], rows),
        "",
    ]
    notes = [f"{r.name}: {n}" for r in result.runs for n in r.notes]
    subject = result.run(SUBJECT)
    detected = subject.extra.get("detected_drifts") if subject else None
    if detected is not None:
        notes.append(
            f"streamlearn's drift detector fired at: "
            f"{', '.join(f'{p:,}' for p in detected) or 'never'}"
        )
    notes += [f"{key}: {why}" for key, why in result.skipped.items()]
    lines += [f"- {n}" for n in notes]
    lines += ["", f"![{result.stream}](prequential-{result.stream}.png)", ""]
    return "\n".join(lines)


def overall_section(results: Sequence[StreamResult]) -> str:
    rows = [
        [
            s["name"],
            fmt_float(s["accuracy"]),
            fmt_rate(s["events_per_s"]),
            fmt_float(s["after_drift"]),
            str(len(s["streams"])),
        ]
        for s in overall(results).values()
    ]
    headers = ["model", "mean accuracy", "events/s", "mean acc. after drift", "streams"]
    return "\n".join(
        [
            "## Overall",
            "",
            "Mean of the per-stream accuracies; events/s = all events / all seconds of model work; "
            "after-drift accuracy averaged over every abrupt drift of every stream.",
            "",
            markdown_table(headers, rows),
            "",
        ]
    )


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "**NOT met**"


def targets_section(results: Sequence[StreamResult]) -> str:
    rows = targets(results)
    table = [[t["target"], t["stream"], t["detail"], _verdict(t["met"])] for t in rows]
    decided = [t for t in rows if t["met"] is not None]
    met = sum(t["met"] for t in decided)
    return "\n".join(
        [
            "## Targets (issue 2)",
            "",
            f"Computed from the numbers above (this run). {met} of {len(decided)} met"
            + (
                f"; {len(rows) - len(decided)} not measurable in this run."
                if len(decided) < len(rows)
                else "."
            ),
            "",
            markdown_table(["target", "stream", "measured", "result"], table, align="llll"),
            "",
        ]
    )


def _above_arithmetic(needed: float | None, bounds: dict[str, Any]) -> str:
    if needed is None:
        return "—"
    above = needed > bounds["arithmetic_events_per_s"]
    return f"{fmt_rate(needed)}: {'above the ceiling' if above else 'below'}"


def _budget(needed: float | None, bounds: dict[str, Any], events_per_s: float) -> str:
    """A target's events/s as the µs a batch may take, against what one took in the run."""
    if needed is None:
        return "—"
    size = bounds["batch_size"]
    return f"{size / needed * 1e6:,.0f} µs (took {size / events_per_s * 1e6:,.0f})"


def bounds_section(results: Sequence[StreamResult]) -> str:
    """The arithmetic ceiling and a batch's cost per stage (benchmarks/speed_bounds.py) next to
    the targets."""
    measured = [r for r in results if r.bounds and r.run(SUBJECT)]
    if not measured:
        return ""
    ceilings, stages = [], []
    for res in measured:
        b, subject = res.bounds, res.run(SUBJECT)
        assert b is not None and subject is not None
        ceilings.append(
            [
                res.stream,
                fmt_rate(subject.events_per_s),
                f"{b['macs_per_event'] / 1e3:,.0f} k",
                fmt_rate(b["arithmetic_events_per_s"]),
                _above_arithmetic(needed_events_per_s(res, "deep-river"), b),
                _budget(needed_events_per_s(res, "deep-river"), b, subject.events_per_s),
            ]
        )
        stages.append(
            [res.stream, *(f"{us:,.0f}" for us in b["stage_us"].values()), f"{b['batch_us']:,.0f}"]
        )
    first = measured[0].bounds
    assert first is not None
    return "\n".join(
        [
            "## Speed bounds: the arithmetic ceiling and where a batch's time goes",
            "",
            "Measured in this run by `benchmarks/speed_bounds.py`, with streamlearn's default "
            "settings. *Arithmetic ceiling*: this machine's matrix-product rate "
            f"({first['matmul_gmacs']:.0f} G multiply-adds/s per thread, 64×64 by 64×64, "
            f"× {first['cores']} cores) divided by the multiply-adds one learned event costs "
            "(updates × (1 + replay_ratio) training rows, each ≈ 3× a forward pass over the "
            "active slots): no implementation of this model reaches a target above it on this "
            "machine. *Time per batch*: the µs a micro-batch may take to meet 100× deep-river, "
            "against what one took in the run above (batch size ÷ events/s).",
            "",
            markdown_table(
                [
                    "stream",
                    "streamlearn events/s",
                    "multiply-adds per event",
                    "arithmetic ceiling",
                    "100× deep-river needs",
                    "100× deep-river: time per batch",
                ],
                ceilings,
                align="lrrrll",
            ),
            "",
            f"Where a micro-batch's time goes: µs per batch of {first['batch_size']} events, "
            f"over {first['batches']} batches after {first['warmup_batches']} of warm-up, "
            "each stage's own time (a stage's calls less the timed stages they call). "
            "Only the calling thread's time is counted. *compiled training*: its time in the "
            "compiled step (learn/step.c): scoring the batch and handing its updates to "
            "the worker thread, then waiting for them if they are not done by the end of the "
            "batch (learner.overlap; without it, the updates themselves); *learner, rest*: "
            "replay draws and inserts, target statistics, result arrays; *expert pool*: "
            "the live model's snapshots, trials of past models and, after a detection, the "
            "fresh model's learning (on the calling thread, while the live model's updates "
            "run on the worker thread); *linear model*: a classifier's linear model beside "
            "the network, its prediction, the mix and its step (decision 0045). The timers around "
            "every stage's calls cost time themselves, so the total runs a little above the "
            "time per batch of the untimed run.",
            "",
            markdown_table(
                ["stream", *first["stage_us"].keys(), "total"],
                stages,
                align="l" + "r" * (len(first["stage_us"]) + 1),
            ),
            "",
        ]
    )


def header_section(results: Sequence[StreamResult], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    subject = next((r for res in results if (r := res.run(SUBJECT))), None)
    device = subject.extra.get("device") if subject else "?"
    deep = next((r.extra["versions"] for res in results if (r := res.run("deep-river"))), None)
    settings = results[0].settings if results else {}
    learner = settings.get("learner", {})
    lines = [
        "# Prequential benchmark: streamlearn vs river and deep-river",
        "",
        f"Produced by `{meta['command']}` (started {meta['started']}, {meta['seconds']:,} s); "
        f"{meta['events']:,} events per stream, seed {meta['seed']} for every stream and model.",
        "",
        "Prequential: every model predicts each event before learning it, and accuracy counts "
        "those predictions. Only the models' own calls are timed; streams are generated, and "
        "for streamlearn's batch API converted to column arrays, before the clock starts.",
        "",
        "Speed of this tree against an earlier commit (issue 18), the `streamlearn` column of "
        "both run alike and interleaved: [speed_vs_baseline.md](speed_vs_baseline.md), written "
        "by `python benchmarks/prequential.py --baseline REV --only-baseline`.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_count']} logical cores ({m['cpu']}); {m['platform']}",
        f"- python {m['python']}, torch {m['torch']} ({m['torch_threads']} thread(s)), "
        f"river {m['river']}; streamlearn device: {device}"
        + (f"; CUDA: {m['cuda_device']}" if m.get("cuda_device") else ""),
    ]
    load = meta.get("load_average_1m") or {}
    if load.get("start") is not None:
        lines.append(
            f"- load average (1 min) at start / end: {load['start']} / {load.get('end')} "
            "(anything else running on the machine lowers the measured events/s)"
        )
    if deep:
        lines.append(
            f"- deep-river venv: deep-river {deep['deep-river']}, torch {deep['torch']}, "
            f"river {deep['river']}"
        )
    if learner:
        shown = ", ".join(f"{k}={v}" for k, v in learner.items() if k not in ("task", "classes"))
        drift = settings.get("drift", {}).get("detector", "?")
        batch = settings.get("source", {}).get("batch_size", "?")
        lines.append(
            f"- streamlearn settings (its defaults, plus the stream's task and the run's seed): "
            f"batch size {batch}, drift detector {drift}, learner: {shown}"
        )
    return "\n".join([*lines, ""])


def render_markdown(
    results: Sequence[StreamResult], meta: dict[str, Any], extra: Sequence[str] = ()
) -> str:
    """The whole report; ``extra`` sections (e.g. the frontier) go at the end."""
    parts = [header_section(results, meta), *(stream_section(r) for r in results)]
    parts += [overall_section(results), targets_section(results), bounds_section(results)]
    parts += list(extra)
    return "\n".join(parts).rstrip() + "\n"


# -- JSON and plots -------------------------------------------------------------------------------
def results_json(results: Sequence[StreamResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "drift_span": DRIFT_SPAN,
        "streams": {
            res.stream: {
                "description": res.description,
                "task": res.task,
                "drift_positions": res.drift_positions,
                "after_drift_span": res.span,
                "streamlearn_settings": res.settings,
                "models": {r.key: model_summary(res, r) for r in res.runs},
                "skipped": res.skipped,
                "speed_bounds": res.bounds,
            }
            for res in results
        },
        "overall": overall(results),
        "targets": targets(results),
    }


def write_plots(results: Sequence[StreamResult], out: Path) -> list[Path]:
    """One PNG per stream: rolling prequential accuracy of every model, drifts marked."""
    paths = []
    for res in results:
        window = rolling_window(res.n_events)
        curves = {r.name: r.score.curve(window) for r in res.runs}
        paths.append(
            plot_curves(
                out / f"prequential-{res.stream}.png",
                curves,
                title=f"{res.stream}: prequential accuracy (rolling mean over {window:,} events)",
                vlines=res.drift_positions,
                vline_label="abrupt drift",
                highlight=[r.name for r in res.runs if r.key.startswith(SUBJECT)],
                dashed=[r.name for r in res.runs if r.key.startswith(SUBJECT) and r.key != SUBJECT],
            )
        )
    return paths
