"""streamlearn's prequential timing loop, runnable against any commit's streamlearn.

Holds the prequential benchmark's input preparation and its timed loop (benchmarks/prequential.py
and benchmarks/error_memory.py import them), written against what every commit since 2e5ae53
offers: Prequential from streamlearn.core.prequential or, before the layout change of 68e2501,
streamlearn.prequential (PrequentialScore likewise from streamlearn.core.evaluation or
streamlearn.evaluation); load_settings and stream_rows from where both layouts keep them.

Run as a script, with PYTHONPATH set to a source tree (this one, or a worktree of an earlier
commit), it times that tree's streamlearn on one stream with its default settings, exactly as
the benchmark's `streamlearn` column does (only the process_columns calls are timed), and prints
one JSON line: events, seconds, events_per_s, accuracy, the kernel the learner ran (compiled,
torch or unknown), the module and file Prequential came from, the settings used and a sha256 of
the rows (equal on both sides of a comparison when both trees generate the same stream). As a
script it imports streamlearn from sys.path alone: an editable install's import hook would
otherwise serve the modules an earlier commit lacks (streamlearn.core) from the installed
checkout, mixing two commits' code.

    PYTHONPATH=. python benchmarks/timing_runner.py --stream sea-drift --events 30000 --seed 42
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import json
import sys
import time
from collections.abc import Hashable, Sequence
from importlib.machinery import PathFinder
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:  # imported where used: main() first limits where streamlearn comes from
    from streamlearn.core.evaluation import PrequentialScore
    from streamlearn.core.prequential import Prequential
    from streamlearn.settings import Settings

Row = tuple[dict[str, Any], Hashable]
Columns = dict[str, np.ndarray]

# where each layout keeps the classes the loop needs, newest first
LOCATIONS = {
    "Prequential": ("streamlearn.core.prequential", "streamlearn.prequential"),
    "PrequentialScore": ("streamlearn.core.evaluation", "streamlearn.evaluation"),
}


def locate(name: str) -> Any:
    """The class ``name`` from the first module of LOCATIONS[name] that this streamlearn has."""
    for module in LOCATIONS[name]:
        try:
            return getattr(importlib.import_module(module), name)
        except ModuleNotFoundError as error:
            if error.name is None or not module.startswith(error.name):
                raise  # the module exists but imports something missing: a real error
    raise ImportError(f"{name} is in none of {', '.join(LOCATIONS[name])}")


# -- input preparation (untimed) ----------------------------------------------------------------
# The throughput preset: large micro-batches, one gradient step each (fewer, cheaper steps);
# prequential.py scores it beside the defaults, kafka_throughput.py --preset throughput runs the
# worker with it.
THROUGHPUT_PRESET: dict[str, dict[str, Any]] = {
    "source": {"batch_size": 256},
    "learner": {"updates": 1, "lr": 0.01},
}


def settings_for(
    stream: str, n_events: int, seed: int, preset: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """streamlearn's settings for a stream: its defaults (or a preset on top), the stream's
    task, the run's seed."""
    from streamlearn.settings import load_settings
    from streamlearn.sources.synthetic import STREAMS

    preset = preset or {}
    return load_settings(
        source={"stream": stream, "n_events": n_events, "seed": seed, **preset.get("source", {})},
        learner={"task": STREAMS[stream].task, "seed": seed, **preset.get("learner", {})},
    )


def has_strings(rows: Sequence[Row]) -> bool:
    """Whether the stream has string (categorical) features, judged by its first rows: river's
    numeric-only peers then get them one-hot encoded (peers/river_peers.py)."""
    return any(isinstance(v, str) for x, _ in rows[:100] for v in x.values())


def row_batches(rows: Sequence[Row], size: int) -> list[Sequence[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def to_columns(batch: Sequence[Row]) -> Columns:
    """A micro-batch of dict rows as one numpy array per feature (NaN where a row lacks it)."""
    names = sorted({name for x, _ in batch for name in x})
    return {name: np.array([x.get(name, np.nan) for x, _ in batch]) for name in names}


# -- the timed loop -----------------------------------------------------------------------------
class TimedRun(NamedTuple):
    """One timed run: the learner, its score, the seconds in its calls, and of those the
    seconds and events of the batches learned while the model was young (the fast start's,
    fewer than learner.fast_start × batch_size events learned: a cost paid once per model;
    0 where the commit has no fast start or does not say)."""

    prequential: Prequential
    score: PrequentialScore
    seconds: float
    fast_start_seconds: float
    fast_start_events: int


def prequential_run(
    settings: Settings,
    rows: Sequence[Row],
    *,
    dicts: bool = False,
    progress: bool = False,
    desc: str = "streamlearn",
) -> TimedRun:
    """streamlearn over ``rows`` in micro-batches of source.batch_size, through process_columns
    (``dicts``: process on lists of dicts): the learner, its per-event prequential score and the
    seconds spent in those calls alone (inputs are built before, scoring done outside the clock),
    with the share of them its fast start took (where this commit's Prequential says when).
    """
    batches = row_batches(rows, settings.source.batch_size)
    inputs = [[x for x, _ in b] for b in batches] if dicts else [to_columns(b) for b in batches]
    labels = [[y for _, y in b] for b in batches]
    prequential = locate("Prequential")
    preq = getattr(prequential, "from_settings", prequential)(settings)
    process = preq.process if dicts else preq.process_columns
    regression = settings.learner.task == "regression"  # only where PrequentialScore has it
    score = locate("PrequentialScore")(**({"regression": True} if regression else {}))
    seconds = young_seconds = 0.0
    young_events = 0
    fast_starting = getattr(preq, "fast_starting", lambda rows: False)
    for batch, ys in tqdm(
        zip(inputs, labels, strict=True),
        total=len(batches),
        desc=desc,
        unit="batch",
        disable=not progress,
        leave=False,
    ):
        young = fast_starting(settings.source.batch_size)  # a short last batch as a full one
        start = time.perf_counter()
        outcome = process(batch, ys)
        took = time.perf_counter() - start
        seconds += took
        if young:
            young_seconds, young_events = young_seconds + took, young_events + len(ys)
        score.update(outcome.prediction, ys, classes=preq.classes())
    return TimedRun(preq, score, seconds, young_seconds, young_events)


def kernel_of(preq: Prequential) -> str:
    """Which training step the learner runs: "compiled", "torch", or "unknown" (a layout that
    keeps it elsewhere than learner.step_kernel, or, before it, learner.trainer.compiled_step
    and .native before the rename)."""
    kernel = getattr(preq.learner, "step_kernel", None)
    if kernel is not None:
        return str(kernel.name)
    trainer = getattr(preq.learner, "trainer", None)
    for attribute in ("compiled_step", "native"):
        if hasattr(trainer, attribute):
            return "torch" if getattr(trainer, attribute) is None else "compiled"
    return "unknown"


def measure(stream: str, events: int, seed: int) -> dict[str, Any]:
    """One timed run of the default model on ``stream``, as the JSON line the script prints."""
    from streamlearn.sources.synthetic import stream_rows

    rows = list(stream_rows(stream, events, seed))
    settings = settings_for(stream, events, seed)
    preq, score, seconds, *_ = prequential_run(settings, rows)
    return {
        "stream": stream,
        "events": len(score),
        "seconds": seconds,
        "events_per_s": len(score) / seconds,
        "accuracy": score.overall(),
        "kernel": kernel_of(preq),
        "prequential": type(preq).__module__,
        "prequential_file": inspect.getfile(type(preq)),
        "settings": settings.model_dump(mode="json", include={"source", "learner", "drift"}),
        "rows_sha256": hashlib.sha256(repr(rows).encode()).hexdigest(),
    }


def path_only() -> None:
    """Drop the import hooks, other than sys.path's, that can find streamlearn (an editable
    install's), so that it comes from PYTHONPATH or nowhere."""
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if finder is PathFinder or finder.find_spec("streamlearn", None) is None
    ]


def main(argv: Sequence[str] | None = None) -> int:
    path_only()
    from streamlearn.sources.synthetic import STREAMS

    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python benchmarks/timing_runner.py",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--stream",
        required=True,
        choices=sorted(STREAMS),
        metavar="STREAM",
        help=f"the stream to run: {', '.join(sorted(STREAMS))}",
    )
    p.add_argument("--events", type=int, default=30_000, help="events to run (default 30000)")
    p.add_argument("--seed", type=int, default=42, help="stream and model seed (default 42)")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.stream, args.events, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
