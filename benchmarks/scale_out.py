"""Scale-out benchmark: one model on 1 rank against 2 ranks (gloo, CPU), and a projection.

What it measures, on the same seeded drifting stream (each of --streams, each of --seeds):

  1 rank              Prequential over micro-batches of B (the single worker)
  2 ranks, global B   the worker's default (decision 0029): two rank processes (torch env://
                      rendezvous, gloo) share out each micro-batch of B (B/2 each), one lockstep
                      turn per batch (the worker's ``Lockstep.turn``: weighted model averaging,
                      a drift on any rank answered on every rank), so the one model takes as
                      many averaged steps per event as a single worker does
  2 ranks, B per rank ``source.rank_batch_size: B``: each rank takes B (a global batch of 2B):
                      half the rounds per event, half the model's steps per event
  2 ranks, B per rank, twice learner.updates
                      the same with each rank taking 2 × ``learner.updates`` steps per batch:
                      a single worker's steps per event again, at twice its gradient work
  2 ranks, gradient   synchronous gradient all-reduce per update at B per rank: every update of
                      both ranks then equals one update of a single learner on the union of
                      their batches, so its accuracy is measured as one learner on batches of 2B

Every rank runs the settings the worker gives it (``streamlearn.app.rank_settings``: its share
of the batch, the expert pool off). Events/s are also composed from the same measured parts, so
they compare like for like on a loaded machine: a 2-rank run's compute per batch (its time
outside collectives) plus the all-reduce of the model's bytes S (dense parameters and embedding
table; a gradient has the same size), timed back to back in the same gloo group: once per batch
for averaging, ``learner.updates`` times per batch for the gradient all-reduce.

Reported: prequential accuracy (every event scored before it is learned) per seed, events/s of
the whole run (wall clock), bytes moved per second by this rank's collectives, and a projection
of the collective time per step to 8, 64 and 256 GPU ranks at 10, 100 and 400 Gb/s with the
ring all-reduce cost model T = 2(N-1)/N * S/BW + 2(N-1)*alpha (Patarasuk & Yuan, "Bandwidth
optimal all-reduce algorithms for clusters of workstations", JPDC 69(2), 2009; Thakur,
Rabenseifner & Gropp, "Optimization of collective communication operations in MPICH", IJHPCA
19(1), 2005), S the bytes per round, alpha the per-message latency (stated in the results).

Writes <out>/scale_out.md (scale_out_report.py) and <out>/scale_out.json (the machine named in
both).

  PYTHONPATH=$PWD python benchmarks/scale_out.py --events 20000 --seeds 0,1,2
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
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import command_line, machine_info
from scale_out_report import report

from streamlearn.core.prequential import Prequential
from streamlearn.settings import Settings, load_settings
from streamlearn.sources.synthetic import stream_rows

RANKS = (8, 64, 256)
LINKS_GBPS = (10, 100, 400)
ALPHA_S = 5e-6  # per-message latency of the projection's ring (NCCL over a fast fabric)


def settings_for(
    rows: list[tuple[dict[str, Any], Any]], batch: int, rank_batch: int | None = None,
    updates: int | None = None,
) -> Settings:  # fmt: skip
    """A binary learner with the stream's schema fixed (ranks need the same slots);
    ``updates`` None: the default ``learner.updates``."""
    names = sorted(rows[0][0])
    classes = sorted({y for _, y in rows}, key=str)
    learner = {"task": "binary", "classes": classes, "device": "cpu", "seed": 0}
    return load_settings(
        features={"numeric": names, "numeric_slots": max(8, len(names))},
        learner=learner | ({} if updates is None else {"updates": updates}),
        source={"batch_size": batch, "rank_batch_size": rank_batch},
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


def rank_slices(rows: list[Any], settings: Settings, world: int, rank: int) -> list[list[Any]]:
    """This rank's micro-batches: each turn the ranks take consecutive slices of the stream,
    in rank order, each as long as the batch its settings give it (Kafka's partitions, here
    cut so that every turn covers the same events as in the worker at these settings)."""
    shares = [settings.source.rank_batch(world, r) for r in range(world)]
    offset = sum(shares[:rank])
    return [rows[i + offset : i + offset + shares[rank]] for i in range(0, len(rows), sum(shares))]


def as_rank(args: argparse.Namespace) -> None:
    """One rank of a 2-rank run (started by ``ranked`` with torch's env:// variables and the
    run's arguments)."""
    import torch

    from streamlearn.app import rank_settings
    from streamlearn.worker.distributed.group import join_from_env
    from streamlearn.worker.distributed.lockstep import Lockstep

    rows = list(stream_rows(args.streams, args.events, args.seed))
    group = join_from_env(120.0)
    assert group is not None
    base = settings_for(rows, args.batch, args.rank_batch, args.updates)
    preq = Prequential.from_settings(rank_settings(base, group.world_size, group.rank))
    lockstep = Lockstep(group, 0.1)  # the worker's turn, a drift on any rank too
    lockstep.rounds.start(preq)
    batcher = SimpleNamespace(poll_timeout_s=0.0)  # what the turn sets on the worker's batcher
    mine = rank_slices(rows, base, group.world_size, group.rank)
    right = seen = 0
    start = time.perf_counter()
    for part in mine:  # every rank the same number of rounds; a rank out of data is quiet
        before = len(preq.drifts)
        if part:
            right += correct(preq, part)
            seen += len(part)
        lockstep.turn(preq, batcher, drifted=len(preq.drifts) > before, stop=False, due=False,
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
        "turns": len(mine), "collective_s": group.collective_s - 50 * per_allreduce,
        "collective_bytes": group.collective_bytes - 50 * payload.numel() * 4,
        "model_bytes": payload.numel() * 4, "grad_allreduce_s": per_allreduce,
        "updates": preq.learner.settings.updates, "drift_responses": len(preq.drifts),
    }  # fmt: skip
    args.rank_out.write_text(json.dumps(result))
    group.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ranked(
    stream: str, events: int, batch: int, seed: int, rank_batch: int | None = None,
    updates: int | None = None, world: int = 2,
) -> list[dict[str, Any]]:  # fmt: skip
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
            for flag, value in (("--rank-batch", rank_batch), ("--updates", updates)):
                command += [] if value is None else [flag, str(value)]
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


def summary(ranks: list[dict[str, Any]], events: int, turn_events: int) -> dict[str, Any]:
    """One 2-rank run: accuracy over both ranks' rows, rank 0's time and bytes."""
    r0 = ranks[0]
    compute_per_turn = (r0["seconds"] - r0["collective_s"]) / r0["turns"]
    return {
        "accuracy": sum(r["right"] for r in ranks) / sum(r["seen"] for r in ranks),
        "events_per_s": events / max(r["seconds"] for r in ranks),
        "collective_share": r0["collective_s"] / r0["seconds"],
        "collective_bytes_per_s": r0["collective_bytes"] / r0["seconds"],
        "drift_responses": r0["drift_responses"],
        "turns": r0["turns"], "turn_events": turn_events,
        "compute_per_turn_s": compute_per_turn,
        "composed_events_per_s": turn_events / (compute_per_turn + r0["grad_allreduce_s"]),
    }  # fmt: skip


def measure(stream: str, events: int, batch: int, seed: int) -> dict[str, Any]:
    rows = list(stream_rows(stream, events, seed))
    gradient = single(rows, 2 * batch)  # the gradient all-reduce's accuracy (module docstring)
    shared = ranked(stream, events, batch, seed)  # the default: B shared out
    per_rank = ranked(stream, events, batch, seed, rank_batch=batch)
    per_rank_run = summary(per_rank, events, 2 * batch)
    updates = 2 * settings_for(rows, batch).learner.updates  # the single worker's steps/event
    more_updates = ranked(stream, events, batch, seed, rank_batch=batch, updates=updates)
    slots = settings_for(rows, batch).features.numeric_slots
    control_bytes = 8 * (5 + 3 * slots)
    r0 = per_rank[0]
    t_model = r0["grad_allreduce_s"]  # one all-reduce of S bytes
    compute_per_turn = per_rank_run["compute_per_turn_s"]
    return {
        "stream": stream, "events": events, "batch": batch, "seed": seed,
        "one_rank": single(rows, batch),
        "two_ranks_global_batch": summary(shared, events, batch),
        "two_ranks_per_rank_batch": per_rank_run,
        "two_ranks_per_rank_batch_more_updates": summary(more_updates, events, 2 * batch),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="sea-drift,agrawal-drift")
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=32, help="B: the one model's micro-batch")
    parser.add_argument("--seeds", default="0,1,2", help="the streams' seeds, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--as-rank", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rank-batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--updates", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rank-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.as_rank:
        as_rank(args)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    results = [
        measure(stream, args.events, args.batch, seed)
        for stream in args.streams.split(",")
        for seed in seeds
    ]
    machine = machine_info()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_out.json").write_text(
        json.dumps({"machine": machine, "alpha_s": ALPHA_S, "results": results}, indent=2)
    )
    text = report(results, machine, command_line(), ALPHA_S)
    (args.out / "scale_out.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
