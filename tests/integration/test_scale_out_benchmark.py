"""Smoke test of benchmarks/scale_out.py: 1 rank and 2 gloo ranks on a short stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_both_batch_settings_report_accuracy_throughput_bytes_and_the_projection(
    tmp_path: Path,
) -> None:
    command = [
        sys.executable, str(ROOT / "benchmarks" / "scale_out.py"), "--events", "800",
        "--streams", "sea-drift", "--seeds", "0", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "scale_out.json").read_text())["results"][0]
    runs = (("two_ranks_global_batch", 32), ("two_ranks_per_rank_batch", 64),
            ("two_ranks_per_rank_batch_more_updates", 64))  # fmt: skip
    for key, events_per_round in runs:
        averaged = result[key]
        assert 0.5 < averaged["accuracy"] <= 1 and averaged["events_per_s"] > 0
        assert averaged["collective_bytes_per_s"] > 0
        assert averaged["turns"] == -(-800 // events_per_round)  # rounds of 32 or 64 events
    assert {(p["ranks"], p["link_gbps"]) for p in result["projection"]} == {
        (n, g) for n in (8, 64, 256) for g in (10, 100, 400)
    }
    text = (tmp_path / "scale_out.md").read_text()
    assert "## Projection to GPU ranks" in text and "twice learner.updates" in text
