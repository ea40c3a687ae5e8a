"""Smoke test of benchmarks/kafka_throughput.py on a few hundred events (the session broker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "kafka_throughput.py"

pytestmark = pytest.mark.timeout(240)


def test_kafka_throughput_writes_table_and_json(kafka_bootstrap: str, tmp_path: Path):
    command = [
        sys.executable, str(SCRIPT), "--bootstrap", kafka_bootstrap, "--events", "640",
        "--repeats", "1", "--clients", "confluent", "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stderr[-3000:]
    markdown = (tmp_path / "kafka_throughput.md").read_text(encoding="utf-8")
    assert "## Machine" in markdown and "## Target" in markdown
    assert "| Kafka, confluent-kafka " in markdown and "| from memory" in markdown
    data = json.loads((tmp_path / "kafka_throughput.json").read_text(encoding="utf-8"))
    assert set(data["results"]) == {"memory", "memory-predecoded", "confluent", "confluent+output"}
    for result in data["results"].values():
        assert result["events"] == 640 and result["events_per_s"] > 0
