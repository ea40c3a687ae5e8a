"""Learner throughput on CPU and on CUDA: where a GPU pays, measured in one run on one machine.

The same seeded rows go through Prequential.process_columns on each compute setting, over a
grid of hidden widths (two hidden layers of W units) and micro-batch sizes, with the fast start
off so that every timed event is learned at the grid's batch size. Each cell first learns
--warmup-batches batches untimed (CUDA context, cuBLAS handles, allocator pools), then is timed
until --events events or --seconds seconds, whichever comes first; CUDA work is synchronised
before the clock stops. Ratios between settings are the result: absolute events/s depend on
the machine and its load.

Compute settings:
  cpu          learner.device cpu, the other defaults: one torch thread, learner.kernel auto
               (the compiled C step for a small model, torch ops for a large one)
  cpu-compiled learner.device cpu, learner.kernel compiled: the compiled step at every width
  cpu-torch    learner.device cpu, learner.kernel torch, one thread: torch ops at every width
  cpu-threads  learner.device cpu, learner.kernel torch, learner.threads set to torch's own
               default (every physical core): what a wide model on a CPU should use
  cuda         learner.device cuda (bfloat16 autocast for scoring), when a CUDA device is present

Then the default settings end to end (batch 64, fast start on, --default-events events of the
stream) with learner.device auto and on each device, with the prequential accuracy of each: the
CUDA path must learn what the CPU path learns.

Writes <out>/gpu_throughput<-tag>.md, .json and .png (events/s against batch size, one panel
per width); the machine line names the GPU, if any.

  python benchmarks/gpu_throughput.py                      # the committed grid
  python benchmarks/gpu_throughput.py --widths 64 --batches 64 256 --seconds 2   # a quick look
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from report import (
    command_line,
    doc_parser,
    fmt_float,
    fmt_rate,
    load_average,
    machine_info,
    markdown_table,
    write_json,
)
from timing_runner import Row, kernel_of, row_batches, settings_for, to_columns
from tqdm import tqdm

from streamlearn.core.evaluation import PrequentialScore
from streamlearn.core.learner import learner_device
from streamlearn.core.prequential import Prequential
from streamlearn.sources.synthetic import STREAMS, stream_rows

COMPUTE = {  # name -> learner settings on top of the defaults
    "cpu": {"device": "cpu"},
    "cpu-compiled": {"device": "cpu", "kernel": "compiled"},
    "cpu-torch": {"device": "cpu", "kernel": "torch"},
    # torch's own thread count, read before any learner sets it (threads 0 would keep the last
    # learner's setting)
    "cpu-threads": {"device": "cpu", "kernel": "torch", "threads": torch.get_num_threads()},
    "cuda": {"device": "cuda"},
}
# the default settings' runs: what learner.device auto takes for them, and each device forced
DEFAULT_COMPUTE = {"auto": {}, "cpu": COMPUTE["cpu"], "cuda": COMPUTE["cuda"]}
Batches = list[tuple[dict[str, Any], list[Any]]]  # (columns, labels) per micro-batch


@dataclass
class Cell:
    """One timed run: a compute setting at one width and batch size."""

    compute: str
    width: int
    batch: int
    events: int
    seconds: float
    kernel: str
    device: str
    accuracy: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def as_batches(rows: Sequence[Row], size: int) -> Batches:
    """Rows as micro-batches of column arrays and labels, built once, outside any clock."""
    return [(to_columns(b), [y for _, y in b]) for b in row_batches(rows, size)]


def timed_run(
    stream: str,
    batches: Batches,
    learner: dict[str, Any],
    *,
    warmup_batches: int,
    events: int,
    seconds: float,
    seed: int,
    fast_start: bool = False,
) -> tuple[Prequential, PrequentialScore, int, float]:
    """The learner over ``batches``: the first ``warmup_batches`` untimed, then timed until
    ``events`` events or ``seconds`` seconds; its score over the timed events, their number and
    the seconds they took (CUDA work finished)."""
    batch = len(batches[0][1])
    preset = {"source": {"batch_size": batch}, "learner": dict(learner)}
    if not fast_start:
        preset["learner"]["fast_start"] = 0
    settings = settings_for(stream, sum(len(y) for _, y in batches), seed, preset)
    preq = Prequential.from_settings(settings)
    score = PrequentialScore(regression=settings.learner.task == "regression")
    for columns, labels in batches[:warmup_batches]:
        preq.process_columns(columns, labels)
    device = preq.learner.device
    _sync(device)
    done = 0
    start = time.perf_counter()
    for columns, labels in batches[warmup_batches:]:
        if done >= events or time.perf_counter() - start >= seconds:
            break
        outcome = preq.process_columns(columns, labels)
        done += len(labels)
        paused = time.perf_counter()
        score.update(outcome.prediction, labels, classes=preq.classes())
        start += time.perf_counter() - paused  # scoring outside the clock
    _sync(device)
    return preq, score, done, time.perf_counter() - start


def cell_of(
    compute: str, batch: int, preq: Prequential, score: PrequentialScore, done: int, spent: float
) -> Cell:
    return Cell(
        compute,
        preq.learner.settings.hidden[0],
        batch,
        done,
        spent,
        kernel_of(preq),
        str(preq.learner.device),
        score.overall(),
    )


def run_grid(args: Any, rows: Sequence[Row], computes: Sequence[str], progress: bool) -> list[Cell]:
    cells = []
    prepared = {b: as_batches(rows, b) for b in args.batches}
    grid = [(c, w, b) for w in args.widths for b in args.batches for c in computes]
    for compute, width, batch in tqdm(grid, desc="grid", unit="cell", disable=not progress):
        learner = {**COMPUTE[compute], "hidden": [width, width]}
        cell = cell_of(
            compute,
            batch,
            *timed_run(
                args.stream,
                prepared[batch],
                learner,
                warmup_batches=args.warmup_batches,
                events=args.events,
                seconds=args.seconds,
                seed=args.seed,
            ),
        )
        tqdm.write(
            f"{compute:>11} width {width:>5} batch {batch:>5}: "
            f"{fmt_rate(cell.events_per_s)} events/s ({cell.kernel}, {cell.events} events)"
        )
        cells.append(cell)
    return cells


def run_defaults(args: Any, rows: Sequence[Row], computes: Sequence[str]) -> list[Cell]:
    """The default settings (batch 64, fast start on) over the first --default-events rows."""
    cells = []
    batches = as_batches(rows[: args.default_events], 64)
    for compute in (c for c in DEFAULT_COMPUTE if c in ("auto", *computes)):
        cell = cell_of(
            compute,
            64,
            *timed_run(
                args.stream,
                batches,
                DEFAULT_COMPUTE[compute],
                warmup_batches=0,
                events=args.default_events,
                seconds=float("inf"),
                seed=args.seed,
                fast_start=True,
            ),
        )
        tqdm.write(
            f"defaults on {compute}: {fmt_rate(cell.events_per_s)} events/s, "
            f"accuracy {cell.accuracy:.4f}"
        )
        cells.append(cell)
    return cells


def write_plot(path: Path, cells: Sequence[Cell], widths: Sequence[int]) -> Path:
    """events/s against batch size, log-log, a panel per width and a line per compute."""
    fig, axes = plt.subplots(
        1, len(widths), figsize=(4.2 * len(widths), 4), dpi=110, sharey=True, squeeze=False
    )
    for ax, width in zip(axes[0], widths, strict=True):
        for compute in COMPUTE:
            line = [c for c in cells if c.compute == compute and c.width == width]
            if line:
                ax.plot(
                    [c.batch for c in line], [c.events_per_s for c in line], "o-", label=compute
                )
        ax.set(xscale="log", yscale="log", title=f"hidden {width}×{width}", xlabel="batch size")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("events/s (learned and scored)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def auto_device(stream: str, width: int) -> str:
    """The device learner.device auto takes on this machine for the grid's model of ``width``."""
    settings = settings_for(stream, 1, 0, {"learner": {"hidden": [width, width]}})
    return learner_device(settings.learner, settings.features).type


def render(
    args: Any, info: dict[str, Any], grid: Sequence[Cell], defaults: Sequence[Cell], name: str
) -> str:
    by = {(c.compute, c.width, c.batch): c for c in grid}
    rows = []
    for width in args.widths:
        for batch in args.batches:
            cpu = by.get(("cpu", width, batch))
            row = [width, batch]
            for compute in COMPUTE:
                cell = by.get((compute, width, batch))
                row.append(fmt_rate(cell.events_per_s) if cell else "—")
            cuda = by.get(("cuda", width, batch))
            best_cpu = max(
                (
                    by[k].events_per_s
                    for k in by
                    if k[1:] == (width, batch) and k[0].startswith("cpu")
                ),
                default=None,
            )
            row.append(f"{cuda.events_per_s / best_cpu:.2f}×" if cuda and best_cpu else "—")
            row.append(auto_device(args.stream, width))
            row.append(cpu.kernel if cpu else "—")
            rows.append(row)
    grid_table = markdown_table(
        [
            "width",
            "batch",
            *(f"{c} events/s" for c in COMPUTE),
            "cuda ÷ best cpu",
            "auto takes",
            "cpu step",
        ],
        rows,
    )
    default_table = markdown_table(
        ["compute", "device", "step", "events", "events/s", "accuracy"],
        [
            [
                c.compute,
                c.device,
                c.kernel,
                c.events,
                fmt_rate(c.events_per_s),
                fmt_float(c.accuracy, 4),
            ]
            for c in defaults
        ],
    )
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    return f"""# Learner throughput: CPU and CUDA

Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by `{command_line()}`.

Machine: {machine}, load average {load_average()}.

Stream {args.stream} (seed {args.seed}); Prequential.process_columns, two hidden layers of the
given width, fast start off; each cell {args.warmup_batches} batches untimed, then timed up to
{args.events} events or {args.seconds} s. events/s count events scored and learned. "auto
takes": where `learner.device: auto` puts that width's model on this machine (by its
multiply-adds per event, `streamlearn/kernels/device.py`).

{grid_table}

![events/s against batch size]({name}.png)

## The default settings on each device

{args.default_events} events, batch 64, fast start on, all else default: `auto` leaves
`learner.device` at auto, `cpu` and `cuda` set it.

{default_table}
"""


def parse_args(argv: Sequence[str] | None = None) -> Any:
    p = doc_parser("gpu_throughput.py", __doc__ or "")
    p.add_argument("--stream", default="agrawal-drift", choices=sorted(STREAMS))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024], metavar="W")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 4096], metavar="N")
    p.add_argument("--events", type=int, default=100_000, help="timed events per cell at most")
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per cell at most")
    p.add_argument("--warmup-batches", type=int, default=2, help="untimed batches per cell")
    p.add_argument("--default-events", type=int, default=30_000)
    p.add_argument("--compute", nargs="+", choices=list(COMPUTE), default=list(COMPUTE))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--tag", default="", help="suffix of the results' file names (a machine)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    computes = [c for c in args.compute if c != "cuda" or torch.cuda.is_available()]
    needed = args.warmup_batches * max(args.batches) + args.events
    rows = list(stream_rows(args.stream, max(needed, args.default_events), args.seed))
    info = machine_info()
    grid = run_grid(args, rows, computes, not args.no_progress)
    defaults = run_defaults(args, rows, computes)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "gpu_throughput" + (f"-{args.tag}" if args.tag else "")
    write_plot(args.out / f"{name}.png", grid, args.widths)
    (args.out / f"{name}.md").write_text(render(args, info, grid, defaults, name))
    write_json(
        args.out / f"{name}.json",
        {
            "machine": info,
            "command": command_line(),
            "grid": [asdict(c) | {"events_per_s": c.events_per_s} for c in grid],
            "defaults": [asdict(c) | {"events_per_s": c.events_per_s} for c in defaults],
        },
    )
    print(f"wrote {args.out / name}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
