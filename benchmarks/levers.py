"""Levers: what candidate changes to the model would gain on the suite's streams, measured before
any is built (issue 23: the mean gap and the streams where river's trees lead).

Each stream and seed runs streamlearn's defaults (benchmarks/suite.py's settings) prequentially
on the same rows, and beside them:

- two seeds averaged: the defaults' chain and a second one with another model seed (seed +
  1000), their predicted probabilities (regression: values) averaged row by row; an ensemble
  of two, at twice the training work;
- periodic inputs: every numeric feature x also enters as sin(2π·c·z) and cos(2π·c·z) for k
  frequencies c drawn from N(0, σ²) per feature (z: x standardised as streamlearn's encoder
  does, by the rows before its micro-batch), the periodic embeddings of Gorishniy, Rubachev &
  Babenko, "On Embeddings for Numerical Features in Tabular Deep Learning" (NeurIPS 2022),
  with fixed frequencies. The
  extra inputs stay within the encoder's numeric slots (k is lowered where d·(2k + 1) would
  not fit; 0 where not even one frequency fits), so the network's shape is the defaults'.
- weights averaged: the defaults' chain, each grown-up batch (after the fast start) also
  scored by an exponential moving average of its dense weights (decay per batch; restarted
  where the live weights jump: a detected drift, an expert's or a fresh model's takeover),
  its base prediction averaged with the live one's and the error memory's correction kept: a
  second forward pass per batch, no second model to train (Polyak averaging);
- nearest neighbours mixed: the defaults' chain, each batch's prediction mixed with a
  k-nearest-neighbour vote (regression: mean) over the last ``window`` labelled rows, by
  Euclidean distance between their standardised numeric slots (the network's inputs before
  its periodic features, standardised by the rows before their micro-batch; categorical
  features are left out), the two mixed by a Hedge with the linear model's settings (its 0/1
  loss; regression: |error|) as the linear model is mixed in; here after the error memory's
  correction, where a build would mix it into the base prediction. No training; a search over
  the window per row.

Reported per stream: the score (accuracy; MAE on regression streams) of each, the mean over
the seeds; per lever, the streams it improves, the mean gain (accuracy points;
% of MAE saved) and the worst stream. Writes <out>/levers.md, .json and .png
(each stream's gain per lever).

  python benchmarks/levers.py
  python benchmarks/levers.py --streams bananas sine-abrupt --periodic-k 4 --periodic-sigma 0.3
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Hashable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from report import command_line, doc_parser, load_average, machine_info, markdown_table, write_json
from suite import suite_settings
from suite_streams import SUITE, suite_rows
from timing_runner import row_batches, to_columns
from tqdm import tqdm

from streamlearn.core.evaluation import PrequentialScore
from streamlearn.core.features import FeatureEncoder
from streamlearn.core.hedge import Hedge
from streamlearn.core.memory.compensation import gated
from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings

Row = tuple[dict[str, Any], Hashable]
LEVERS = ("two seeds averaged", "periodic inputs", "weights averaged", "nearest neighbours mixed")
SECOND_SEED = 1000  # the second chain's model seed: the run's seed + this


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = doc_parser("python benchmarks/levers.py", __doc__ or "")
    p.add_argument("--events", type=int, default=30_000, help="events per stream (default 30000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 42], help="default: 1 2 3 42")
    p.add_argument("--streams", nargs="+", choices=sorted(SUITE), default=list(SUITE))
    p.add_argument("--periodic-k", type=int, default=4, help="frequencies per feature (4)")
    p.add_argument("--periodic-sigma", type=float, default=0.3, help="their spread σ (0.3)")
    p.add_argument("--ema-decay", type=float, default=0.9, help="per batch (0.9)")
    p.add_argument("--neighbours", type=int, default=5, help="k of the vote (5)")
    p.add_argument("--window", type=int, default=2048, help="labelled rows searched (2048)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def predictions(settings: Settings, rows: Sequence[Row]) -> tuple[list[np.ndarray], list[Any]]:
    """The chain's prediction for every micro-batch before it learns it, and the classes."""
    preq = Prequential.from_settings(settings)
    out = []
    for batch in row_batches(rows, settings.source.batch_size):
        out.append(preq.process_columns(to_columns(batch), [y for _, y in batch]).prediction)
    return out, preq.classes()


def ema_predictions(
    settings: Settings, rows: Sequence[Row], decay: float
) -> tuple[list[np.ndarray], list[Any]]:
    """:func:`predictions`, a grown-up batch's base prediction averaged with that of the moving
    average of the dense weights (the embedding rows are the live ones), the error memory's
    correction of the live base kept as it is."""
    preq = Prequential.from_settings(settings)
    flat = preq.learner.trainer.flat
    average: torch.Tensor | None = None
    out, switches = [], 0
    for batch in row_batches(rows, settings.source.batch_size):
        columns, ys = to_columns(batch), [y for _, y in batch]
        shift = None
        if average is not None and preq.seen >= preq.fast_start * len(batch):
            if preq.memory is not None:
                preq.memory.ring_ready()  # a re-keying reads the weights on another thread
            feats = preq.encoder.encode_columns(columns)
            z = preq.encoder.standardize(feats.num)
            base = preq.learner.predict(z, feats.cat)
            live = flat.clone()
            flat.copy_(average)
            shift = (preq.learner.predict(z, feats.cat) - base) / 2
            flat.copy_(live)
        outcome = preq.process_columns(columns, ys)
        out.append(outcome.prediction if shift is None else _shifted(outcome.prediction, shift))
        jumped = preq.experts is not None and preq.experts.switches != switches
        switches = 0 if preq.experts is None else preq.experts.switches
        if average is None or outcome.drifts or jumped or preq.seen < preq.fast_start * len(batch):
            average = flat.clone()
        else:
            average.mul_(decay).add_(flat, alpha=1 - decay)
    return out, preq.classes()


def neighbour_predictions(
    settings: Settings, rows: Sequence[Row], k: int, window: int
) -> tuple[list[np.ndarray], list[Any]]:
    """:func:`predictions`, each batch's mixed with the k nearest labelled rows' vote (mean)
    by a Hedge with the linear model's settings, the vote's share learned from both
    predictions' losses; the batch's rows join the window after it is scored."""
    preq = Prequential.from_settings(settings)
    reg = settings.learner.task == "regression"
    lin = settings.linear
    hedge = Hedge(1.0 - 1.0 / lin.horizon, lin.eta, (-lin.limit, lin.limit), lin.prior)
    keys = np.zeros((window, settings.features.numeric_slots), dtype=np.float32)
    targets = np.zeros(window, dtype=np.float64 if reg else np.int64)
    filled = stored = 0
    out = []
    for batch in row_batches(rows, settings.source.batch_size):
        columns, ys = to_columns(batch), [y for _, y in batch]
        z = preq.encoder.standardize(preq.encoder.encode_columns(columns).num)
        prediction = preq.process_columns(columns, ys).prediction
        slot = {c: i for i, c in enumerate(preq.classes())}
        target = np.asarray(ys, dtype=np.float64) if reg else np.array([slot[y] for y in ys])
        if filled:
            vote = _vote(z, keys[:filled], targets[:filled], k, prediction)
            mixed = gated(prediction, vote, hedge.weight)
            hedge.update(target, prediction, vote)
        else:
            mixed = prediction
        out.append(mixed)
        at = np.arange(stored, stored + len(ys)) % window  # a ring: the oldest rows replaced
        keys[at], targets[at] = z, target
        stored += len(ys)
        filled = min(stored, window)
    return out, preq.classes()


def _vote(
    z: np.ndarray, keys: np.ndarray, targets: np.ndarray, k: int, like: np.ndarray
) -> np.ndarray:
    """The k nearest keys' (squared Euclidean distance) share per class slot, shaped as
    ``like`` [B, W]; for values [B], their mean."""
    distance = (keys * keys).sum(1)[None, :] - 2.0 * z @ keys.T
    k = min(k, len(keys))
    nearest = targets[np.argpartition(distance, k - 1, axis=1)[:, :k]]
    if like.ndim == 1:
        return nearest.mean(axis=1).astype(like.dtype)
    vote = np.zeros_like(like)
    np.add.at(vote, (np.repeat(np.arange(len(z)), k), nearest.ravel()), 1.0 / k)
    return vote


def _shifted(prediction: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``prediction`` + ``shift``; probabilities clipped at 0 and renormalised."""
    moved = prediction + shift
    if moved.ndim == 1:
        return moved
    moved = np.clip(moved, 0.0, None)
    total = moved.sum(axis=1, keepdims=True)
    return np.divide(moved, total, out=np.zeros_like(moved), where=total > 0)


def scored(
    parts: Sequence[np.ndarray], classes: list[Any], rows: Sequence[Row], reg: bool
) -> float:
    """Accuracy (MAE) of per-batch predictions over ``rows``."""
    score = PrequentialScore(**({"regression": True} if reg else {}))
    ys = [y for _, y in rows]
    start = 0
    for part in parts:
        score.update(part, ys[start : start + len(part)], classes=classes)
        start += len(part)
    return score.overall()


def averaged(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Row-by-row mean of two chains' predictions (same rows: the same class slots)."""
    return [(x + y) / 2 for x, y in zip(a, b, strict=True)]


def periodic_rows(
    rows: Sequence[Row], k: int, sigma: float, seed: int, batch: int, slots: int
) -> tuple[list[Row], int]:
    """``rows`` with sin/cos(2π·c·z) of each numeric feature added (z standardised as the
    encoder does, by the rows of earlier micro-batches), and the k used: at most what fits in
    ``slots``."""
    names = sorted(n for n, v in rows[0][0].items() if _numeric(v))
    d = len(names)
    k = min(k, (slots - d) // (2 * d)) if d else 0
    if k <= 0:
        return list(rows), 0
    freq = np.random.default_rng(seed).normal(0.0, sigma, (d, k))
    encoder = FeatureEncoder(numeric_slots=d, categorical_slots=0, numeric=names)
    out: list[Row] = []
    for part in row_batches(rows, batch):
        raw = encoder.encode_columns({n: [r.get(n) for r, _ in part] for n in names}).num
        angle = 2 * math.pi * encoder.standardize(raw)[:, :, None] * freq[None]
        encoder.observe(raw)  # after the batch: its rows never see themselves
        sin, cos = np.sin(angle), np.cos(angle)
        for i, (r, y) in enumerate(part):
            extra = {f"{n}~{f}{j}": float(v[i, a, j]) for a, n in enumerate(names)
                     for f, v in (("sin", sin), ("cos", cos)) for j in range(k)}  # fmt: skip
            out.append(({**r, **extra}, y))
    return out, k


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """{stream: {task, events, k, defaults / each lever: [score per seed]}}."""
    runs: dict[str, Any] = {}
    bar = tqdm(total=len(args.streams) * len(args.seeds), unit="run", disable=args.no_progress)
    for name in args.streams:
        task = SUITE[name].task
        reg = task == "regression"
        entry: dict[str, Any] = {"task": task, "defaults": [], **{lever: [] for lever in LEVERS}}
        for seed in args.seeds:
            bar.set_description(f"{name} seed {seed}")
            rows = suite_rows(name, args.events, seed)
            settings = suite_settings(task, seed)
            base, classes = predictions(settings, rows)
            other = settings.model_copy(
                update={"learner": settings.learner.model_copy(update={"seed": seed + SECOND_SEED})}
            )
            second, _ = predictions(other, rows)
            wide, k = periodic_rows(
                rows, args.periodic_k, args.periodic_sigma, seed,
                settings.source.batch_size, settings.features.numeric_slots,
            )  # fmt: skip
            periodic, periodic_classes = predictions(settings, wide)
            entry["defaults"].append(scored(base, classes, rows, reg))
            entry["two seeds averaged"].append(scored(averaged(base, second), classes, rows, reg))
            entry["periodic inputs"].append(scored(periodic, periodic_classes, rows, reg))
            ema, _ = ema_predictions(settings, rows, args.ema_decay)
            entry["weights averaged"].append(scored(ema, classes, rows, reg))
            knn, _ = neighbour_predictions(settings, rows, args.neighbours, args.window)
            entry["nearest neighbours mixed"].append(scored(knn, classes, rows, reg))
            entry.update(events=len(rows), k=k)
            bar.update()
        runs[name] = entry
    bar.close()
    return runs


def gain(entry: dict[str, Any], lever: str) -> float:
    """Mean gain over the defaults: accuracy points, or MAE saved in % (+ = better)."""
    ref, new = float(np.mean(entry["defaults"])), float(np.mean(entry[lever]))
    return (ref - new) / ref * 100 if entry["task"] == "regression" else (new - ref) * 100


def summary_rows(runs: dict[str, Any]) -> list[list[str]]:
    rows = []
    for lever in LEVERS:
        gains = {name: gain(e, lever) for name, e in runs.items()}
        cls = [g for n, g in gains.items() if runs[n]["task"] != "regression"]
        reg = [g for n, g in gains.items() if runs[n]["task"] == "regression"]
        worst = min(gains, key=gains.__getitem__)
        rows.append([
            lever,
            f"{sum(g > 0 for g in gains.values())} / {len(gains)}",
            f"{np.mean(cls):+.2f} pt" if cls else "—",
            f"{np.mean(reg):+.1f} %" if reg else "—",
            f"{worst} {gains[worst]:+.2f}",
        ])  # fmt: skip
    return rows


def stream_rows(runs: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, e in runs.items():
        digits = 3 if e["task"] == "regression" else 4
        cells = [f"{np.mean(e[key]):.{digits}f}" for key in ("defaults", *LEVERS)]
        rows.append([name, e["task"], f"{e['events']:,}", *cells, str(e["k"])])
    return rows


def plot(path: Path, runs: dict[str, Any]) -> None:
    """Each stream's gain over the defaults, one bar per lever."""
    names = list(runs)
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(names) + 1.5))
    ys = np.arange(len(names))
    height = 0.8 / len(LEVERS)
    for i, lever in enumerate(LEVERS):
        gains = [gain(runs[n], lever) for n in names]
        ax.barh(ys + (i - (len(LEVERS) - 1) / 2) * height, gains, height, label=lever)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.set_xlabel("gain over the defaults: accuracy points (regression: % of MAE saved)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(LEVERS), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    load = load_average()
    runs = run(args)
    machine = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "levers.json", {"args": vars(args) | {"out": str(args.out)},
                                          "machine": machine, "runs": runs})  # fmt: skip
    lines = [
        "# Levers: candidate model changes measured before they are built",
        "",
        f"Produced by `{command_line(argv)}` (started {started.isoformat(timespec='seconds')}, "
        f"{time.perf_counter() - t0:,.0f} s); seeds {', '.join(map(str, args.seeds))} "
        f"(stream and model), {args.events:,} events per generated stream, real data sets "
        f"whole; periodic inputs with k = {args.periodic_k}, σ = {args.periodic_sigma}; weights "
        f"averaged with decay {args.ema_decay} per batch; nearest neighbours: k = "
        f"{args.neighbours} over the last {args.window:,} labelled rows. Each "
        "cell is the mean over the seeds (accuracy; MAE on regression streams). See the "
        "script's docstring for what each lever is.",
        "",
        f"CPU: {machine['cpu']}; torch {machine['torch']}; load average at start {load}.",
        "",
        "## Against the defaults",
        "",
        markdown_table(
            [
                "lever",
                "streams better",
                "mean gain, classification",
                "mean MAE saved, regression",
                "worst stream",
            ],
            summary_rows(runs),
        ),
        "",
        "## Per stream",
        "",
        markdown_table(
            ["stream", "task", "events", "defaults", *LEVERS, "k used"], stream_rows(runs)
        ),
        "",
        "Two seeds averaged costs twice the training work of the defaults on every stream; "
        "periodic inputs add 2k inputs per numeric feature to the first layer only; weights "
        "averaged, one forward pass per batch (here two: the live base is recomputed); "
        "nearest neighbours mixed, no training but a distance to every row of the window per "
        "scored row.",
        "",
        "![levers](levers.png)",
        "",
    ]
    plot(args.out / "levers.png", runs)
    (args.out / "levers.md").write_text("\n".join(lines))
    print(args.out / "levers.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
