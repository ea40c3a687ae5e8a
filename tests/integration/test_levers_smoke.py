"""Smoke test of benchmarks/levers.py: a numeric, a categorical and a regression stream.

Runs the real command line on 3,000 events per stream with the weights' moving average at
decay 0 (it then equals the live weights, so that lever must score exactly as the defaults)
and checks the tables, the JSON, the plot and the periodic inputs' k per stream.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from benchmark_run import run_benchmark

STREAMS = ("sine-abrupt", "stagger-recurring", "chick-weights")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("levers")
    run_benchmark(
        "levers.py", "--events", "3000", "--seeds", "3", "--streams", *STREAMS,
        "--ema-decay", "0", "--out", str(out), "--no-progress",
    )  # fmt: skip
    return out


def test_writes_tables_json_and_plot(out: Path) -> None:
    markdown = (out / "levers.md").read_text(encoding="utf-8")
    for section in ("## Against the defaults", "## Per stream", "![levers](levers.png)"):
        assert section in markdown
    assert (out / "levers.png").read_bytes().startswith(b"\x89PNG")
    for stream in STREAMS:
        assert f"| {stream} " in markdown
    runs = json.loads((out / "levers.json").read_text())["runs"]
    assert set(runs) == set(STREAMS)
    for entry in runs.values():
        for key in ("defaults", "two seeds averaged", "periodic inputs", "weights averaged"):
            assert len(entry[key]) == 1 and math.isfinite(entry[key][0])


def test_scores_are_the_streams_own(out: Path) -> None:
    runs = json.loads((out / "levers.json").read_text())["runs"]
    for name in ("sine-abrupt", "stagger-recurring"):
        assert 0.5 < runs[name]["defaults"][0] <= 1.0  # accuracy, better than a coin
    assert runs["chick-weights"]["defaults"][0] > 1.0  # MAE in grams
    # a moving average at decay 0 is the live weights: its lever scores as the defaults
    for entry in runs.values():
        assert entry["weights averaged"] == entry["defaults"]


def test_periodic_inputs_only_for_numeric_features(out: Path) -> None:
    runs = json.loads((out / "levers.json").read_text())["runs"]
    assert runs["sine-abrupt"]["k"] == 4  # two numeric features: all four frequencies fit
    stagger = runs["stagger-recurring"]  # string features only: the rows are unchanged
    assert stagger["k"] == 0 and stagger["periodic inputs"] == stagger["defaults"]
