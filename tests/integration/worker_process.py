"""A worker as its own process (``python -m streamlearn worker --config``), for tests that kill
it with SIGKILL, stop it with SIGTERM and read its checkpoints from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from kafka_tools import unique

# faster failure detection than the other tests: a SIGKILLed member leaves the group only when
# its session times out, and every restart waits for that
GROUP = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 500, "max_poll_interval_ms": 3500}


def write_config(path: Path, bootstrap: str, topic: str, **sections: dict[str, Any]) -> Path:
    """A small CPU worker's YAML config on ``topic``; ``sections`` add to or override keys."""
    config = {
        "kafka": {
            "bootstrap_servers": [bootstrap], "topic": topic, "group_id": unique("group"),
            "dead_letter_topic": None, **GROUP,
        },
        "learner": {"task": "binary", "hidden": [32], "device": "cpu", "seed": 0},
        "features": {"numeric_slots": 8, "categorical_slots": 4, "hash_buckets": 256},
        "drift": {"detector": "loss_deviation", "min_samples": 100, "window": 200},
        "source": {"batch_size": 16},
        "worker": {"max_wait_s": 0.5, "log_every_s": 1},
        "checkpoint": {"dir": str(path.parent / "ckpt"), "every_batches": 10, "every_s": 1},
        "registry": {"kind": "filesystem", "path": str(path.parent / "registry")},
    }  # fmt: skip
    for name, values in sections.items():  # merged into the section, key by key
        config[name] = {**config.get(name, {}), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


class WorkerProcess:
    """``streamlearn worker`` in a subprocess, its log in a file."""

    def __init__(
        self,
        config: Path,
        command: Sequence[str] = ("-m", "streamlearn", "worker"),
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: added to the environment (e.g. a rank's WORLD_SIZE, RANK, MASTER_PORT)."""
        self.log = config.parent / f"worker-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")} | (
            env or {}
        )
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("wb") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, *command, "--config", str(config)],
                stdout=handle, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in self.text():
            assert self.proc.poll() is None, f"worker exited early:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()}"
            time.sleep(0.02)

    def terminate(self, timeout_s: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no handler, no final checkpoint
        self.proc.wait(10)


def newest_state(ckpt: Path) -> dict[str, Any] | None:
    """The newest checkpoint, read without touching the directory (the worker may be live)."""
    for _ in range(20):
        files = sorted(ckpt.glob("ckpt-*.pt"))
        if not files:
            return None
        try:
            return torch.load(files[-1], weights_only=True)
        except FileNotFoundError:  # pruned between listing and reading
            continue
    raise AssertionError("checkpoints keep vanishing")


def seen(state: dict[str, Any] | None) -> int:
    return 0 if state is None else int(state["prequential"]["counters"]["seen"])


def run_to_end(
    config: Path, n: int, command: Sequence[str] = ("-m", "streamlearn", "worker")
) -> dict[str, Any]:
    """Start a worker, wait until its checkpoint holds all n events, SIGTERM it (exit 0)."""
    worker = WorkerProcess(config, command)
    ckpt = config.parent / "ckpt"
    deadline = time.monotonic() + 120
    while seen(newest_state(ckpt)) < n:
        assert worker.proc.poll() is None, worker.text()
        assert time.monotonic() < deadline, worker.text()
        time.sleep(0.1)
    assert worker.terminate() == 0, worker.text()
    state = newest_state(ckpt)
    assert state is not None
    return state
