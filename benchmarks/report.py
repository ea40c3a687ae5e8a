"""Generic helpers for benchmark reports: model runs, markdown tables, plots, machine info.

Shared by the benchmarks in this folder (import it as ``from report import ...``: a benchmark
run as ``python benchmarks/<name>.py`` has this folder on ``sys.path``). Nothing here knows
which benchmark it serves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np

from streamlearn.core.evaluation import PrequentialScore

__all__ = [
    "ModelRun",
    "RunStart",
    "add_skip_option",
    "command_line",
    "fmt_float",
    "fmt_rate",
    "load_average",
    "machine_info",
    "markdown_table",
    "plot_curves",
    "rolling_window",
    "score_from_errors",
    "score_from_hits",
    "write_json",
]


@dataclass
class ModelRun:
    """One model on one stream: its per-event prequential score and the seconds it worked."""

    key: str  # stable id used in JSON ("river-lr")
    name: str  # what the table shows
    score: PrequentialScore
    seconds: float  # time spent in the model's own calls only
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping in JSON

    @property
    def events(self) -> int:
        return len(self.score)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def score_from_hits(hits: Sequence[bool] | np.ndarray) -> PrequentialScore:
    """A PrequentialScore holding given per-event hits (1 = correct prediction).

    Peers that predict labels rather than streamlearn's probability rows are scored by their
    own ``prediction == y``; this wraps those hits so every model is summarised by the same
    code (``overall``, ``curve``, ``around``).

    >>> score_from_hits([True, False, True, True]).overall()
    0.75
    """
    h = np.asarray(hits, dtype=np.float32).reshape(-1, 1)
    score = PrequentialScore()
    if len(h):
        score.update(h, [1] * len(h), classes=[1])  # one class, predicted exactly on the hits
    return score


def score_from_errors(errors: Sequence[float] | np.ndarray) -> PrequentialScore:
    """A regression PrequentialScore holding given per-event absolute errors (a peer's).

    >>> score_from_errors([1.0, 3.0]).overall()
    2.0
    """
    score = PrequentialScore(regression=True)
    e = np.asarray(errors, dtype=np.float64)
    if len(e):
        score.update(e, [0.0] * len(e))  # |e - 0| is the error itself
    return score


def rolling_window(n_events: int, preferred: int = 1000) -> int:
    """A rolling-curve window: ``preferred`` on long runs, a tenth of the run on short ones."""
    return max(10, min(preferred, n_events // 10))


# -- formatting ---------------------------------------------------------------------------------
def fmt_float(value: float | None, digits: int = 3) -> str:
    """``0.912`` style; an em dash for a missing or NaN value."""
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def fmt_rate(value: float | None) -> str:
    """Events per second with thousands separators (``12,345``); ratios below 100 keep 1 digit."""
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None
) -> str:
    """A GitHub markdown table; ``align`` is one of ``l``/``r``/``c`` per column (default: the
    first column left, the rest right). Pipes inside cells are escaped.

    >>> print(markdown_table(["model", "acc"], [["a", "0.9"]]))
    | model | acc |
    |:------|----:|
    | a     | 0.9 |
    """
    cells = [[_cell(h) for h in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    rules = {
        "l": lambda w: ":" + "-" * (w - 1),
        "r": lambda w: "-" * (w - 1) + ":",
        "c": lambda w: ":" + "-" * max(w - 2, 1) + ":",
    }

    def line(row: Sequence[str]) -> str:
        padded = [
            c.ljust(w) if a == "l" else c.rjust(w) if a == "r" else c.center(w)
            for c, w, a in zip(row, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(rules[a](w + 2) for a, w in zip(align, widths, strict=True)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


# -- plotting -----------------------------------------------------------------------------------
def plot_curves(
    path: Path,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str,
    ylabel: str = "accuracy",
    xlabel: str = "events",
    vlines: Sequence[int] = (),
    vline_label: str = "drift",
    highlight: Sequence[str] = (),
    dashed: Sequence[str] = (),
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Write one PNG with a line per named curve ``(x, y)`` and dashed vertical markers.

    Names in ``highlight`` are drawn thicker and on top (e.g. the system under test); names in
    ``dashed`` are drawn dashed (e.g. a variant that may lie on top of another curve); ``ylim``
    bounds the y axis (curves beyond it leave the plot).
    """
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=110)
    for name, (x, y) in curves.items():
        strong = name in highlight
        ax.plot(
            x,
            y,
            label=name,
            linewidth=2.2 if strong else 1.1,
            linestyle="--" if name in dashed else "-",
            zorder=4 if name in dashed else 3 if strong else 2,
        )
    for i, pos in enumerate(vlines):
        ax.axvline(
            pos,
            color="black",
            linestyle="--",
            linewidth=0.9,
            alpha=0.7,
            label=vline_label if i == 0 else None,
        )
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# -- provenance ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    """The CPU's model name, with its family, model and widest vector extension: a cloud
    machine's name ("AMD EPYC") alone does not tell two generations apart, and timings and
    torch's rounding (benchmarks/equivalence.py) differ between them."""
    try:
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor's block is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        return platform.processor() or platform.machine()
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    detail = (
        [f"family {fields['cpu family']} model {fields['model']}"] if "cpu family" in fields else []
    )
    detail += [vector] if vector else []
    return ", ".join([fields["model name"], *detail])


def machine_info() -> dict[str, Any]:
    """CPU, OS and library versions, for the header of a results file."""
    import river
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "river": river.__version__,
    }


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): other work skews timings."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


@dataclass(frozen=True)
class RunStart:
    """When a benchmark run started and the machine's load then, for its results' header."""

    started: datetime
    load: float | None

    @classmethod
    def now(cls) -> RunStart:
        return cls(datetime.now(timezone.utc), load_average())

    def meta(self, command: str, **fields: Any) -> dict[str, Any]:
        """The header every results file carries: ``command``, the start, the seconds since,
        ``fields``, the machine and the load average at the start and now."""
        return {
            "command": command,
            "started": self.started.isoformat(timespec="seconds"),
            "seconds": round((datetime.now(timezone.utc) - self.started).total_seconds(), 1),
            **fields,
            "machine": machine_info(),
            "load_average_1m": {"start": self.load, "end": load_average()},
        }


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this process, with the script path relative to the working dir."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        script = Path(argv[0])
        if script.is_absolute() and script.is_relative_to(Path.cwd()):
            argv[0] = str(script.relative_to(Path.cwd()))
    return shlex.join(["python", *argv])


def write_json(path: Path, data: Any) -> Path:
    """Pretty JSON with NaN written as null (strict JSON readers reject NaN)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def add_skip_option(p: argparse.ArgumentParser, skippable: Sequence[str]) -> None:
    """``--skip-peers NAME[,NAME...]``: models to leave out, each one of ``skippable``."""

    def names(text: str) -> set[str]:
        chosen = {s.strip() for s in text.split(",") if s.strip()}
        unknown = chosen - set(skippable)
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown model(s) {', '.join(sorted(unknown))}; choose from {', '.join(skippable)}"
            )
        return chosen

    p.add_argument(
        "--skip-peers",
        type=names,
        default=set(),
        metavar="NAME[,NAME...]",
        help=f"models to leave out, comma-separated: {', '.join(skippable)}",
    )


def doc_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """An argument parser whose --help is the script's docstring: its first paragraph as the
    description, the rest (layout kept) as the epilog."""
    return argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def stream_parser(
    prog: str,
    doc: str,
    streams: Sequence[str],
    default_streams: Sequence[str],
    several_seeds: bool = False,
) -> argparse.ArgumentParser:
    """An argument parser with the options every stream benchmark shares (``several_seeds``:
    --seed takes one or more, as a list)."""
    p = doc_parser(prog, doc)
    p.add_argument("--events", type=int, default=30_000, help="events per stream (default 30000)")
    if several_seeds:
        p.add_argument(
            "--seed",
            type=int,
            nargs="+",
            default=[42],
            metavar="SEED",
            help="stream and model seed; several: every stream at each, judged on the means "
            "(default 42)",
        )
    else:
        p.add_argument("--seed", type=int, default=42, help="stream and model seed (default 42)")
    p.add_argument(
        "--streams",
        nargs="+",
        choices=sorted(streams),
        default=list(default_streams),
        metavar="STREAM",
        help=f"streams to run (default: {' '.join(default_streams)})",
    )
    return p
