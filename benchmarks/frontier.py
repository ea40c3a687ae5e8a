"""Speed–accuracy frontier: streamlearn over a grid of batch sizes, updates and learning rates.

The issue-2 targets ask for speed (≥ 100× deep-river and, as issue 23 restates it, faster than
river's StandardScaler | LogisticRegression) and accuracy (≥ the best peer − 1 point) at once. A
larger batch with fewer updates is faster and less accurate. This grid, run in the same
invocation as the peers (so every ratio is measured in one run), shows whether *any* of these
settings lands in the region where both hold, and what each costs. Used by
``benchmarks/prequential.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from prequential_report import (
    ACCURACY_SLACK,
    SPEEDUP_TARGETS,
    StreamResult,
    best_peer,
    needed_events_per_s,
)
from report import ModelRun, fmt_float, fmt_rate, markdown_table

__all__ = [
    "DEFAULT_BATCHES",
    "DEFAULT_LRS",
    "DEFAULT_UPDATES",
    "FrontierPoint",
    "frontier_json",
    "frontier_section",
    "presets",
    "run_frontier",
    "write_frontier_plot",
]

DEFAULT_BATCHES = (32, 64, 128, 256, 512)
DEFAULT_UPDATES = (1, 2, 4)
DEFAULT_LRS = (0.005, 0.01)

Preset = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class FrontierPoint:
    """streamlearn with one setting on one stream."""

    batch_size: int
    updates: int
    lr: float
    accuracy: float
    events: int
    seconds: float  # in Prequential.process_columns only

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def setting(self) -> tuple[int, int, float]:
        return (self.batch_size, self.updates, self.lr)

    @property
    def label(self) -> str:
        return f"batch {self.batch_size}, {self.updates} upd., lr {self.lr:g}"


@dataclass(frozen=True)
class Region:
    """Where a point meets every issue-2 target on one stream (None: a peer did not run)."""

    min_accuracy: float | None  # best peer − slack
    min_events_per_s: float | None  # the larger of the speed-ups' demands

    def accurate(self, p: FrontierPoint) -> bool | None:
        return None if self.min_accuracy is None else p.accuracy >= self.min_accuracy

    def fast(self, p: FrontierPoint) -> bool | None:
        return None if self.min_events_per_s is None else p.events_per_s >= self.min_events_per_s


def presets(
    batches: Sequence[int], updates: Sequence[int], lrs: Sequence[float]
) -> list[tuple[int, int, float]]:
    """Every (batch size, updates, lr) of the grid."""
    return list(itertools.product(batches, updates, lrs))


def run_frontier(
    grid: Sequence[tuple[int, int, float]], run: Callable[[Preset], ModelRun]
) -> list[FrontierPoint]:
    """One prequential run per grid setting; ``run`` takes a settings preset."""
    points = []
    for batch, upd, lr in grid:
        done = run({"source": {"batch_size": batch}, "learner": {"updates": upd, "lr": lr}})
        points.append(
            FrontierPoint(batch, upd, lr, done.score.overall(), done.events, done.seconds)
        )
    return points


def region(result: StreamResult) -> Region:
    best = best_peer(result)
    needs = [needed_events_per_s(result, key) for key, *_ in SPEEDUP_TARGETS]
    known = [n for n in needs if n is not None]
    return Region(
        None if best is None else best.score.overall() - ACCURACY_SLACK,
        max(known) if len(known) == len(needs) else None,
    )


def _mark(ok: bool | None) -> str:
    return "" if ok is None else " ✓" if ok else ""


def _summary(result: StreamResult, points: Sequence[FrontierPoint], r: Region) -> str:
    if r.min_accuracy is None or r.min_events_per_s is None:
        return f"- {result.stream}: the peers the targets name did not all run; no verdict."
    both = [p for p in points if r.accurate(p) and r.fast(p)]
    accurate = [p for p in points if r.accurate(p)]
    fast = [p for p in points if r.fast(p)]
    parts = [
        f"- {result.stream} (needs accuracy ≥ {fmt_float(r.min_accuracy)} and "
        f"≥ {fmt_rate(r.min_events_per_s)} events/s): "
        + (
            f"**{len(both)} setting(s) meet both**, e.g. {both[0].label}"
            if both
            else "no setting meets both"
        )
    ]
    if accurate:
        top = max(accurate, key=lambda p: p.events_per_s)
        parts.append(
            f"fastest accurate enough: {top.label} at {fmt_rate(top.events_per_s)} events/s "
            f"({_speedups(result, top)})"
        )
    if fast:
        top = max(fast, key=lambda p: p.accuracy)
        parts.append(f"most accurate fast enough: {top.label} at {fmt_float(top.accuracy)}")
    return "; ".join(parts)


def _speedups(result: StreamResult, p: FrontierPoint) -> str:
    """The point's events/s as multiples of each peer a speed target names."""
    parts = []
    for key, label, *_ in SPEEDUP_TARGETS:
        peer = result.run(key)
        if peer is not None:
            parts.append(f"{p.events_per_s / peer.events_per_s:,.1f}× {label}")
    return ", ".join(parts)


def _every_stream(
    shown: Sequence[StreamResult],
    frontiers: Mapping[str, Sequence[FrontierPoint]],
    regions: Mapping[str, Region],
) -> str:
    """The settings accurate enough on every stream, and the fastest of them over all."""
    if len(shown) < 2 or any(regions[res.stream].min_accuracy is None for res in shown):
        return ""
    per_setting: dict[tuple[int, int, float], list[FrontierPoint]] = {}
    for res in shown:
        for p in frontiers[res.stream]:
            if regions[res.stream].accurate(p):
                per_setting.setdefault(p.setting, []).append(p)
    everywhere = {k: v for k, v in per_setting.items() if len(v) == len(shown)}
    if not everywhere:
        return "- every stream: no setting is accurate enough on all of them"
    rates = {k: sum(p.events for p in v) / sum(p.seconds for p in v) for k, v in everywhere.items()}
    labels = [f"{everywhere[k][0].label} ({fmt_rate(rates[k])} events/s)" for k in everywhere]
    line = f"- every stream: accurate enough on all of them: {'; '.join(labels)}"
    fastest = max(rates, key=rates.__getitem__)
    deep = [r for res in shown if (r := res.run("deep-river")) is not None]
    if len(deep) == len(shown):
        deep_rate = sum(r.events for r in deep) / sum(r.seconds for r in deep)
        line += (
            f". The fastest of them, {everywhere[fastest][0].label}, runs at "
            f"{rates[fastest] / deep_rate:,.1f}× deep-river MLP over all streams"
        )
    return line


def frontier_section(
    results: Sequence[StreamResult], frontiers: Mapping[str, Sequence[FrontierPoint]]
) -> str:
    """Markdown: one row per setting, accuracy and events/s on every stream, and a verdict."""
    shown = [res for res in results if frontiers.get(res.stream)]
    if not shown:
        return ""
    regions = {res.stream: region(res) for res in shown}
    first = frontiers[shown[0].stream]
    rows = []
    for i, p in enumerate(first):
        row = [str(p.batch_size), str(p.updates), f"{p.lr:g}"]
        for res in shown:
            q, r = frontiers[res.stream][i], regions[res.stream]
            row.append(
                f"{fmt_float(q.accuracy)}{_mark(r.accurate(q))} · "
                f"{fmt_rate(q.events_per_s)}{_mark(r.fast(q))}"
            )
        rows.append(row)
    header = ["batch", "updates", "lr", *(f"{res.stream}: accuracy · events/s" for res in shown)]
    return "\n".join(
        [
            "## Speed–accuracy frontier",
            "",
            "streamlearn (batch API, its other defaults) over a grid of micro-batch sizes, "
            "gradient updates per micro-batch and learning rates, on the same rows and in the "
            "same run as the peers above. ✓ marks an accuracy within "
            f"{ACCURACY_SLACK:g} of the best peer, or an events/s meeting every speed-up target "
            f"({', '.join(f'{f:g}× {label}' for _, label, f, _ in SPEEDUP_TARGETS)}). A setting "
            "meets issue 2 on a stream only with both marks.",
            "",
            markdown_table(header, rows, align="rrr" + "r" * len(shown)),
            "",
            *(_summary(res, frontiers[res.stream], regions[res.stream]) for res in shown),
            _every_stream(shown, frontiers, regions),
            "",
            "![frontier](prequential-frontier.png)",
            "",
        ]
    )


def frontier_json(frontiers: Mapping[str, Sequence[FrontierPoint]]) -> dict[str, Any]:
    return {
        stream: [{**asdict(p), "events_per_s": p.events_per_s} for p in points]
        for stream, points in frontiers.items()
    }


def write_frontier_plot(
    results: Sequence[StreamResult],
    frontiers: Mapping[str, Sequence[FrontierPoint]],
    path: Path,
    default: tuple[int, int, float],
) -> Path | None:
    """One panel per stream: accuracy against events/s (log), the target region shaded."""
    shown = [res for res in results if frontiers.get(res.stream)]
    if not shown:
        return None
    cols = min(2, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.6 * rows), dpi=110, squeeze=False)
    batches = sorted({p.batch_size for res in shown for p in frontiers[res.stream]})
    cmap = plt.get_cmap("viridis")
    colours = {b: cmap(i / max(1, len(batches) - 1)) for i, b in enumerate(batches)}
    updates = sorted({p.updates for res in shown for p in frontiers[res.stream]})
    markers = dict(zip(updates, itertools.cycle("os^DvP"), strict=False))
    lrs = sorted({p.lr for res in shown for p in frontiers[res.stream]})
    for ax, res in zip(axes.flat, shown, strict=False):
        points, r = frontiers[res.stream], region(res)
        for p in points:
            colour = colours[p.batch_size]
            ax.scatter(
                p.events_per_s,
                p.accuracy,
                marker=markers[p.updates],
                facecolor=colour if p.lr == lrs[0] else "none",
                edgecolor=colour,
                s=40,
                zorder=3,
            )
            if p.setting == default:
                ax.annotate("default", (p.events_per_s, p.accuracy), fontsize=7, weight="bold")
        for run in res.runs:
            if not run.key.startswith("streamlearn"):
                xy = (run.events_per_s, run.score.overall())
                ax.scatter(*xy, color="grey", marker="x", zorder=2)
                ax.annotate(run.name, xy, fontsize=6, color="dimgrey")
        ax.set_xscale("log")
        if r.min_accuracy is not None and r.min_events_per_s is not None:
            (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
            right, top = max(right, r.min_events_per_s * 2), max(top, r.min_accuracy + 0.02)
            ax.fill_between(
                [r.min_events_per_s, right], r.min_accuracy, top, color="tab:green", alpha=0.15
            )
            ax.axhline(r.min_accuracy, color="tab:green", linestyle="--", linewidth=0.8)
            for key, label, factor, _ in SPEEDUP_TARGETS:
                needed = needed_events_per_s(res, key)
                if needed is not None:
                    ax.axvline(needed, color="tab:green", linestyle=":", linewidth=0.8)
                    ax.annotate(
                        f"{factor:g}× {label}",
                        (needed, bottom),
                        rotation=90,
                        fontsize=6,
                        color="tab:green",
                        va="bottom",
                        ha="right",
                    )
            ax.set_xlim(left, right)
            ax.set_ylim(bottom, top)
        ax.set(title=res.stream, xlabel="events/s (log scale)", ylabel="prequential accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], color=colours[b], marker="o", linestyle="", label=f"batch {b}")
        for b in batches
    ] + [
        plt.Line2D([], [], color="black", marker=m, linestyle="", label=f"{u} update(s)")
        for u, m in markers.items()
    ]
    handles += [
        plt.Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor="grey" if lr == lrs[0] else "none",
            markeredgecolor="grey",
            label=f"lr {lr:g}",
        )
        for lr in lrs
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)
    fig.suptitle("streamlearn settings against the issue-2 targets (green: all met; x: peers)")
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
