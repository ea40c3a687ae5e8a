"""Summaries, targets, markdown, JSON and plots for ``benchmarks/suite.py``.

Everything is computed from the runs of one invocation; no number is hard-coded. A stream run at
several seeds is judged on each model's mean over the seeds (events/s: the pooled events over the
pooled seconds): on a 30,000-event stream one seed's accuracy varies by about a tenth of a point,
as much as the gaps the targets decide on. The targets are
issue 23's: accuracy at least the best peer's on 80 % of the streams, a mean gap to the best peer
of at least +1 point and a worst gap of at least -1.5 points (classification), MAE at most the
best peer's on every regression stream, and on every stream streamlearn faster than river's
StandardScaler | LogisticRegression (LinearRegression on regression streams) at equal or
better accuracy (MAE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prequential_report import BLOCK, SUBJECT, StreamResult
from report import ModelRun, fmt_float, fmt_rate, markdown_table, plot_curves, rolling_window
from suite_streams import SUITE

__all__ = [
    "MEMORY_OFF",
    "SPEED_PEERS",
    "SeededStream",
    "at_least",
    "render_markdown",
    "results_json",
    "summarise",
    "write_plots",
]

MEMORY_OFF = "streamlearn-memory-off"
FIRST = 1000  # the fast-start window: events from the start of the stream
SPEED_PEERS = {"classification": "river-scaled-lr", "regression": "river-scaled-linreg"}
TARGET_WIN_SHARE = 0.8
TARGET_MEAN_GAP = 1.0  # points
TARGET_WORST_GAP = -1.5  # points


@dataclass
class SeededStream:
    """One stream's runs at each seed of the suite (seed -> StreamResult, the same rows count):
    a model's figures are its means over the seeds, its events/s the pooled events over the
    pooled seconds. Only models that ran at every seed are compared (``compared``)."""

    by_seed: dict[int, StreamResult]

    @property
    def results(self) -> list[StreamResult]:
        return list(self.by_seed.values())

    @property
    def stream(self) -> str:
        return self.results[0].stream

    @property
    def task(self) -> str:
        return self.results[0].task

    @property
    def description(self) -> str:
        return self.results[0].description

    @property
    def drift_positions(self) -> list[int]:
        return self.results[0].drift_positions

    @property
    def n_events(self) -> int:
        return self.results[0].n_events

    @property
    def span(self) -> int:
        return self.results[0].span

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    def compared(self) -> list[str]:
        """The models that ran at every seed, in the first seed's order."""
        return [
            run.key
            for run in self.results[0].runs
            if all(res.run(run.key) is not None for res in self.results)
        ]

    def runs(self, key: str) -> list[ModelRun]:
        return [run for res in self.results if (run := res.run(key)) is not None]

    def name(self, key: str) -> str:
        return self.runs(key)[0].name

    def per_seed(self, key: str) -> list[float]:
        return [run.score.overall() for run in self.runs(key)]

    def value(self, key: str) -> float:
        return float(np.mean(self.per_seed(key)))

    def first(self, key: str) -> float:
        return float(np.mean([run.score.between(0, FIRST) for run in self.runs(key)]))

    def after_drift(self, key: str) -> list[float]:
        per_seed = [res.after_drift(run) for res in self.results if (run := res.run(key))]
        return [float(np.mean(window)) for window in zip(*per_seed, strict=True)]

    def events_per_s(self, key: str) -> float:
        runs = self.runs(key)
        return sum(run.events for run in runs) / sum(run.seconds for run in runs)

    def skipped(self) -> dict[str, str]:
        """Models left out, and why: a seed's own reasons, or that it ran at some seeds only."""
        out: dict[str, str] = {}
        for res in self.results:
            out.update(res.skipped)
        kept = set(self.compared())
        for res in self.results:
            for run in res.runs:
                if run.key not in kept and run.key not in out:
                    ran = len(self.runs(run.key))
                    out[run.key] = f"ran at {ran} of {len(self.results)} seeds: not compared"
        return out


def at_least(a: float, b: float, regression: bool) -> bool:
    """Whether ``a`` is as good as ``b``: accuracy as high, or MAE as low."""
    return bool(a <= b) if regression else bool(a >= b)


def best_peer(stream: SeededStream) -> str | None:
    """The key of the best model on the stream that is not streamlearn (None: no peer ran)."""
    peers = [key for key in stream.compared() if not key.startswith(SUBJECT)]
    if not peers:
        return None
    pick = min if stream.regression else max
    return pick(peers, key=stream.value)


def _gain(on: float, off: float, regression: bool) -> float:
    """The memory's gain: accuracy points on minus off, or MAE off minus on (both: + = better)."""
    return (off - on) if regression else 100.0 * (on - off)


def summarise(stream: SeededStream) -> dict[str, Any]:
    """One stream's figures, means over its seeds: streamlearn against the best peer, the
    memory's gain, the speed target against StandardScaler | linear model."""
    regression = stream.regression
    keys, best = stream.compared(), best_peer(stream)
    value = stream.value(SUBJECT)
    out: dict[str, Any] = {
        "task": stream.task,
        "metric": "MAE" if regression else "accuracy",
        "events": stream.n_events,
        "seeds": len(stream.results),
        "streamlearn": value,
        "streamlearn_per_seed": stream.per_seed(SUBJECT),
        "first": stream.first(SUBJECT),
        "best_peer": None if best is None else stream.name(best),
        "best_peer_value": None if best is None else stream.value(best),
        "best_peer_first": None if best is None else stream.first(best),
    }
    if best is not None:
        best_value = stream.value(best)
        out["at_least_best"] = at_least(value, best_value, regression)
        # classification: accuracy points; regression: MAE relative to the best peer's, in %
        out["gap"] = (
            100.0 * (best_value - value) / best_value
            if regression
            else 100.0 * (value - best_value)
        )
    if MEMORY_OFF in keys:
        after_on, after_off = stream.after_drift(SUBJECT), stream.after_drift(MEMORY_OFF)
        out["memory_gain_overall"] = _gain(value, stream.value(MEMORY_OFF), regression)
        out["memory_gain_after_drift"] = [
            _gain(a, b, regression) for a, b in zip(after_on, after_off, strict=True)
        ]
    speed_key = SPEED_PEERS["regression" if regression else "classification"]
    if speed_key in keys:
        rate, peer_rate = stream.events_per_s(SUBJECT), stream.events_per_s(speed_key)
        peer_value = stream.value(speed_key)
        out["speed"] = {
            "peer": stream.name(speed_key),
            "peer_value": peer_value,
            "peer_events_per_s": peer_rate,
            "events_per_s": rate,
            "ratio": rate / peer_rate,
            "met": rate > peer_rate and at_least(value, peer_value, regression),
        }
    return out


def targets(results: Sequence[SeededStream]) -> list[dict[str, Any]]:
    """Issue 23's targets with the measured figures and whether each was met."""
    rows = {res.stream: summarise(res) for res in results}
    compared = [s for s in rows.values() if "at_least_best" in s]
    wins = sum(s["at_least_best"] for s in compared)
    gaps = [s["gap"] for s in compared if s["task"] != "regression"]
    regression = [(n, s) for n, s in rows.items() if s["task"] == "regression" and "gap" in s]
    speed = [(n, s["speed"]) for n, s in rows.items() if "speed" in s]
    share = wins / len(compared) if compared else float("nan")
    none = "— (no such stream in this run)"  # a target over no stream is not judged: met None
    mean_gap = float(np.mean(gaps)) if gaps else None
    worst = min(gaps) if gaps else None
    return [
        {
            "target": f"accuracy (MAE) at least the best peer's on ≥ {TARGET_WIN_SHARE:.0%} "
            "of the streams",
            "measured": f"{wins} of {len(compared)} streams ({share:.0%})",
            "met": bool(compared) and share >= TARGET_WIN_SHARE,
        },
        {
            "target": f"mean accuracy gap to the best peer ≥ +{TARGET_MEAN_GAP} point "
            "(classification streams)",
            "measured": none if mean_gap is None else f"{mean_gap:+.2f} points",
            "met": None if mean_gap is None else mean_gap >= TARGET_MEAN_GAP,
        },
        {
            "target": f"worst accuracy gap to the best peer ≥ {TARGET_WORST_GAP} points",
            "measured": none if worst is None else f"{worst:+.2f} points",
            "met": None if worst is None else worst >= TARGET_WORST_GAP,
        },
        {
            "target": "MAE ≤ the best peer's on every regression stream",
            "measured": ", ".join(f"{n} {s['gap']:+.1f} %" for n, s in regression) or none,
            "met": all(s["at_least_best"] for _, s in regression) if regression else None,
        },
        {
            "target": "faster than river's StandardScaler | LogisticRegression (LinearRegression) "
            "at equal or better accuracy (MAE), on every stream",
            "measured": f"{sum(s['met'] for _, s in speed)} of {len(speed)} streams; missed: "
            + (", ".join(n for n, s in speed if not s["met"]) or "none"),
            "met": bool(speed) and all(s["met"] for _, s in speed),
        },
    ]


# -- markdown -----------------------------------------------------------------------------------
def _fmt_value(value: float | None, regression: bool) -> str:
    return fmt_float(value, 3 if not regression else 4 if value is not None and value < 1 else 3)


def _fmt_gains(gains: Sequence[float], regression: bool) -> str:
    if not gains:
        return "—"
    return " / ".join(f"{g:+.3f}" if regression else f"{g:+.1f}" for g in gains)


def summary_section(results: Sequence[SeededStream]) -> str:
    header = [
        "stream",
        "task",
        "drift",
        "events",
        "streamlearn",
        "best peer",
        "gap",
        f"first {FIRST:,}: streamlearn / best peer",
        "memory gain after each drift",
        "memory gain overall",
        "speed vs scaled linear",
    ]
    rows = []
    for res in results:
        s = summarise(res)
        reg = res.regression
        gap = s.get("gap")
        gap_text = "—" if gap is None else f"{gap:+.1f} %" if reg else f"{gap:+.1f} pt"
        speed = s.get("speed")
        speed_text = (
            "—" if speed is None else f"{speed['ratio']:.1f}× {'met' if speed['met'] else 'missed'}"
        )
        rows.append(
            [
                res.stream,
                res.task,
                _drift_kind(res),
                f"{s['events']:,}",
                f"{s['metric']} {_fmt_value(s['streamlearn'], reg)}",
                f"{s['best_peer'] or '—'} {_fmt_value(s['best_peer_value'], reg)}",
                gap_text,
                f"{_fmt_value(s['first'], reg)} / {_fmt_value(s['best_peer_first'], reg)}",
                _fmt_gains(s.get("memory_gain_after_drift", []), reg),
                _fmt_gains([s["memory_gain_overall"]], reg) if "memory_gain_overall" in s else "—",
                speed_text,
            ]
        )
    notes = (
        "gap: accuracy points to the best peer (regression: the best peer's MAE minus "
        "streamlearn's, in % of the best peer's; + = streamlearn better). Memory gain: "
        "streamlearn with the error memory on minus off, accuracy points (regression: MAE off "
        f"minus on), over the {FIRST:,} events after each drift and overall. Speed: "
        "streamlearn's events/s over river's StandardScaler | LogisticRegression "
        "(LinearRegression), met where it is faster at equal or better accuracy (MAE)."
    )
    return "## Summary\n\n" + markdown_table(header, rows) + "\n\n" + notes + "\n"


def _drift_kind(res: SeededStream) -> str:
    return SUITE[res.stream].drift


def targets_section(results: Sequence[SeededStream]) -> str:
    rows = [
        [
            t["target"],
            t["measured"],
            "—" if t["met"] is None else "met" if t["met"] else "**missed**",
        ]
        for t in targets(results)
    ]
    table = markdown_table(["target", "measured", "verdict"], rows, "lll")
    return "## Targets\n\n" + table + "\n" + missing_peers_note(results)


def missing_peers_note(results: Sequence[SeededStream]) -> str:
    """A line naming the peers left out of some streams, since the best peer and every target
    are then over the peers that ran (a missing peer venv must not pass unseen)."""
    left_out: dict[str, int] = {}
    for result in results:
        for key in result.skipped():
            left_out[key] = left_out.get(key, 0) + 1
    if not left_out:
        return ""
    named = ", ".join(f"{key} on {n} of {len(results)} streams" for key, n in left_out.items())
    return (
        f"\n**Not every peer ran** ({named}; reasons under each stream): the best peer and the "
        "targets above are over the peers that did.\n"
    )


def stream_section(stream: SeededStream) -> str:
    reg = stream.regression
    metric = "MAE" if reg else "accuracy"
    several = len(stream.results) > 1
    drifts = ", ".join(f"{p:,}" for p in stream.drift_positions)
    where = f"; drifts at {drifts}" if drifts else ""
    head = (
        f"## {stream.stream}\n\n{stream.description}; {stream.n_events:,} events, task "
        f"{stream.task}{where}.\n\n"
    )
    rows = []
    for key in stream.compared():
        seeds = [" / ".join(_fmt_value(v, reg) for v in stream.per_seed(key))] if several else []
        rows.append(
            [
                stream.name(key),
                _fmt_value(stream.value(key), reg),
                *seeds,
                _fmt_value(stream.first(key), reg),
                " / ".join(_fmt_value(a, reg) for a in stream.after_drift(key)) or "—",
                fmt_rate(stream.events_per_s(key)),
            ]
        )
    headers = [
        "model",
        f"{metric}, mean over the seeds" if several else metric,
        *([f"{metric} at each seed"] if several else []),
        f"{metric}, first {FIRST:,} events",
        f"{metric}, {stream.span:,} events after each drift",
        "events/s",
    ]
    first = stream.results[0]
    notes = [f"- {run.name}: {n}" for run in first.runs for n in run.notes]
    notes += [f"- {key}: {why}" for key, why in stream.skipped().items()]
    for seed, res in stream.by_seed.items():
        subject = res.run(SUBJECT)
        if subject is not None and subject.extra.get("detected_drifts"):
            found = ", ".join(f"{p:,}" for p in subject.extra["detected_drifts"])
            at_seed = f" (seed {seed})" if several else ""
            notes.append(f"- streamlearn's drift detector fired at{at_seed}: {found}")
    body = markdown_table(headers, rows) + "\n\n" + "\n".join(notes)
    return head + body + f"\n\n![{stream.stream}](suite-{stream.stream}.png)\n"


def header_section(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    load = meta["load_average_1m"]
    learner = meta["settings"]["learner"]
    quick = " (--quick)" if meta["quick"] else ""
    lines = [
        "# Learning-quality suite: streamlearn vs river and deep-river",
        "",
        f"Produced by `{meta['command']}` (started {meta['started']}, {meta['seconds']:,} s); "
        f"{meta['events']:,} events per generated stream{quick}, real data sets whole (at most "
        f"that many), {_seeds_text(meta['seeds'])}.",
        "",
        *([f"**Partial: {meta['partial']}.**", ""] if meta.get("partial") else []),
        "Prequential: every model predicts each event before learning it. Only the models' own "
        "calls are timed; rows are generated, and for streamlearn's batch API converted to "
        "column arrays, before the clock starts.",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu_count')} logical cores ({m.get('cpu')}); {m.get('platform')}",
        f"- python {m.get('python')}, torch {m.get('torch')}, river {m.get('river')}",
        f"- load average (1 min) at start / end: {load['start']} / {load['end']} (other work "
        "on the machine lowers every model's events/s)",
        "- streamlearn: its defaults (batch size "
        f"{meta['settings']['source']['batch_size']}, hidden {learner['hidden']}, lr "
        f"{learner['lr']}, {learner['updates']} update(s) per batch, error memory "
        f"{'on' if meta['settings']['memory']['enabled'] else 'off'}), the stream's task, "
        "the run's seed",
        "",
    ]
    return "\n".join(lines)


def _seeds_text(seeds: Sequence[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]} for every stream and model"
    listed = ", ".join(str(seed) for seed in seeds)
    return (
        f"seeds {listed}: every stream and model run at each, the figures are means over the "
        "seeds (events/s: pooled events over pooled seconds), the plots rolling means over them"
    )


def render_markdown(results: Sequence[SeededStream], meta: dict[str, Any]) -> str:
    parts = [header_section(meta), targets_section(results), summary_section(results)]
    parts += [stream_section(res) for res in results]
    return "\n".join(parts)


# -- JSON and plots -----------------------------------------------------------------------------
def _blocks(run: ModelRun) -> list[float]:
    values = run.score.values()
    return [float(values[i : i + BLOCK].mean()) for i in range(0, len(values), BLOCK)]


def _run_json(result: StreamResult, run: ModelRun) -> dict[str, Any]:
    return {
        "name": run.name,
        "value": run.score.overall(),
        "first": run.score.between(0, FIRST),
        "after_drift": result.after_drift(run),
        "events": run.events,
        "seconds": run.seconds,
        "events_per_s": run.events_per_s,
        f"per_{BLOCK}_events": _blocks(run),
        "notes": run.notes,
        **run.extra,
    }


def _model_json(stream: SeededStream, key: str) -> dict[str, Any]:
    """A model's figures over the seeds (as each seed's run reports them with one seed)."""
    runs = stream.runs(key)
    return {
        "name": stream.name(key),
        "value": stream.value(key),
        "value_per_seed": stream.per_seed(key),
        "first": stream.first(key),
        "after_drift": stream.after_drift(key),
        "events": sum(run.events for run in runs),
        "seconds": sum(run.seconds for run in runs),
        "events_per_s": stream.events_per_s(key),
    }


def results_json(results: Sequence[SeededStream], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "streams": {
            stream.stream: {
                "description": stream.description,
                "task": stream.task,
                "drift_positions": stream.drift_positions,
                "summary": summarise(stream),
                "models": {key: _model_json(stream, key) for key in stream.compared()},
                "skipped": stream.skipped(),
                "seeds": {
                    str(seed): {
                        "models": {run.key: _run_json(res, run) for run in res.runs},
                        "settings": res.settings,
                    }
                    for seed, res in stream.by_seed.items()
                },
            }
            for stream in results
        },
        "targets": targets(results),
    }


def _mae_range(
    stream: SeededStream, curves: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[float, float]:
    """0 to three times the larger of streamlearn's and the best peer's 95th-percentile rolling
    MAE: peers whose error diverges (unscaled linear models) would flatten every other curve."""
    keys = [SUBJECT] + ([] if (best := best_peer(stream)) is None else [best])
    tops = [
        float(np.nanpercentile(values, 95))
        for key in keys
        if len(values := curves[stream.name(key)][1])
    ]
    return 0.0, 3.0 * max(tops, default=1.0)


def _mean_curve(stream: SeededStream, key: str, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The model's rolling curve, averaged over the seeds (their runs have the same length)."""
    curves = [run.score.curve(window) for run in stream.runs(key)]
    return curves[0][0], np.mean([values for _, values in curves], axis=0)


def write_plots(results: Sequence[SeededStream], out: Path) -> list[Path]:
    """One PNG per stream: rolling prequential accuracy (MAE) of every model, averaged over the
    seeds, drifts marked; MAE plots cut at :func:`_mae_range`."""
    paths = []
    for stream in results:
        window = rolling_window(stream.n_events)
        metric = "MAE" if stream.regression else "accuracy"
        keys = stream.compared()
        curves = {stream.name(key): _mean_curve(stream, key, window) for key in keys}
        over = f", mean of {len(stream.results)} seeds" if len(stream.results) > 1 else ""
        paths.append(
            plot_curves(
                out / f"suite-{stream.stream}.png",
                curves,
                ylim=_mae_range(stream, curves) if stream.regression else None,
                title=f"{stream.stream}: prequential {metric} (rolling mean over {window:,} "
                f"events{over})",
                ylabel=metric,
                vlines=stream.drift_positions,
                vline_label="drift",
                highlight=[stream.name(key) for key in keys if key.startswith(SUBJECT)],
                dashed=[stream.name(key) for key in keys if key == MEMORY_OFF],
            )
        )
    return paths
