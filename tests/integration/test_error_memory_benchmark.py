"""Smoke test of benchmarks/error_memory.py: memory on vs off on two short drifting streams.

Runs the real command line in a subprocess on 1,200 events per stream with one variant and no
extra seeds, and checks the markdown, the JSON and the plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_run import run_benchmark


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("memory-bench")
    run_benchmark(
        "error_memory.py", "--events", "1200", "--repeats", "1",
        "--variants", "default", "lsh-8x8", "--check-seeds", "--out", str(out),
    )  # fmt: skip
    return out


def test_writes_markdown_json_and_plot(out: Path) -> None:
    markdown = (out / "error_memory.md").read_text(encoding="utf-8")
    for section in ("## Accuracy after each drift", "## Overall and cost", "## Targets"):
        assert section in markdown
    assert "## Variants tried" in markdown and "| lsh-8x8 " in markdown
    assert "## How fast keys go stale" in markdown
    assert "Command: `python benchmarks/error_memory.py --events 1200" in markdown
    png = (out / "error_memory.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_numbers_are_sane(out: Path) -> None:
    data = json.loads((out / "error_memory.json").read_text(encoding="utf-8"))
    assert set(data["streams"]) == {"agrawal-drift", "sea-drift"}
    for stream in data["streams"].values():
        assert len(stream["drifts"]) in (2, 3)
        for key in ("off", "on"):
            run = stream[key]
            assert 0.0 <= run["overall"] <= 1.0
            assert run["events_per_s"] > 0
            assert len(run["after_1k"]) == len(stream["drifts"])
        # memory on and off train one base model: same detections
        assert stream["on"]["detected_drifts"] == stream["off"]["detected_drifts"]
    assert set(data["variants"]) == {"default", "lsh-8x8"}
    assert data["robustness"] == []
