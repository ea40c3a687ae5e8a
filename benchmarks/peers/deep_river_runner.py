"""Run deep-river's MLP prequentially on a JSONL stream; print the result as JSON.

This script runs under ``benchmarks/.venv-deep-river/bin/python`` (deep-river 0.3.4 pins
torch<2.6 and river<0.26, so it cannot share the project's environment). It imports neither
streamlearn nor anything else from this repository. The main benchmark writes the stream it
already generated to a JSONL file (one ``{"x": {...}, "y": ...}`` per line) so every model sees
the identical events; this script never regenerates the stream with the venv's older river.

The model is ``preprocessing.StandardScaler() | deep_river.classification.MultiLayerPerceptron``
(raw features such as Agrawal's salary in the 1e5 range would swamp an unscaled MLP; deep-river's
own examples put a StandardScaler in front). With ``--task regression`` it is
``StandardScaler() | TargetStandardScaler(deep_river.regression.MultiLayerPerceptron)``. String
features, which neither reads, are one-hot encoded beside the scaled numbers (the input layer
then grows as values appear). Each event is predicted with ``predict_one`` and then learned with
``learn_one``; only those two calls are timed.

stdout gets one JSON object: ``hits`` (0/1 per event; regression: ``errors``, the absolute error
per event), ``events``, ``seconds``, ``events_per_s``, ``params`` and ``versions``. Progress goes
to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from importlib import metadata
from pathlib import Path
from typing import Any


def _stub_pytest() -> None:
    """deep-river 0.3.4 imports pytest at import time (``deep_river.utils.estimator_checks``)
    without declaring it as a dependency; it is only used inside a test helper, so an empty
    module lets the package import in a venv made with just ``pip install deep-river``."""
    if importlib.util.find_spec("pytest") is None:
        sys.modules["pytest"] = types.ModuleType("pytest")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="JSONL stream: {'x': {...}, 'y': ...}")
    p.add_argument("--seed", type=int, default=42, help="deep-river's (torch) seed")
    p.add_argument("--task", choices=("classification", "regression"), default="classification")
    p.add_argument("--width", type=int, default=64, help="MLP hidden width (n_width)")
    p.add_argument("--layers", type=int, default=2, help="MLP hidden layers (n_layers)")
    p.add_argument("--optimizer", default="adam", help="deep-river optimizer_fn")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p.parse_args(argv)


def _read_rows(path: Path) -> list[tuple[dict[str, Any], Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                event = json.loads(line)
                rows.append((event["x"], event["y"]))
    return rows


def _build(args: argparse.Namespace, n_features: int, categorical: bool) -> Any:
    import numbers

    from river import compose, preprocessing

    common = {
        "n_features": n_features,
        "n_width": args.width,
        "n_layers": args.layers,
        "optimizer_fn": args.optimizer,
        "lr": args.lr,
        "is_feature_incremental": categorical,
        "seed": args.seed,
    }
    if args.task == "regression":
        from deep_river.regression import MultiLayerPerceptron as Regressor

        model: Any = preprocessing.TargetStandardScaler(regressor=Regressor(**common))
    else:
        from deep_river.classification import MultiLayerPerceptron

        # n_init_classes grows as classes appear (is_class_incremental)
        model = MultiLayerPerceptron(n_init_classes=2, is_class_incremental=True, **common)
    if not categorical:
        return preprocessing.StandardScaler() | model
    scaled = compose.SelectType(numbers.Number) | preprocessing.StandardScaler()
    one_hot = compose.SelectType(str) | preprocessing.OneHotEncoder()
    return (scaled + one_hot) | model


def _run(
    model: Any, rows: list[tuple[dict[str, Any], Any]], progress: bool, regression: bool
) -> tuple[list, float]:
    from tqdm import tqdm

    hits: list[int] = []
    seconds = 0.0
    chunk = 500
    with tqdm(
        total=len(rows),
        desc="deep-river MLP",
        unit="ev",
        disable=not progress,
        leave=False,
        file=sys.stderr,
    ) as bar:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            predictions = []
            t0 = time.perf_counter()
            for x, y in part:
                predictions.append(model.predict_one(x))
                model.learn_one(x, y)
            seconds += time.perf_counter() - t0
            pairs = zip(predictions, part, strict=True)
            if regression:
                hits.extend(abs(float(p or 0.0) - float(y)) for p, (_, y) in pairs)
            else:
                hits.extend(int(p is not None and p == y) for p, (_, y) in pairs)
            bar.update(len(part))
    return hits, seconds


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _stub_pytest()
    import torch

    torch.set_num_threads(args.threads)
    # deep-river builds the module (and draws its initial weights) before its constructor
    # calls torch.manual_seed(seed), so its ``seed`` alone does not make a run repeatable.
    torch.manual_seed(args.seed)
    rows = _read_rows(args.data)
    if not rows:
        print("no events in " + str(args.data), file=sys.stderr)
        return 2
    categorical = any(isinstance(v, str) for x, _ in rows[:100] for v in x.values())
    model = _build(args, len(rows[0][0]), categorical)
    regression = args.task == "regression"
    hits, seconds = _run(model, rows, not args.no_progress, regression)
    params = {k: v for k, v in vars(args).items() if k not in ("data", "no_progress")}
    result = {
        "model": type(model).__name__,
        "events": len(hits),
        "seconds": seconds,
        "events_per_s": len(hits) / seconds if seconds > 0 else None,
        "errors" if regression else "hits": hits,
        "params": params,
        "versions": {
            "deep-river": metadata.version("deep-river"),
            "river": metadata.version("river"),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
