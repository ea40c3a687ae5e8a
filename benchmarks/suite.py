"""Learning-quality suite (issue 23): streamlearn's defaults against river and deep-river on
river's bundled real data sets and on generators with abrupt, gradual, recurring and
incremental drift; binary, multiclass, regression and high-cardinality categorical streams.

Every model sees the same rows in the same order and is scored prequentially (predicted, then
learned): accuracy for classification, mean absolute error (MAE) for regression. Only the
models' own calls are timed (benchmarks/timing_runner.py, benchmarks/peers/). streamlearn runs
its batch API (Prequential.process_columns) with its default settings, the error memory on, and
again with the memory off: the memory's gain after each drift.

Models (classification / regression streams):
  streamlearn                   defaults, process_columns on micro-batches of source.batch_size
  streamlearn (memory off)      the same with memory.enabled = false
  river LR / StandardScaler | LR, HoeffdingAdaptiveTree, ARF (10), AMF (10 trees)
  river LinearRegression / StandardScaler | LinearRegression, HoeffdingAdaptiveTreeRegressor,
        ARF regressor (10), AMRules
  deep-river MLP                in benchmarks/.venv-deep-river (bash benchmarks/setup_peers.sh)
Linear peers and deep-river one-hot encode string features; the trees read them as nominal.

Writes <out>/suite.md (tables, targets, machine), <out>/suite.json (raw numbers) and
<out>/suite-<stream>.png (rolling accuracy or MAE, drifts marked). --quick runs 5,000 events
per stream (the real data sets' first 5,000) for a check on a busy machine:

  python benchmarks/suite.py --quick --streams phishing sea-gradual friedman-abrupt

With several seeds (--seed 5 6 7) every stream and model runs at each (generated streams are
drawn anew; the real data sets keep their order, the models' own randomness changes) and the
targets are judged on each model's mean over the seeds: one seed's accuracy on 30,000 events
varies by about as much as the gaps the targets decide on.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from peers.deep_river_peer import KEY as DEEP_RIVER
from peers.deep_river_peer import DeepRiverPeer, PeerUnavailable
from peers.river_peers import EXTRA_CLASSIFIERS, REGRESSION_PEERS, RIVER_PEERS, run_river_peer
from prequential import run_streamlearn
from prequential_report import StreamResult
from report import (
    RunStart,
    add_skip_option,
    command_line,
    fmt_float,
    fmt_rate,
    stream_parser,
    write_json,
)
from suite_report import MEMORY_OFF, SeededStream, render_markdown, results_json, write_plots
from suite_streams import SUITE, suite_rows
from timing_runner import has_strings
from tqdm import tqdm

from streamlearn.settings import Settings, load_settings

QUICK_EVENTS = 5_000
CLASSIFIERS = {**RIVER_PEERS, **EXTRA_CLASSIFIERS}
SKIPPABLE = (MEMORY_OFF, *CLASSIFIERS, *REGRESSION_PEERS, DEEP_RIVER)
# peers not run on streams with string features, and why
NUMERIC_ONLY = {
    "river-amf": "not run on streams with string features: AMF on their one-hot encoding (a "
    "column per value seen) ran out of time and memory (18 GB after 40 minutes at 5,000 events "
    "of sparse-categorical)"
}


def suite_settings(task: str, seed: int, memory: bool = True) -> Settings:
    """streamlearn's defaults with the stream's task and the run's seed (memory on or off)."""
    return load_settings(learner={"task": task, "seed": seed}, memory={"enabled": memory})


def run_stream(name: str, n_events: int, seed: int, skip: set[str], progress: bool) -> StreamResult:
    """Every model on one stream, the same rows for all."""
    spec = SUITE[name]
    rows = suite_rows(name, n_events, seed)
    result = StreamResult(name, spec.description, spec.task, spec.drift_positions(len(rows)))
    settings = suite_settings(spec.task, seed)
    result.settings = settings.model_dump(mode="json", include={"source", "learner", "memory"})
    result.add(run_streamlearn(settings, rows, progress=progress))
    if MEMORY_OFF not in skip:
        off = suite_settings(spec.task, seed, memory=False)
        result.add(
            run_streamlearn(
                off, rows, progress=progress, key=MEMORY_OFF, name="streamlearn (memory off)"
            )
        )
    regression = spec.task == "regression"
    categorical = has_strings(rows)
    for key, peer in (REGRESSION_PEERS if regression else CLASSIFIERS).items():
        if key in NUMERIC_ONLY and categorical:
            result.skipped[key] = NUMERIC_ONLY[key]
        elif key not in skip:
            run = run_river_peer(
                peer, rows, spec.task, seed, progress=progress, categorical=categorical
            )
            result.add(run)
    if DEEP_RIVER in skip:
        result.skipped[DEEP_RIVER] = "skipped on request (--skip-peers)"
    else:
        try:
            result.add(DeepRiverPeer(seed=seed, progress=progress, regression=regression).run(rows))
        except PeerUnavailable as exc:
            result.skipped[DEEP_RIVER] = str(exc)
            tqdm.write(f"  {exc}")
    for run in result.runs:
        metric = "MAE" if regression else "accuracy"
        tqdm.write(
            f"  {name:<18} {run.name:<42} {metric} {fmt_float(run.score.overall())}"
            f"  {fmt_rate(run.events_per_s):>9} events/s"
        )
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = stream_parser(
        "python benchmarks/suite.py", __doc__ or "", list(SUITE), list(SUITE), several_seeds=True
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_EVENTS:,} events per stream (overrides --events)",
    )
    add_skip_option(p, SKIPPABLE)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for suite.md, suite.json and suite-<stream>.png (default benchmarks/results)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quick:
        args.events = QUICK_EVENTS
    if args.events < 100:
        p.error("--events must be at least 100")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    start = RunStart.now()
    args.out.mkdir(parents=True, exist_ok=True)
    if DEEP_RIVER not in args.skip_peers:
        try:
            DeepRiverPeer().check()
        except PeerUnavailable as exc:  # said at once, not after the run (suite.md says it too)
            tqdm.write(f"warning: {exc}; the best peers will be over the others")
    results = {name: SeededStream({}) for name in args.streams}
    todo = [(seed, name) for seed in args.seed for name in args.streams]  # a whole suite a seed
    for seed, name in tqdm(todo, desc="streams", disable=args.no_progress):
        stream = results[name]
        stream.by_seed[seed] = run_stream(
            name, args.events, seed, args.skip_peers, not args.no_progress
        )
        done = [s for s in results.values() if s.by_seed]
        markdown = write_results(done, stream, args, start)  # each: kept
    print(markdown)
    return 0


def write_results(
    results: Sequence[SeededStream],
    latest: SeededStream,
    args: argparse.Namespace,
    start: RunStart,
) -> str:
    """suite.md and suite.json over the runs so far, the plot of the stream just run; the
    markdown."""
    meta = start.meta(
        command_line(),
        events=args.events,
        quick=args.quick,
        seeds=args.seed,
    )
    meta["settings"] = Settings().model_dump(mode="json", include={"source", "learner", "memory"})
    runs, planned = sum(len(s.by_seed) for s in results), len(args.streams) * len(args.seed)
    if runs < planned:
        meta["partial"] = f"{runs} of {planned} stream runs so far"
    write_plots([latest], args.out)
    markdown = render_markdown(results, meta)
    (args.out / "suite.md").write_text(markdown, encoding="utf-8")
    write_json(args.out / "suite.json", results_json(results, meta))
    return markdown


if __name__ == "__main__":
    raise SystemExit(main())
