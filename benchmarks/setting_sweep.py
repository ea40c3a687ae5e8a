"""Setting sweep: streamlearn's accuracy on the suite's streams for several values of one
setting, each a mean over several seeds (a default is chosen on seeds, not on one run).

Every value runs streamlearn's defaults otherwise (benchmarks/suite.py's settings: the stream's
task, the run's seed; --with holds other settings at given values) on the same rows,
prequentially; no peers. Reported per stream and value:
the score over the whole stream and over its first 1,000 events (accuracy; MAE on regression
streams), the mean over the seeds; and per value, against the first value of --values (the
reference): on how many streams it is better, the mean gain in accuracy points
(classification) and in % of MAE (regression), the worst stream's, and the training steps
taken (the live model's updates and any fresh model's, experts.fresh) and the seconds spent in
the chain's calls, each as a multiple of the reference's: the cost counted, and timed (the
values of one stream and seed run back to back, so a shared machine's load drifts over them
alike; the timings are a guide, the steps exact).

Writes <out>/sweep-<setting>.md, .json and .png (each stream's gain over the reference against
the value, overall and over the first 1,000 events). Values are JSON (true, 64, [64, 64]):

  python benchmarks/setting_sweep.py learner.fast_start 0 8 64 --seeds 1 42 --streams phishing
  python benchmarks/setting_sweep.py learner.wide false true
  python benchmarks/setting_sweep.py features.periodic_scale 0.1 0.2 --with features.periodic=4
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from report import command_line, doc_parser, load_average, machine_info, markdown_table, write_json
from suite import suite_settings
from suite_report import FIRST
from suite_streams import SUITE, suite_rows
from timing_runner import prequential_run
from tqdm import tqdm

from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings

DEFAULT_SEEDS = (1, 2, 3, 42)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = doc_parser("python benchmarks/setting_sweep.py", __doc__ or "")
    p.add_argument("setting", help="SECTION.KEY, as in the settings file: learner.fast_start")
    p.add_argument(
        "values", nargs="+", type=_json, help="its values, as JSON; the first is the reference"
    )
    p.add_argument("--events", type=int, default=30_000, help="events per stream (default 30000)")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="default: 1 2 3 42"
    )
    p.add_argument(
        "--streams",
        nargs="+",
        choices=sorted(SUITE),
        default=list(SUITE),
        metavar="STREAM",
        help="streams to run (default: the suite's)",
    )
    add_with_option(p)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if len(args.values) < 2:
        p.error("give at least two values: the reference and one to compare")
    args.fixed = held_settings(p, args.fixed)
    try:
        for value in args.values:
            with_setting(base_settings(args, "binary", 0), args.setting, value)
    except (ValueError, KeyError) as error:
        p.error(f"{args.setting}: {error}")
    return args


def add_with_option(p: argparse.ArgumentParser) -> None:
    """--with SECTION.KEY=VALUE (repeatable), into ``args.fixed``; held_settings parses it."""
    p.add_argument(
        "--with",
        dest="fixed",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="another setting held at VALUE (JSON) in every run, e.g. features.periodic=4",
    )


def held_settings(p: argparse.ArgumentParser, items: Sequence[str]) -> list[tuple[str, Any]]:
    """--with's items as (SECTION.KEY, value) pairs, each checked against the suite's
    settings (the parser exits with a clear message on a bad one)."""
    fixed = []
    for item in items:
        dotted, sep, text = item.partition("=")
        if not sep:
            p.error(f"--with {item}: give SECTION.KEY=VALUE")
        fixed.append((dotted, _json(text)))
        try:
            held(suite_settings("binary", 0), fixed)
        except (ValueError, KeyError) as error:
            p.error(f"--with {item}: {error}")
    return fixed


def held(settings: Settings, fixed: Sequence[tuple[str, Any]]) -> Settings:
    """``settings`` with each (SECTION.KEY, value) of ``fixed`` applied."""
    for dotted, value in fixed:
        settings = with_setting(settings, dotted, value)
    return settings


def base_settings(args: argparse.Namespace, task: str, seed: int) -> Settings:
    """The suite's settings for ``task`` and ``seed`` with the --with settings applied."""
    return held(suite_settings(task, seed), args.fixed)


def _json(text: str) -> Any:
    """A value as JSON, or the text itself (an unquoted string such as a detector's name)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def with_setting(settings: Settings, dotted: str, value: Any) -> Settings:
    """``settings`` with SECTION.KEY set to ``value``, validated as a settings file's would be."""
    section, _, key = dotted.partition(".")
    current = getattr(settings, section, None)
    if current is None or key not in type(current).model_fields:
        raise KeyError("no such setting (SECTION.KEY, e.g. learner.fast_start)")
    checked = type(current).model_validate({**current.model_dump(), key: value})
    return settings.model_copy(update={section: checked})


def label(value: Any) -> str:
    return json.dumps(value)


def training_steps(preq: Prequential) -> int:
    """Updates applied: the live model's and those of the fresh models beside it."""
    fresh = None if preq.experts is None else preq.experts.fresh
    return preq.learner.steps + (0 if fresh is None else fresh.steps)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """{stream: {task, events, value (as JSON): {overall, first, steps, seconds: [per
    seed]}}}."""
    runs: dict[str, Any] = {}
    total = len(args.streams) * len(args.seeds) * len(args.values)
    with tqdm(total=total, unit="run", disable=args.no_progress) as bar:
        for name in args.streams:
            task = SUITE[name].task
            entry: dict[str, Any] = {"task": task, "events": 0}
            for seed in args.seeds:
                rows = suite_rows(name, args.events, seed)
                entry["events"] = len(rows)
                for value in args.values:
                    bar.set_description(f"{name} seed {seed} {args.setting} {label(value)}")
                    settings = with_setting(base_settings(args, task, seed), args.setting, value)
                    preq, score, seconds, *_ = prequential_run(settings, rows)
                    scores = entry.setdefault(
                        label(value), {"overall": [], "first": [], "steps": [], "seconds": []}
                    )
                    scores["overall"].append(score.overall())
                    scores["first"].append(score.between(0, FIRST))
                    scores["steps"].append(training_steps(preq))
                    scores["seconds"].append(seconds)
                    bar.update()
            runs[name] = entry
    return runs


def gain(entry: dict[str, Any], value: Any, reference: Any, part: str) -> float:
    """Mean over seeds of ``value``'s gain over ``reference``: accuracy points, or the MAE
    saved in % of the reference's MAE (+ = better either way)."""
    new = float(np.mean(entry[label(value)][part]))
    old = float(np.mean(entry[label(reference)][part]))
    if entry["task"] == "regression":
        return 100.0 * (old - new) / old
    return 100.0 * (new - old)


def summary_rows(runs: dict[str, Any], values: Sequence[Any]) -> list[list[str]]:
    reference, rows = values[0], []
    for value in values[1:]:
        gains = {name: gain(e, value, reference, "overall") for name, e in runs.items()}
        firsts = {name: gain(e, value, reference, "first") for name, e in runs.items()}
        cls = [g for name, g in gains.items() if runs[name]["task"] != "regression"]
        reg = [g for name, g in gains.items() if runs[name]["task"] == "regression"]
        worst = min(gains, key=lambda name: gains[name])
        steps = {name: _ratio(e, value, reference, "steps") for name, e in runs.items()}
        most = max(steps, key=lambda name: steps[name])
        times = {name: _ratio(e, value, reference, "seconds") for name, e in runs.items()}
        slowest = max(times, key=lambda name: times[name])
        rows.append(
            [
                label(value),
                f"{sum(g > 0 for g in gains.values())} / {len(gains)}",
                f"{np.mean(cls):+.2f} pt" if cls else "—",
                f"{np.mean(reg):+.1f} %" if reg else "—",
                f"{worst} {gains[worst]:+.2f}",
                f"{np.mean(list(firsts.values())):+.2f}",
                f"×{np.mean(list(steps.values())):.3f} (most: {most} ×{steps[most]:.3f})",
                f"×{np.mean(list(times.values())):.2f} (most: {slowest} ×{times[slowest]:.2f})",
            ]
        )
    return rows


def _ratio(entry: dict[str, Any], value: Any, reference: Any, part: str) -> float:
    """``value``'s total of ``part`` (steps, seconds) over the seeds as a multiple of the
    reference's."""
    return float(np.sum(entry[label(value)][part]) / np.sum(entry[label(reference)][part]))


def stream_rows(runs: dict[str, Any], values: Sequence[Any]) -> list[list[str]]:
    rows = []
    for name, entry in runs.items():
        digits = 3 if entry["task"] == "regression" else 4
        cells = [
            f"{np.mean(entry[label(v)]['overall']):.{digits}f} / "
            f"{np.mean(entry[label(v)]['first']):.3f}"
            for v in values
        ]
        metric = "MAE" if entry["task"] == "regression" else "accuracy"
        rows.append([name, metric, f"{entry['events']:,}", *cells])
    return rows


def plot(path: Path, runs: dict[str, Any], setting: str, values: Sequence[Any]) -> None:
    """Each stream's gain over the reference against the value: overall and first 1,000."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    xs = np.arange(len(values))
    for ax, part, title in zip(
        axes, ("overall", "first"), ("whole stream", f"first {FIRST:,} events"), strict=True
    ):
        for name, entry in runs.items():
            ys = [gain(entry, v, values[0], part) for v in values]
            ax.plot(xs, ys, marker=".", linewidth=1, label=name)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(xs, [label(v) for v in values])
        ax.set_xlabel(setting)
        ax.set_title(f"{title}: gain over {label(values[0])}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy points (regression: % of MAE saved)")
    axes[1].legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_at_start = datetime.now(timezone.utc), load_average()
    clock = time.perf_counter()
    runs = run(args)
    seconds = time.perf_counter() - clock
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"sweep-{args.setting.replace('.', '-').replace('_', '-')}"
    plot(args.out / f"{stem}.png", runs, args.setting, args.values)
    machine = machine_info()
    values = args.values
    lines = [
        f"# Setting sweep: accuracy by {args.setting}, mean over seeds",
        "",
        f"Produced by `{command_line()}` (started "
        f"{started.isoformat(timespec='seconds')}, {seconds:,.0f} s); seeds "
        f"{', '.join(map(str, args.seeds))} (stream and model), {args.events:,} events per "
        "generated stream, real data sets whole. streamlearn's defaults otherwise"
        + "".join(f" ({d} = {json.dumps(v)} in every run)" for d, v in args.fixed)
        + "; each cell is "
        f"the mean over the seeds of the whole stream's score / the first {FIRST:,} events' "
        "(accuracy; MAE on regression streams, lower is better).",
        "",
        f"CPU: {machine['cpu_count']} logical cores ({machine['cpu']}); torch {machine['torch']}, "
        f"river {machine['river']}; load average at start {load_at_start}.",
        "",
        f"## Against {args.setting} = {label(values[0])}",
        "",
        markdown_table(
            [
                args.setting,
                "streams better",
                "mean gain, classification",
                "mean MAE saved, regression",
                "worst stream",
                f"mean gain, first {FIRST:,} (pt or %)",
                "training steps, × reference",
                "seconds in the chain's calls, × reference",
            ],
            summary_rows(runs, values),
        ),
        "",
        "## Per stream (whole stream / first 1,000 events)",
        "",
        markdown_table(
            ["stream", "metric", "events", *(label(v) for v in values)],
            stream_rows(runs, values),
        ),
        "",
        f"![gain by {args.setting}]({stem}.png)",
        "",
    ]
    (args.out / f"{stem}.md").write_text("\n".join(lines), encoding="utf-8")
    write_json(
        args.out / f"{stem}.json",
        {
            "meta": {
                "command": command_line(),
                "started": started.isoformat(),
                "seconds": seconds,
                "seeds": args.seeds,
                "setting": args.setting,
                "with": {dotted: value for dotted, value in args.fixed},
                "values": values,
                "events": args.events,
                "machine": machine,
                "load_average_start": load_at_start,
                "load_average_end": load_average(),
            },
            "streams": runs,
        },
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
