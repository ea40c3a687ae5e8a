"""Smoke test of benchmarks/suite_speed.py: two short real data sets (classification and
regression, young throughout) and a generated stream that outlasts the fast start, two rounds;
checks the tables, the verdicts' and the fast start's figures in the JSON, and the plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmark_run import ROOT, run_benchmark

STREAMS = ("phishing", "chick-weights", "sea-gradual")
EVENTS = 3000  # the defaults' fast start: the first 64 × 32 = 2,048 events


def test_times_both_models_in_turns_and_judges_each_stream(tmp_path: Path) -> None:
    run_benchmark(
        "suite_speed.py", "--streams", *STREAMS, "--events", str(EVENTS), "--rounds", "2",
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
        fast, share = entry["fast_start_seconds"], entry["fast_start_share"]
        assert all(0 < f <= s for f, s in zip(fast, entry["seconds"], strict=True))
        assert min(f / s for f, s in zip(fast, entry["seconds"], strict=True)) <= share <= 1
    for stream in ("phishing", "chick-weights"):  # young from the first event to the last
        entry = runs[stream]
        assert entry["fast_start_events"] == [entry["events"]] * 2
        assert entry["ratios_after_fast_start"] == []
    generated = runs["sea-gradual"]
    assert generated["events"] == EVENTS and generated["fast_start_events"] == [2048] * 2
    assert len(generated["ratios_after_fast_start"]) == 2
    assert "## Where streamlearn's time goes: the fast start" in markdown
    assert any(
        line.startswith("| sea-gradual ") and "2,048 of 3,000" in line
        for line in markdown.splitlines()
    )
    assert runs["chick-weights"]["peer"] == "river StandardScaler | LinearRegression"
    assert runs["phishing"]["peer"] == "river StandardScaler | LogisticRegression"
    assert (tmp_path / "suite_speed.png").read_bytes().startswith(b"\x89PNG")


def test_with_holds_a_setting_in_streamlearns_runs_and_names_it(tmp_path: Path) -> None:
    run_benchmark(
        "suite_speed.py", "--streams", "sea-gradual", "--events", "1000", "--rounds", "1",
        "--seed", "5", "--out", str(tmp_path), "--no-progress", "--with", "learner.fast_start=4",
    )  # fmt: skip
    result = json.loads((tmp_path / "suite_speed.json").read_text())
    assert result["meta"]["with"] == {"learner.fast_start": 4}
    # young while fewer than fast_start × batch (4 × 32) events were learned
    assert result["streams"]["sea-gradual"]["fast_start_events"] == [128]
    markdown = (tmp_path / "suite_speed.md").read_text(encoding="utf-8")
    assert "benchmarks/suite.py, with learner.fast_start = 4 (--with)." in markdown


def test_with_refuses_an_unknown_or_invalid_setting(tmp_path: Path) -> None:
    for held, message in (
        ("learner.no_such_key=1", "no such setting"),
        ("learner.fast_start=-1", "greater than or equal to 0"),
        ("learner.fast_start", "give SECTION.KEY=VALUE"),
    ):
        command = [
            sys.executable, str(ROOT / "benchmarks" / "suite_speed.py"), "--streams",
            "chick-weights", "--rounds", "1", "--out", str(tmp_path), "--no-progress",
            "--with", held,
        ]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
        assert not (tmp_path / "suite_speed.md").exists()
