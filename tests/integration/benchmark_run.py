"""A benchmark's real command line, run as a user runs it, for the benchmarks' smoke tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str, timeout: float = 300) -> None:
    """``python benchmarks/<script> <args>`` from the repository root; the test fails with the
    end of its stderr where it exits non-zero."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
