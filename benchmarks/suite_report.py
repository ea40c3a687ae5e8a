"""Summaries, targets, markdown, JSON and plots for ``benchmarks/suite.py``.

Everything is computed from the runs of one invocation; no number is hard-coded. The targets are
issue 23's: accuracy at least the best peer's on 80 % of the streams, a mean gap to the best peer
of at least +1 point and a worst gap of at least -1.5 points (classification), MAE at most the
best peer's on every regression stream, and on every stream streamlearn faster than river's
StandardScaler | LogisticRegression (LinearRegression on regression streams) at equal or
better accuracy (MAE).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prequential_report import BLOCK, SUBJECT, StreamResult
from report import ModelRun, fmt_float, fmt_rate, markdown_table, plot_curves, rolling_window
from suite_streams import SUITE

__all__ = ["MEMORY_OFF", "render_markdown", "results_json", "summarise", "write_plots"]

MEMORY_OFF = "streamlearn-memory-off"
FIRST = 1000  # the fast-start window: events from the start of the stream
SPEED_PEERS = {"classification": "river-scaled-lr", "regression": "river-scaled-linreg"}
TARGET_WIN_SHARE = 0.8
TARGET_MEAN_GAP = 1.0  # points
TARGET_WORST_GAP = -1.5  # points


def _regression(result: StreamResult) -> bool:
    return result.task == "regression"


def _value(run: ModelRun) -> float:
    return run.score.overall()


def _at_least(a: float, b: float, regression: bool) -> bool:
    """Whether ``a`` is as good as ``b``: accuracy as high, or MAE as low."""
    return bool(a <= b) if regression else bool(a >= b)


def best_peer(result: StreamResult) -> ModelRun | None:
    """The best model on the stream that is not streamlearn (None: no peer ran)."""
    peers = [r for r in result.runs if not r.key.startswith(SUBJECT)]
    if not peers:
        return None
    pick = min if _regression(result) else max
    return pick(peers, key=_value)


def _after_drift(result: StreamResult, run: ModelRun | None) -> list[float]:
    return [] if run is None else result.after_drift(run)


def _gain(on: float, off: float, regression: bool) -> float:
    """The memory's gain: accuracy points on minus off, or MAE off minus on (both: + = better)."""
    return (off - on) if regression else 100.0 * (on - off)


def summarise(result: StreamResult) -> dict[str, Any]:
    """One stream's figures: streamlearn against the best peer, the memory's gain, the speed
    target against StandardScaler | linear model."""
    regression = _regression(result)
    subject, off, best = result.run(SUBJECT), result.run(MEMORY_OFF), best_peer(result)
    assert subject is not None
    value = _value(subject)
    out: dict[str, Any] = {
        "task": result.task,
        "metric": "MAE" if regression else "accuracy",
        "events": result.n_events,
        "streamlearn": value,
        "first": subject.score.between(0, FIRST),
        "best_peer": None if best is None else best.name,
        "best_peer_value": None if best is None else _value(best),
        "best_peer_first": None if best is None else best.score.between(0, FIRST),
    }
    if best is not None:
        out["at_least_best"] = _at_least(value, _value(best), regression)
        # classification: accuracy points; regression: MAE relative to the best peer's, in %
        out["gap"] = (
            100.0 * (_value(best) - value) / _value(best)
            if regression
            else 100.0 * (value - _value(best))
        )
    if off is not None:
        after_on, after_off = _after_drift(result, subject), _after_drift(result, off)
        out["memory_gain_overall"] = _gain(value, _value(off), regression)
        out["memory_gain_after_drift"] = [
            _gain(a, b, regression) for a, b in zip(after_on, after_off, strict=True)
        ]
    speed_peer = result.run(SPEED_PEERS["regression" if regression else "classification"])
    if speed_peer is not None:
        faster = subject.events_per_s > speed_peer.events_per_s
        as_good = _at_least(value, _value(speed_peer), regression)
        out["speed"] = {
            "peer": speed_peer.name,
            "peer_value": _value(speed_peer),
            "peer_events_per_s": speed_peer.events_per_s,
            "events_per_s": subject.events_per_s,
            "ratio": subject.events_per_s / speed_peer.events_per_s,
            "met": faster and as_good,
        }
    return out


def targets(results: Sequence[StreamResult]) -> list[dict[str, Any]]:
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


def summary_section(results: Sequence[StreamResult]) -> str:
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
        reg = res.task == "regression"
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


def _drift_kind(res: StreamResult) -> str:
    return SUITE[res.stream].drift


def targets_section(results: Sequence[StreamResult]) -> str:
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


def missing_peers_note(results: Sequence[StreamResult]) -> str:
    """A line naming the peers left out of some streams, since the best peer and every target
    are then over the peers that ran (a missing peer venv must not pass unseen)."""
    left_out: dict[str, int] = {}
    for result in results:
        for key in result.skipped:
            left_out[key] = left_out.get(key, 0) + 1
    if not left_out:
        return ""
    named = ", ".join(f"{key} on {n} of {len(results)} streams" for key, n in left_out.items())
    return (
        f"\n**Not every peer ran** ({named}; reasons under each stream): the best peer and the "
        "targets above are over the peers that did.\n"
    )


def stream_section(result: StreamResult) -> str:
    reg = result.task == "regression"
    metric = "MAE" if reg else "accuracy"
    drifts = ", ".join(f"{p:,}" for p in result.drift_positions)
    where = f"; drifts at {drifts}" if drifts else ""
    head = (
        f"## {result.stream}\n\n{result.description}; {result.n_events:,} events, task "
        f"{result.task}{where}.\n\n"
    )
    rows = []
    for run in result.runs:
        after = result.after_drift(run)
        rows.append(
            [
                run.name,
                _fmt_value(run.score.overall(), reg),
                _fmt_value(run.score.between(0, FIRST), reg),
                " / ".join(_fmt_value(a, reg) for a in after) or "—",
                fmt_rate(run.events_per_s),
            ]
        )
    headers = [
        "model",
        metric,
        f"{metric}, first {FIRST:,} events",
        f"{metric}, {result.span:,} events after each drift",
        "events/s",
    ]
    notes = [f"- {run.name}: {n}" for run in result.runs for n in run.notes]
    notes += [f"- {key}: {why}" for key, why in result.skipped.items()]
    subject = result.run(SUBJECT)
    if subject is not None and subject.extra.get("detected_drifts"):
        found = ", ".join(f"{p:,}" for p in subject.extra["detected_drifts"])
        notes.append(f"- streamlearn's drift detector fired at: {found}")
    body = markdown_table(headers, rows) + "\n\n" + "\n".join(notes)
    return head + body + f"\n\n![{result.stream}](suite-{result.stream}.png)\n"


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
        f"that many), seed {meta['seed']} for every stream and model.",
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


def render_markdown(results: Sequence[StreamResult], meta: dict[str, Any]) -> str:
    parts = [header_section(meta), targets_section(results), summary_section(results)]
    parts += [stream_section(res) for res in results]
    return "\n".join(parts)


# -- JSON and plots -----------------------------------------------------------------------------
def _blocks(run: ModelRun) -> list[float]:
    values = run.score.values()
    return [float(values[i : i + BLOCK].mean()) for i in range(0, len(values), BLOCK)]


def results_json(results: Sequence[StreamResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "meta": meta,
        "streams": {
            res.stream: {
                "description": res.description,
                "task": res.task,
                "drift_positions": res.drift_positions,
                "summary": summarise(res),
                "models": {
                    run.key: {
                        "name": run.name,
                        "value": run.score.overall(),
                        "first": run.score.between(0, FIRST),
                        "after_drift": res.after_drift(run),
                        "events": run.events,
                        "seconds": run.seconds,
                        "events_per_s": run.events_per_s,
                        f"per_{BLOCK}_events": _blocks(run),
                        "notes": run.notes,
                        **run.extra,
                    }
                    for run in res.runs
                },
                "skipped": res.skipped,
                "settings": res.settings,
            }
            for res in results
        },
        "targets": targets(results),
    }


def _mae_range(
    result: StreamResult, curves: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[float, float]:
    """0 to three times the larger of streamlearn's and the best peer's 95th-percentile rolling
    MAE: peers whose error diverges (unscaled linear models) would flatten every other curve."""
    names = [SUBJECT] + ([] if (best := best_peer(result)) is None else [best.key])
    tops = [
        float(np.nanpercentile(curves[run.name][1], 95))
        for key in names
        if (run := result.run(key)) is not None and len(curves[run.name][1])
    ]
    return 0.0, 3.0 * max(tops, default=1.0)


def write_plots(results: Sequence[StreamResult], out: Path) -> list[Path]:
    """One PNG per stream: rolling prequential accuracy (MAE) of every model, drifts marked;
    MAE plots cut at :func:`_mae_range`."""
    paths = []
    for res in results:
        window = rolling_window(res.n_events)
        metric = "MAE" if res.task == "regression" else "accuracy"
        curves = {r.name: r.score.curve(window) for r in res.runs}
        paths.append(
            plot_curves(
                out / f"suite-{res.stream}.png",
                curves,
                ylim=_mae_range(res, curves) if res.task == "regression" else None,
                title=f"{res.stream}: prequential {metric} (rolling mean over {window:,} events)",
                ylabel=metric,
                vlines=res.drift_positions,
                vline_label="drift",
                highlight=[r.name for r in res.runs if r.key.startswith(SUBJECT)],
                dashed=[r.name for r in res.runs if r.key == MEMORY_OFF],
            )
        )
    return paths
