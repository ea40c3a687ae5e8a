"""Prequential benchmark: streamlearn against river and deep-river on four drifting streams.

Every model sees the same seeded rows in the same order and is scored prequentially: each event
is predicted first, then learned. Only the models' own calls are timed: streams are generated
and (for streamlearn's batch API) converted to column arrays before the clock starts, and
scoring and progress bars run outside the timed region.

Models:
  streamlearn           Prequential.process_columns on micro-batches of source.batch_size
  streamlearn (dicts)   the same learner through Prequential.process(list of dicts)
  streamlearn (throughput preset)
                        process_columns with batch 256, one update per batch, lr 0.01
  river-lr              linear_model.LogisticRegression (one-vs-rest on multiclass streams)
  river-scaled-lr       preprocessing.StandardScaler() | the same
  river-hat             tree.HoeffdingAdaptiveTreeClassifier(seed)
  river-arf             forest.ARFClassifier(n_models=10, seed)
  deep-river            deep-river 0.3.4 MLP in benchmarks/.venv-deep-river (setup_peers.sh)
  streamlearn-frontier  streamlearn over a grid of batch sizes x updates x learning rates
                        (--frontier-*), to show which settings, if any, meet every target

Writes <out>/prequential.md (tables, targets, machine, the arithmetic ceiling and the per-stage
cost of a batch from benchmarks/speed_bounds.py that explain missed speed targets, and the
speed-accuracy frontier),
<out>/prequential.json (raw numbers), <out>/prequential-<stream>.png (rolling accuracy, drift
positions marked) and <out>/prequential-frontier.png (accuracy against events/s per setting).

--baseline REV also measures the `streamlearn` column at commit REV and in this tree, the two
interleaved in one run (benchmarks/speed_vs_baseline.py), and writes <out>/speed_vs_baseline.md
and .json (with a full run, as a section of prequential.md and .json too). --only-baseline runs
that comparison alone, leaving prequential.md and its plots as they are, e.g. issue 18's check:

  python benchmarks/prequential.py --baseline 2e5ae53 --only-baseline --repeats 3
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import speed_vs_baseline
from frontier import (
    DEFAULT_BATCHES,
    DEFAULT_LRS,
    DEFAULT_UPDATES,
    FrontierPoint,
    frontier_json,
    frontier_section,
    presets,
    run_frontier,
    write_frontier_plot,
)
from peers.deep_river_peer import KEY as DEEP_RIVER
from peers.deep_river_peer import DeepRiverPeer, PeerUnavailable
from peers.river_peers import RIVER_PEERS, run_river_peer
from prequential_report import StreamResult, render_markdown, results_json, write_plots
from report import (
    ModelRun,
    RunStart,
    add_skip_option,
    command_line,
    fmt_float,
    fmt_rate,
    stream_parser,
    write_json,
)
from speed_bounds import matmul_gmacs, measure_bounds
from timing_runner import (
    THROUGHPUT_PRESET,
    Row,
    prequential_run,
    row_batches,
    settings_for,
    to_columns,
)
from tqdm import tqdm

from streamlearn.settings import Settings
from streamlearn.sources.synthetic import STREAMS, stream_rows

DEFAULT_STREAMS = ("agrawal-drift", "sea-drift", "hyperplane", "rbf-drift")
DICTS = "streamlearn-dicts"
THROUGHPUT = "streamlearn-throughput"
FRONTIER = "streamlearn-frontier"
SKIPPABLE = (DICTS, THROUGHPUT, FRONTIER, *RIVER_PEERS, DEEP_RIVER)
FRONTIER_OPTIONS = (  # (flag, type, default grid, metavar, what it sets)
    ("--frontier-batches", int, DEFAULT_BATCHES, "N", "micro-batch sizes"),
    ("--frontier-updates", int, DEFAULT_UPDATES, "N", "updates per micro-batch"),
    ("--frontier-lrs", float, DEFAULT_LRS, "LR", "learning rates"),
)


BOUNDS_WARMUP = 3000  # events learned before a micro-batch's stages are timed
BOUNDS_TIMED = 100  # micro-batches timed stage by stage


# -- streamlearn ----------------------------------------------------------------------------------
def run_streamlearn(
    settings: Settings,
    rows: Sequence[Row],
    *,
    dicts: bool = False,
    progress: bool = True,
    key: str = "streamlearn",
    name: str = "streamlearn",
) -> ModelRun:
    """Prequential run of streamlearn through its batch (columns) or per-dict API."""
    preq, score, seconds, *_ = prequential_run(
        settings, rows, dicts=dicts, progress=progress, desc=name
    )
    extra = {"detected_drifts": list(preq.drifts), "device": str(preq.learner.device)}
    via = "Prequential.process(list of dicts)" if dicts else "Prequential.process_columns"
    lrn = settings.learner
    notes = [
        f"{via}, batch size {settings.source.batch_size}, {lrn.updates} update(s) per batch, "
        f"lr {lrn.lr}, device {preq.learner.device}"
    ]
    return ModelRun(key, name, score, seconds, notes, extra)


# -- one stream ---------------------------------------------------------------------------------
def run_stream(
    stream: str,
    n_events: int,
    seed: int,
    skip: set[str],
    progress: bool,
    grid: Sequence[tuple[int, int, float]] = (),
) -> tuple[StreamResult, list[FrontierPoint]]:
    """Every model on one stream, the same rows for all; then streamlearn on each ``grid``
    setting (batch size, updates, lr) unless the frontier is skipped."""
    spec = STREAMS[stream]
    rows = list(stream_rows(stream, n_events, seed))
    settings = settings_for(stream, n_events, seed)
    result = StreamResult(stream, spec.description, spec.task, spec.drift_positions(len(rows)))
    result.settings = settings.model_dump(mode="json", include={"source", "learner", "drift"})
    result.add(run_streamlearn(settings, rows, progress=progress))
    if DICTS not in skip:
        result.add(
            run_streamlearn(
                settings, rows, dicts=True, progress=progress, key=DICTS, name="streamlearn (dicts)"
            )
        )
    if THROUGHPUT not in skip:
        fast = settings_for(stream, n_events, seed, THROUGHPUT_PRESET)
        result.add(
            run_streamlearn(
                fast,
                rows,
                progress=progress,
                key=THROUGHPUT,
                name="streamlearn (throughput preset)",
            )
        )
    for key, peer in RIVER_PEERS.items():
        if key not in skip:
            result.add(run_river_peer(peer, rows, spec.task, seed, progress=progress))
    if DEEP_RIVER in skip:
        result.skipped[DEEP_RIVER] = "skipped on request (--skip-peers)"
    else:
        try:
            result.add(DeepRiverPeer(seed=seed, progress=progress).run(rows))
        except PeerUnavailable as exc:
            result.skipped[DEEP_RIVER] = str(exc)
            tqdm.write(f"  {exc}")
    if FRONTIER in skip or not grid:
        return result, []

    def run_preset(preset: dict[str, dict[str, Any]]) -> ModelRun:
        tuned = settings_for(stream, n_events, seed, preset)
        return run_streamlearn(tuned, rows, progress=False, key=FRONTIER, name=FRONTIER)

    settings_grid = tqdm(grid, desc=f"{stream} frontier", unit="setting", disable=not progress)
    return result, run_frontier(list(settings_grid), run_preset)


def add_speed_bounds(results: Sequence[StreamResult], n_events: int, seed: int) -> None:
    """Arithmetic ceiling and per-stage cost of a batch per stream (benchmarks/speed_bounds.py),
    after the timed runs so that measuring them cannot disturb those."""
    gmacs = matmul_gmacs()
    for result in results:
        settings = settings_for(result.stream, n_events, seed)
        size = settings.source.batch_size
        warm = BOUNDS_WARMUP // size
        # the first events of the run's stream: a stream only as long as the window would move
        # its drifts into it (a synthetic stream places its drifts by its length)
        needed = (warm + BOUNDS_TIMED) * size
        rows = list(islice(stream_rows(result.stream, max(n_events, needed), seed), needed))
        batches = [(to_columns(b), [y for _, y in b]) for b in row_batches(rows, size)]
        bounds = measure_bounds(
            result.stream, settings, batches[:warm], batches[warm:], gmacs=gmacs
        )
        result.bounds = bounds.to_json()


def _log(run: ModelRun, stream: str) -> None:
    tqdm.write(
        f"  {stream:<14} {run.name:<42} accuracy {fmt_float(run.score.overall())}"
        f"  {fmt_rate(run.events_per_s):>9} events/s"
    )


# -- command line -------------------------------------------------------------------------------
def _commit(rev: str) -> str:
    try:
        speed_vs_baseline.resolve(rev)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return rev


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = stream_parser(
        "python benchmarks/prequential.py", __doc__ or "", list(STREAMS), DEFAULT_STREAMS
    )
    add_skip_option(p, SKIPPABLE)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for prequential.md/.json/-<stream>.png and speed_vs_baseline.md/.json "
        "(default benchmarks/results)",
    )
    for flag, kind, default, metavar, what in FRONTIER_OPTIONS:
        p.add_argument(
            flag,
            type=kind,
            nargs="+",
            default=list(default),
            metavar=metavar,
            help=f"frontier {what} (default {' '.join(map(str, default))})",
        )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--baseline",
        type=_commit,
        metavar="REV",
        help="also time the streamlearn column at git commit or branch REV against this tree, "
        "interleaved, and write <out>/speed_vs_baseline.md/.json",
    )
    p.add_argument(
        "--only-baseline",
        action="store_true",
        help="with --baseline: run that comparison alone (no peers, no prequential.md)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        metavar="N",
        help="with --baseline: timed runs per side and stream (default 3)",
    )
    args = p.parse_args(argv)
    if args.only_baseline and not args.baseline:
        p.error("--only-baseline needs --baseline REV")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.events < 10:
        p.error("--events must be at least 10")
    for flag, *_ in FRONTIER_OPTIONS:
        if min(getattr(args, flag[2:].replace("-", "_"))) <= 0:
            p.error(f"{flag} takes positive values only")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = command_line()

    def baseline() -> dict[str, Any]:
        data = speed_vs_baseline.compare(
            args.baseline, args.streams, args.events, args.seed, args.repeats, command
        )
        print(speed_vs_baseline.write(args.out, data))
        return data

    if args.only_baseline:
        baseline()
        return 0
    start = RunStart.now()
    grid = presets(args.frontier_batches, args.frontier_updates, args.frontier_lrs)
    results: list[StreamResult] = []
    frontiers: dict[str, list[FrontierPoint]] = {}
    for stream in tqdm(args.streams, desc="streams", disable=args.no_progress):
        result, frontiers[stream] = run_stream(
            stream, args.events, args.seed, args.skip_peers, not args.no_progress, grid
        )
        for run in result.runs:
            _log(run, stream)
        results.append(result)
    add_speed_bounds(results, args.events, args.seed)
    comparison = baseline() if args.baseline else None
    meta = start.meta(command, events=args.events, seed=args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_plots(results, args.out)
    default = Settings()
    write_frontier_plot(
        results,
        frontiers,
        args.out / "prequential-frontier.png",
        (default.source.batch_size, default.learner.updates, default.learner.lr),
    )
    extra = [frontier_section(results, frontiers)]
    if comparison:
        extra.append(speed_vs_baseline.section(comparison))
    markdown = render_markdown(results, meta, extra)
    (args.out / "prequential.md").write_text(markdown, encoding="utf-8")
    data = results_json(results, meta)
    data["frontier"] = frontier_json(frontiers)
    data[speed_vs_baseline.NAME] = comparison
    write_json(args.out / "prequential.json", data)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
