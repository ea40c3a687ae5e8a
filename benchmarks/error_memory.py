"""Error-memory benchmark: ReLoop2-style compensation on versus off, on abrupt-drift streams.

Every run drives Prequential.process_columns over the same seeded micro-batches (columns are
built before the clock starts; only process_columns is timed). The memory never feeds back into
training, so "on" and "off" train the same base model and see the same detected drifts: the
accuracy difference is the compensation alone, and the throughput difference its cost.

Reports, per stream: accuracy in the 1,000 and 5,000 events after each true drift and overall,
events/s with the memory off and on (the two run in lockstep, batch by batch, so load from
other processes hits both alike; fastest of --repeats such passes), a table of tuned
variants (λ, γ, τ, k, size, store policy, reset/re-key rule, LSH vs top-k) and a measurement
of how fast the keys (hidden representation of a fixed probe batch) go stale.

Writes <out>/error_memory.md, <out>/error_memory.json and <out>/error_memory.png (rolling
accuracy around each drift, memory on vs off).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from error_memory_report import AFTER_DRIFT_STEPS, plot, pts, render
from report import command_line, fmt_float, fmt_rate, machine_info, stream_parser, write_json
from timing_runner import row_batches, settings_for, to_columns
from torch.nn import functional as F

from streamlearn.core.evaluation import PrequentialScore
from streamlearn.core.prequential import Prequential
from streamlearn.settings import MemorySettings, Settings
from streamlearn.sources.synthetic import STREAMS, stream_rows

Columns = dict[str, np.ndarray]
Batch = tuple[Columns, list[Hashable]]

DEFAULT_STREAMS = ("agrawal-drift", "sea-drift")
TARGET_GAIN_1K = 0.03  # accuracy points in the first 1,000 events after each drift
TARGET_COST = 0.15  # largest acceptable throughput loss
PROBE_AGES = (1, 2, 4, 8, 16, 32)  # micro-batch steps between the two encodings compared

# name -> (what it changes, MemorySettings overrides on top of the shipped defaults)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("the shipped MemorySettings (enabled)", {}),
    "no-rekey": ("never re-key", {"rekey_every": 0, "rekey_after_drift": 0}),
    "rekey-after-drift-only": ("re-key only in the 20 steps after a drift", {"rekey_every": 0}),
    "rekey-always": ("re-key every step", {"rekey_every": 1}),
    "no-reset": ("no reset on drift", {"reset_on_drift": False}),
    "no-reset-no-rekey": (
        "ring recency only: no reset, no re-key",
        {"reset_on_drift": False, "rekey_every": 0, "rekey_after_drift": 0},
    ),
    "dense-256": (
        "k = 0: softmax over all of a 256 ring, τ = 0.01, re-key after drift only",
        {"k": 0, "tau": 0.01, "size": 256, "rekey_every": 0},
    ),
    "dense-tau-0.02": ("k = 0: softmax over the whole ring, τ = 0.02", {"k": 0, "tau": 0.02}),
    "dense-tau-0.05": ("k = 0: softmax over the whole ring, τ = 0.05", {"k": 0, "tau": 0.05}),
    "k-4": ("k = 4", {"k": 4}),
    "k-16": ("k = 16", {"k": 16}),
    "size-64": ("ring of 64", {"size": 64}),
    "size-256": ("ring of 256", {"size": 256}),
    "top-32-of-1024": (
        "top-32 of a 1,024 ring, no re-key",
        {"k": 32, "size": 1024, "rekey_every": 0, "rekey_after_drift": 0},
    ),
    "tau-0.03": ("τ = 0.03", {"tau": 0.03}),
    "tau-0.3": ("τ = 0.3", {"tau": 0.3}),
    "gamma-0": ("γ = 0 (residual of the neighbours only)", {"gamma": 0.0}),
    "gamma-1": ("γ = 1 (ŷ moved λ of the way to the neighbours' labels)", {"gamma": 1.0}),
    "lam-1": ("λ = 1 (the default before decision 0048)", {"lam": 1.0}),
    "store-errors": (
        "store only rows the base got wrong (p(true) < 0.5), no re-key",
        {"store": "errors", "rekey_every": 0, "rekey_after_drift": 0},
    ),
    "store-errors-lam-0.2": (
        "store errors only, λ = 0.2, no re-key",
        {"store": "errors", "lam": 0.2, "rekey_every": 0, "rekey_after_drift": 0},
    ),
    "lsh-8x8": ("LSH sketch, 8 tables × 2^8 buckets, no decay", {"kind": "lsh"}),
    "lsh-8x8-decay": (
        "LSH sketch, 8 × 2^8, decay 0.995 per sample",
        {"kind": "lsh", "decay": 0.995},
    ),
    "lsh-16x6-decay": (
        "LSH sketch, 16 × 2^6, decay 0.995 per sample",
        {"kind": "lsh", "tables": 16, "bits": 6, "decay": 0.995},
    ),
}


# -- input preparation (untimed) ----------------------------------------------------------------
def memory_settings(stream: str, n_events: int, seed: int, memory: Mapping[str, Any]) -> Settings:
    """The prequential benchmark's settings for a stream, with the given memory section."""
    return settings_for(stream, n_events, seed).model_copy(
        update={"memory": MemorySettings(**memory)}
    )


def column_batches(stream: str, n_events: int, seed: int, size: int) -> list[Batch]:
    """The stream's rows as micro-batches of numpy columns, built before any clock starts."""
    rows = list(stream_rows(stream, n_events, seed))
    return [(to_columns(b), [y for _, y in b]) for b in row_batches(rows, size)]


# -- one run ------------------------------------------------------------------------------------
@dataclass
class Run:
    """One prequential pass: per-event hits, the seconds spent in process_columns, counters."""

    score: PrequentialScore
    seconds: float
    events: int
    detected: list[int]
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def run_lockstep(settings: Sequence[Settings], batches: Sequence[Batch]) -> list[Run]:
    """One prequential pass per settings, all fed the same micro-batch in turn (the order
    rotating each batch), so a busy machine slows every run alike and the ratio of their times
    stays fair. Only ``process_columns`` is timed."""
    preqs = [Prequential.from_settings(s) for s in settings]
    scores = [PrequentialScore() for _ in preqs]
    seconds = [0.0] * len(preqs)
    for i, (columns, ys) in enumerate(batches):
        for j in np.roll(np.arange(len(preqs)), i):
            start = time.perf_counter()
            outcome = preqs[j].process_columns(columns, ys)
            seconds[j] += time.perf_counter() - start
            scores[j].update(outcome.prediction, ys, preqs[j].classes())
    runs = []
    for preq, score, sec in zip(preqs, scores, seconds, strict=True):
        counters = {}
        if preq.memory is not None:
            counters = {"resets": preq.memory.resets, "rekeys": preq.memory.rekeys}
        runs.append(Run(score, sec, len(score), list(preq.drifts), counters))
    return runs


def summarise(run: Run, drifts: Sequence[int]) -> dict[str, Any]:
    return {
        "overall": run.score.overall(),
        "after_1k": [w.after for w in run.score.around(drifts, 1000)],
        "after_5k": [w.after for w in run.score.around(drifts, 5000)],
        "before_1k": [w.before for w in run.score.around(drifts, 1000)],
        "events_per_s": run.events_per_s,
        "detected_drifts": run.detected,
        **run.counters,
    }


# -- key staleness --------------------------------------------------------------------------------
def key_staleness(settings: Settings, batches: Sequence[Batch]) -> dict[str, Any]:
    """cos(h_t, h_{t−a}) of a fixed probe batch (the stream's first micro-batch), encoded each
    step with the current encoder and model: how stale a key of age a steps is."""
    preq = Prequential.from_settings(settings)
    probe_columns = batches[0][0]
    hidden: list[torch.Tensor] = []
    for columns, ys in batches:
        preq.process_columns(columns, ys)
        feats = preq.encoder.encode_columns(probe_columns)
        z = preq.encoder.standardize(feats.num)
        _, h = preq.learner.predict_hidden(z, feats.cat)
        hidden.append(F.normalize(torch.from_numpy(h), dim=1))
    stacked = torch.stack(hidden)  # [steps, probe, H]
    size = settings.source.batch_size
    drift_steps = [d // size for d in preq.drifts]
    out: dict[str, Any] = {"ages": list(PROBE_AGES), "mean": [], "after_drift": [], "min": []}
    for age in PROBE_AGES:
        cos = (stacked[age:] * stacked[:-age]).sum(-1).mean(-1).numpy()  # step t = i + age
        steps = np.arange(age, len(stacked))
        near = np.zeros(len(steps), dtype=bool)
        for d in drift_steps:
            near |= (steps >= d) & (steps < d + AFTER_DRIFT_STEPS)
        out["mean"].append(float(cos.mean()))
        out["after_drift"].append(float(cos[near].mean()) if near.any() else float("nan"))
        out["min"].append(float(cos.min()))
    return out


# -- driver ---------------------------------------------------------------------------------------
def compare(
    stream: str,
    args: argparse.Namespace,
    batches: Sequence[Batch],
    memory: Mapping[str, Any],
    repeats: int,
) -> tuple[Run, Run]:
    """(off, on) runs in lockstep; the timing is the fastest of ``repeats`` such passes."""
    off_settings = memory_settings(stream, args.events, args.seed, {"enabled": False})
    on_settings = memory_settings(stream, args.events, args.seed, {**memory, "enabled": True})
    best: tuple[Run, Run] | None = None
    for _ in range(repeats):
        off, on = run_lockstep([off_settings, on_settings], batches)
        if best is None or off.seconds + on.seconds < best[0].seconds + best[1].seconds:
            best = (off, on)
    assert best is not None
    return best


def variant_row(
    results: Mapping[str, Mapping[str, Any]], off: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"streams": {}}
    costs = []
    for name, on in results.items():
        base = off[name]
        d1k = np.array(on["after_1k"]) - np.array(base["after_1k"])
        d5k = np.array(on["after_5k"]) - np.array(base["after_5k"])
        out["streams"][name] = {
            "d1k": float(d1k.mean()),
            "d1k_min": float(d1k.min()),
            "d5k": float(d5k.mean()),
            "doverall": on["overall"] - base["overall"],
            "on": on,
        }
        costs.append(1 - on["events_per_s"] / base["events_per_s"])
    out["cost"] = float(np.mean(costs))
    return out


def targets(streams: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = []
    for name, s in streams.items():
        off, on = s["off"], s["on"]
        gains = np.array(on["after_1k"]) - np.array(off["after_1k"])
        ok = gains >= TARGET_GAIN_1K
        cost = 1 - on["events_per_s"] / off["events_per_s"]
        lines.append(
            f"{name}: ≥ +3 points in the first 1,000 events after each drift: "
            f"{'met' if ok.all() else 'MISSED'} ({', '.join(pts(g) for g in gains)}); "
            f"no worse overall: {'met' if on['overall'] >= off['overall'] else 'MISSED'} "
            f"({pts(on['overall'] - off['overall'])}); cost < 15 %: "
            f"{'met' if cost < TARGET_COST else 'MISSED'} ({100 * cost:.1f} %)"
        )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = stream_parser(
        "python benchmarks/error_memory.py", __doc__ or "", list(STREAMS), DEFAULT_STREAMS
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="lockstep off/on passes for the main timing, fastest kept (default 2)",
    )
    p.add_argument(
        "--variant-repeats",
        type=int,
        default=1,
        help="lockstep off/variant passes per variant for its cost, fastest kept (default 1)",
    )
    p.add_argument(
        "--variants",
        nargs="*",
        choices=sorted(VARIANTS),
        default=list(VARIANTS),
        metavar="VARIANT",
        help="variants for the tuning table (default: all; none: pass the flag alone). "
        "Known: " + ", ".join(VARIANTS),
    )
    p.add_argument(
        "--check-seeds",
        nargs="*",
        type=int,
        default=[43, 44],
        metavar="SEED",
        help="further stream/model seeds for the default on vs off, accuracy only (default 43 44)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for error_memory.md/.json/.png (default benchmarks/results)",
    )
    args = p.parse_args(argv)
    if args.events < 1000:
        p.error("--events must be at least 1000")
    if args.repeats < 1 or args.variant_repeats < 1:
        p.error("--repeats and --variant-repeats must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    default_memory = MemorySettings().model_dump(mode="json")
    streams: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, Any]] = {}
    inputs: dict[str, list[Batch]] = {}
    window = 250
    for stream in args.streams:
        drifts = STREAMS[stream].drift_positions(args.events)
        batches = column_batches(stream, args.events, args.seed, Settings().source.batch_size)
        inputs[stream] = batches
        off, on = compare(stream, args, batches, {}, args.repeats)
        streams[stream] = {
            "description": STREAMS[stream].description,
            "drifts": drifts,
            "off": summarise(off, drifts),
            "on": summarise(on, drifts),
            "staleness": key_staleness(
                memory_settings(stream, args.events, args.seed, {"enabled": True}), batches
            ),
        }
        curves[stream] = {
            "drifts": drifts,
            "off": off.score.curve(window),
            "on": on.score.curve(window),
        }
        s = streams[stream]
        print(
            f"{stream:<14} overall {fmt_float(s['off']['overall'], 4)} → "
            f"{fmt_float(s['on']['overall'], 4)}  1k after drifts "
            f"{[round(v, 3) for v in s['off']['after_1k']]} → "
            f"{[round(v, 3) for v in s['on']['after_1k']]}  events/s "
            f"{fmt_rate(s['off']['events_per_s'])} → {fmt_rate(s['on']['events_per_s'])}",
            flush=True,
        )
    variants: dict[str, Any] = {}
    for key in args.variants:
        change, overrides = VARIANTS[key]
        results, base = {}, {}
        for stream in args.streams:
            drifts = streams[stream]["drifts"]
            off, on = compare(stream, args, inputs[stream], overrides, args.variant_repeats)
            results[stream], base[stream] = summarise(on, drifts), summarise(off, drifts)
        variants[key] = {"change": change, "overrides": overrides, **variant_row(results, base)}
        row = variants[key]["streams"]
        print(
            f"  variant {key:<22} "
            + "  ".join(
                f"{n}: Δ1k {pts(r['d1k'])} (min {pts(r['d1k_min'])}) Δov {pts(r['doverall'])}"
                for n, r in row.items()
            )
            + f"  cost {100 * variants[key]['cost']:.0f} %",
            flush=True,
        )
    robustness: list[dict[str, Any]] = []
    for seed in args.check_seeds:
        for stream in args.streams:
            drifts = STREAMS[stream].drift_positions(args.events)
            size = Settings().source.batch_size
            batches = column_batches(stream, args.events, seed, size)
            row: dict[str, Any] = {"seed": seed, "stream": stream}
            off, on = run_lockstep(
                [
                    memory_settings(stream, args.events, seed, {"enabled": False}),
                    memory_settings(stream, args.events, seed, {"enabled": True}),
                ],
                batches,
            )
            row["off"], row["on"] = summarise(off, drifts), summarise(on, drifts)
            robustness.append(row)
            gains = np.array(row["on"]["after_1k"]) - np.array(row["off"]["after_1k"])
            print(
                f"  seed {seed} {stream:<14} Δ1k {[pts(g) for g in gains]} "
                f"Δ overall {pts(row['on']['overall'] - row['off']['overall'])}",
                flush=True,
            )
    data = {
        "command": command_line(),
        "started": started.isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - clock,
        "load_average": load,
        "machine": machine_info(),
        "seed": args.seed,
        "events": args.events,
        "repeats": args.repeats,
        "variant_repeats": args.variant_repeats,
        "memory_settings": {k: v for k, v in default_memory.items() if k != "enabled"},
        "streams": streams,
        "targets": targets(streams),
        "variants": variants,
        "robustness": robustness,
        "notes": NOTES,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "error_memory.json", data)
    plot(args.out / "error_memory.png", curves, window)
    (args.out / "error_memory.md").write_text(render(data), encoding="utf-8")
    print(f"wrote {args.out / 'error_memory.md'}, .json, .png")
    return 0


NOTES: list[str] = [
    "The memory never feeds back into training and the drift detector watches the base "
    "model's loss, so on and off share one base model: differences are the compensation alone.",
    "sea-drift has 10 % label noise, so no predictor beats about 0.90 there; where the base "
    "model loses little at a drift (its 1k-after accuracy within a few points of 0.90), a "
    "3-point gain in that window is out of reach for any compensation.",
    "Cost: on CPU the compiled kernel (memory.c) selects the top k by branch-free "
    "passes (k ≤ 16): a data-dependent selection by insertion or torch.topk measures several "
    "times faster in a micro-benchmark that repeats one input than in the stream (the branch "
    "predictor learns the input), so the table times it inside the stream. k = 0 (softmax over "
    "every stored sample) needs no selection and is the cheapest read; LSH does more small "
    "operations per batch than a 128-row top-k and is slower here.",
    "store = errors keeps only mistakes, so the neighbours' labels disagree with the model "
    "by construction and the compensation flips correct predictions: harmful at λ = 1 (the "
    "default when it was measured).",
    "Tuning was done on seed 42; the other-seeds table checks the chosen default on unseen "
    "seeds. The base model's own settings (learner section) are the project defaults at the "
    "time of the run, so these numbers move when those change: rerun the command above.",
]


if __name__ == "__main__":
    raise SystemExit(main())
