"""Behaviour check: fingerprints of whole prequential runs, per stream and kernel backend.

A refactoring that promises "behaviour unchanged" must leave every prediction and every weight
bit for bit the same. This script runs whole benchmark streams through ``Prequential`` with each
backend (``learner.kernel``: ``compiled``, the compiled CPU kernels, and ``torch``) and records,
per run, the sha256 of every prediction and loss in stream order, of the final state (model,
optimizer, replay, encoder, detector, error memory) and the prequential accuracy.

    python benchmarks/equivalence.py --out benchmarks/results/equivalence.json
    python benchmarks/equivalence.py --check benchmarks/results/equivalence.json

``--check`` exits 1 when any fingerprint differs from the reference file's and prints, with
``--arrays DIR`` of both runs, the largest difference of the predictions. Fingerprints depend on
the CPU's instruction set (the compiled kernels' rounding): compare runs of one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from report import machine_info
from timing_runner import row_batches, to_columns
from tqdm import tqdm

from streamlearn.core.prequential import Prequential
from streamlearn.settings import load_settings
from streamlearn.sources.synthetic import STREAMS, stream_rows

DEFAULT_STREAMS = ("agrawal-drift", "sea-drift")
KERNELS = ("compiled", "torch")


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, bytes]]:
    """Every array and scalar of a nested state, as (path, bytes), in a fixed order."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            yield from _leaves(value[key], f"{path}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}/{i}")
    elif isinstance(value, torch.Tensor):
        yield path, value.detach().cpu().contiguous().numpy().tobytes()
    elif isinstance(value, np.ndarray):
        yield path, np.ascontiguousarray(value).tobytes()
    else:
        yield path, repr(value).encode()


def digest_state(state: Mapping[str, Any]) -> str:
    key = hashlib.sha256()
    for path, data in _leaves(state):
        key.update(path.encode())
        key.update(data)
    return key.hexdigest()


def run(stream: str, kernel: str, events: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """One whole prequential run: its fingerprints and its predictions [events, …]."""
    spec = STREAMS[stream]
    settings = load_settings(
        source={"stream": stream, "n_events": events, "seed": seed},
        learner={"task": spec.task, "seed": seed, "kernel": kernel},
    )
    preq = Prequential.from_settings(settings)
    rows = list(stream_rows(stream, events, seed))
    size = settings.source.batch_size
    predictions, losses, hits = [], [], 0
    for batch in tqdm(row_batches(rows, size), desc=f"{stream}/{kernel}", leave=False):
        outcome = preq.process_columns(to_columns(batch), [y for _, y in batch])
        predictions.append(np.asarray(outcome.prediction, dtype=np.float32))
        losses.append(np.asarray(outcome.loss, dtype=np.float64))
        if outcome.prediction.ndim == 2:
            hits += int(
                (outcome.prediction.argmax(axis=1)[outcome.learned] == outcome.target).sum()
            )
    prediction = np.concatenate(predictions)
    fingerprint = {
        "predictions": hashlib.sha256(prediction.tobytes()).hexdigest(),
        "losses": hashlib.sha256(np.concatenate(losses).tobytes()).hexdigest(),
        "state": digest_state(preq.state_dict()),
        "drifts": list(preq.drifts),
        "accuracy": hits / max(preq.seen, 1),
        "backend": preq.backend.name,
    }
    return fingerprint, prediction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/equivalence.py",
        description="Fingerprint whole prequential runs (predictions, losses, final state) per "
        "stream and kernel backend; write them, or check them against a reference file.",
    )
    parser.add_argument("--streams", nargs="+", default=list(DEFAULT_STREAMS), choices=STREAMS)
    parser.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    parser.add_argument("--events", type=int, default=30_000, help="events per stream (30000)")
    parser.add_argument("--seed", type=int, default=42, help="stream and model seed (42)")
    parser.add_argument("--out", type=Path, help="write the fingerprints to this JSON file")
    parser.add_argument("--commit", default="", help="with --out: the commit measured, recorded")
    parser.add_argument("--check", type=Path, help="compare with this reference JSON file")
    parser.add_argument(
        "--arrays", type=Path, help="save each run's predictions as <DIR>/<stream>-<kernel>.npy"
    )
    parser.add_argument(
        "--diff",
        type=Path,
        help="with --check: the reference run's --arrays DIR, to report "
        "the largest prediction difference where fingerprints differ",
    )
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for stream in args.streams:
        for kernel in args.kernels:
            name = f"{stream}/{kernel}"
            results[name], prediction = run(stream, kernel, args.events, args.seed)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
            if args.arrays:
                args.arrays.mkdir(parents=True, exist_ok=True)
                np.save(args.arrays / f"{stream}-{kernel}.npy", prediction)
            if args.diff:
                reference = np.load(args.diff / f"{stream}-{kernel}.npy")
                gap = float(np.max(np.abs(reference - prediction)))
                results[name]["max_prediction_difference"] = gap
                print(f"{name}: largest prediction difference {gap:.3g}")
    if args.out:
        document = {
            "commit": args.commit,
            "machine": machine_info(),
            "events": args.events,
            "seed": args.seed,
            "runs": results,
        }
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if args.check:
        reference = json.loads(args.check.read_text(encoding="utf-8"))["runs"]
        fields = ("predictions", "losses", "state", "drifts")
        differ = [
            f"{name}: {field}"
            for name, run_ in results.items()
            for field in fields
            if name in reference and reference[name][field] != run_[field]
        ]
        missing = [name for name in results if name not in reference]
        for line in differ:
            print(f"DIFFERS {line}")
        for name in missing:
            print(f"no reference for {name}")
        if differ or missing:
            return 1
        print(f"{len(results)} runs bit for bit the same as {args.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
