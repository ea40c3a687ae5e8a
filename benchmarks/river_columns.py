"""River's pandas path against the core learner's column path, in one run (issue 23).

river users call ``predict_proba_many`` then ``learn_many`` on each chunk of a DataFrame. This
measures what that costs against ``Prequential.process_columns`` on the same rows, with the
same learner (a ``streamlearn.river.Classifier``'s own pipeline, same seed and settings):

  process_columns     the estimator's Prequential.process_columns on micro-batches of its
                      batch_size (columns built before the clock starts)
  river-pandas-N      predict_proba_many(X) then learn_many(X, y) per chunk of N rows of one
                      DataFrame of the whole stream (the chunks sliced before the clock starts)
  river-dicts         predict_proba_one(x) then learn_one(x, y) per row (river's one-row API)
  river-scaled-lr     river's StandardScaler | LogisticRegression, predict_proba_one then
                      learn_one per row (one-vs-rest on multiclass streams)

The paths run in lockstep: every path processes one segment of the stream (a multiple of every
chunk and of the micro-batch) before any goes on, in an order that rotates per segment, so a
load spike on a shared machine falls on all of them; only the models' own calls are timed. A
round runs every path over the whole stream with fresh models; each path's events/s is the
median over the rounds, its ratio the median of its per-round ratios to process_columns. The
target: the pandas path at least 0.7x process_columns in chunks of 32 and of 512 rows.

One more round, untimed for the table, wraps the learner's entry points to show where a
chunk's time goes: encoding (FeatureEncoder.encode_columns), score-only predictions
(Prequential.predict_columns less its encoding: forward pass and error-memory compensation),
the learning step (Prequential.process_encoded) and the rest, the river layer's own work
(DataFrame to columns, labels, the micro-batch buffer, probabilities to a DataFrame).

Writes <out>/river_columns.md and .json, with the machine and the load average named:

  python benchmarks/river_columns.py
  python benchmarks/river_columns.py --stream rbf-drift --batch-sizes 8 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Hashable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from peers.river_peers import RIVER_PEERS
from report import (
    command_line,
    doc_parser,
    fmt_float,
    fmt_rate,
    load_average,
    machine_info,
    markdown_table,
    write_json,
)
from speed_bounds import _StageTimer as StageTimer  # exclusive seconds per wrapped method
from timing_runner import Row, has_strings, row_batches, to_columns

from streamlearn.river import Classifier
from streamlearn.sources.synthetic import STREAMS, stream_rows

COLUMNS = "process_columns"
DICTS = "river-dicts"
RIVER_LR = "river-scaled-lr"
TARGET = 0.7  # the pandas path's events/s as a share of process_columns', every chunk size
STAGES = ("encode", "score", "learn")  # timed stages of the breakdown; then "rest"


NOTES = (
    "Notes: process_columns scores a batch inside its learning step (one forward pass gives "
    "the predictions and the loss); river's API asks for the predictions first, so the pandas "
    "path runs a second, score-only pass per chunk (`predict_columns`: the step kernel's "
    "forward and the error memory's compensation), which process_columns never pays: the "
    "score column, and part of the learn column's excess, since the learning step that follows "
    "a score-only pass runs slower than one that follows another step. Much of that cost is "
    "fixed per chunk, so it weighs most on small chunks, and against larger micro-batches, "
    "whose learning costs less per event. Accuracy "
    "differs by path because a chunk is predicted with the model from before the chunk: the "
    "larger the chunk, the older the model (process_columns predicts each micro-batch just "
    "before learning it)."
)


def pandas_key(chunk: int) -> str:
    return f"river-pandas-{chunk}"


# -- the paths ----------------------------------------------------------------------------------
class Timed:
    """One path over the stream: ``run(lo, hi)`` processes rows [lo, hi), timing only the
    model's calls; hits are counted outside the clock."""

    key: str
    name: str
    model: Any  # the estimator (a river model on the one-row paths)

    def __init__(self) -> None:
        self.seconds = 0.0
        self.hits = 0
        self.events = 0

    @property
    def rate(self) -> float:
        """Events per second of the model's own calls."""
        return self.events / self.seconds

    def run(self, lo: int, hi: int) -> None:
        raise NotImplementedError


def _best(proba: dict[Hashable, float]) -> Hashable | None:
    """river's predict_one: the most probable class, None before any."""
    return max(proba, key=proba.__getitem__) if proba else None


class ColumnsPath(Timed):
    """process_columns on micro-batches of the estimator's batch_size."""

    def __init__(self, model: Classifier, rows: Sequence[Row]) -> None:
        super().__init__()
        self.key, self.name = COLUMNS, "Prequential.process_columns"
        self.model, self.size = model, model.batch_size
        batches = row_batches(rows, self.size)
        self.inputs = [(to_columns(b), [y for _, y in b]) for b in batches]

    def run(self, lo: int, hi: int) -> None:
        pq = self.model.prequential
        for columns, ys in self.inputs[lo // self.size : math.ceil(hi / self.size)]:
            start = time.perf_counter()
            outcome = pq.process_columns(columns, ys)
            self.seconds += time.perf_counter() - start
            classes = pq.classes()
            best = outcome.prediction[:, : len(classes)].argmax(axis=1)
            known = outcome.prediction.sum(axis=1) > 0
            self.hits += sum(k and classes[b] == y for b, k, y in zip(best, known, ys, strict=True))
            self.events += len(ys)


class PandasPath(Timed):
    """predict_proba_many then learn_many on chunks of one DataFrame, as river users call it."""

    def __init__(self, model: Classifier, frame: pd.DataFrame, y: pd.Series, chunk: int) -> None:
        super().__init__()
        self.key, self.name = pandas_key(chunk), f"river pandas path, chunks of {chunk}"
        self.model, self.chunk = model, chunk
        self.chunks = [
            (frame.iloc[i : i + chunk], y.iloc[i : i + chunk]) for i in range(0, len(y), chunk)
        ]

    def run(self, lo: int, hi: int) -> None:
        for X, y in self.chunks[lo // self.chunk : math.ceil(hi / self.chunk)]:
            start = time.perf_counter()
            proba = self.model.predict_proba_many(X)
            self.model.learn_many(X, y)
            self.seconds += time.perf_counter() - start
            if proba.shape[1]:
                best = proba.columns.take(proba.to_numpy().argmax(axis=1))
                self.hits += int((np.asarray(best) == y.to_numpy()).sum())
            self.events += len(y)


class OneRowPath(Timed):
    """predict_proba_one then learn_one per row (streamlearn's dict path, or a river model)."""

    def __init__(self, key: str, name: str, model: Any, rows: Sequence[Row]) -> None:
        super().__init__()
        self.key, self.name, self.model, self.rows = key, name, model, rows

    def run(self, lo: int, hi: int) -> None:
        part = self.rows[lo:hi]
        probas = []
        start = time.perf_counter()
        for x, y in part:
            probas.append(self.model.predict_proba_one(x))
            self.model.learn_one(x, y)
        self.seconds += time.perf_counter() - start
        self.hits += sum(_best(p) == y for p, (_, y) in zip(probas, part, strict=True))
        self.events += len(part)


def build_paths(
    rows: Sequence[Row],
    frame: pd.DataFrame,
    y: pd.Series,
    task: str,
    seed: int,
    batch_size: int,
    chunks: Sequence[int],
    one_row: bool = True,
) -> list[Timed]:
    """Fresh, untrained models for every path (one_row: with the one-row paths too)."""

    def model() -> Classifier:
        return Classifier(seed=seed, batch_size=batch_size)

    paths: list[Timed] = [ColumnsPath(model(), rows)]
    paths += [PandasPath(model(), frame, y, c) for c in chunks]
    if one_row:
        peer = RIVER_PEERS[RIVER_LR]
        paths += [
            OneRowPath(DICTS, "river one-row API on dicts", model(), rows),
            OneRowPath(RIVER_LR, peer.name, peer.build(task, seed, has_strings(rows)), rows),
        ]
    return paths


def lockstep(paths: Sequence[Timed], n: int, segment: int) -> None:
    """Every path through rows [0, n), one segment at a time, the order rotating."""
    for k, lo in enumerate(range(0, n, segment)):
        for i in range(len(paths)):
            paths[(k + i) % len(paths)].run(lo, min(lo + segment, n))


# -- where a chunk's time goes ------------------------------------------------------------------
def breakdown(paths: Sequence[Timed], n: int, segment: int) -> dict[str, dict[str, float]]:
    """µs per 1,000 events by stage for each path (one lockstep round with the learner's entry
    points wrapped); "rest" is the path's time outside them (on the river paths, the river
    layer's own work), "total" all of it."""
    clocks = {}
    for path in paths:
        model: Classifier = path.model
        clock = clocks[path.key] = StageTimer()
        clock.wrap(model.prequential.encoder, "encode_columns", "encode")
        clock.wrap(model.prequential, "predict_columns", "score")
        clock.wrap(model.prequential, "process_encoded", "learn")
    lockstep(paths, n, segment)
    result = {}
    for path in paths:
        per_k = 1e9 / path.events  # seconds -> µs per 1,000 events
        stages = {s: clocks[path.key].seconds[s] * per_k for s in STAGES}
        total = path.seconds * per_k
        result[path.key] = {**stages, "rest": total - sum(stages.values()), "total": total}
    return result


# -- one configuration --------------------------------------------------------------------------
def measure(
    rows: Sequence[Row],
    task: str,
    seed: int,
    batch_size: int,
    chunks: Sequence[int],
    repeats: int,
) -> dict[str, Any]:
    """Every path, ``repeats`` lockstep rounds, then the breakdown round."""
    frame = pd.DataFrame([x for x, _ in rows])
    y = pd.Series([y for _, y in rows])
    segment = math.lcm(batch_size, *chunks)
    runs: dict[str, list[Timed]] = defaultdict(list)
    for _ in range(repeats):
        for path in build_paths(rows, frame, y, task, seed, batch_size, chunks):
            runs[path.key].append(path)
        lockstep([r[-1] for r in runs.values()], len(rows), segment)
    paths = {}
    for key, done in runs.items():
        rates = [p.rate for p in done]
        ratios = [p.rate / c.rate for p, c in zip(done, runs[COLUMNS], strict=True)]
        paths[key] = {
            "name": done[0].name,
            "events": done[0].events,
            "events_per_s": statistics.median(rates),
            "runs_events_per_s": rates,
            "ratio": statistics.median(ratios),
            "runs_ratio": ratios,
            "accuracy": done[0].hits / done[0].events,
        }
    parts = build_paths(rows, frame, y, task, seed, batch_size, chunks, one_row=False)
    return {
        "batch_size": batch_size,
        "segment": segment,
        "paths": paths,
        "breakdown_us_per_1k_events": breakdown(parts, len(rows), segment),
    }


def targets(config: dict[str, Any], chunks: Sequence[int]) -> list[dict[str, Any]]:
    paths = config["paths"]
    return [
        {
            "target": f"river pandas path ≥ {TARGET}× process_columns, chunks of {c}",
            "batch_size": config["batch_size"],
            "value": paths[pandas_key(c)]["ratio"],
            "met": bool(paths[pandas_key(c)]["ratio"] >= TARGET),
        }
        for c in chunks
    ]


# -- the report ---------------------------------------------------------------------------------
def _results_table(config: dict[str, Any]) -> str:
    rows = [
        [
            p["name"],
            fmt_rate(p["events_per_s"]),
            f"{p['ratio']:.2f}",
            " / ".join(fmt_rate(r) for r in p["runs_events_per_s"]),
            " / ".join(f"{r:.2f}" for r in p["runs_ratio"]),
            fmt_float(p["accuracy"]),
        ]
        for p in config["paths"].values()
    ]
    headers = ["path", "events/s", "× process_columns", "runs (events/s)", "runs (×)", "accuracy"]
    return markdown_table(headers, rows)


def _breakdown_table(config: dict[str, Any]) -> str:
    parts = config["breakdown_us_per_1k_events"]
    columns = parts[COLUMNS]["total"]
    rows = []
    for key, stages in parts.items():
        scored = stages["total"] - stages["rest"]  # with the river layer's own work free
        learned = stages["encode"] + stages["learn"]  # and the extra scoring pass free too
        rows.append(
            [
                config["paths"][key]["name"],
                *(f"{stages[s]:,.0f}" for s in (*STAGES, "rest", "total")),
                f"{columns / scored:.2f}" if key != COLUMNS else "—",
                f"{columns / learned:.2f}" if key != COLUMNS else "—",
            ]
        )
    headers = [
        "path",
        "encode",
        "score",
        "learn",
        "rest",
        "total",
        "× if the river layer were free",
        "× if scoring were free too",
    ]
    return markdown_table(headers, rows)


def render(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# River pandas path vs process_columns",
        "",
        f"Produced by `{data['command']}` (started {data['started']}); {data['events']:,} events "
        f"of `{data['stream']}` (seed {data['seed']}), {data['repeats']} lockstep rounds per "
        "configuration (median events/s; × is the median of the per-round ratios to "
        "process_columns). Every streamlearn path runs a `streamlearn.river.Classifier` with "
        "its defaults and the batch size named; the river pandas path predicts a chunk "
        "(`predict_proba_many`), then learns it (`learn_many`). See the script's docstring "
        "for what is timed.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu_count']} logical cores ({m['cpu']}); {m['platform']}",
        f"- python {m['python']}, torch {m['torch']} ({m['torch_threads']} thread(s)), "
        f"river {m['river']}, pandas {data['pandas']}, numpy {data['numpy']}",
        f"- load average (1 min) at start / end: {data['load_start']} / {data['load_end']} "
        "(a shared machine: other work competes for the cores)",
    ]
    for config in data["configs"]:
        b = config["batch_size"]
        lines += [
            "",
            f"## Micro-batch {b}",
            "",
            _results_table(config),
            "",
            "Where the time goes (µs per 1,000 events, one more lockstep round with the "
            "learner's entry points wrapped): encode = `encode_columns`, score = "
            "`predict_columns` less its encoding (forward pass, error-memory compensation), "
            "learn = `process_encoded`, rest = the river layer's own work on the river paths "
            "(DataFrame to columns, labels, the micro-batch buffer, probabilities to a "
            "DataFrame), the call itself on process_columns.",
            "",
            _breakdown_table(config),
        ]
    lines += ["", f"## Target: the river pandas path at least {TARGET}× process_columns", ""]
    for t in data["targets"]:
        verdict = "met" if t["met"] else "NOT met"
        lines.append(
            f"- micro-batch {t['batch_size']}, {t['target']}: {t['value']:.2f}× — {verdict}"
        )
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = doc_parser("python benchmarks/river_columns.py", __doc__ or "")
    p.add_argument("--stream", default="agrawal-drift", choices=sorted(STREAMS), metavar="STREAM")
    p.add_argument("--events", type=int, default=20_000, help="events (default 20000)")
    p.add_argument("--seed", type=int, default=42, help="stream and model seed (default 42)")
    p.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[8, 32],
        help="the estimator's micro-batch, one configuration each (default: 8, its default, "
        "and 32, the core learner's)",
    )
    p.add_argument("--chunks", type=int, nargs="+", default=[32, 512], help="DataFrame rows")
    p.add_argument("--repeats", type=int, default=5, help="lockstep rounds (default 5)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = load_average()
    rows = list(stream_rows(args.stream, args.events, args.seed))
    task = STREAMS[args.stream].task
    configs = []
    for b in args.batch_sizes:
        configs.append(measure(rows, task, args.seed, b, args.chunks, args.repeats))
        rates = (f"{k} {fmt_rate(p['events_per_s'])}/s" for k, p in configs[-1]["paths"].items())
        print(f"micro-batch {b}: {', '.join(rates)}", flush=True)
    data = {
        "command": command_line(None if argv is None else ["benchmarks/river_columns.py", *argv]),
        "started": started,
        "stream": args.stream,
        "task": task,
        "events": len(rows),
        "seed": args.seed,
        "repeats": args.repeats,
        "chunks": args.chunks,
        "machine": machine_info(),
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "load_start": load_start,
        "load_end": load_average(),
        "configs": configs,
        "targets": [t for c in configs for t in targets(c, args.chunks)],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "river_columns.json", data)
    markdown = render(data)
    (args.out / "river_columns.md").write_text(markdown, encoding="utf-8")
    print("## Target" + markdown.split("## Target", 1)[1], end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
