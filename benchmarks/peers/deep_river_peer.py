"""The deep-river peer, driven from the main benchmark through its own virtual environment.

deep-river 0.3.4 pins torch<2.6 and river<0.26, so it lives in ``benchmarks/.venv-deep-river``
(made by ``benchmarks/setup_peers.sh``). This module writes the already-generated stream to a
JSONL file, runs ``deep_river_runner.py`` with the venv's python, and turns its JSON reply into
a :class:`report.ModelRun`. A missing venv or a failing runner is reported, never raised.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report import ModelRun, score_from_errors, score_from_hits

__all__ = ["KEY", "NAME", "DeepRiverPeer", "PeerUnavailable"]

KEY = "deep-river"
NAME = "deep-river MLP"
BENCH_DIR = Path(__file__).resolve().parents[1]
VENV = BENCH_DIR / ".venv-deep-river"
RUNNER = Path(__file__).resolve().with_name("deep_river_runner.py")
SETUP_HINT = "create it with `bash benchmarks/setup_peers.sh`"

Row = tuple[dict[str, Any], Hashable]


class PeerUnavailable(Exception):
    """The peer could not run; the message says why and what to do."""


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


@dataclass
class DeepRiverPeer:
    """Runs deep-river's MLP (classifier, or regressor with ``regression``) in its venv on rows
    it is given."""

    venv: Path = VENV
    seed: int = 42
    regression: bool = False
    progress: bool = True
    timeout_s: float = 3600.0

    def check(self) -> None:
        """Raise :class:`PeerUnavailable` when the venv is not there."""
        if not _venv_python(self.venv).exists():
            raise PeerUnavailable(
                f"deep-river skipped: no virtual environment at {self._rel()}; {SETUP_HINT}"
            )

    def _rel(self) -> str:
        try:
            return str(self.venv.relative_to(Path.cwd()))
        except ValueError:
            return str(self.venv)

    def run(self, rows: Sequence[Row]) -> ModelRun:
        """Prequential run on ``rows``; :class:`PeerUnavailable` if the venv or runner fails."""
        self.check()
        with tempfile.TemporaryDirectory(prefix="streamlearn-bench-") as tmp:
            data = Path(tmp) / "stream.jsonl"
            write_jsonl(data, rows)
            reply = self._call(data)
        hits = reply["errors" if self.regression else "hits"]
        if len(hits) != len(rows):
            raise PeerUnavailable(f"deep-river runner scored {len(hits)} of {len(rows)} events")
        params = reply.get("params", {})
        mlp = (
            f"MultiLayerPerceptron(n_width={params.get('width')}, "
            f"n_layers={params.get('layers')}, optimizer={params.get('optimizer')}, "
            f"lr={params.get('lr')})"
        )
        notes = [
            f"deep-river {reply['versions']['deep-river']} (torch {reply['versions']['torch']}, "
            f"river {reply['versions']['river']}) in its own venv: StandardScaler | "
            f"{f'TargetStandardScaler({mlp})' if self.regression else mlp}, "
            f"{params.get('threads')} torch thread(s), one event at a time"
        ]
        extra = {"versions": reply["versions"], "params": params}
        score = score_from_errors(hits) if self.regression else score_from_hits(hits)
        return ModelRun(KEY, NAME, score, float(reply["seconds"]), notes, extra)

    def _call(self, data: Path) -> dict[str, Any]:
        command = [str(_venv_python(self.venv)), str(RUNNER), "--data", str(data)]
        command += ["--seed", str(self.seed)] + ([] if self.progress else ["--no-progress"])
        command += ["--task", "regression" if self.regression else "classification"]
        try:
            done = subprocess.run(
                command,
                stdout=subprocess.PIPE,
                stderr=None if self.progress else subprocess.PIPE,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(f"deep-river runner did not finish: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or "").strip().splitlines()[-5:]
            raise PeerUnavailable(
                f"deep-river runner exited with {done.returncode}: {' / '.join(tail)}"
            )
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError) as exc:
            raise PeerUnavailable(f"deep-river runner printed no JSON result: {exc}") from exc


def write_jsonl(path: Path, rows: Sequence[Row]) -> Path:
    """One ``{"x": {...}, "y": ...}`` object per line; bools, ints and floats keep their type."""
    with path.open("w", encoding="utf-8") as fh:
        for x, y in rows:
            fh.write(json.dumps({"x": x, "y": y}, default=_plain) + "\n")
    return path


def _plain(value: Any) -> Any:
    """numpy scalars (some river streams yield them) as plain Python values."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSONL")
