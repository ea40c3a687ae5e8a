"""Recurring-concepts benchmark: the expert pool (TAME) on versus off.

Part 1, recurring stream (agrawal-recurring: A → B → A → B, abrupt): for every return of a
concept, the accuracy of its earlier segment's last 1,000 events (its earlier level), of the
1,000 events before the return (the other concept), of the 500 events after it, and of the 250
events that end 500 after it (the level reached by then), with the pool off and on; and how
many events the accuracy of the trailing 250 takes to come within 1 point of the earlier level.
Target: on, the level 500 events after each return within 1 point of the earlier level (mean
over the seeds). Same stream seeds and model seeds for off and on.

Part 2, no loss elsewhere: overall prequential accuracy with the pool off and on (for each of
--margins) on benchmarks/prequential.py's four streams and the recurring one (--check-events
each), and how often it switched.

Writes <out>/recurring.md, <out>/recurring.json and <out>/recurring.png (rolling accuracy of
the first seed's run, off and on, drifts marked).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from report import (
    command_line,
    load_average,
    machine_info,
    markdown_table,
    plot_curves,
    stream_parser,
    write_json,
)
from timing_runner import prequential_run, settings_for

from streamlearn.settings import Settings
from streamlearn.sources.synthetic import STREAMS, stream_rows

RECURRING = ("agrawal-recurring",)
# benchmarks/prequential.py's four, and the recurring one: a margin must let recurrences switch
CHECK_STREAMS = ("agrawal-drift", "sea-drift", "hyperplane", "rbf-drift", "agrawal-recurring")
EARLIER = 1000  # events at the end of a concept's earlier segment: its earlier level
AFTER = 500  # events after a return within which the earlier level is to be back
LEVEL = 250  # the trailing events whose accuracy is "the level" at a point
TOLERANCE = 0.01  # within 1 point
STEP = 10  # resolution of the events-to-recover search


def run(
    settings: Settings, stream: str, events: int, seed: int, experts: dict[str, Any] | None
) -> dict[str, Any]:
    """One prequential run, the pool off (``experts`` None) or on with those settings over the
    defaults: per-event hits, detections, switches back to a past model and to a fresh one
    (experts.fresh, on with the pool by default), seconds."""
    rows = list(stream_rows(stream, events, seed))
    pool = settings.experts.model_copy(update={"enabled": experts is not None, **(experts or {})})
    preq, score, seconds, *_ = prequential_run(settings.model_copy(update={"experts": pool}), rows)
    fresh = 0 if preq.experts is None or preq.experts.fresh is None else preq.experts.fresh.switches
    return {
        "hits": score.values(),
        "drifts": list(preq.drifts),
        "switches": preq.expert_switches - fresh,
        "fresh_switches": fresh,
        "seconds": seconds,
    }


def recovered_after(hits: np.ndarray, position: int, level: float, limit: int) -> int | None:
    """Events after ``position`` until the accuracy of the trailing LEVEL events is within
    TOLERANCE of ``level`` (None if not within ``limit``)."""
    for t in range(LEVEL, limit + 1, STEP):
        if hits[position + t - LEVEL : position + t].mean() >= level - TOLERANCE:
            return t
    return None


def returns_table(stream: str, events: int, seeds: Sequence[int]) -> dict[str, Any]:
    spec = STREAMS[stream]
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    per_return: list[dict[str, Any]] = []
    for seed in seeds:
        settings = settings_for(stream, events, seed)
        for mode in runs:
            runs[mode].append(run(settings, stream, events, seed, {} if mode == "on" else None))
    segment = events // spec.n_concepts
    for position, earlier_end in spec.returns(events):
        row: dict[str, Any] = {"position": position, "earlier_end": earlier_end}
        for mode, mode_runs in runs.items():
            figures = []
            for r in mode_runs:
                h = r["hits"]
                earlier = float(h[earlier_end - EARLIER : earlier_end].mean())
                figures.append(
                    {
                        "earlier": earlier,
                        "before": float(h[position - EARLIER : position].mean()),
                        "after_500": float(h[position : position + AFTER].mean()),
                        "level_500": float(h[position + AFTER - LEVEL : position + AFTER].mean()),
                        "recovered_after": recovered_after(h, position, earlier, segment),
                    }
                )
            row[mode] = figures
        per_return.append(row)
    return {
        "stream": stream,
        "events": events,
        "seeds": list(seeds),
        "returns": per_return,
        "runs": {
            mode: [{k: v for k, v in r.items() if k != "hits"} for r in mode_runs]
            for mode, mode_runs in runs.items()
        },
        "curves": {mode: mode_runs[0]["hits"] for mode, mode_runs in runs.items()},
    }


def check_table(
    streams: Sequence[str], events: int, seeds: Sequence[int], margins: Sequence[float]
) -> list[dict[str, Any]]:
    """Overall accuracy off and on (once per margin) per stream and seed."""
    rows = []
    for stream in streams:
        for seed in seeds:
            settings = settings_for(stream, events, seed)
            off = run(settings, stream, events, seed, None)
            for margin in margins:
                on = run(settings, stream, events, seed, {"margin": margin})
                rows.append(
                    {
                        "stream": stream,
                        "seed": seed,
                        "margin": margin,
                        "off": float(off["hits"].mean()),
                        "on": float(on["hits"].mean()),
                        "detections": len(on["drifts"]),
                        "switches": on["switches"],
                        "fresh_switches": on["fresh_switches"],
                    }
                )
    return rows


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if len(known) == len(values) else None


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}"


def render(part1: list[dict[str, Any]], part2: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Recurring concepts: expert pool on vs off",
        "",
        f"Command: `{meta['command']}`  ",
        f"Run: {meta['started']}, {meta['seconds']:.0f} s; load average at start "
        f"{meta['load_average']}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in meta["machine"].items()),
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        f"Pool settings: `{meta['experts']}`. Figures are means over seeds {meta['seeds']}; "
        "per seed in recurring.json. `recovered` = events after the return until the "
        f"accuracy of the trailing {LEVEL} is within 1 point of the earlier level (— if any seed "
        "never gets there within the segment).",
        "",
    ]
    verdicts = []
    for table in part1:
        rows = []
        for r in table["returns"]:
            cells: list[Any] = [f"{r['position']:,}"]
            earlier = _mean([f["earlier"] for f in r["on"]])
            before = _mean([f["before"] for f in r["on"]])
            cells += [f"{earlier:.3f}", f"{before:.3f}"]
            for key in ("after_500", "level_500"):
                for mode in ("off", "on"):
                    cells.append(f"{_mean([f[key] for f in r[mode]]):.3f}")
            for mode in ("off", "on"):
                rec = _mean([f["recovered_after"] for f in r[mode]])
                cells.append("—" if rec is None else f"{rec:,.0f}")
            gap_on = _mean([f["level_500"] - f["earlier"] for f in r["on"]])
            gap_off = _mean([f["level_500"] - f["earlier"] for f in r["off"]])
            cells += [_pts(gap_off), _pts(gap_on)]
            rows.append(cells)
            met = gap_on is not None and gap_on >= -TOLERANCE
            verdicts.append(
                f"- {table['stream']}, return at {r['position']:,}: level 500 events after it "
                f"within 1 point of the earlier level with the pool on: "
                f"{'met' if met else 'MISSED'} ({_pts(gap_on)} points; off: {_pts(gap_off)})"
            )
        lines += [
            f"## {table['stream']}: returns ({table['events']:,} events)",
            "",
            markdown_table(
                [
                    "return at",
                    "earlier level",
                    "1k before",
                    "500 after: off",
                    "on",
                    "level at 500: off",
                    "on",
                    "recovered: off",
                    "on",
                    "Δ earlier: off",
                    "on",
                ],
                rows,
            ),
            "",
        ]
        switches = [r["switches"] for r in table["runs"]["on"]]
        fresh = [r["fresh_switches"] for r in table["runs"]["on"]]
        drifts = [r["drifts"] for r in table["runs"]["on"]]
        rate = {
            mode: len(runs) * table["events"] / sum(r["seconds"] for r in runs)
            for mode, runs in table["runs"].items()
        }
        lines += [
            f"Switches to a past model per seed (on): {switches}; to a fresh model: {fresh}; "
            f"detections (on): {drifts}",
            "",
            f"Speed (process_columns only, all seeds, one run each, a shared machine): "
            f"{rate['off']:,.0f} events/s off, {rate['on']:,.0f} on.",
            "",
        ]
    check_rows = []
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in part2:
        groups.setdefault((r["stream"], r["margin"]), []).append(r)
    for (stream, margin), rows_ in groups.items():
        gains = [r["on"] - r["off"] for r in rows_]
        check_rows.append(
            [
                stream,
                margin,
                f"{np.mean([r['off'] for r in rows_]):.4f}",
                f"{np.mean([r['on'] for r in rows_]):.4f}",
                _pts(float(np.mean(gains))),
                _pts(min(gains)),
                _pts(max(gains)),
                sum(r["detections"] for r in rows_),
                sum(r["switches"] for r in rows_),
                sum(r["fresh_switches"] for r in rows_),
            ]
        )
    default = Settings().experts.margin
    worst = min((r["on"] - r["off"] for r in part2 if r["margin"] == default), default=0.0)
    lines += [
        f"## Every stream: overall accuracy ({meta['check_events']:,} events each), by margin",
        "",
        f"Means over seeds {meta['seeds']}; Δ per seed in recurring.json; detections and "
        "switches (to a past model; to a fresh one) summed over the seeds (pool on).",
        "",
        markdown_table(
            [
                "stream",
                "margin",
                "off",
                "on",
                "Δ pts",
                "worst seed",
                "best seed",
                "detections",
                "switches",
                "to a fresh model",
            ],
            check_rows,
        ),
        "",
        "## Targets",
        "",
        *verdicts,
        f"- no loss on any stream with the default margin {default}: "
        f"{'met' if worst >= 0 else 'MISSED'} (worst Δ {_pts(worst)} points)",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = stream_parser("python benchmarks/recurring.py", __doc__, STREAMS, RECURRING)
    parser.set_defaults(events=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46])
    parser.add_argument(
        "--check-streams", nargs="*", default=list(CHECK_STREAMS), choices=sorted(STREAMS)
    )
    parser.add_argument("--check-events", type=int, default=10_000)
    parser.add_argument(
        "--margins",
        type=float,
        nargs="+",
        default=[Settings().experts.margin],
        help="experts.margin values for part 2 (default: the setting's default)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load = load_average()
    clock = time.perf_counter()
    part1 = [returns_table(stream, args.events, args.seeds) for stream in args.streams]
    part2 = check_table(args.check_streams, args.check_events, args.seeds, args.margins)
    meta = {
        "command": command_line(),
        "started": started,
        "seconds": time.perf_counter() - clock,
        "load_average": load,
        "machine": machine_info(),
        "seeds": args.seeds,
        "check_events": args.check_events,
        "experts": Settings().experts.model_dump(exclude={"enabled"}),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recurring.md").write_text(render(part1, part2, meta), encoding="utf-8")
    write_json(
        args.out / "recurring.json",
        {
            **meta,
            "recurring": [{k: v for k, v in t.items() if k != "curves"} for t in part1],
            "check": part2,
        },
    )
    if part1:
        first = part1[0]
        window = LEVEL
        curves = {}
        for mode, hits in first["curves"].items():
            rolling = np.convolve(hits, np.ones(window) / window, mode="valid")
            curves[f"pool {mode}"] = (np.arange(window, len(hits) + 1), rolling)
        plot_curves(
            args.out / "recurring.png",
            curves,
            title=f"{first['stream']}, seed {args.seeds[0]}: rolling accuracy ({window} events)",
            vlines=STREAMS[first["stream"]].drift_positions(first["events"]),
            highlight=["pool on"],
        )
    print((args.out / "recurring.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
