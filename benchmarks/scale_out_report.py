"""Markdown of benchmarks/scale_out.py's results: accuracy per seed against the 1-point target,
events/s and collectives per run, and the projection to GPU ranks."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

RUNS = (  # result key, label (B: --batch)
    ("one_rank", "1 rank, batches of B"),
    ("two_ranks_global_batch", "2 ranks, global batch B (B/2 per rank; the default)"),
    ("two_ranks_per_rank_batch", "2 ranks, B per rank (rank_batch_size B: global 2B)"),
    ("two_ranks_per_rank_batch_more_updates", "2 ranks, B per rank, twice learner.updates"),
    ("two_ranks_gradient", "2 ranks, gradient all-reduce, B per rank (as batches of 2B)"),
)


def mean_range(values: list[float], fmt: str) -> str:
    """``mean (min–max)`` of ``values``, or the value alone."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{mean:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def accuracy_rows(results: list[dict[str, Any]], seeds: list[int]) -> list[str]:
    """Accuracy per seed, the mean, the worst seed against 1 rank and the 1-point verdict."""
    lines = []
    for stream in dict.fromkeys(r["stream"] for r in results):
        mine = {r["seed"]: r for r in results if r["stream"] == stream}
        for key, label in RUNS:
            accs = [mine[s][key]["accuracy"] for s in seeds]
            cells = [f"{a:.4f}" for a in accs] + [f"{sum(accs) / len(accs):.4f}"]
            if key == "one_rank":
                cells += ["–", "–"]
            else:
                worst = min(
                    a - mine[s]["one_rank"]["accuracy"] for a, s in zip(accs, seeds, strict=True)
                )
                cells += [
                    f"{round(worst * 100, 2) + 0.0:+.2f}",
                    "met" if worst >= -0.01 else "**not met**",
                ]
            responses = "/".join(str(mine[s][key].get("drift_responses", "–")) for s in seeds)
            lines.append(f"| {stream} | {label} | {' | '.join(cells)} | {responses} |")
    return lines


def speed_rows(results: list[dict[str, Any]]) -> list[str]:
    """Events/s and collectives per stream and run: mean over the seeds (min–max)."""
    lines = []
    for stream in dict.fromkeys(r["stream"] for r in results):
        mine = [r for r in results if r["stream"] == stream]
        for key, label in RUNS:
            runs = [r[key] for r in mine]
            cells = []
            for field, fmt in (("events_per_s", ",.0f"), ("composed_events_per_s", ",.0f"),
                               ("collective_share", ".0%")):  # fmt: skip
                have = [x[field] for x in runs if field in x]
                cells.append(mean_range(have, fmt) if have else "–")
            have = [
                x["collective_bytes_per_s"] / 1e6 for x in runs if "collective_bytes_per_s" in x
            ]
            cells.append(f"{mean_range(have, ',.1f')} MB/s" if have else "–")
            lines.append(f"| {stream} | {label} | {' | '.join(cells)} |")
    return lines


def report(
    results: list[dict[str, Any]], machine: dict[str, Any], command: str, alpha_s: float
) -> str:
    """The markdown of ``results`` (``alpha_s``: the projection's per-message latency)."""
    seeds = list(dict.fromkeys(r["seed"] for r in results))
    r = results[0]
    lines = [
        "# Scale-out: one model on 1 rank and on 2 ranks (gloo, CPU)",
        "",
        f"Written by `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: "
        f"{r['events']:,} events per stream and seed, B = {r['batch']}, streams' seeds "
        f"{', '.join(map(str, seeds))}.",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs visible (shared with other "
        f"work), torch {machine['torch']}, CUDA: {machine['cuda_available']}.",
        "",
        "## Prequential accuracy",
        "",
        "Target: 2 ranks within 1 point of 1 rank on every seed. *Worst seed*: the lowest "
        "(2 ranks − 1 rank) over the seeds, in points. The 2-rank runs are in lockstep, so "
        "their accuracy does not depend on timing.",
        "",
        f"| stream | run | {' | '.join(f'seed {s}' for s in seeds)} | mean | worst seed | "
        "within 1 point | drift responses |",
        "|:--|:--|" + "--:|" * (len(seeds) + 2) + ":--|--:|",
        *accuracy_rows(results, seeds),
        "",
        "## Events/s and collectives",
        "",
        "Mean over the seeds (min–max). This machine's 2 CPUs are shared with other work, so "
        "the measured events/s are noisy; compare runs by the composed figures. Measured: wall "
        "clock of the whole run. Composed: compute per batch + the model's all-reduce, once per "
        "batch (averaging) or once per update (gradient); see the module docstring. "
        "Collectives' share of time includes waiting for the other rank.",
        "",
        "| stream | run | events/s measured | events/s composed | collectives: share of time "
        "| bytes/s |",
        "|:--|:--|--:|--:|--:|--:|",
        *speed_rows(results),
        "",
        f"Bytes per round: model {r['model_bytes']:,} (dense parameters + embedding table, "
        f"float32), control and statistics {r['control_bytes']:,}. A gradient all-reduce "
        f"moves the model's bytes once per update ({r['two_ranks_gradient']['updates']} per "
        "batch); averaging moves them once per round: once per B events with the global batch, "
        "once per 2B with B per rank.",
        "",
        "## Projection to GPU ranks",
        "",
        "Ring all-reduce per round, T = 2(N-1)/N * S/BW + 2(N-1)*alpha (Patarasuk & Yuan 2009; "
        f"Thakur, Rabenseifner & Gropp 2005), S = {r['model_bytes'] + r['control_bytes']:,} "
        f"bytes, alpha = {alpha_s * 1e6:g} us. Step time: this machine's measured compute per "
        f"batch of B on one rank ({r['compute_per_turn_s'] * 1e3:.2f} ms on one CPU core, "
        f"{r['stream']}, seed {r['seed']}, under this machine's load); no GPU here, so a GPU "
        "step time was not measured. With the global batch shared out, each rank's step is "
        "smaller, so the ratio is higher.",
        "",
        "| ranks | link | collective per round | / step time |",
        "|--:|--:|--:|--:|",
    ]
    for p in r["projection"]:
        lines.append(
            f"| {p['ranks']} | {p['link_gbps']} Gb/s | {p['collective_s'] * 1e3:.3f} ms | "
            f"{p['ratio_to_step']:.2f} |"
        )
    return "\n".join(lines) + "\n"
