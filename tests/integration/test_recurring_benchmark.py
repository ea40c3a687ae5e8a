"""Smoke test of benchmarks/recurring.py: the expert pool on vs off, short streams, one seed.

Runs the real command line in a subprocess on 8,000 events of agrawal-recurring and 2,000 of
one other stream, and checks the markdown, the JSON and the plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_run import run_benchmark


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recurring-bench")
    run_benchmark(
        "recurring.py", "--events", "8000", "--seeds", "7",
        "--check-streams", "sea-drift", "--check-events", "2000", "--margins", "0.25", "0.5",
        "--out", str(out),
    )  # fmt: skip
    return out


def test_writes_markdown_json_and_plot(out: Path) -> None:
    markdown = (out / "recurring.md").read_text(encoding="utf-8")
    for section in ("## agrawal-recurring: returns", "## Every stream", "## Targets"):
        assert section in markdown
    assert "Command: `python benchmarks/recurring.py --events 8000" in markdown
    png = (out / "recurring.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_numbers_are_sane(out: Path) -> None:
    data = json.loads((out / "recurring.json").read_text(encoding="utf-8"))
    (table,) = data["recurring"]
    assert [r["position"] for r in table["returns"]] == [4000, 6000]
    assert [r["switches"] for r in table["runs"]["on"]] == [2]
    assert [r["switches"] for r in table["runs"]["off"]] == [0]
    for ret in table["returns"]:
        (on,), (off,) = ret["on"], ret["off"]
        assert on["after_500"] > off["after_500"]
        assert 0.0 <= on["earlier"] <= 1.0
    assert [(r["stream"], r["margin"]) for r in data["check"]] == [
        ("sea-drift", 0.25),
        ("sea-drift", 0.5),
    ]
