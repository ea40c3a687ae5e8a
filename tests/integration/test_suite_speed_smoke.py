"""Smoke test of benchmarks/suite_speed.py: a classification and a regression stream, two
rounds; checks the table, the verdicts' inputs in the JSON and the plot."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_run import run_benchmark

STREAMS = ("phishing", "chick-weights")


def test_times_both_models_in_turns_and_judges_each_stream(tmp_path: Path) -> None:
    run_benchmark(
        "suite_speed.py", "--streams", *STREAMS, "--events", "2000", "--rounds", "2",
        "--seed", "5", "--out", str(tmp_path), "--no-progress",
    )  # fmt: skip
    markdown = (tmp_path / "suite_speed.md").read_text(encoding="utf-8")
    assert "## Target: faster than the peer" in markdown
    for stream in STREAMS:
        assert f"| {stream} " in markdown
    runs = json.loads((tmp_path / "suite_speed.json").read_text())["streams"]
    assert set(runs) == set(STREAMS)
    for entry in runs.values():
        assert len(entry["seconds"]) == len(entry["peer_seconds"]) == 2
        assert all(s > 0 for s in entry["seconds"] + entry["peer_seconds"])
        ratios = [p / s for s, p in zip(entry["seconds"], entry["peer_seconds"], strict=True)]
        assert entry["ratios"] == ratios and min(ratios) <= entry["ratio"] <= max(ratios)
        better = (
            entry["value"] <= entry["peer_value"]
            if entry["task"] == "regression"
            else entry["value"] >= entry["peer_value"]
        )
        assert entry["met"] == (entry["ratio"] > 1.0 and better)
    assert runs["chick-weights"]["peer"] == "river StandardScaler | LinearRegression"
    assert runs["phishing"]["peer"] == "river StandardScaler | LogisticRegression"
    assert (tmp_path / "suite_speed.png").read_bytes().startswith(b"\x89PNG")
