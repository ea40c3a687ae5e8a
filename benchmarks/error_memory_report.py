"""Error-memory benchmark report: the PNG around drifts and the markdown results page.

Rendering only; benchmarks/error_memory.py measures and passes its results dict here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import numpy as np
from report import fmt_float, fmt_rate, markdown_table

__all__ = ["plot", "pts", "render"]

AFTER_DRIFT_STEPS = 40  # "right after a drift" window of the staleness measurement


# -- plot -----------------------------------------------------------------------------------------
def plot(path: Path, curves: Mapping[str, dict[str, Any]], window: int) -> Path:
    """One row per stream, one panel per drift: rolling accuracy from 1k before to 5k after."""
    cols = max(len(c["drifts"]) for c in curves.values())
    fig, axes = plt.subplots(
        len(curves), cols, figsize=(4.2 * cols, 3.2 * len(curves)), dpi=110, squeeze=False
    )
    for row, (stream, c) in enumerate(curves.items()):
        for col in range(cols):
            ax = axes[row][col]
            if col >= len(c["drifts"]):
                ax.axis("off")
                continue
            p = c["drifts"][col]
            for label, (x, y), style in (
                ("memory off", c["off"], {"color": "0.45", "linewidth": 1.2}),
                ("memory on", c["on"], {"color": "tab:red", "linewidth": 1.6}),
            ):
                keep = (x >= p - 1000) & (x <= p + 5000)
                ax.plot(x[keep], y[keep], label=label, **style)
            ax.axvline(p, color="black", linestyle="--", linewidth=0.9)
            ax.axvspan(p, p + 1000, color="tab:orange", alpha=0.08)
            ax.set_title(f"{stream}: drift at {p:,}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if col == 0:
                ax.set_ylabel(f"accuracy (rolling {window})", fontsize=8)
            if row == 0 and col == 0:
                ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Error memory on vs off around abrupt drifts (shaded: first 1,000 events)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# -- markdown -----------------------------------------------------------------------------------
def pts(delta: float) -> str:
    """An accuracy difference in points, signed: +3.1."""
    return "—" if not np.isfinite(delta) else f"{100 * delta:+.1f}"


def render(data: dict[str, Any]) -> str:
    streams = data["streams"]
    lines = [
        "# Error memory (ReLoop2 compensation): on vs off",
        "",
        f"Command: `{data['command']}`  ",
        f"Run: {data['started']}, {data['seconds']:.0f} s; load average at start "
        f"{data['load_average']}",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in data["machine"].items()),
        "",
        "Each stream is run with the memory off and on (same stream seed and model seed, so the "
        "same base model and the same detected drifts); accuracy is prequential (predict, then "
        "learn) and only `Prequential.process_columns` is timed. Off and on run in lockstep (the "
        "same micro-batch to each in turn), so load from other processes slows both alike; "
        f"fastest of {data['repeats']} such passes. Memory settings: "
        f"`{data['memory_settings']}`.",
        "",
        "## Accuracy after each drift",
        "",
    ]
    rows = []
    for name, s in streams.items():
        off, on = s["off"], s["on"]
        for i, p in enumerate(s["drifts"]):
            rows.append(
                [
                    name,
                    f"{p:,}",
                    fmt_float(off["before_1k"][i]),
                    fmt_float(off["after_1k"][i]),
                    fmt_float(on["after_1k"][i]),
                    pts(on["after_1k"][i] - off["after_1k"][i]),
                    fmt_float(off["after_5k"][i]),
                    fmt_float(on["after_5k"][i]),
                    pts(on["after_5k"][i] - off["after_5k"][i]),
                ]
            )
    lines.append(
        markdown_table(
            [
                "stream",
                "drift at",
                "1k before",
                "1k after: off",
                "on",
                "Δ pts",
                "5k after: off",
                "on",
                "Δ pts",
            ],
            rows,
        )
    )
    lines += ["", "## Overall and cost", ""]
    rows = []
    for name, s in streams.items():
        off, on = s["off"], s["on"]
        cost = 1 - on["events_per_s"] / off["events_per_s"]
        rows.append(
            [
                name,
                fmt_float(off["overall"], 4),
                fmt_float(on["overall"], 4),
                pts(on["overall"] - off["overall"]),
                fmt_rate(off["events_per_s"]),
                fmt_rate(on["events_per_s"]),
                f"{100 * cost:.1f} %",
                f"{len(off['detected_drifts'])}",
                f"{on.get('resets', 0)} / {on.get('rekeys', 0)}",
            ]
        )
    lines.append(
        markdown_table(
            [
                "stream",
                "overall: off",
                "on",
                "Δ pts",
                "events/s off",
                "events/s on",
                "cost",
                "detected drifts",
                "resets / re-keys",
            ],
            rows,
        )
    )
    lines += ["", "## Targets", ""]
    lines += [f"- {t}" for t in data["targets"]]
    if data["variants"]:
        lines += [
            "",
            "## Variants tried (seed "
            f"{data['seed']}; Δ = on − off in points; 1k = mean over drifts of the first 1,000 "
            "events after each, min = the worst drift; cost = 1 − events/s on ÷ off, each "
            "variant run in lockstep with its own off run, mean over the streams)",
            "",
        ]
        names = list(streams)
        headers = ["variant", "change"]
        for name in names:
            headers += [f"{name} Δ1k", "min", "Δ5k", "Δ overall"]
        headers += ["cost"]
        rows = []
        for key, v in data["variants"].items():
            row = [key, v["change"]]
            for name in names:
                d = v["streams"][name]
                row += [pts(d["d1k"]), pts(d["d1k_min"]), pts(d["d5k"]), pts(d["doverall"])]
            row.append(f"{100 * v['cost']:.0f} %")
            rows.append(row)
        lines.append(markdown_table(headers, rows, align="ll" + "r" * (len(headers) - 2)))
    if data["robustness"]:
        lines += [
            "",
            "## Other seeds (default settings, accuracy only; Δ in points)",
            "",
        ]
        rows = []
        for r in data["robustness"]:
            gains = np.array(r["on"]["after_1k"]) - np.array(r["off"]["after_1k"])
            rows.append(
                [
                    str(r["seed"]),
                    r["stream"],
                    ", ".join(fmt_float(v) for v in r["off"]["after_1k"]),
                    ", ".join(pts(g) for g in gains),
                    fmt_float(r["off"]["overall"], 4),
                    pts(r["on"]["overall"] - r["off"]["overall"]),
                ]
            )
        lines.append(
            markdown_table(
                ["seed", "stream", "1k after: off", "Δ1k per drift", "overall: off", "Δ overall"],
                rows,
                align="llrrrr",
            )
        )
    lines += [
        "",
        "## How fast keys go stale",
        "",
        "Cosine similarity between the hidden representation of a fixed probe batch (each "
        "stream's first micro-batch) now and `age` micro-batches earlier, encoded each step with "
        f"the current encoder and model; 'after drift' = the {AFTER_DRIFT_STEPS} steps after "
        "each detected drift, when the learning rate is re-warmed.",
        "",
    ]
    rows = []
    for name, s in streams.items():
        st = s["staleness"]
        for i, age in enumerate(st["ages"]):
            rows.append(
                [
                    name,
                    str(age),
                    fmt_float(st["mean"][i], 4),
                    fmt_float(st["after_drift"][i], 4),
                    fmt_float(st["min"][i], 4),
                ]
            )
    lines.append(markdown_table(["stream", "age (steps)", "mean cos", "after drift", "min"], rows))
    lines += ["", "## Notes", ""]
    lines += [f"- {n}" for n in data["notes"]]
    lines += ["", "![rolling accuracy around drifts](error_memory.png)", ""]
    return "\n".join(lines)
