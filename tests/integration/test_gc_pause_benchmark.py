"""Smoke test of benchmarks/gc_pause.py: both pauses measured in their own processes, and the
loop through the session broker with the heap frozen and not, on a few hundred events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_run import run_benchmark

pytestmark = pytest.mark.timeout(240)


def test_gc_pause_measures_both_roles_and_both_heaps(kafka_bootstrap: str, tmp_path: Path):
    run_benchmark(
        "gc_pause.py", "--bootstrap", kafka_bootstrap, "--clients", "confluent",
        "--events", "640", "--rounds", "1", "--repeats", "1", "--out", str(tmp_path),
        timeout=220,
    )  # fmt: skip
    data = json.loads((tmp_path / "gc_pause.json").read_text(encoding="utf-8"))
    for role in ("worker", "server"):
        pause = data["pause"][role]
        assert pause["before"]["tracked"] > 100_000 and pause["frozen"] > 100_000  # start-up
        assert pause["after"]["tracked"] < pause["before"]["tracked"] // 100
        assert pause["after"]["seconds"] < pause["before"]["seconds"]
    assert set(data["loop"]) == {"confluent", "confluent+output"}
    for states in data["loop"].values():
        for runs in (states["frozen"], states["not frozen"]):
            (run,) = runs
            assert run["events_per_s"] > 0 and len(run["collections"]) == 3
    markdown = (tmp_path / "gc_pause.md").read_text(encoding="utf-8")
    assert "## One full collection after start-up" in markdown and "| confluent+output" in markdown
