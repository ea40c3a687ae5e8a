"""Smoke test of benchmarks/gpu_throughput.py on whatever this machine has (CPU settings only
without CUDA): a small grid, short cells, and the default settings' runs.

Runs the real command line in a subprocess and checks the markdown, the JSON and the plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from benchmark_run import run_benchmark


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gpu-throughput-bench")
    run_benchmark(
        "gpu_throughput.py", "--widths", "16", "256", "--batches", "64", "256",
        "--events", "2048", "--seconds", "1", "--default-events", "1500", "--no-progress",
        "--out", str(out),
    )  # fmt: skip
    return out


def test_writes_markdown_json_and_plot(out: Path) -> None:
    markdown = (out / "gpu_throughput.md").read_text(encoding="utf-8")
    assert "## The default settings on each device" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| width"))
    assert "cuda ÷ best cpu" in header and "auto takes" in header
    png = (out / "gpu_throughput.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000


def test_cells_cover_the_grid_and_the_devices_agree(out: Path) -> None:
    data = json.loads((out / "gpu_throughput.json").read_text(encoding="utf-8"))
    computes = {"cpu", "cpu-compiled", "cpu-torch", "cpu-threads"} | (
        {"cuda"} if torch.cuda.is_available() else set()
    )
    cells = {(c["compute"], c["width"], c["batch"]) for c in data["grid"]}
    assert cells == {(c, w, b) for c in computes for w in (16, 256) for b in (64, 256)}
    for cell in data["grid"]:
        assert cell["events"] >= cell["batch"] and cell["events_per_s"] > 0
        assert 0.0 <= cell["accuracy"] <= 1.0
    # learner.kernel auto: the compiled step for a small model, torch ops for a large one
    kernels = {(c["compute"], c["width"]): c["kernel"] for c in data["grid"]}
    assert kernels[("cpu", 16)] == kernels[("cpu-compiled", 256)] == "compiled"
    assert kernels[("cpu", 256)] == kernels[("cpu-threads", 256)] == "torch"
    assert kernels[("cpu-torch", 16)] == "torch"
    defaults = {c["compute"]: c for c in data["defaults"]}
    assert {"auto", "cpu"} <= set(defaults)
    assert defaults["auto"]["device"] == "cpu"  # the default model is too small for a GPU
    # the same rows, the same seed, the same device: the same predictions
    assert defaults["auto"]["accuracy"] == defaults["cpu"]["accuracy"]
    assert all(c["events"] == 1500 for c in data["defaults"])
