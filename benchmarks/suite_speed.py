"""Issue 23's speed target, measured on its own: streamlearn against river's StandardScaler |
LogisticRegression (LinearRegression on regression streams) on the suite's streams, in
interleaved rounds.

The suite (benchmarks/suite.py) times every model once per seed, and on a shared machine one
run of a stream can be a quarter faster or slower than the next. Here the two models run in
turns on the same rows, streamlearn first in even rounds and the peer first in odd ones, so
that load from other work falls on both alike: a stream's ratio is the median over its rounds
(each round: the peer's seconds over streamlearn's), with the rounds' spread beside it. Each
run is a fresh model (the settings benchmarks/suite.py gives streamlearn: its defaults, the
stream's task, the seed), timed over its own calls only (benchmarks/timing_runner.py,
peers/river_peers.py). The target is met on a stream where the median ratio is above 1 and
streamlearn's accuracy is at least the peer's (MAE at most).

Streamlearn's fast start (a young model's micro-batches pass through the chain in sub-batches
of a few rows: issue 23's other requirement) is timed apart too: its share of streamlearn's
time, its time against the peer's whole run, and the ratio over the events after it. A short
data set is processed mostly or wholly by a young model; a long-running worker pays the fast
start once.

Writes <out>/suite_speed.md (the tables, machine, verdicts), <out>/suite_speed.json (every
round) and <out>/suite_speed.png (each stream's median ratio, its rounds' range, the ratio
after the fast start, the line at 1):

  python benchmarks/suite_speed.py --seed 5 6 7 --rounds 5
  python benchmarks/suite_speed.py --streams phishing sea-gradual --events 5000 --rounds 3
  python benchmarks/suite_speed.py --streams chick-weights --with learner.fast_start=4
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, median
from typing import Any

import matplotlib.pyplot as plt
from peers.river_peers import REGRESSION_PEERS, RIVER_PEERS, run_river_peer
from report import (
    RunStart,
    command_line,
    fmt_float,
    fmt_rate,
    markdown_table,
    stream_parser,
    write_json,
)
from setting_sweep import add_with_option, held, held_settings
from suite import suite_settings
from suite_report import SPEED_PEERS, at_least
from suite_streams import SUITE, suite_rows
from timing_runner import has_strings, prequential_run
from tqdm import tqdm

PEERS = {**RIVER_PEERS, **REGRESSION_PEERS}


@dataclass
class StreamSpeed:
    """One stream's rounds: each model's seconds per round and its score (the same every
    round: the runs are seeded)."""

    stream: str
    task: str
    events: int
    peer: str  # the peer's display name
    seconds: list[float] = field(default_factory=list)  # streamlearn's, per round
    peer_seconds: list[float] = field(default_factory=list)
    # of streamlearn's seconds and events, those learned while its model was young, per round
    fast_start_seconds: list[float] = field(default_factory=list)
    fast_start_events: list[int] = field(default_factory=list)
    value: float = float("nan")  # accuracy or MAE, mean over the runs
    peer_value: float = float("nan")

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def ratios(self) -> list[float]:
        """streamlearn's speed over the peer's, per round."""
        return [p / s for s, p in zip(self.seconds, self.peer_seconds, strict=True)]

    @property
    def ratio(self) -> float:
        return median(self.ratios)

    @property
    def fast_start_share(self) -> float:
        """The median share of streamlearn's seconds its fast start took."""
        return median(f / s for f, s in zip(self.fast_start_seconds, self.seconds, strict=True))

    @property
    def fast_start_over_peer(self) -> float:
        """The median of the fast start's seconds over the peer's whole run's, per round:
        above 1, the fast start alone outlasts the peer."""
        pairs = zip(self.fast_start_seconds, self.peer_seconds, strict=True)
        return median(f / p for f, p in pairs)

    @property
    def ratios_after(self) -> list[float]:
        """Per round, the speed ratio over the events after the fast start: the peer's
        seconds pro rata (its cost per event does not change as it learns) over streamlearn's
        after its fast start; none where the fast start took the whole stream."""
        rounds = zip(
            self.seconds,
            self.peer_seconds,
            self.fast_start_seconds,
            self.fast_start_events,
            strict=True,
        )
        return [
            p * (self.events - e) / self.events / (s - f)
            for s, p, f, e in rounds
            if e < self.events and f < s
        ]

    @property
    def met(self) -> bool:
        return self.ratio > 1.0 and at_least(self.value, self.peer_value, self.regression)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "events": self.events,
            "peer": self.peer,
            "seconds": self.seconds,
            "peer_seconds": self.peer_seconds,
            "ratios": self.ratios,
            "ratio": self.ratio,
            "fast_start_seconds": self.fast_start_seconds,
            "fast_start_events": self.fast_start_events,
            "fast_start_share": self.fast_start_share,
            "fast_start_over_peer": self.fast_start_over_peer,
            "ratios_after_fast_start": self.ratios_after,
            "value": self.value,
            "peer_value": self.peer_value,
            "met": self.met,
        }


def measure(
    name: str,
    events: int,
    seeds: Sequence[int],
    rounds: int,
    fixed: Sequence[tuple[str, Any]] = (),
) -> StreamSpeed:
    """``rounds`` turns of streamlearn and the speed peer on the stream at each seed; the
    scores are means over every run (a seed's runs score alike). ``fixed``: (SECTION.KEY,
    value) settings held in streamlearn's runs (--with)."""
    task = SUITE[name].task
    peer = PEERS[SPEED_PEERS["regression" if task == "regression" else "classification"]]
    result = StreamSpeed(name, task, 0, peer.name)
    values: list[float] = []
    peer_values: list[float] = []
    for seed in seeds:
        rows = suite_rows(name, events, seed)
        settings, categorical = held(suite_settings(task, seed), fixed), has_strings(rows)
        result.events = len(rows)
        for turn in range(rounds):
            for ours in (True, False) if turn % 2 == 0 else (False, True):
                if ours:
                    run = prequential_run(settings, rows)
                    result.seconds.append(run.seconds)
                    result.fast_start_seconds.append(run.fast_start_seconds)
                    result.fast_start_events.append(run.fast_start_events)
                    values.append(run.score.overall())
                else:
                    run = run_river_peer(
                        peer, rows, task, seed, progress=False, categorical=categorical
                    )
                    result.peer_seconds.append(run.seconds)
                    peer_values.append(run.score.overall())
    result.value, result.peer_value = mean(values), mean(peer_values)
    return result


def render_markdown(results: Sequence[StreamSpeed], meta: dict[str, Any]) -> str:
    machine = meta["machine"]
    load = meta["load_average_1m"]
    met = [r for r in results if r.met]
    rows = [
        [
            r.stream,
            r.task,
            f"{r.events:,}",
            fmt_rate(r.events * len(r.seconds) / sum(r.seconds)),
            fmt_rate(r.events * len(r.peer_seconds) / sum(r.peer_seconds)),
            f"{r.ratio:.2f}×",
            f"{min(r.ratios):.2f}–{max(r.ratios):.2f}×",
            f"{'MAE' if r.regression else 'accuracy'} {fmt_float(r.value, 4)} / "
            f"{fmt_float(r.peer_value, 4)}",
            "met" if r.met else "**missed**",
        ]
        for r in results
    ]
    table = markdown_table(
        [
            "stream",
            "task",
            "events",
            "streamlearn events/s",
            "peer events/s",
            "ratio (median)",
            "rounds' range",
            "streamlearn / peer",
            "target",
        ],
        rows,
    )
    missed = ", ".join(r.stream for r in results if not r.met) or "none"
    held_text = ", ".join(f"{key} = {json.dumps(value)}" for key, value in meta["with"].items())
    return "\n".join(
        [
            "# Speed target: streamlearn against river's StandardScaler | linear model",
            "",
            f"Produced by `{meta['command']}` (started {meta['started']}, "
            f"{meta['seconds']:,.1f} s); seeds {', '.join(map(str, meta['seeds']))}, "
            f"{meta['rounds']} interleaved round(s) a seed (streamlearn first in even rounds, "
            "the peer in odd ones), "
            f"{meta['events']:,} events per generated stream, real data sets whole (at most "
            "that many). Ratio: the peer's seconds over streamlearn's, per round; a stream's "
            "figure is the median over its rounds; events/s: all runs' events over their "
            "seconds. Only the models' own calls are timed. The peer is river's "
            "StandardScaler | LogisticRegression (LinearRegression on regression streams); "
            "streamlearn runs its defaults through Prequential.process_columns, as in "
            "benchmarks/suite.py" + (f", with {held_text} (--with)." if held_text else "."),
            "",
            "## Machine",
            "",
            f"- CPU: {machine['cpu']}; {machine['platform']}",
            f"- python {machine['python']}, torch {machine['torch']}, river {machine['river']}",
            f"- load average (1 min) at start / end: {load['start']} / {load['end']}",
            "",
            "## Target: faster than the peer at equal or better accuracy (MAE) on every stream",
            "",
            f"**{len(met)} of {len(results)} streams met**; missed: {missed}.",
            "",
            table,
            "",
            "![speed ratio per stream](suite_speed.png)",
            "",
            *fast_start_section(results),
        ]
    )


def fast_start_section(results: Sequence[StreamSpeed]) -> list[str]:
    """The fast start's part of streamlearn's time (the young model's sub-batches, a cost
    paid once per model) and the ratio over the events after it; the streams where it alone
    outlasts the peer's whole run."""
    rows = []
    for r in results:
        after = r.ratios_after
        rows.append(
            [
                r.stream,
                f"{r.fast_start_events[0]:,} of {r.events:,}",
                f"{100 * r.fast_start_share:.0f} %",
                f"{r.fast_start_over_peer:.2f}×",
                f"{median(after):.2f}×" if after else "— (all of it)",
            ]
        )
    outlast = [r for r in results if r.fast_start_over_peer > 1.0]
    listed = ", ".join(f"{r.stream} ({r.fast_start_over_peer:.1f}×)" for r in outlast)
    return [
        "## Where streamlearn's time goes: the fast start",
        "",
        "While a model is young (fewer than learner.fast_start × batch events learned), each "
        "micro-batch passes through the whole chain in sub-batches of a few rows, so that a "
        "row is predicted by a model that has learned the rows before it (issue 23's fast "
        "start): each sub-batch costs about what a whole batch does. A long-running worker "
        "pays this once per model; a short data set is processed mostly or wholly that way. "
        "Per stream, the medians over the rounds: the fast start's share of streamlearn's "
        "seconds, its seconds over the peer's whole run, and the speed ratio over the events "
        "after it (the peer's seconds pro rata).",
        "",
        markdown_table(
            [
                "stream",
                "events in the fast start",
                "its share of streamlearn's time",
                "its time / the peer's whole run",
                "ratio after it (median)",
            ],
            rows,
        ),
        "",
        (
            f"**The fast start alone takes longer than the peer's whole run on {listed}**: "
            "there the target cannot be met with it on, whatever the rest of the chain costs."
            if outlast
            else "The fast start alone is shorter than the peer's whole run on every stream."
        ),
        "",
    ]


def write_plot(results: Sequence[StreamSpeed], path: Path) -> Path:
    """Each stream's median ratio as a dot (green: met), its rounds' range as a line, and the
    median ratio after the fast start as a ring where there is one, on a log scale with 1
    marked."""
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(results) + 2))
    for y, r in enumerate(results):
        ax.plot([min(r.ratios), max(r.ratios)], [y, y], color="black", linewidth=1)
        ax.plot([r.ratio], [y], "o", color="tab:green" if r.met else "tab:red")
        if r.ratios_after:
            ax.plot([median(r.ratios_after)], [y], "o", mfc="none", color="tab:blue")
    ax.plot([], [], "o", color="grey", label="whole stream (green: target met)")
    ax.plot([], [], "o", mfc="none", color="tab:blue", label="after the fast start")
    fig.legend(loc="lower center", ncol=2, fontsize="small", frameon=False)
    ax.axvline(1.0, color="grey", linestyle="--")
    ax.set_yticks(range(len(results)), [r.stream for r in results])
    ax.invert_yaxis()
    ax.set_xscale("log")
    every = [x for r in results for x in (*r.ratios, *r.ratios_after)]
    low, high = min(every), max(every)
    ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if low / 2 <= t <= high * 2]
    ax.set_xticks(ticks, [f"{t:g}×" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("streamlearn's events/s over the peer's (median of the rounds, their range)")
    ax.set_title("Speed against river StandardScaler | linear model (green: target met)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = stream_parser(
        "python benchmarks/suite_speed.py", __doc__ or "", list(SUITE), list(SUITE), True
    )
    p.add_argument("--rounds", type=int, default=5, help="turns of both models a seed (default 5)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for suite_speed.md/.json/.png (default benchmarks/results)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_with_option(p)
    args = p.parse_args(argv)
    args.fixed = held_settings(p, args.fixed)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.events < 100:
        p.error("--events must be at least 100")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = RunStart.now()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [
        measure(name, args.events, args.seed, args.rounds, args.fixed)
        for name in tqdm(args.streams, desc="streams", disable=args.no_progress)
    ]
    meta = start.meta(
        command_line(),
        events=args.events,
        seeds=args.seed,
        rounds=args.rounds,
        **{"with": dict(args.fixed)},
    )
    markdown = render_markdown(results, meta)
    (args.out / "suite_speed.md").write_text(markdown, encoding="utf-8")
    write_json(
        args.out / "suite_speed.json",
        {"meta": meta, "streams": {r.stream: r.to_json() for r in results}},
    )
    write_plot(results, args.out / "suite_speed.png")
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
