"""Scale-out benchmark: one model on 1 rank against 2 ranks (gloo, CPU), and a projection.

What it measures, on the same seeded drifting stream (each of --streams):

  1 rank            Prequential over micro-batches of B (the single worker)
  2 ranks, average  two rank processes (torch env:// rendezvous, gloo), each taking every other
                    batch (two partitions' worth), one lockstep round per batch
                    (streamlearn/worker/distributed/sync.py: weighted model averaging)
  2 ranks, gradient synchronous gradient all-reduce per update: every update of both ranks then
                    equals one update of a single learner on the union of their batches, so its
                    accuracy is measured as one learner on batches of 2B

Both options' events/s are also composed from the same measured parts, so they compare like for
like on a loaded machine: the 2-rank run's compute per batch (its time outside collectives) plus
the all-reduce of the model's bytes S (dense parameters and embedding table; a gradient has the
same size), timed back to back in the same gloo group: once per batch for averaging,
``learner.updates`` times per batch for the gradient all-reduce.

Reported: prequential accuracy (every event scored before it is learned), events/s of the whole
run (wall clock), bytes moved per second by this rank's collectives, and a projection of the
collective time per step to 8, 64 and 256 GPU ranks at 10, 100 and 400 Gb/s with the ring
all-reduce cost model T = 2(N-1)/N * S/BW + 2(N-1)*alpha (Patarasuk & Yuan, "Bandwidth optimal
all-reduce algorithms for clusters of workstations", JPDC 69(2), 2009; Thakur, Rabenseifner &
Gropp, "Optimization of collective communication operations in MPICH", IJHPCA 19(1), 2005),
S the bytes per round, alpha the per-message latency (stated in the results).

Writes <out>/scale_out.md and <out>/scale_out.json (the machine named in both).

  PYTHONPATH=$PWD python benchmarks/scale_out.py --events 20000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import machine_info

from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings, load_settings
from streamlearn.sources.synthetic import stream_rows

RANKS = (8, 64, 256)
LINKS_GBPS = (10, 100, 400)
ALPHA_S = 5e-6  # per-message latency of the projection's ring (NCCL over a fast fabric)


def settings_for(rows: list[tuple[dict[str, Any], Any]], batch: int) -> Settings:
    """A binary learner with the stream's schema fixed (ranks need the same slots)."""
    names = sorted(rows[0][0])
    classes = sorted({y for _, y in rows}, key=str)
    return load_settings(
        features={"numeric": names, "numeric_slots": max(8, len(names))},
        learner={"task": "binary", "classes": classes, "device": "cpu", "seed": 0},
        source={"batch_size": batch},
    )


def batches(rows: list[Any], size: int) -> list[list[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def correct(preq: Prequential, batch: list[Any]) -> int:
    """Score then learn one batch; how many of its predictions were right."""
    xs, ys = [x for x, _ in batch], [y for _, y in batch]
    outcome = preq.process(xs, ys)
    return int((outcome.prediction.argmax(axis=1) == outcome.target).sum())


def single(rows: list[Any], batch: int) -> dict[str, float]:
    preq = Prequential.from_settings(settings_for(rows, batch))
    start = time.perf_counter()
    right = sum(correct(preq, b) for b in batches(rows, batch))
    seconds = time.perf_counter() - start
    return {
        "accuracy": right / len(rows), "events_per_s": len(rows) / seconds,
        "drift_responses": len(preq.drifts),
    }  # fmt: skip


def as_rank(stream: str, events: int, batch: int, out: Path, seed: int) -> None:
    """One rank of the 2-rank run (started by ``ranked`` with torch's env:// variables)."""
    import torch

    from streamlearn.worker.distributed.group import join_from_env
    from streamlearn.worker.distributed.sync import Rounds

    rows = list(stream_rows(stream, events, seed))
    group = join_from_env(120.0)
    assert group is not None
    preq = Prequential.from_settings(settings_for(rows, batch))
    rounds = Rounds(group)
    rounds.start(preq)
    mine = batches(rows, batch)[group.rank :: group.world_size]
    turns = len(batches(rows, batch)) // group.world_size + 1
    right = seen = 0
    start = time.perf_counter()
    for i in range(turns):  # every rank the same number of rounds; a rank out of data is quiet
        before = len(preq.drifts)
        if i < len(mine):
            right += correct(preq, mine[i])
            seen += len(mine[i])
        rounds.turn(preq, drifted=len(preq.drifts) > before, stop=False, due=False,
                    reassigned=False)  # fmt: skip
    seconds = time.perf_counter() - start
    trainer = preq.learner.trainer
    payload = torch.zeros(trainer.flat.numel() + trainer.table.numel())
    grad_s = time.perf_counter()
    for _ in range(50):  # what a gradient all-reduce per update would move
        group.all_reduce(payload)
    per_allreduce = (time.perf_counter() - grad_s) / 50
    result = {
        "rank": group.rank, "right": right, "seen": seen, "seconds": seconds,
        "turns": turns, "collective_s": group.collective_s - 50 * per_allreduce,
        "collective_bytes": group.collective_bytes - 50 * payload.numel() * 4,
        "model_bytes": payload.numel() * 4, "grad_allreduce_s": per_allreduce,
        "updates": preq.learner.settings.updates, "drift_responses": len(preq.drifts),
    }  # fmt: skip
    out.write_text(json.dumps(result))
    group.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ranked(stream: str, events: int, batch: int, seed: int, world: int = 2) -> list[dict[str, Any]]:
    """Run ``world`` rank processes as torchrun would start them; their results."""
    port = str(free_port())
    with tempfile.TemporaryDirectory() as tmp:
        procs, outs = [], []
        for rank in range(world):
            out = Path(tmp) / f"rank{rank}.json"
            env = os.environ | {"WORLD_SIZE": str(world), "RANK": str(rank),
                                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
            command = [
                sys.executable, __file__, "--as-rank", "--streams", stream, "--events",
                str(events), "--batch", str(batch), "--seed", str(seed), "--rank-out", str(out),
            ]  # fmt: skip
            procs.append(subprocess.Popen(command, env=env))
            outs.append(out)
        for proc in procs:
            if proc.wait(600) != 0:
                raise SystemExit(f"a rank failed ({proc.returncode})")
        return [json.loads(out.read_text()) for out in outs]


def projection(model_bytes: int, control_bytes: int, step_s: float) -> list[dict[str, Any]]:
    """Ring all-reduce time per round (S = model + control bytes) against the step time."""
    size = model_bytes + control_bytes
    rows = []
    for n in RANKS:
        for gbps in LINKS_GBPS:
            bandwidth = gbps * 1e9 / 8
            t = 2 * (n - 1) / n * size / bandwidth + 2 * (n - 1) * ALPHA_S
            rows.append({"ranks": n, "link_gbps": gbps, "collective_s": t,
                         "ratio_to_step": t / step_s})  # fmt: skip
    return rows


def measure(stream: str, events: int, batch: int, seed: int) -> dict[str, Any]:
    rows = list(stream_rows(stream, events, seed))
    one = single(rows, batch)
    gradient = single(rows, 2 * batch)  # the gradient all-reduce's accuracy (module docstring)
    ranks = ranked(stream, events, batch, seed)
    wall = max(r["seconds"] for r in ranks)
    slots = settings_for(rows, batch).features.numeric_slots
    control_bytes = 8 * (5 + 3 * slots)
    r0 = ranks[0]
    compute_per_turn = (r0["seconds"] - r0["collective_s"]) / r0["turns"]
    t_model = r0["grad_allreduce_s"]  # one all-reduce of S bytes
    return {
        "stream": stream, "events": events, "batch": batch, "seed": seed,
        "one_rank": one,
        "two_ranks_average": {
            "accuracy": sum(r["right"] for r in ranks) / sum(r["seen"] for r in ranks),
            "events_per_s": events / wall,
            "collective_share": r0["collective_s"] / r0["seconds"],
            "collective_bytes_per_s": r0["collective_bytes"] / r0["seconds"],
            "per_turn_s": r0["seconds"] / r0["turns"],
            "drift_responses": r0["drift_responses"],
            "composed_events_per_s": 2 * batch / (compute_per_turn + t_model),
        },
        "two_ranks_gradient": {
            "accuracy": gradient["accuracy"],
            "composed_events_per_s": 2 * batch / (compute_per_turn + r0["updates"] * t_model),
            "updates": r0["updates"],
        },
        "model_allreduce_s": t_model,
        "model_bytes": r0["model_bytes"], "control_bytes": control_bytes,
        "compute_per_turn_s": compute_per_turn,
        "projection": projection(r0["model_bytes"], control_bytes, compute_per_turn),
    }  # fmt: skip


def report(results: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        "# Scale-out: one model on 1 rank and on 2 ranks (gloo, CPU)",
        "",
        f"Written by `benchmarks/scale_out.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"(streams' seed {results[0]['seed']}).",
        f"Machine: {machine['cpu']}, {machine['cpu_count']} CPUs visible (shared with other "
        f"work), torch {machine['torch']}, CUDA: {machine['cuda_available']}.",
        "",
        "| stream | run | accuracy | events/s measured | events/s composed | collectives: "
        "share of time | bytes/s |",
        "|:--|:--|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        avg, grad, one = r["two_ranks_average"], r["two_ranks_gradient"], r["one_rank"]
        lines += [
            f"| {r['stream']} | 1 rank | {one['accuracy']:.4f} | {one['events_per_s']:,.0f} | "
            "– | – | – |",
            f"| {r['stream']} | 2 ranks, model averaging | {avg['accuracy']:.4f} | "
            f"{avg['events_per_s']:,.0f} | {avg['composed_events_per_s']:,.0f} | "
            f"{avg['collective_share']:.0%} | {avg['collective_bytes_per_s'] / 1e6:,.1f} MB/s |",
            f"| {r['stream']} | 2 ranks, gradient all-reduce (as batches of 2B) | "
            f"{grad['accuracy']:.4f} | – | {grad['composed_events_per_s']:,.0f} | – | – |",
        ]
    r = results[0]
    responses = ", ".join(
        f"{x['stream']} {x['one_rank']['drift_responses']} (1 rank) / "
        f"{x['two_ranks_average']['drift_responses']} (2 ranks)"
        for x in results
    )
    lines += [
        "",
        f"Drift responses: {responses}.",
        "",
        "Measured: wall clock of the whole run. Composed: compute per batch + the model's "
        "all-reduce, once per batch (averaging) or once per update (gradient); see the "
        "module docstring. Collectives' share of time includes waiting for the other rank.",
        "",
        f"Bytes per round: model {r['model_bytes']:,} (dense parameters + embedding table, "
        f"float32), control and statistics {r['control_bytes']:,}. A gradient all-reduce "
        f"moves the model's bytes once per update ({r['two_ranks_gradient']['updates']} per "
        "batch); averaging moves them once per batch.",
        "",
        "## Projection to GPU ranks",
        "",
        "Ring all-reduce per round, T = 2(N-1)/N * S/BW + 2(N-1)*alpha (Patarasuk & Yuan 2009; "
        f"Thakur, Rabenseifner & Gropp 2005), S = {r['model_bytes'] + r['control_bytes']:,} "
        f"bytes, alpha = {ALPHA_S * 1e6:g} us. Step time: this machine's measured compute per "
        f"batch of one rank ({r['compute_per_turn_s'] * 1e3:.2f} ms on one CPU core, under this "
        "machine's load); no GPU here, so a GPU step time was not measured.",
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="sea-drift,agrawal-drift")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="the streams' seed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--as-rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rank-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_rank:
        as_rank(args.streams, args.events, args.batch, args.rank_out, args.seed)
        return
    results = [measure(s, args.events, args.batch, args.seed) for s in args.streams.split(",")]
    machine = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_out.json").write_text(
        json.dumps({"machine": machine, "alpha_s": ALPHA_S, "results": results}, indent=2)
    )
    (args.out / "scale_out.md").write_text(report(results, machine))
    print(report(results, machine))


if __name__ == "__main__":
    main()
