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
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Hashable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
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
    command_line,
    fmt_float,
    fmt_rate,
    load_average,
    machine_info,
    stream_parser,
    write_json,
)
from speed_bounds import matmul_gmacs, measure_bounds
from tqdm import tqdm

from streamlearn.core.evaluation import PrequentialScore
from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings, load_settings
from streamlearn.sources.synthetic import STREAMS, stream_rows

Row = tuple[dict[str, Any], Hashable]
Columns = dict[str, np.ndarray]

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
# The throughput preset: large micro-batches, one gradient step each (fewer, cheaper steps).
THROUGHPUT_PRESET = {"source": {"batch_size": 256}, "learner": {"updates": 1, "lr": 0.01}}


BOUNDS_WARMUP = 3000  # events learned before a micro-batch's stages are timed
BOUNDS_TIMED = 100  # micro-batches timed stage by stage


# -- input preparation (untimed) ----------------------------------------------------------------
def settings_for(
    stream: str, n_events: int, seed: int, preset: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """streamlearn's settings for a stream: its defaults (or a preset on top), the stream's
    task, the run's seed."""
    preset = preset or {}
    return load_settings(
        source={"stream": stream, "n_events": n_events, "seed": seed, **preset.get("source", {})},
        learner={"task": STREAMS[stream].task, "seed": seed, **preset.get("learner", {})},
    )


def row_batches(rows: Sequence[Row], size: int) -> list[Sequence[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def to_columns(batch: Sequence[Row]) -> Columns:
    """A micro-batch of dict rows as one numpy array per feature (NaN where a row lacks it)."""
    names = sorted({name for x, _ in batch for name in x})
    return {name: np.array([x.get(name, np.nan) for x, _ in batch]) for name in names}


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
    batches = row_batches(rows, settings.source.batch_size)
    inputs = [[x for x, _ in b] for b in batches] if dicts else [to_columns(b) for b in batches]
    labels = [[y for _, y in b] for b in batches]
    preq = Prequential(settings)
    process = preq.process if dicts else preq.process_columns
    score = PrequentialScore()
    seconds = 0.0
    for batch, ys in tqdm(
        zip(inputs, labels, strict=True),
        total=len(batches),
        desc=name,
        unit="batch",
        disable=not progress,
        leave=False,
    ):
        start = time.perf_counter()
        outcome = process(batch, ys)  # type: ignore[arg-type]
        seconds += time.perf_counter() - start
        score.update(outcome.prediction, ys, classes=preq.classes())
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
        rows = list(stream_rows(result.stream, (warm + BOUNDS_TIMED) * size, seed))
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
def _skip_list(text: str) -> set[str]:
    names = {s.strip() for s in text.split(",") if s.strip()}
    unknown = names - set(SKIPPABLE)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown peer(s) {', '.join(sorted(unknown))}; choose from {', '.join(SKIPPABLE)}"
        )
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = stream_parser(
        "python benchmarks/prequential.py", __doc__ or "", list(STREAMS), DEFAULT_STREAMS
    )
    p.add_argument(
        "--skip-peers",
        type=_skip_list,
        default=set(),
        metavar="NAME[,NAME...]",
        help=f"models to leave out, comma-separated: {', '.join(SKIPPABLE)}",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for prequential.md/.json/-<stream>.png (default benchmarks/results)",
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
    args = p.parse_args(argv)
    if args.events < 10:
        p.error("--events must be at least 10")
    for flag, *_ in FRONTIER_OPTIONS:
        if min(getattr(args, flag[2:].replace("-", "_"))) <= 0:
            p.error(f"{flag} takes positive values only")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = command_line()
    started, load_at_start = datetime.now(timezone.utc), load_average()
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
    meta = {
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        "events": args.events,
        "seed": args.seed,
        "machine": machine_info(),
        "load_average_1m": {"start": load_at_start, "end": load_average()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_plots(results, args.out)
    default = Settings()
    write_frontier_plot(
        results,
        frontiers,
        args.out / "prequential-frontier.png",
        (default.source.batch_size, default.learner.updates, default.learner.lr),
    )
    markdown = render_markdown(results, meta, [frontier_section(results, frontiers)])
    (args.out / "prequential.md").write_text(markdown, encoding="utf-8")
    data = results_json(results, meta)
    data["frontier"] = frontier_json(frontiers)
    write_json(args.out / "prequential.json", data)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
