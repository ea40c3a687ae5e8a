"""Smoke test of benchmarks/setting_sweep.py: one numeric and one regression stream, one seed,
the periodic inputs off and on; checks the tables, the JSON's per-seed costs and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_run import run_benchmark

STREAMS = ("sine-abrupt", "chick-weights")


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    run_benchmark(
        "setting_sweep.py", "features.periodic", "0", "4", "--events", "2000", "--seeds", "5",
        "--streams", *STREAMS, "--out", str(out), "--no-progress",
    )  # fmt: skip
    return out


def test_reports_gain_steps_and_time_against_the_reference(out: Path) -> None:
    markdown = (out / "sweep-features-periodic.md").read_text(encoding="utf-8")
    assert "## Against features.periodic = 0" in markdown
    assert "seconds in the chain's calls, × reference" in markdown
    for stream in STREAMS:
        assert f"| {stream} " in markdown
    runs = json.loads((out / "sweep-features-periodic.json").read_text())["streams"]
    assert set(runs) == set(STREAMS)
    for entry in runs.values():
        for value in ("0", "4"):
            scores = entry[value]
            assert len(scores["seconds"]) == len(scores["steps"]) == 1
            assert scores["seconds"][0] > 0 and scores["steps"][0] > 0
    # the periodic features change what sine-abrupt's model predicts
    assert runs["sine-abrupt"]["0"]["overall"] != runs["sine-abrupt"]["4"]["overall"]
    png = (out / "sweep-features-periodic.png").read_bytes()
    assert png.startswith(b"\x89PNG")
