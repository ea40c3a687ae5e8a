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
    for key, result in data["results"].items():
        assert result["events_per_s"] > 0
        if key.startswith("memory"):
            assert result["events"] == 640 and "first_batch_s" not in result
        else:  # timed from the end of the first batch (32 events), its wait reported apart
            assert result["events"] == 640 - 32
            assert len(result["first_batch_s"]) == 1 and result["first_batch_s"][0] > 0
            # checkpoints and lag lookups, timed apart, added back at their default cadence
            assert result["stages_s"]["checkpoint"] > 0 and result["stages_s"]["lag"] > 0
            assert 0 < result["loop_ratio"] < result["ratio"]
        # each run against a from-memory run of its own, made right before it
        (reference,) = result["reference_runs"]
        assert result["ratios"] == [result["runs"][0] / reference]
    assert data["results"]["memory"]["reference_runs"] == data["results"]["memory"]["runs"]
    assert "memory (before confluent) ..." in done.stderr
    references = [r for result in data["results"].values() for r in result["reference_runs"]]
    spread = f"took {min(references):,.0f}–{max(references):,.0f} events/s"
    assert spread in markdown
    assert ("**a noisy run**" in markdown) == (max(references) / min(references) > 1.2)
    assert "memory (before memory-predecoded) ..." in done.stderr


def test_kafka_throughput_runs_every_path_with_the_throughput_preset(
    kafka_bootstrap: str, tmp_path: Path
):
    command = [
        sys.executable, str(SCRIPT), "--bootstrap", kafka_bootstrap, "--events", "1024",
        "--repeats", "1", "--clients", "kafka-python,kafka-python-process,confluent",
        "--preset", "throughput",
        "--out", str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stderr[-3000:]
    markdown = (tmp_path / "kafka_throughput.md").read_text(encoding="utf-8")
    assert "Settings: the throughput preset" in markdown and "batch size 256" in markdown
    data = json.loads((tmp_path / "kafka_throughput.json").read_text(encoding="utf-8"))
    assert data["preset"] == "throughput"
    assert data["settings"] == {"batch_size": 256, "updates": 1, "lr": 0.01}
    # the worker's micro-batches are the preset's: timed from the end of its first one
    assert data["results"]["confluent"]["events"] == 1024 - 256
    assert data["results"]["memory"]["events"] == 1024
    assert data["results"]["kafka-python"]["events"] == 1024 - 256
    # kafka-python in a child process: the worker learns the same events through the pipe
    assert data["results"]["kafka-python-process"]["events"] == 1024 - 256
    assert "| Kafka, kafka-python in a child process" in markdown
    # kafka-python's polls on the learning thread and on their own, timed the same way
    assert "## kafka-python's parsing on a thread of its own" in markdown
    for key in ("polled", "polled-thread"):
        assert data["parsing_thread"][key]["events"] == 1024 - 256
        assert data["parsing_thread"][key]["ratio"] > 0
